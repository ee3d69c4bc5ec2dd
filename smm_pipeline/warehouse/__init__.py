"""DuckDB warehouse: schema, migrations, catalog and balance writes, analytics views, snapshots.

Knows nothing of HTTP: callers hand it typed answers from `smm_pipeline.panel.models`. The
names below are the ones callers import from the package itself; everything else is imported
from its module (`warehouse.orders`, `warehouse.status`, ...).
"""

from smm_pipeline.warehouse.balances import latest_balances, record_balance
from smm_pipeline.warehouse.catalog import catalog_age, load_catalog, sync_catalog
from smm_pipeline.warehouse.db import WarehouseError, WarehouseLockedError, connect
from smm_pipeline.warehouse.snapshot import connect_readonly, publish_snapshot, replica_path

__all__ = [
    "WarehouseError",
    "WarehouseLockedError",
    "catalog_age",
    "connect",
    "connect_readonly",
    "latest_balances",
    "load_catalog",
    "publish_snapshot",
    "record_balance",
    "replica_path",
    "sync_catalog",
]
