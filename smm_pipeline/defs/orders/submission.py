"""`order_csv_sensor` → `submit_orders`: validate a dropped file, submit it, report it.

The sensor only looks at the folder (no API, no DuckDB). The job's steps open the warehouse
only in short connections, so other runs (polls, syncs, other files) go on beside a long
submission; the file leaves the inbox only in the last step (or when it is refused).
"""

import dagster as dg

from smm_pipeline.lib.file_sensors import FileRunConfig, file_drop_sensor, rejection_failure
from smm_pipeline.lib.metadata import frame_preview, money
from smm_pipeline.lib.poll_requests import orders_materialization
from smm_pipeline.lib.resources import (
    PanelsResource,
    WarehouseResource,
    publish_replica_after_failure,
    replica_hooks,
)
from smm_pipeline.operations.inbox import FileRejected
from smm_pipeline.operations.order_files import (
    FileChanged,
    PreparedOrderFile,
    finish_order_file,
    prepare_order_file,
)
from smm_pipeline.operations.submission import submit_file
from smm_pipeline.warehouse.db import WarehouseError


@dg.op(description="Read the dropped file, validate every row, record the outbox.")
def validate_order_file(
    context: dg.OpExecutionContext,
    config: FileRunConfig,
    panels: PanelsResource,
    warehouse: WarehouseResource,
) -> PreparedOrderFile:
    settings = panels.settings()
    try:
        with panels.clients(settings) as clients:
            prepared = prepare_order_file(
                settings, warehouse.location, config.file_name, config.file_hash, clients,
                log=context.log.info,
            )  # fmt: skip
    except FileRejected as rejected:
        raise rejection_failure(rejected) from None
    except FileChanged as changed:
        raise dg.Failure(description=str(changed), metadata={"file": config.file_name}) from None
    for refresh in prepared.catalog_refreshes:
        context.log_event(
            dg.AssetMaterialization(
                asset_key="service_catalog",
                partition=refresh.panel,
                description="refreshed before validating an order file",
                metadata={
                    "dagster/row_count": refresh.result.services,
                    "changed_services": refresh.result.changed,
                },
            )
        )
    context.add_output_metadata(
        {
            "rows": prepared.rows,
            "to_submit": prepared.to_submit,
            "already_submitted": len(prepared.skipped),
            "estimated_spend": money(prepared.estimated_spend),
            "resumed": prepared.resumed,
        }
    )
    return prepared


@dg.op(description="Send the file's pending rows, exactly once.")
def submit_order_rows(
    context: dg.OpExecutionContext,
    prepared: PreparedOrderFile,
    panels: PanelsResource,
    warehouse: WarehouseResource,
) -> PreparedOrderFile:
    if not prepared.to_submit and not prepared.resumed:
        context.log.info(f"{prepared.file_name}: nothing to send")
        return prepared
    settings = panels.settings()
    try:
        with panels.clients(settings, only=prepared.panels) as clients:
            report = submit_file(
                warehouse.location, prepared.file_hash, clients, progress=context.log.info
            )
    except Exception:
        # Rows may be left sending or ambiguous: say so to `orders`, so that its checks run
        # now (the checks' automation), not at the next schedule tick.
        try:
            context.log_event(
                orders_materialization(
                    warehouse,
                    f"sending {prepared.file_name} failed",
                    enabled=settings.panel_names,
                    file=prepared.file_name,
                )
            )
        except WarehouseError as exc:
            context.log.warning(f"the orders checks could not be signalled: {exc}")
        raise
    context.add_output_metadata(
        {
            "to_send": report.total,
            "submitted": report.submitted,
            "failed": report.failed,
            "ambiguous": report.ambiguous + report.recovered_ambiguous,
            "estimated_spend_submitted": money(report.estimated_spend),
            "api_calls": report.calls,
            "seconds": round(report.seconds, 2),
        }
    )
    return prepared


@dg.op(description="Write <name>.results.csv and move the file to processed/.")
def report_order_file(
    context: dg.OpExecutionContext,
    prepared: PreparedOrderFile,
    panels: PanelsResource,
    warehouse: WarehouseResource,
) -> None:
    settings = panels.settings()
    with panels.clients(settings, only=prepared.panels) as clients:
        summary = finish_order_file(settings, warehouse.location, prepared, clients)
    context.log.info(summary.line)
    context.log_event(
        orders_materialization(
            warehouse,
            f"order file {prepared.file_name}",
            enabled=settings.panel_names,
            file=prepared.file_name,
            submitted=summary.submitted,
            ambiguous=summary.ambiguous,
        )
    )
    context.add_output_metadata(
        {
            "file": prepared.file_name,
            "results_file": dg.MetadataValue.path(str(summary.results_file)),
            "results_written": summary.written,
            "rows": summary.rows,
            "submitted": summary.submitted,
            "failed": summary.failed,
            "ambiguous": summary.ambiguous,
            "already_submitted": summary.skipped,
            "estimated_spend": money(summary.estimated_spend),
            "actual_spend": dg.MetadataValue.md(summary.actual_spend_markdown()),
            "results": frame_preview(summary.results),
        }
    )
    # The outcome on the run itself, so the Runs list shows it beside the file's tags.
    context.instance.add_run_tags(
        context.run_id,
        {
            "smm/submitted": str(summary.submitted),
            "smm/failed": str(summary.failed),
            "smm/ambiguous": str(summary.ambiguous),
            "smm/skipped": str(summary.skipped),
            "smm/estimated_spend": money(summary.estimated_spend).value,
        },
    )
    if summary.ambiguous:
        context.log.warning(
            f"{summary.ambiguous} rows are ambiguous: see the ambiguous_submissions check and "
            "resolve them with the resolve_ambiguous_orders job (README)"
        )


@dg.job(
    description="Validate and submit one dropped order file (launched by order_csv_sensor).",
    tags={"smm/kind": "orders"},
)
def submit_orders():
    # The replica follows the file's report (or a refusal, or a failed send), not each step:
    # a publish before the sends would only delay them.
    on_failure = {publish_replica_after_failure}
    prepared = validate_order_file.with_hooks(on_failure)()
    sent = submit_order_rows.with_hooks(on_failure)(prepared)
    report_order_file.with_hooks(replica_hooks)(sent)


order_csv_sensor = file_drop_sensor(
    "order_csv_sensor", "orders", submit_orders, op_name="validate_order_file"
)
