"""`refill_csv_sensor` → `request_refills`: check a dropped refill file, request its refills."""

import dagster as dg

from smm_pipeline.lib.action_files import action_file_metadata, log_action_summary
from smm_pipeline.lib.file_sensors import FileRunConfig, file_drop_sensor, rejection_failure
from smm_pipeline.lib.poll_requests import (
    cadence_of,
    orders_materialization,
    refills_materialization,
)
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource, replica_hooks
from smm_pipeline.operations.inbox import FileRejected
from smm_pipeline.operations.refills import process_refill_file


@dg.op(description="Check a dropped refill file and request its refills.")
def request_refill_file(
    context: dg.OpExecutionContext,
    config: FileRunConfig,
    panels: PanelsResource,
    warehouse: WarehouseResource,
) -> None:
    settings = panels.settings()
    cadence = cadence_of(settings)
    try:
        with panels.clients(settings) as clients:
            summary = process_refill_file(
                settings, warehouse.location, config.file_name, config.file_hash, clients,
                cadence, progress=context.log.info,
            )  # fmt: skip
    except FileRejected as rejected:
        raise rejection_failure(rejected) from None
    log_action_summary(context, summary, "refill")
    context.log_event(
        refills_materialization(
            warehouse,
            cadence,
            f"refill file {summary.file_name}",
            enabled=settings.panel_names,
            file=summary.file_name,
            submitted=summary.count("submitted"),
            ambiguous=summary.count("ambiguous"),
        )  # fmt: skip
    )
    if summary.status_refreshed:
        context.log_event(
            orders_materialization(
                warehouse,
                f"statuses refreshed for {summary.file_name}",
                enabled=settings.panel_names,
            )
        )
    context.add_output_metadata(action_file_metadata(summary))


@dg.job(
    description="Check and request the refills of one dropped file (launched by "
    "refill_csv_sensor).",
    tags={"smm/kind": "refills"},
    hooks=replica_hooks,
)
def request_refills():
    request_refill_file()


refill_csv_sensor = file_drop_sensor(
    "refill_csv_sensor", "refills", request_refills, op_name="request_refill_file"
)
