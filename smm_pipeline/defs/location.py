"""Assemble the code location from its parts, for the configured panels."""

from __future__ import annotations

import dagster as dg

from smm_pipeline.config import load_settings
from smm_pipeline.defs.catalog import build_catalog_defs
from smm_pipeline.defs.checks import (
    order_checks,
    order_checks_job,
    order_checks_schedule,
    orders_asset,
    resolve_ambiguous_orders,
)
from smm_pipeline.defs.orders import order_csv_sensor, submit_orders
from smm_pipeline.defs.polling import order_status_sensor, poll_order_statuses
from smm_pipeline.defs.refills_cancels import refills_cancels_defs
from smm_pipeline.defs.replica import replica_defs
from smm_pipeline.defs.resources import PanelsResource, WarehouseResource


def build_definitions(
    panels_file: str | None = None, duckdb_path: str | None = None
) -> dg.Definitions:
    """The whole code location. Paths default to SMM_PANELS_FILE / SMM_DUCKDB_PATH."""
    settings = load_settings(panels_file, check_keys=False)
    return dg.Definitions.merge(
        build_catalog_defs(settings.panel_names),
        dg.Definitions(
            assets=[orders_asset],
            asset_checks=[order_checks],
            jobs=[submit_orders, poll_order_statuses, resolve_ambiguous_orders, order_checks_job],
            sensors=[order_csv_sensor, order_status_sensor],
            schedules=[order_checks_schedule],
        ),
        refills_cancels_defs,
        replica_defs,
        dg.Definitions(
            # Every job's steps run one after another in the run's process: a process per step
            # would only add start-up time.
            executor=dg.in_process_executor,
            resources={
                "panels": PanelsResource(panels_file=panels_file),
                "warehouse": WarehouseResource(path=duckdb_path),
            },
        ),
    )
