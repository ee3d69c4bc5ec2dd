"""`refill_status_sensor` → `poll_refill_statuses`: keep every open refill's status true
(one run per due panel at a time: `lib.poll_requests`)."""

import dagster as dg

from smm_pipeline.lib.poll_requests import (
    REFILLS_KEY,
    cadence_of,
    fail_on_failed_panels,
    poll_metadata,
    poll_scope,
    refills_materialization,
    status_sensor,
)
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource, replica_hooks
from smm_pipeline.operations.refill_polling import poll_refills
from smm_pipeline.panel.ratelimit import Priority


@dg.op(description="Poll every due open refill (all with tag smm/poll=all).")
def poll_due_refills(
    context: dg.OpExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
) -> None:
    settings = panels.settings()
    cadence = cadence_of(settings)
    poll_all, only = poll_scope(context, settings)
    with panels.clients(settings, only, priority=Priority.POLL) as clients:
        report = poll_refills(
            warehouse.location, clients, cadence, poll_all=poll_all, progress=context.log.info
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
        )
    )
    context.add_output_metadata(
        {
            **poll_metadata(report, poll_all=poll_all, only=only, what="refills"),
            "item_errors": report.item_errors,
            "seconds": round(report.seconds, 3),
        }
    )
    fail_on_failed_panels(report, "refill status poll")


@dg.job(
    description="Poll the status of every due open refill (tag smm/poll=all: every one).",
    hooks=replica_hooks,
)
def poll_refill_statuses():
    poll_due_refills()


refill_status_sensor = status_sensor(
    "refill_status_sensor", poll_refill_statuses, REFILLS_KEY, "refills"
)
