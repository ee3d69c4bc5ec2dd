"""`service_catalog`: each panel's catalog, one partition per panel, synced hourly."""

from datetime import timedelta

import dagster as dg

from smm_pipeline.lib.metadata import frame_preview
from smm_pipeline.lib.panels import configured_settings, panel_partitions, per_panel_schedule
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource, replica_hooks
from smm_pipeline.operations.catalog import refresh_catalog

CATALOG_CRON = "0 * * * *"


@dg.definitions
def defs() -> dg.Definitions:
    settings = configured_settings()
    partitions = panel_partitions(settings)

    @dg.asset(
        partitions_def=partitions,
        group_name="panels",
        kinds={"duckdb"},
        description="Each panel's service catalog, synced into `services` with every change "
        "(price, limits, appearance, disappearance) recorded in `service_changes`.",
        # Synced hourly: two hours without a sync means the schedule stalled or the panel is
        # down (the asset turns red in the UI).
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75)
        ),
    )
    def service_catalog(
        context: dg.AssetExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        panel = context.partition_key
        with panels.client(panel) as client:
            refresh = refresh_catalog(client, warehouse.location)
        r = refresh.result
        context.log.info(
            f"{panel}: {r.services} services, {r.new} new, {r.changed} changed, "
            f"{r.vanished} vanished (fetch {refresh.fetch_seconds:.2f}s, "
            f"diff {refresh.diff_seconds:.2f}s)"
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": r.services,
                "panel": panel,
                "new_services": r.new,
                "changed_services": r.changed,
                "vanished_services": r.vanished,
                "change_rows": len(r.changes),
                "changes": frame_preview(r.changes),
                "fetch_seconds": round(refresh.fetch_seconds, 3),
                "diff_seconds": round(refresh.diff_seconds, 3),
            }
        )

    job = dg.define_asset_job(
        "refresh_service_catalog",
        selection=[service_catalog],
        partitions_def=partitions,
        hooks=replica_hooks,
        description="Fetch and sync one panel's catalog (a run per panel partition).",
    )
    return dg.Definitions(
        assets=[service_catalog],
        jobs=[job],
        schedules=[per_panel_schedule("service_catalog_hourly", CATALOG_CRON, job, settings)],
    )
