"""Panel balances: an append-only series, so runway and spend can be read back over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import duckdb

from smm_pipeline.panel.models import Balance
from smm_pipeline.warehouse.timestamps import require_aware


@dataclass(frozen=True)
class BalanceRow:
    panel: str
    balance: Decimal
    currency: str | None
    fetched_at: datetime


def record_balance(
    conn: duckdb.DuckDBPyConnection, panel: str, balance: Balance, fetched_at: datetime
) -> None:
    """Append one observation; earlier ones are never updated."""
    conn.execute(
        "INSERT INTO balances (panel, fetched_at, balance, currency) "
        "VALUES (?, ?, CAST(? AS DECIMAL(38,18)), ?)",
        [panel, require_aware(fetched_at, "fetched_at"), str(balance.balance), balance.currency],
    )


def latest_balances(conn: duckdb.DuckDBPyConnection) -> dict[str, BalanceRow]:
    """The most recent observation of each panel, keyed by panel name."""
    rows = conn.execute(
        """
        SELECT panel, balance, currency, fetched_at
        FROM (SELECT panel, balance, currency, fetched_at,
                     row_number() OVER (PARTITION BY panel ORDER BY fetched_at DESC) AS n
              FROM balances) AS latest
        WHERE n = 1
        """
    ).fetchall()
    return {r[0]: BalanceRow(*r) for r in rows}


def previous_currency(conn: duckdb.DuckDBPyConnection, panel: str) -> str | None:
    """The currency the panel's catalog prices are taken to be in: that of the first balance
    fetched after its last catalog sync (None when there is none to go by). Refreshing the
    catalog therefore accepts the account's current currency."""
    rows = conn.execute(
        """
        SELECT b.currency FROM balances b
        WHERE b.panel = ? AND b.currency IS NOT NULL
          AND b.fetched_at >= (SELECT max(synced_at) FROM catalog_syncs WHERE panel = ?)
        ORDER BY b.fetched_at LIMIT 1
        """,
        [panel, panel],
    ).fetchall()
    return rows[0][0] if rows else None
