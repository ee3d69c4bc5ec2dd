"""The reports a user finds beside a processed or rejected file (README, CSV drops;
Refills and cancels: Results).

`<name>.errors.csv` (row, column, message) beside a rejected file, `<name>.results.csv` (one
line per order row) beside a processed one; `<name>` is the dropped file's name without its
extension. Reports are plain UTF-8 (no BOM), RFC 4180, and written atomically: a temporary
file in the same folder, flushed to disk, then renamed over the target, so a reader or a
crashed run never sees half a report.

File systems take names of at most 255 bytes. A dropped file may use all of them, so a name
derived from it (its report, a time-stamped variant) that would be longer keeps as much of the
stem as fits, cut on a character boundary, and ends it with `~` and 8 hex digits of the whole
stem's sha256: still recognisable, still unique, and the same every time it is computed.

Every text cell is neutralised against spreadsheet formula injection (OWASP "CSV injection"):
a cell that starts with `=`, `+`, `-`, `@`, a tab, a carriage return or a line feed gets a
leading `'`, so Excel, LibreOffice and Google Sheets show it as text instead of running it.
Numbers the pipeline writes itself (row numbers, order ids, costs) are never negative and are
left as they are.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from smm_pipeline.intake.row_errors import RowError
from smm_pipeline.money import format_money

__all__ = [
    "ERRORS_COLUMNS",
    "RESULTS_COLUMNS",
    "ResultRow",
    "errors_report_path",
    "fit_file_name",
    "neutralise_cell",
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


NAME_MAX_BYTES = 255  # one path component, on every common file system
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def fit_file_name(stem: str, suffix: str, *, limit: int = NAME_MAX_BYTES) -> str:
    """`stem + suffix`, or, when that is longer than `limit` bytes in UTF-8, as much of `stem`
    as fits followed by `~` and 8 hex digits of the whole stem's sha256, then `suffix`."""
    name = stem + suffix
    if len(name.encode("utf-8", "surrogateescape")) <= limit:
        return name
    tag = "~" + hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    room = limit - len((tag + suffix).encode("utf-8", "surrogateescape"))
    if room < 0:
        raise ValueError(f"suffix {suffix!r} leaves no room for a file name")
    kept = stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return kept + tag + suffix


def neutralise_cell(value: object) -> object:
    """A text cell that a spreadsheet would take as a formula gets a leading `'`; anything else
    (numbers, empty or harmless text) is returned unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _report_path(directory: Path | str, file_name: str, kind: str) -> Path:
    return Path(directory) / fit_file_name(Path(file_name).stem, f".{kind}.csv")


def errors_report_path(directory: Path | str, file_name: str) -> Path:
    """`<directory>/<name>.errors.csv` for a dropped file called `file_name` (shortened as the
    module says when that would be over 255 bytes)."""
    return _report_path(directory, file_name, "errors")


def results_report_path(directory: Path | str, file_name: str) -> Path:
    """`<directory>/<name>.results.csv` for a dropped file called `file_name` (shortened as
    the module says when that would be over 255 bytes)."""
    return _report_path(directory, file_name, "results")


def write_csv_atomic(
    path: Path | str, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> Path:
    """Write a CSV so that `path` holds either its old content or the complete new one. Text
    cells are neutralised against formula injection (`neutralise_cell`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp adds 8 characters and the suffix: keep the temporary name within 255 bytes too.
    prefix = fit_file_name("." + target.name, ".", limit=NAME_MAX_BYTES - 16)
    fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([neutralise_cell(cell) for cell in header])
            writer.writerows([neutralise_cell(cell) for cell in row] for row in rows)
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
    """`errors.csv`: row, column, message, in the order given (text cells neutralised)."""
    return write_csv_atomic(path, ERRORS_COLUMNS, ((e.row, e.column, e.message) for e in errors))


def write_results_csv(path: Path | str, results: Iterable[ResultRow]) -> Path:
    """`results.csv`: one line per order row; empty cells for absent values, money exact, text
    cells neutralised."""
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
