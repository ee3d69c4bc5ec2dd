"""File-drop sensors: one per inbox folder, cheap (they read the folder, never DuckDB or an API).

The run key is `<kind>:<content sha256>:<name>:<mtime>:<ctime>`: the same drop never launches
twice, and a file moved or copied back in (mv, cp -p and rsync -t keep the mtime, never the
ctime) is a new drop. A re-drop of already handled content launches a run that finds every row
already done and submits nothing (the outbox in DuckDB, keyed by panel and ref, guarantees it).

A file is launched once two looks at least one sensor interval apart saw the same size, mtime
and ctime (`operations.inbox`): a file costs one to two intervals (15-30 s) between its drop
and its run. The cursor maps each file name to `[size, mtime_ns, ctime_ns, x]`: `x` is the wall
time (a float) of the first look that saw this stamp while the file waits, and the run key (a
string) once it is launched, so a file rewritten after its launch has a new stamp and is
launched again. Entries the sensor cannot read (an older `[size, mtime_ns, ctime_ns]`, junk)
only restart that file's wait; a cursor that is no JSON object starts afresh (launches are
still deduplicated by their run keys).

An entry that cannot be a drop file, or cannot be read, is skipped with its reason (logged on
the tick, and in the skip message when nothing is launched): it never holds up other files. A
complete file over `pipeline.max_file_bytes` is not read: the sensor moves it to rejected/
beside `<name>.errors.csv` saying so, the one file move a sensor makes.
"""

from __future__ import annotations

import csv
import io
import json
import time

import dagster as dg
import pydantic

from smm_pipeline.config import load_settings
from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.intake.row_errors import RowError
from smm_pipeline.lib.metadata import frame_preview
from smm_pipeline.operations.inbox import (
    FileRejected,
    Folders,
    Observation,
    Unreadable,
    bare_file_name,
    first_look,
    is_complete,
    read_observed,
    reject_file,
    scan,
)

SENSOR_INTERVAL_SECONDS = 15
# Two looks at a file must be at least this far apart: one sensor interval, less a second for
# the daemon's scheduling jitter (ticks are >= 15 s apart, measured a little differently).
LOOK_GAP_SECONDS = SENSOR_INTERVAL_SECONDS - 1


class FileRunConfig(dg.Config):
    """Which dropped file a run handles (set by the sensor; no secrets here)."""

    file_name: str
    file_hash: str

    @pydantic.field_validator("file_name")
    @classmethod
    def _bare(cls, value: str) -> str:
        return bare_file_name(value)


def count_rows(content: bytes) -> int:
    """Data records in a CSV (multi-line cells counted once); 0 when it cannot be parsed."""
    try:
        text = content.decode("utf-8-sig")
        return max(0, sum(1 for row in csv.reader(io.StringIO(text, newline="")) if any(row)) - 1)
    except (UnicodeDecodeError, csv.Error):
        return 0


def _launched(seen: object, stamp: list[int]) -> bool:
    """Whether the cursor entry says this very file (same stamp) was launched already."""
    return (
        isinstance(seen, list)
        and len(seen) == len(stamp) + 1
        and isinstance(seen[-1], str)
        and list(seen[:-1]) == stamp
    )


def _read_cursor(context: dg.SensorEvaluationContext) -> dict[str, object]:
    if not context.cursor:
        return {}
    try:
        cursor = json.loads(context.cursor)
    except ValueError:
        cursor = None
    if not isinstance(cursor, dict):
        context.log.warning("the sensor's cursor was unreadable; every file is looked at afresh")
        return {}
    return cursor


def cursor_seen_earlier(cursor: str | None, seconds: float) -> str | None:
    """`cursor` as if each first look it remembers had happened `seconds` earlier: what the
    next tick finds once `seconds` of wall time have passed. For tests and the demo, which
    evaluate a sensor twice in a row where the daemon waits an interval between ticks."""
    if not cursor:
        return cursor
    entries = json.loads(cursor)
    for entry in entries.values():
        if isinstance(entry, list) and entry and type(entry[-1]) in (int, float):
            entry[-1] -= seconds
    return json.dumps(entries, sort_keys=True)


def _over_limit(obs: Observation, limit: int) -> RowError:
    return RowError(
        0,
        "file",
        f"the file is {obs.size:,} bytes, over the limit of {limit:,} bytes "
        "(pipeline.max_file_bytes in panels.yaml); it was not read: split it into smaller files",
    )


def file_drop_sensor(
    name: str, kind: str, job: dg.JobDefinition, *, op_name: str
) -> dg.SensorDefinition:
    nothing = "submitted" if kind == "orders" else "requested"

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Launches {job.name} for each complete CSV file in inbox/{kind}/.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = time.time()
        settings = load_settings(check_keys=False)  # a small YAML file; no keys needed here
        limit = settings.pipeline.max_file_bytes
        folders = Folders(settings.data_dir)
        folder = folders.inbox(kind)
        previous = _read_cursor(context)
        listing = scan(folder)
        cursor: dict[str, list] = {}
        requests: list[dg.RunRequest] = []
        waiting: list[str] = []
        skipped = [str(u) for u in listing.unusable]
        refused: list[str] = []
        launched_before = 0
        for obs in listing.files:
            seen = previous.get(obs.name)
            if _launched(seen, obs.stamp):
                cursor[obs.name] = seen  # launched already; its run moves the file
                launched_before += 1
                continue
            if not is_complete(obs, seen, now=now, gap=LOOK_GAP_SECONDS):
                cursor[obs.name] = first_look(obs, seen, now=now)
                waiting.append(obs.name)
                continue
            if obs.size > limit:
                try:
                    rejected = reject_file(
                        folder / obs.name, folders, [_over_limit(obs, limit)], nothing=nothing
                    )
                except OSError as exc:
                    skipped.append(
                        f"{obs.name}: is over the {limit:,}-byte limit and could not be moved "
                        f"to rejected/ ({exc.strerror or exc})"
                    )
                    cursor[obs.name] = first_look(obs, seen, now=now)
                    continue
                refused.append(
                    f"refused {obs.name}: {obs.size:,} bytes is over the limit of {limit:,} "
                    f"(pipeline.max_file_bytes); moved to rejected/ beside "
                    f"{rejected.errors_file.name}"
                )
                continue
            try:
                content = read_observed(folder, obs)
            except Unreadable as exc:
                if exc.changed:  # still being written: its wait starts again
                    cursor[obs.name] = first_look(obs, None, now=now)
                    waiting.append(obs.name)
                else:
                    skipped.append(f"{obs.name}: {exc.reason}")
                continue
            digest = file_hash(content)
            run_key = f"{kind}:{digest}:{obs.name}:{obs.mtime_ns}:{obs.ctime_ns}"
            requests.append(
                dg.RunRequest(
                    run_key=run_key,
                    run_config={
                        "ops": {op_name: {"config": {"file_name": obs.name, "file_hash": digest}}}
                    },
                    tags={
                        "smm/file": obs.name,
                        "smm/rows": str(count_rows(content)),
                        "smm/file_hash": digest[:16],
                    },
                )
            )
            cursor[obs.name] = [*obs.stamp, run_key]
        for line in refused:
            context.log.warning(f"inbox/{kind}/: {line}")
        for line in skipped:
            context.log.warning(f"inbox/{kind}/: skipped {line}")
        new_cursor = json.dumps(cursor, sort_keys=True)
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=new_cursor)
        parts = refused + [f"skipped {line}" for line in skipped]
        if waiting:
            parts.append(f"waiting for {', '.join(waiting)} to finish being written")
        if launched_before:
            parts.append(f"{launched_before} file(s) in inbox/{kind}/ already have runs")
        if not parts:
            parts.append(f"no CSV files in {folder}")
        return dg.SensorResult(skip_reason="; ".join(parts), cursor=new_cursor)

    return _sensor


def rejection_failure(rejected: FileRejected) -> dg.Failure:
    """The run's failure for a refused file: the first errors in its metadata."""
    return dg.Failure(
        description=rejected.summary,
        metadata={
            "file": rejected.file_name,
            "errors": len(rejected.errors),
            "errors_file": dg.MetadataValue.path(str(rejected.errors_file)),
            "first_errors": frame_preview(rejected.preview_frame()),
        },
    )
