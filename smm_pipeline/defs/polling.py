"""`order_status_sensor` → `poll_order_statuses`: keep every unfinished order's status true.

The sensor stays cheap: it reads the latest `orders` materialization's metadata from the Dagster
instance (every writer of `orders` reports how many orders are open and when the next is due)
and never opens DuckDB or calls a panel. Only enabled panels' orders count as open: a disabled
panel's orders are never polled, so counting them would launch a run every tick forever.
"""

import time
from collections.abc import Collection
from datetime import datetime

import dagster as dg

from smm_pipeline.defs.metadata import markdown_table
from smm_pipeline.defs.resources import PanelsResource, WarehouseResource
from smm_pipeline.operations.polling import poll_orders
from smm_pipeline.warehouse.status import Cadence, open_summary

POLL_ALL_TAG = "smm/poll"
ORDERS_KEY = dg.AssetKey("orders")


def orders_materialization(
    warehouse: WarehouseResource,
    description: str,
    *,
    enabled: Collection[str],
    **metadata,
):
    """An `orders` materialization carrying what the status sensor needs.

    `enabled` are the enabled panels' names: open orders of other panels are never polled, so
    counting them would make the sensor launch a run every tick forever."""
    with warehouse.connect() as conn:
        open_orders, next_due = open_summary(conn, enabled)
    return dg.AssetMaterialization(
        asset_key=ORDERS_KEY,
        description=description,
        metadata={
            **metadata,
            "open_orders": open_orders,
            "next_poll_due_at": dg.MetadataValue.float(next_due.timestamp() if next_due else 0.0),
            "next_poll_due": dg.MetadataValue.text(next_due.isoformat() if next_due else "none"),
        },
    )


@dg.op(pool="duckdb", description="Poll every due unfinished order (all with tag smm/poll=all).")
def poll_due_orders(
    context: dg.OpExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
) -> None:
    settings = panels.settings()
    poll_all = context.run.tags.get(POLL_ALL_TAG) == "all"
    cadence = Cadence(
        settings.pipeline.poll_min_interval_minutes, settings.pipeline.poll_max_interval_minutes
    )
    with panels.clients(settings) as clients:
        report = poll_orders(
            warehouse.db_path, clients, cadence, poll_all=poll_all, progress=context.log.info
        )
    context.log.info(
        f"polled {report.polled} of {report.open_before} open orders in {report.calls} calls "
        f"({report.calls_saved} fewer than polling every open order), {report.changed} changed"
    )
    # The sensor's signal first: a replica that cannot be published must not lose it.
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
    warehouse.publish(context.log)
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
            "http_seconds": round(report.http_seconds, 3),
            "write_seconds": round(report.write_seconds, 3),
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


@dg.job(description="Poll the status of every due unfinished order (tag smm/poll=all: every one).")
def poll_order_statuses():
    poll_due_orders()


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict | None:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def due_poll_request(
    instance: dg.DagsterInstance, key: dg.AssetKey, what: str, retry_seconds: float
) -> dg.RunRequest | dg.SkipReason:
    """A run request when the latest materialization of `key` says something is due."""
    meta = _latest_metadata(instance, key)
    if meta is None:
        return dg.SkipReason(f"no {what} recorded yet")
    if not meta.get("open_orders"):
        return dg.SkipReason(f"no unfinished {what}")
    due_at = float(meta.get("next_poll_due_at") or 0.0)
    now = time.time()
    if due_at > now:
        when = datetime.fromtimestamp(due_at).astimezone().isoformat(timespec="seconds")
        return dg.SkipReason(
            f"{meta['open_orders']} unfinished {what}; the next is due at {when} "
            f"(in {int(due_at - now)}s)"
        )
    # A failed poll leaves the same due time: the slot lets it be retried once per interval.
    slot = int(now // retry_seconds)
    return dg.RunRequest(run_key=f"{key.to_user_string()}:{due_at:.0f}:{slot}")


@dg.sensor(
    job=poll_order_statuses,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches poll_order_statuses when unfinished orders are due.",
)
def order_status_sensor(context: dg.SensorEvaluationContext):
    return due_poll_request(context.instance, ORDERS_KEY, "orders", retry_seconds=120)
