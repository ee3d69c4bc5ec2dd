"""Refill and cancel files, and refill-status polling (SPEC §3-4).

`refill_csv_sensor` → `request_refills` and `cancel_csv_sensor` → `cancel_orders`: one op per
file. `refill_status_sensor` → `poll_refill_statuses`: the sensor reads
the latest `refills` materialization's metadata from the instance (open refills, next due time)
and never opens DuckDB or calls a panel; every writer of `refills` reports one.
"""

from collections.abc import Collection

import dagster as dg

from smm_pipeline.config import Settings
from smm_pipeline.defs.files import FileRunConfig, file_drop_sensor, rejection_failure
from smm_pipeline.defs.metadata import frame_preview, markdown_table
from smm_pipeline.defs.polling import (
    POLL_ALL_TAG,
    due_metadata,
    due_poll_requests,
    orders_materialization,
    polled_panels,
)
from smm_pipeline.defs.resources import PanelsResource, WarehouseResource
from smm_pipeline.operations.cancels import cancel_order_file as cancel_file
from smm_pipeline.operations.inbox import FileRejected
from smm_pipeline.operations.refills import (
    ActionFileSummary,
    poll_refills,
)
from smm_pipeline.operations.refills import request_refill_file as refill_file
from smm_pipeline.panel.ratelimit import Priority
from smm_pipeline.warehouse.refills import (
    count_requests,
    open_refills_summary_by_panel,
    refill_rows,
)
from smm_pipeline.warehouse.status import Cadence

REFILLS_KEY = dg.AssetKey("refills")
CANCELS_KEY = dg.AssetKey("cancels")
STATUS_SENSOR_RETRY_SECONDS = 120

refills_asset = dg.AssetSpec(
    REFILLS_KEY,
    group_name="orders",
    kinds={"duckdb"},
    description="One row per refill request sent to a panel (request_state submitted, failed "
    "or ambiguous) and the refill's status, written by request_refills and "
    "poll_refill_statuses.",
)
cancels_asset = dg.AssetSpec(
    CANCELS_KEY,
    group_name="orders",
    kinds={"duckdb"},
    description="One row per cancel request sent to a panel (result accepted, refused or "
    "ambiguous), written by cancel_orders.",
)


def _cadence(settings: Settings) -> Cadence:
    return Cadence(
        settings.pipeline.poll_min_interval_minutes, settings.pipeline.poll_max_interval_minutes
    )


def refills_materialization(
    warehouse: WarehouseResource,
    cadence: Cadence,
    description: str,
    *,
    enabled: Collection[str],
    **metadata,
) -> dg.AssetMaterialization:
    """A `refills` materialization carrying what refill_status_sensor needs (`due_poll_requests`
    reads `open_orders`, here the open refills, and `due_by_panel`)."""
    with warehouse.connect() as conn:
        found = open_refills_summary_by_panel(conn, cadence)
        latest = refill_rows(conn)
        total = count_requests(conn, "refills")
    # Enabled panels only (a disabled panel's refills are never polled), each of them listed.
    by_panel = {p: found.get(p, (0, None)) for p in enabled}
    return dg.AssetMaterialization(
        asset_key=REFILLS_KEY,
        description=description,
        metadata={
            **metadata,
            "dagster/row_count": total,
            "open_refills": sum(n for n, _ in by_panel.values()),
            **due_metadata(by_panel),
            "latest_requests": frame_preview(latest),
        },
    )


def _file_metadata(summary: ActionFileSummary) -> dict:
    return {
        "file": summary.file_name,
        "results_file": dg.MetadataValue.path(str(summary.results_file)),
        "rows": len(summary.outcomes),
        **{f"rows_{state}": n for state, n in summary.counts.items()},
        "already_processed": summary.already_processed,
        "resumed": summary.resumed,
        "order_statuses_refreshed": summary.status_refreshed,
        "api_calls": summary.calls,
        "seconds": round(summary.seconds, 2),
        "results": frame_preview(summary.frame()),
    }


def _log_summary(context: dg.OpExecutionContext, summary: ActionFileSummary, what: str) -> None:
    for warning in summary.warnings:
        context.log.warning(warning)
    if summary.count("ambiguous"):
        context.log.warning(
            f"{summary.count('ambiguous')} {what} request(s) are ambiguous (the panel may have "
            "acted on them): they are never sent again automatically; check them on the panel"
        )


@dg.op(description="Check a dropped refill file and request its refills.")
def request_refill_file(
    context: dg.OpExecutionContext,
    config: FileRunConfig,
    panels: PanelsResource,
    warehouse: WarehouseResource,
) -> None:
    settings = panels.settings()
    cadence = _cadence(settings)
    try:
        with panels.clients(settings) as clients:
            summary = refill_file(
                settings, warehouse.db_path, config.file_name, config.file_hash, clients,
                cadence, progress=context.log.info,
            )  # fmt: skip
    except FileRejected as rejected:
        warehouse.publish(context, settings)
        raise rejection_failure(rejected) from None
    _log_summary(context, summary, "refill")
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
    warehouse.publish(context, settings)  # after the sensors' signals
    context.add_output_metadata(_file_metadata(summary))


@dg.job(
    description="Check and request the refills of one dropped file (launched by "
    "refill_csv_sensor).",
    tags={"smm/kind": "refills"},
)
def request_refills():
    request_refill_file()


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
            summary = cancel_file(
                settings, warehouse.db_path, config.file_name, config.file_hash, clients,
                _cadence(settings), progress=context.log.info,
            )  # fmt: skip
    except FileRejected as rejected:
        warehouse.publish(context, settings)
        raise rejection_failure(rejected) from None
    _log_summary(context, summary, "cancel")
    with warehouse.connect() as conn:
        total = count_requests(conn, "cancels")
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
    warehouse.publish(context, settings)  # after the sensors' signals
    context.add_output_metadata(_file_metadata(summary))


@dg.job(
    description="Check and cancel the orders of one dropped file (launched by cancel_csv_sensor).",
    tags={"smm/kind": "cancels"},
)
def cancel_orders():
    cancel_order_file()


@dg.op(description="Poll every due open refill (all with tag smm/poll=all).")
def poll_due_refills(
    context: dg.OpExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
) -> None:
    settings = panels.settings()
    cadence = _cadence(settings)
    poll_all = context.run.tags.get(POLL_ALL_TAG) == "all"
    only = polled_panels(context, settings)
    with panels.clients(settings, only, priority=Priority.POLL) as clients:
        report = poll_refills(
            warehouse.db_path, clients, cadence, poll_all=poll_all, progress=context.log.info
        )
    context.log.info(
        f"{', '.join(only)}: polled {report.polled} of {report.open_before} open refills in "
        f"{report.calls} calls, {report.changed} changed, {report.open_after} still open"
        + (f", {sum(report.deferred.values())} left due (budget)" if report.deferred else "")
    )
    context.log_event(
        refills_materialization(
            warehouse,
            cadence,
            "refill status poll",
            enabled=settings.panel_names,
            polled=report.polled,
            changed=report.changed,
            status_calls=report.calls,
        )  # fmt: skip
    )
    context.add_output_metadata(
        {
            "mode": "all unfinished" if poll_all else "due only",
            "panels": ", ".join(only),
            "due": report.due,
            "polled": report.polled,
            "deferred_to_next_poll": sum(report.deferred.values()),
            "changed": report.changed,
            "item_errors": report.item_errors,
            "status_calls": report.calls,
            "open_after": report.open_after,
            "seconds": round(report.seconds, 3),
            "statuses": dg.MetadataValue.md(
                markdown_table(sorted(report.statuses.items()), ["status", "refills"])
            ),
        }
    )
    if report.failed_panels:
        raise dg.Failure(
            "refill status poll failed for "
            + "; ".join(f"{p}: {m}" for p, m in sorted(report.failed_panels.items()))
            + " (the other panels were recorded)"
        )


@dg.job(description="Poll the status of every due open refill (tag smm/poll=all: every one).")
def poll_refill_statuses():
    poll_due_refills()


refill_csv_sensor = file_drop_sensor(
    "refill_csv_sensor", "refills", request_refills, op_name="request_refill_file"
)
cancel_csv_sensor = file_drop_sensor(
    "cancel_csv_sensor", "cancels", cancel_orders, op_name="cancel_order_file"
)


@dg.sensor(
    job=poll_refill_statuses,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches poll_refill_statuses for each panel whose open refills are due, one "
    "run per panel at a time.",
)
def refill_status_sensor(context: dg.SensorEvaluationContext):
    return due_poll_requests(
        context.instance,
        REFILLS_KEY,
        "poll_refill_statuses",
        "refills",
        retry_seconds=STATUS_SENSOR_RETRY_SECONDS,
    )


refills_cancels_defs = dg.Definitions(
    assets=[refills_asset, cancels_asset],
    jobs=[request_refills, cancel_orders, poll_refill_statuses],
    sensors=[refill_csv_sensor, cancel_csv_sensor, refill_status_sensor],
)
