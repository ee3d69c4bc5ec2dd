"""File-drop sensors: one per inbox folder, cheap (they read the folder, never DuckDB or an API).

The run key is `<kind>:<content sha256>:<name>:<mtime>:<ctime>`: the same drop never launches
twice, and a file moved or copied back in (mv, cp -p and rsync -t keep the mtime, never the
ctime) is a new drop. A re-drop of already handled content launches a run that finds every row
already done and submits nothing (the outbox in DuckDB, keyed by panel and ref, guarantees it).
The cursor keeps, per file name, the stamp (size, mtime, ctime) it last saw and, once launched,
the run key: a file rewritten after its launch has a new stamp, so it is launched again.
"""

from __future__ import annotations

import csv
import io
import json

import dagster as dg
import pydantic

from smm_pipeline.config import data_dir_from_env
from smm_pipeline.defs.metadata import frame_preview
from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.operations.inbox import (
    FileRejected,
    Folders,
    bare_file_name,
    is_complete,
    observe,
)

SENSOR_INTERVAL_SECONDS = 15


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


def _launched(seen: list | None, stamp: list[int]) -> bool:
    """Whether the cursor entry says this very file (same stamp) was launched already."""
    return bool(seen) and isinstance(seen[-1], str) and list(seen[:-1]) == stamp


def file_drop_sensor(
    name: str, kind: str, job: dg.JobDefinition, *, op_name: str
) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Launches {job.name} for each complete CSV file in inbox/{kind}/.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        folder = Folders(data_dir_from_env()).inbox(kind)
        previous: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
        cursor: dict[str, list] = {}
        requests: list[dg.RunRequest] = []
        waiting: list[str] = []
        for obs in observe(folder):
            seen = previous.get(obs.name)
            if _launched(seen, obs.stamp):
                cursor[obs.name] = seen  # launched already; its run moves the file
                continue
            if not is_complete(obs, seen):
                cursor[obs.name] = obs.stamp
                waiting.append(obs.name)
                continue
            content = (folder / obs.name).read_bytes()
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
        new_cursor = json.dumps(cursor, sort_keys=True)
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=new_cursor)
        context.update_cursor(new_cursor)
        if waiting:
            return dg.SkipReason(f"waiting for {', '.join(waiting)} to finish being written")
        if cursor:
            return dg.SkipReason(f"{len(cursor)} file(s) in inbox/{kind}/ already have runs")
        return dg.SkipReason(f"no CSV files in {folder}")

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
