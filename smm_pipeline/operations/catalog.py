"""Fetch a panel's catalog and balance and record them in the warehouse."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.models import Balance
from smm_pipeline.warehouse.balances import record_balance
from smm_pipeline.warehouse.catalog import CatalogSyncResult, sync_catalog
from smm_pipeline.warehouse.db import Location, connect


@dataclass(frozen=True)
class CatalogRefresh:
    panel: str
    result: CatalogSyncResult
    fetch_seconds: float
    diff_seconds: float
    calls: int


def refresh_catalog(client: PanelClient, location: Location) -> CatalogRefresh:
    """Fetch `services` and sync it into the warehouse (diff, history of changes)."""
    started = time.perf_counter()
    services = client.services()
    fetched = time.perf_counter()
    with connect(location) as conn:
        result = sync_catalog(conn, client.panel.name, services, datetime.now(UTC))
    return CatalogRefresh(
        panel=client.panel.name,
        result=result,
        fetch_seconds=fetched - started,
        diff_seconds=time.perf_counter() - fetched,
        calls=1,
    )


def refresh_balance(client: PanelClient, location: Location) -> Balance:
    """Fetch the balance and append it to the balances history."""
    balance = client.balance()
    with connect(location) as conn:
        record_balance(conn, client.panel.name, balance, datetime.now(UTC))
    return balance
