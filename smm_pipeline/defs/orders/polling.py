"""`order_status_sensor` → `poll_order_statuses`: keep every unfinished order's status true
(one run per due panel at a time: `lib.poll_requests`)."""

import dagster as dg

from smm_pipeline.lib.metadata import markdown_table
from smm_pipeline.lib.poll_requests import (
    ORDERS_KEY,
    POLL_ALL_TAG,
    STATUS_SENSOR_RETRY_SECONDS,
    cadence_of,
    due_poll_requests,
    orders_materialization,
    polled_panels,
)
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource, replica_hooks
from smm_pipeline.operations.polling import poll_orders
from smm_pipeline.panel.ratelimit import Priority


@dg.op(description="Poll every due unfinished order (all with tag smm/poll=all).")
def poll_due_orders(
    context: dg.OpExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
) -> None:
    settings = panels.settings()
    poll_all = context.run.tags.get(POLL_ALL_TAG) == "all"
    cadence = cadence_of(settings)
    only = polled_panels(context, settings)
    with panels.clients(settings, only, priority=Priority.POLL) as clients:
        report = poll_orders(
            warehouse.db_path,
            clients,
            cadence,
            poll_all=poll_all,
            enabled=settings.panel_names,
            progress=context.log.info,
        )
    context.log.info(
        f"{', '.join(only)}: polled {report.polled} of {report.open_before} open orders in "
        f"{report.calls} calls ({report.calls_saved} fewer than polling every open order), "
        f"{report.changed} changed"
        + (f", {sum(report.deferred.values())} left due (budget)" if report.deferred else "")
    )
    context.log_event(
        orders_materialization(
            warehouse,
            "status poll",
            enabled=settings.panel_names,
            polled=report.polled,
            changed=report.changed,
            status_calls=report.calls,
            open_on_disabled_panels=sum(report.disabled_open.values()),
        )
    )
    context.add_output_metadata(
        {
            "mode": "all unfinished" if poll_all else "due only",
            "due": report.due,
            "polled": report.polled,
            "changed": report.changed,
            "unknown_to_panel": report.item_errors,
            "status_calls": report.calls,
            "fixed_interval_calls": report.fixed_interval_calls,
            "calls_saved": report.calls_saved,
            "panels": ", ".join(only),
            "deferred_to_next_poll": sum(report.deferred.values()),
            "http_seconds": round(report.http_seconds, 3),
            "write_seconds": round(report.write_seconds, 3),
            "warehouse_writes": report.writes,
            "open_after": report.open_after,
            "statuses": dg.MetadataValue.md(
                markdown_table(sorted(report.statuses.items()), ["status", "orders"])
            ),
        }
    )
    if report.failed_panels:
        raise dg.Failure(
            "status poll failed for "
            + "; ".join(f"{p}: {m}" for p, m in sorted(report.failed_panels.items()))
            + " (the other panels were recorded)"
        )


@dg.job(
    description="Poll the status of every due unfinished order (tag smm/poll=all: every one).",
    hooks=replica_hooks,
)
def poll_order_statuses():
    poll_due_orders()


@dg.sensor(
    job=poll_order_statuses,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches poll_order_statuses for each panel whose unfinished orders are due, "
    "one run per panel at a time.",
)
def order_status_sensor(context: dg.SensorEvaluationContext):
    return due_poll_requests(
        context.instance,
        ORDERS_KEY,
        "poll_order_statuses",
        "orders",
        retry_seconds=STATUS_SENSOR_RETRY_SECONDS,
    )
