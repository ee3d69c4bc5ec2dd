"""`refill_status_sensor` → `poll_refill_statuses`: keep every open refill's status true
(one run per due panel at a time: `lib.poll_requests`)."""

import dagster as dg

from smm_pipeline.lib.metadata import markdown_table
from smm_pipeline.lib.poll_requests import (
    POLL_ALL_TAG,
    REFILLS_KEY,
    STATUS_SENSOR_RETRY_SECONDS,
    cadence_of,
    due_poll_requests,
    polled_panels,
    refills_materialization,
)
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource, replica_hooks
from smm_pipeline.operations.refills import poll_refills
from smm_pipeline.panel.ratelimit import Priority


@dg.op(description="Poll every due open refill (all with tag smm/poll=all).")
def poll_due_refills(
    context: dg.OpExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
) -> None:
    settings = panels.settings()
    cadence = cadence_of(settings)
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


@dg.job(
    description="Poll the status of every due open refill (tag smm/poll=all: every one).",
    hooks=replica_hooks,
)
def poll_refill_statuses():
    poll_due_refills()


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
