"""The drop folders: which files are complete, and where a handled file goes.

A file is picked up once it is complete: written elsewhere and moved in (its modification time
is then already old enough), or unchanged in size and mtime since the previous look. Hidden
files, editors' lock files and partial downloads (`.tmp`, `.part`, `.crdownload`, `~`) are left
alone. Only files ending in `.csv` are read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from smm_pipeline.intake.reports import errors_report_path, write_errors_csv
from smm_pipeline.intake.row_errors import RowError

KINDS = ("orders", "refills", "cancels")
# A file untouched this long is taken as complete at first sight (it was written elsewhere and
# moved in). Long, because a writer that stalls longer mid-file would be read half-written; a
# fresher file simply waits for the sensor's next look (15 s) to find it unchanged.
SETTLE_SECONDS = 30.0
_PARTIAL_SUFFIXES = (".tmp", ".part", ".crdownload", ".partial", "~")


@dataclass(frozen=True)
class Folders:
    data_dir: Path

    def inbox(self, kind: str) -> Path:
        return self.data_dir / "inbox" / kind

    @property
    def processed(self) -> Path:
        return self.data_dir / "processed"

    @property
    def rejected(self) -> Path:
        return self.data_dir / "rejected"

    def ensure(self) -> None:
        for kind in KINDS:
            self.inbox(kind).mkdir(parents=True, exist_ok=True)
        self.processed.mkdir(parents=True, exist_ok=True)
        self.rejected.mkdir(parents=True, exist_ok=True)


def bare_file_name(name: str) -> str:
    """`name` if it names a file directly inside a drop folder; ValueError otherwise (a run's
    config must not reach ../processed/x.csv or an absolute path)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(
            f"file_name must be a bare file name inside the inbox folder (like 'orders.csv'), "
            f"got {name!r}"
        )
    return name


@dataclass(frozen=True)
class Observation:
    """A file as the sensor sees it. The ctime is part of its identity: mv, cp -p and rsync -t
    keep the mtime, but moving or copying a file in always sets a new ctime."""

    name: str
    size: int
    mtime_ns: int
    ctime_ns: int

    @property
    def stamp(self) -> list[int]:
        return [self.size, self.mtime_ns, self.ctime_ns]


def observe(folder: Path) -> list[Observation]:
    """The candidate CSV files in a drop folder, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if (
                name.startswith((".", "~$"))
                or name.lower().endswith(_PARTIAL_SUFFIXES)
                or not name.lower().endswith(".csv")
                or not entry.is_file(follow_symlinks=False)
            ):
                continue
            st = entry.stat(follow_symlinks=False)
            found.append(Observation(name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return sorted(found, key=lambda o: (o.mtime_ns, o.name))


def is_complete(
    obs: Observation,
    previous: list[int] | None,
    *,
    now: float | None = None,
    settle_seconds: float = SETTLE_SECONDS,
) -> bool:
    """Complete when unchanged since the last look, or not touched for `settle_seconds`."""
    if previous is not None and list(previous[: len(obs.stamp)]) == obs.stamp:
        return True
    now = time.time() if now is None else now
    return now - obs.mtime_ns / 1e9 >= settle_seconds


def free_target(
    target_dir: Path, name: str, report: Callable[[Path, str], Path] | None = None
) -> Path:
    """`target_dir/name`, or a time-stamped variant when that file (or, given `report`, which
    names a file's report, that report) already exists: earlier files are never overwritten."""
    target = target_dir / name
    if target.exists() or (report is not None and report(target_dir, target.name).exists()):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        target = target_dir / f"{target.stem}.{stamp}{target.suffix}"
    return target


def move_handled(
    source: Path, target_dir: Path, report: Callable[[Path, str], Path] | None = None
) -> Path:
    """Move a handled file out of the inbox without overwriting an earlier one of that name,
    nor (given `report`) an earlier file's report."""
    target_dir.mkdir(parents=True, exist_ok=True)
    target = free_target(target_dir, source.name, report)
    os.replace(source, target)
    return target


class FileRejected(Exception):
    """A drop file refused as a whole (nothing was sent); it is in rejected/ with errors.csv."""

    def __init__(
        self, file_name: str, errors: list[RowError], errors_file: Path, nothing: str
    ) -> None:
        self.file_name = file_name
        self.errors = errors
        self.errors_file = errors_file
        first = "; ".join(str(e) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        self.summary = (
            f"{file_name} was rejected with {len(errors)} error(s), nothing was {nothing}: "
            f"{first}{more}. See {errors_file}."
        )
        super().__init__(self.summary)

    def preview_frame(self, limit: int = 20) -> pd.DataFrame:
        return pd.DataFrame(
            [(e.row, e.column, e.message) for e in self.errors[:limit]],
            columns=["row", "column", "message"],
        )


def reject_file(
    source: Path, folders: Folders, errors: list[RowError], *, nothing: str
) -> FileRejected:
    """Move a refused file to rejected/ beside its `<name>.errors.csv`."""
    moved = move_handled(source, folders.rejected, errors_report_path)
    errors_file = write_errors_csv(errors_report_path(folders.rejected, moved.name), errors)
    return FileRejected(source.name, errors, errors_file, nothing)
