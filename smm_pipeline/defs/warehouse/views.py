"""The analytics views as assets: what analysts query, with their column schemas and what
each one reads, so the lineage graph runs from the panels to the numbers.

Views are computed when queried (always as fresh as the tables they read), so nothing
materializes them: they are declared, not run.
"""

import logging

import dagster as dg
import duckdb

from smm_pipeline.warehouse.views import VIEWS, view_columns

log = logging.getLogger(__name__)

# The tables written by jobs, and the assets that stand for them.
_TABLE_ASSETS = {
    "orders": "orders",
    "order_status_history": "orders",
    "subscription_orders": "orders",
    "refills": "refills",
    "services": "service_catalog",
    "service_changes": "service_catalog",
    "balances": "panel_balances",
}


def _deps(reads: tuple[str, ...]) -> list[str]:
    return sorted({_TABLE_ASSETS.get(name, name) for name in reads})


def _view_asset(
    name: str, description: str, reads: tuple[str, ...], columns: dict | None
) -> dg.AssetSpec:
    metadata: dict = {"dagster/table_name": name}
    if columns is not None:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(column, kind) for column, kind in columns[name]]
        )
    return dg.AssetSpec(
        name,
        deps=_deps(reads),
        group_name="analytics",
        kinds={"duckdb", "view"},
        description=description,
        metadata=metadata,
    )


def _columns() -> dict | None:
    """The views' columns, or None (the assets then show no schema) when DuckDB cannot build
    them: a schema in the UI is never worth a code location that does not load."""
    try:
        return view_columns()
    except duckdb.Error as exc:
        log.warning(f"analytics views shown without column schemas: {exc}")
        return None


_COLUMNS = _columns()
defs = dg.Definitions(assets=[_view_asset(v.name, v.description, v.reads, _COLUMNS) for v in VIEWS])
