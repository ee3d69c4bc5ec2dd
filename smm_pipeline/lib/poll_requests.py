"""What the status sensors read, and the poll runs they ask for.

`order_status_sensor` and `refill_status_sensor` stay cheap: each reads the latest `orders`
(`refills`) materializations' metadata from the Dagster instance (every writer reports, per
panel, how many are open and when the next is due) and the instance's own run list, and never
opens DuckDB or calls a panel. They launch one run per due panel (tag `smm/panel`), and never a
second one for a panel while one is queued or running, so a slow or rate-limited panel never
holds up another's statuses, and polls never pile up behind each other. A run launched without
the tag (the Launchpad) polls every enabled panel. Only enabled panels' orders count as open: a
disabled panel's orders are never polled, so counting them would launch a run every tick
forever.
"""

import time
from collections.abc import Collection, Mapping
from datetime import datetime

import dagster as dg

from smm_pipeline.config import Settings
from smm_pipeline.lib.metadata import frame_preview, markdown_table, timestamp
from smm_pipeline.lib.resources import WarehouseResource
from smm_pipeline.warehouse.refills import (
    open_refills_summary_by_panel,
    refill_rows,
    row_count,
)
from smm_pipeline.warehouse.status import Cadence, open_summary_by_panel

POLL_ALL_TAG = "smm/poll"
PANEL_TAG = "smm/panel"
ORDERS_KEY = dg.AssetKey("orders")
REFILLS_KEY = dg.AssetKey("refills")
CANCELS_KEY = dg.AssetKey("cancels")
# A failed poll leaves the same due time: the sensor asks again once per this many seconds.
STATUS_SENSOR_RETRY_SECONDS = 120
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
        "next_poll_due": timestamp(next_due),
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
        total = row_count(conn, "orders")
    return dg.AssetMaterialization(
        asset_key=ORDERS_KEY,
        description=description,
        metadata={**metadata, "dagster/row_count": total, **due_metadata(by_panel)},
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


def cadence_of(settings: Settings) -> Cadence:
    """How often an open order (refill) is polled: pipeline.poll_min/max_interval_minutes."""
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
        total = row_count(conn, "refills")
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


def poll_scope(context: dg.OpExecutionContext, settings: Settings) -> tuple[bool, list[str]]:
    """What a poll run polls: everything open (tag `smm/poll: all`) or only what is due, and
    of which panels (`polled_panels`)."""
    return context.run.tags.get(POLL_ALL_TAG) == "all", polled_panels(context, settings)


def poll_metadata(report, *, poll_all: bool, only: list[str], what: str) -> dict:
    """The output metadata every poll step reports (an order or a refill `PollReport`)."""
    return {
        "mode": "all unfinished" if poll_all else "due only",
        "panels": ", ".join(only),
        "due": report.due,
        "polled": report.polled,
        "deferred_to_next_poll": sum(report.deferred.values()),
        "changed": report.changed,
        "status_calls": report.calls,
        "open_after": report.open_after,
        "statuses": dg.MetadataValue.md(
            markdown_table(sorted(report.statuses.items()), ["status", what])
        ),
    }


def fail_on_failed_panels(report, what: str) -> None:
    """A poll whose panels failed fails its run, after recording the others."""
    if report.failed_panels:
        raise dg.Failure(
            f"{what} failed for "
            + "; ".join(f"{p}: {m}" for p, m in sorted(report.failed_panels.items()))
            + " (the other panels were recorded)"
        )


def status_sensor(
    name: str, job: dg.JobDefinition, key: dg.AssetKey, what: str
) -> dg.SensorDefinition:
    """`order_status_sensor` / `refill_status_sensor`: one poll run of `job` per due panel."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Launches {job.name} for each panel whose open {what} are due, one run "
        "per panel at a time.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        return due_poll_requests(
            context.instance, key, job.name, what, retry_seconds=STATUS_SENSOR_RETRY_SECONDS
        )

    return _sensor
