"""Small helpers to drive real Dagster in tests: evaluate a sensor, run what it requests."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from smm_pipeline.lib.file_sensors import SENSOR_INTERVAL_SECONDS, cursor_seen_earlier


def settle(path: Path) -> None:
    """Give a dropped file an old mtime (written a while ago, then moved in). That alone does
    not make it complete for the file sensors: `look_twice` does."""
    os.utime(path, (1_600_000_000, 1_600_000_000))


def tick(
    defs: dg.Definitions, sensor: str, instance: dg.DagsterInstance, cursor: str | None = None
):
    """One sensor evaluation right now."""
    context = dg.build_sensor_context(
        instance=instance, definitions=defs, cursor=cursor, resources=defs.resources
    )
    return defs.get_sensor_def(sensor).evaluate_tick(context)


def look_twice(
    defs: dg.Definitions, sensor: str, instance: dg.DagsterInstance, cursor: str | None = None
):
    """Two ticks one sensor interval apart, as the daemon runs them: the first sees the new
    files (and launches none), the second finds them unchanged. Returns the second tick."""
    first = tick(defs, sensor, instance, cursor)
    assert not first.run_requests, "a first look at a file must never launch it"
    later = cursor_seen_earlier(first.cursor, SENSOR_INTERVAL_SECONDS)
    return tick(defs, sensor, instance, later)


def run_requested(
    defs: dg.Definitions, request: dg.RunRequest, instance: dg.DagsterInstance, job: str
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        run_config=request.run_config,
        instance=instance,
        tags=request.tags,
        raise_on_error=False,
    )


def drop_and_run(
    pipeline, instance: dg.DagsterInstance, name: str, content: str | bytes
) -> dg.ExecuteInProcessResult:
    """Drop an order file, let order_csv_sensor look twice, execute the one run it asks for."""
    settle(pipeline.drop("orders", name, content))
    defs = pipeline.defs()
    result = look_twice(defs, "order_csv_sensor", instance)
    assert len(result.run_requests) == 1, result.skip_message
    return run_requested(defs, result.run_requests[0], instance, "submit_orders")


def event_texts(result: dg.ExecuteInProcessResult) -> str:
    """Every event message and metadata value of a run, as one text."""
    parts = []
    for event in result.all_events:
        parts.append(event.message or "")
        data = event.event_specific_data
        parts.append(repr(data))
    return "\n".join(parts)
