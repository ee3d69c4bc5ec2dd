"""The analytics views as assets: what analysts query, with their column schemas and what
each one reads, so the lineage graph runs from the panels to the numbers.

Views are computed when queried (always as fresh as the tables they read), so nothing
materializes them: they are declared, not run.
"""

import dagster as dg

from smm_pipeline.warehouse.views import VIEWS, view_columns

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


def _view_asset(name: str, description: str, reads: tuple[str, ...]) -> dg.AssetSpec:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(column, kind) for column, kind in view_columns()[name]]
    )
    return dg.AssetSpec(
        name,
        deps=_deps(reads),
        group_name="analytics",
        kinds={"duckdb", "view"},
        description=description,
        metadata={"dagster/column_schema": schema, "dagster/table_name": name},
    )


defs = dg.Definitions(
    assets=[_view_asset(view.name, view.description, view.reads) for view in VIEWS]
)
