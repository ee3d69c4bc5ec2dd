"""`order_status_sensor` → `poll_order_statuses`: keep every unfinished order's status true.

The sensor stays cheap: it reads the latest `orders` materialization's metadata from the Dagster
instance (every writer of `orders` reports, per panel, how many orders are open and when the
next is due) and the instance's own run list, and never opens DuckDB or calls a panel.
It launches one run per due panel (tag `smm/panel`), and never a second one for a panel while
one is queued or running, so a slow or rate-limited panel never holds up another's statuses,
and polls never pile up behind each other. A run launched without the tag (the Launchpad)
polls every enabled panel. Only enabled panels' orders count as open: a disabled panel's
orders are never polled, so counting them would launch a run every tick forever.
"""

import time
from collections.abc import Collection, Mapping
from datetime import datetime

import dagster as dg

from smm_pipeline.config import Settings
from smm_pipeline.defs.metadata import markdown_table
from smm_pipeline.defs.resources import PanelsResource, WarehouseResource
from smm_pipeline.operations.polling import poll_orders
from smm_pipeline.panel.ratelimit import Priority
from smm_pipeline.warehouse.status import Cadence, open_summary_by_panel

POLL_ALL_TAG = "smm/poll"
PANEL_TAG = "smm/panel"
ORDERS_KEY = dg.AssetKey("orders")
IN_FLIGHT_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def due_metadata(by_panel: Mapping[str, tuple[int, datetime | None]]) -> dict:
    """What the status sensors read: open count and next due time, in all and per panel
    (every enabled panel, 0 when nothing is open), each entry with the time it was read
    (`as_of`), since runs that overlap may log their materializations out of order."""
    open_total = sum(n for n, _ in by_panel.values())
    dues = [d for n, d in by_panel.values() if n and d is not None]
    next_due = min(dues) if dues else None
    as_of = time.time()
    per_panel = {
        p: {"open": n, "next_due_at": d.timestamp() if d else 0.0, "as_of": as_of}
        for p, (n, d) in sorted(by_panel.items())
    }
    return {
        "open_orders": open_total,
        "next_poll_due_at": dg.MetadataValue.float(next_due.timestamp() if next_due else 0.0),
        "next_poll_due": dg.MetadataValue.text(next_due.isoformat() if next_due else "none"),
        "due_by_panel": dg.MetadataValue.json(per_panel),
    }


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
        by_panel = open_summary_by_panel(conn, enabled)
    return dg.AssetMaterialization(
        asset_key=ORDERS_KEY,
        description=description,
        metadata={**metadata, **due_metadata(by_panel)},
    )


def polled_panels(context: dg.OpExecutionContext, settings: Settings) -> list[str]:
    """The panels this poll run is for: its `smm/panel` tag, else every enabled one. A tag
    naming a panel that is not enabled (disabled since the sensor saw it) polls nothing; the
    run still reports the open orders of the enabled panels, so the sensor stops asking."""
    tagged = context.run.tags.get(PANEL_TAG)
    if tagged is None:
        return list(settings.panel_names)
    if tagged not in settings.panel_names:
        context.log.warning(
            f"tag {PANEL_TAG}={tagged!r} names no enabled panel (enabled: "
            f"{', '.join(settings.panel_names)}): nothing is polled"
        )
        return []
    return [tagged]


@dg.op(description="Poll every due unfinished order (all with tag smm/poll=all).")
def poll_due_orders(
    context: dg.OpExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
) -> None:
    settings = panels.settings()
    poll_all = context.run.tags.get(POLL_ALL_TAG) == "all"
    cadence = Cadence(
        settings.pipeline.poll_min_interval_minutes, settings.pipeline.poll_max_interval_minutes
    )
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
    warehouse.publish(context, settings)
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


@dg.job(description="Poll the status of every due unfinished order (tag smm/poll=all: every one).")
def poll_order_statuses():
    poll_due_orders()


MERGED_MATERIALIZATIONS = 10  # the latest this many `orders`/`refills` events are merged


def _due_by_panel(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict | None:
    """Per panel of the latest materialization of `key` (the enabled panels when it was
    written), the freshest entry (by `as_of`) among the last few materializations:
    {panel: {"open", "next_due_at"}}; None when there is none yet. A materialization written
    before per-panel polls counts as one entry for every panel (key None)."""
    records = instance.fetch_materializations(key, limit=MERGED_MATERIALIZATIONS).records
    if not records:
        return None
    merged: dict = {}
    for index, record in enumerate(records):  # newest first
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        entries = meta.get("due_by_panel")
        if not isinstance(entries, dict):
            if index == 0:
                merged[None] = {"open": meta.get("open_orders") or 0,
                                "next_due_at": meta.get("next_poll_due_at") or 0.0}  # fmt: skip
            break
        for panel, entry in entries.items():
            if index > 0 and panel not in merged:
                continue  # no longer an enabled panel
            seen = merged.get(panel)
            if seen is None or entry.get("as_of", 0.0) > seen.get("as_of", 0.0):
                merged[panel] = entry
    return merged


def _busy_panels(instance: dg.DagsterInstance, job_name: str) -> set[str] | None:
    """Panels with a poll run of `job_name` queued or running; None when such a run has no
    panel tag (it polls every panel)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT_STATUSES), limit=100
    )
    busy: set[str] = set()
    for run in runs:
        panel = run.tags.get(PANEL_TAG)
        if panel is None:
            return None
        busy.add(panel)
    return busy


def due_poll_requests(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    job_name: str,
    what: str,
    retry_seconds: float,
) -> dg.SensorResult | dg.SkipReason:
    """One run request per panel whose next poll is due, by the latest materializations of
    `key`, unless a poll of that panel is already queued or running."""
    by_panel = _due_by_panel(instance, key)
    if by_panel is None:
        return dg.SkipReason(f"no {what} recorded yet")
    if not any(int(entry.get("open") or 0) for entry in by_panel.values()):
        return dg.SkipReason(f"no unfinished {what}")
    busy = _busy_panels(instance, job_name)
    now = time.time()
    # A failed poll leaves the same due time: the slot lets it be retried once per interval.
    slot = int(now // retry_seconds)
    requests, waiting = [], []
    for panel, entry in sorted(by_panel.items(), key=lambda kv: str(kv[0])):
        count, due_at = int(entry.get("open") or 0), float(entry.get("next_due_at") or 0.0)
        name = panel or "all panels"
        if not count:
            continue
        if busy is None or (panel in busy if panel else busy):
            waiting.append(f"{name}: a poll is already queued or running")
        elif due_at > now:
            when = datetime.fromtimestamp(due_at).astimezone().isoformat(timespec="seconds")
            waiting.append(f"{name}: {count} unfinished, next due at {when}")
        else:
            run_key = f"{key.to_user_string()}:{panel or 'all'}:{due_at:.0f}:{slot}"
            tags = {PANEL_TAG: panel} if panel else {}
            requests.append(dg.RunRequest(run_key=run_key, tags=tags))
    if not requests:
        return dg.SkipReason(f"{what}: " + "; ".join(waiting))
    return dg.SensorResult(run_requests=requests)


@dg.sensor(
    job=poll_order_statuses,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches poll_order_statuses for each panel whose unfinished orders are due, "
    "one run per panel at a time.",
)
def order_status_sensor(context: dg.SensorEvaluationContext):
    return due_poll_requests(
        context.instance, ORDERS_KEY, "poll_order_statuses", "orders", retry_seconds=120
    )
