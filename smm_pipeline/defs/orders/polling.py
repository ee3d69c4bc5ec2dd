"""`order_status_sensor` → `poll_order_statuses`: keep every unfinished order's status true
(one run per due panel at a time: `lib.poll_requests`)."""

import dagster as dg

from smm_pipeline.lib.poll_requests import (
    ORDERS_KEY,
    cadence_of,
    fail_on_failed_panels,
    orders_materialization,
    poll_metadata,
    poll_scope,
    status_sensor,
)
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource, replica_hooks
from smm_pipeline.operations.polling import poll_orders
from smm_pipeline.panel.ratelimit import Priority


@dg.op(description="Poll every due unfinished order (all with tag smm/poll=all).")
def poll_due_orders(
    context: dg.OpExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
) -> None:
    settings = panels.settings()
    poll_all, only = poll_scope(context, settings)
    with panels.clients(settings, only, priority=Priority.POLL) as clients:
        report = poll_orders(
            warehouse.location,
            clients,
            cadence_of(settings),
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
            **poll_metadata(report, poll_all=poll_all, only=only, what="orders"),
            "unknown_to_panel": report.item_errors,
            "fixed_interval_calls": report.fixed_interval_calls,
            "calls_saved": report.calls_saved,
            "http_seconds": round(report.http_seconds, 3),
            "write_seconds": round(report.write_seconds, 3),
            "warehouse_writes": report.writes,
        }
    )
    fail_on_failed_panels(report, "status poll")


@dg.job(
    description="Poll the status of every due unfinished order (tag smm/poll=all: every one).",
    hooks=replica_hooks,
)
def poll_order_statuses():
    poll_due_orders()


order_status_sensor = status_sensor(
    "order_status_sensor", poll_order_statuses, ORDERS_KEY, "orders"
)
