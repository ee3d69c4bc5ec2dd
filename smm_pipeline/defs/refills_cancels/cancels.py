"""`cancel_csv_sensor` → `cancel_orders`: check a dropped cancel file, request its cancels."""

import dagster as dg

from smm_pipeline.lib.action_files import action_file_metadata, log_action_summary
from smm_pipeline.lib.file_sensors import FileRunConfig, file_drop_sensor, rejection_failure
from smm_pipeline.lib.poll_requests import CANCELS_KEY, cadence_of, orders_materialization
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource, replica_hooks
from smm_pipeline.operations.cancels import process_cancel_file
from smm_pipeline.operations.inbox import FileRejected
from smm_pipeline.warehouse.refills import row_count


@dg.op(description="Check a dropped cancel file and request its cancels.")
def cancel_order_file(
    context: dg.OpExecutionContext,
    config: FileRunConfig,
    panels: PanelsResource,
    warehouse: WarehouseResource,
) -> None:
    settings = panels.settings()
    try:
        with panels.clients(settings) as clients:
            summary = process_cancel_file(
                settings, warehouse.location, config.file_name, config.file_hash, clients,
                cadence_of(settings), progress=context.log.info,
            )  # fmt: skip
    except FileRejected as rejected:
        raise rejection_failure(rejected) from None
    log_action_summary(context, summary, "cancel")
    with warehouse.connect() as conn:
        total = row_count(conn, "cancels")
    context.log_event(
        dg.AssetMaterialization(
            asset_key=CANCELS_KEY,
            description=f"cancel file {summary.file_name}",
            metadata={
                "dagster/row_count": total,
                "file": summary.file_name,
                "accepted": summary.count("accepted"),
                "refused": summary.count("refused"),
                "ambiguous": summary.count("ambiguous"),
                "not_sent": summary.count("not_sent"),
            },
        )
    )
    # Accepted cancels made their orders due now: tell order_status_sensor.
    context.log_event(
        orders_materialization(
            warehouse,
            f"cancel file {summary.file_name}",
            enabled=settings.panel_names,
            cancels_accepted=summary.count("accepted"),
        )
    )
    context.add_output_metadata(action_file_metadata(summary))


@dg.job(
    description="Check and cancel the orders of one dropped file (launched by cancel_csv_sensor).",
    tags={"smm/kind": "cancels"},
    hooks=replica_hooks,
)
def cancel_orders():
    cancel_order_file()


cancel_csv_sensor = file_drop_sensor(
    "cancel_csv_sensor", "cancels", cancel_orders, op_name="cancel_order_file"
)
