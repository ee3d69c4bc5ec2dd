"""DuckDB warehouse: schema, migrations, catalog and balance writes, analytics views, snapshots.

Knows nothing of HTTP: callers hand it typed answers from `smm_pipeline.panel.models`.
"""

from smm_pipeline.warehouse.balances import BalanceRow, latest_balances, record_balance
from smm_pipeline.warehouse.catalog import (
    CatalogSyncResult,
    ServiceRow,
    catalog_age,
    load_catalog,
    sync_catalog,
)
from smm_pipeline.warehouse.db import (
    WarehouseError,
    WarehouseLockedError,
    connect,
    default_db_path,
)
from smm_pipeline.warehouse.snapshot import connect_readonly, publish_snapshot, replica_path

__all__ = [
    "BalanceRow",
    "CatalogSyncResult",
    "ServiceRow",
    "WarehouseError",
    "WarehouseLockedError",
    "catalog_age",
    "connect",
    "connect_readonly",
    "default_db_path",
    "latest_balances",
    "load_catalog",
    "publish_snapshot",
    "record_balance",
    "replica_path",
    "sync_catalog",
]
