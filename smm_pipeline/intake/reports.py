"""The reports a user finds beside a processed or rejected file (SPEC §3).

`<name>.errors.csv` (row, column, message) beside a rejected file, `<name>.results.csv` (one
line per order row) beside a processed one; `<name>` is the dropped file's name without its
extension. Reports are plain UTF-8 (no BOM), RFC 4180, and written atomically: a temporary
file in the same folder, flushed to disk, then renamed over the target, so a reader or a
crashed run never sees half a report.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from smm_pipeline.intake.row_errors import RowError
from smm_pipeline.panel.order_types import format_money

__all__ = [
    "ERRORS_COLUMNS",
    "RESULTS_COLUMNS",
    "ResultRow",
    "errors_report_path",
    "results_report_path",
    "write_csv_atomic",
    "write_errors_csv",
    "write_results_csv",
]

ERRORS_COLUMNS = ("row", "column", "message")
RESULTS_COLUMNS = (
    "row",
    "ref",
    "panel",
    "service",
    "order_id",
    "error",
    "estimated_cost",
    "submit_state",
)


@dataclass(frozen=True, slots=True)
class ResultRow:
    """What became of one order row: an order id, or an error, and its submit state
    (`submitted`, `ambiguous`, `failed`, `abandoned`, or e.g. `skipped` for an already
    submitted ref)."""

    row: int
    ref: str
    panel: str
    service: int
    order_id: int | None
    error: str | None
    estimated_cost: Decimal | None
    submit_state: str


def _report_path(directory: Path | str, file_name: str, kind: str) -> Path:
    return Path(directory) / f"{Path(file_name).stem}.{kind}.csv"


def errors_report_path(directory: Path | str, file_name: str) -> Path:
    """`<directory>/<name>.errors.csv` for a dropped file called `file_name`."""
    return _report_path(directory, file_name, "errors")


def results_report_path(directory: Path | str, file_name: str) -> Path:
    """`<directory>/<name>.results.csv` for a dropped file called `file_name`."""
    return _report_path(directory, file_name, "results")


def write_csv_atomic(
    path: Path | str, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> Path:
    """Write a CSV so that `path` holds either its old content or the complete new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _sync_directory(target.parent)
    return target


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; not every platform lets a directory be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_errors_csv(path: Path | str, errors: Iterable[RowError]) -> Path:
    """`errors.csv`: row, column, message, in the order given."""
    return write_csv_atomic(path, ERRORS_COLUMNS, ((e.row, e.column, e.message) for e in errors))


def write_results_csv(path: Path | str, results: Iterable[ResultRow]) -> Path:
    """`results.csv`: one line per order row; empty cells for absent values, money exact."""
    return write_csv_atomic(
        path,
        RESULTS_COLUMNS,
        (
            (
                r.row,
                r.ref,
                r.panel,
                r.service,
                "" if r.order_id is None else r.order_id,
                r.error or "",
                "" if r.estimated_cost is None else format_money(r.estimated_cost),
                r.submit_state,
            )
            for r in results
        ),
    )
