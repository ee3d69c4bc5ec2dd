"""The drop folders: which files are complete, and where a handled file goes.

A file is picked up once it is complete: it looked the same (size, mtime and ctime) at two
looks at least one sensor interval apart. A sensor cannot tell a file that was written elsewhere
and moved in from one still being written (an old mtime proves nothing: `cp -p`, `rsync -t`
and unzip keep it), so there is no "complete at first sight": every file waits one to two
sensor intervals. Hidden files, editors' lock files and partial downloads (`.tmp`, `.part`,
`.crdownload`, `~`) are left alone; writing to `x.csv.part` and renaming it to `x.csv` is the
way to make sure a half-written file is never seen under its final name. Only files ending in
`.csv` are read.

An entry that cannot be a drop file (a folder or a named pipe called `x.csv`, a symbolic link,
a name that is not UTF-8, a file that vanished or cannot be read) is reported with its reason
and skipped; it never keeps the other files from being picked up.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from smm_pipeline.errors import FileRejected, Unreadable
from smm_pipeline.intake.reports import errors_report_path, fit_file_name, write_errors_csv
from smm_pipeline.intake.row_errors import RowError

KINDS = ("orders", "refills", "cancels")
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


@dataclass(frozen=True)
class Unusable:
    """An inbox entry that looks like a drop file but cannot be one, and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class Listing:
    """What a look at a drop folder found: candidate files, oldest first, and unusable
    entries."""

    files: list[Observation]
    unusable: list[Unusable]


def _is_candidate(name: str) -> bool:
    lower = name.lower()
    return (
        not name.startswith((".", "~$"))
        and not lower.endswith(_PARTIAL_SUFFIXES)
        and lower.endswith(".csv")
    )


def _kind_of(mode: int) -> str | None:
    """Why an entry of this mode is no drop file (None: a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "is a symbolic link; put the file itself in the inbox"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file"
    return "is not a regular file (a socket or a device)"


def scan(folder: Path) -> Listing:
    """Look at a drop folder once: its candidate CSV files and the entries it cannot use."""
    files: list[Observation] = []
    unusable: list[Unusable] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return Listing([], [])
    for entry in entries:
        name = entry.name
        if not _is_candidate(name):
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            unusable.append(Unusable(shown, "its name is not valid UTF-8; rename the file"))
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            unusable.append(Unusable(name, "disappeared while the folder was being looked at"))
            continue
        except OSError as exc:
            unusable.append(Unusable(name, f"cannot be looked at ({exc.strerror or exc})"))
            continue
        why = _kind_of(st.st_mode)
        if why is not None:
            unusable.append(Unusable(name, why))
            continue
        files.append(Observation(name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    files.sort(key=lambda o: (o.mtime_ns, o.name))
    unusable.sort(key=lambda u: u.name)
    return Listing(files, unusable)


def is_complete(
    obs: Observation, previous: list | None, *, now: float | None = None, gap: float
) -> bool:
    """Whether `obs` is complete: the previous look (`first_look(...)`'s entry) saw the very
    same stamp at least `gap` seconds before `now`."""
    seen_at = _first_look_time(obs, previous)
    now = time.time() if now is None else now
    return seen_at is not None and now - seen_at >= gap


def first_look(obs: Observation, previous: list | None, *, now: float | None = None) -> list:
    """The entry to remember for a file not yet complete: its stamp and the wall time of the
    first look that saw this stamp (kept while the file stays unchanged)."""
    now = time.time() if now is None else now
    seen_at = _first_look_time(obs, previous)
    if seen_at is None or seen_at > now:  # changed, new, an old cursor's entry, or clock skew
        seen_at = now
    return [*obs.stamp, seen_at]


def _first_look_time(obs: Observation, previous: list | None) -> float | None:
    if (
        isinstance(previous, list)
        and len(previous) == len(obs.stamp) + 1
        and list(previous[: len(obs.stamp)]) == obs.stamp
        and isinstance(previous[-1], int | float)
        and not isinstance(previous[-1], bool)
    ):
        return float(previous[-1])
    return None


def _same(st: os.stat_result, obs: Observation) -> bool:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns] == obs.stamp


def read_observed(folder: Path, obs: Observation) -> bytes:
    """The bytes of the file `obs` saw, or Unreadable. Never follows a symbolic link, never
    blocks on a named pipe, and refuses bytes that changed since the look."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(folder / obs.name, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Unreadable("disappeared before it could be read") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable("is a symbolic link; put the file itself in the inbox") from None
        raise Unreadable(f"could not be read ({exc.strerror or exc})") from None
    try:
        before = os.fstat(fd)
        why = _kind_of(before.st_mode)
        if why is not None:
            raise Unreadable(why)
        if not _same(before, obs):
            raise Unreadable("changed since the last look", changed=True)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        if not _same(os.fstat(fd), obs):
            raise Unreadable("changed while it was being read", changed=True)
    except OSError as exc:
        raise Unreadable(f"could not be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    content = b"".join(chunks)
    if len(content) != obs.size:
        raise Unreadable("changed while it was being read", changed=True)
    return content


def free_target(
    target_dir: Path, name: str, report: Callable[[Path, str], Path] | None = None
) -> Path:
    """`target_dir/name`, or a time-stamped variant when that file (or, given `report`, which
    names a file's report, that report) already exists: earlier files are never overwritten.
    A variant that would be longer than a file name may be keeps a shortened stem
    (`fit_file_name`)."""
    target = target_dir / name
    if target.exists() or (report is not None and report(target_dir, target.name).exists()):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        stem, suffix = Path(name).stem, Path(name).suffix
        target = target_dir / fit_file_name(stem, f".{stamp}{suffix}")
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


def reject_file(
    source: Path, folders: Folders, errors: list[RowError], *, nothing: str
) -> FileRejected:
    """Move a refused file to rejected/ beside its `<name>.errors.csv`."""
    moved = move_handled(source, folders.rejected, errors_report_path)
    errors_file = write_errors_csv(errors_report_path(folders.rejected, moved.name), errors)
    return FileRejected(source.name, errors, errors_file, nothing)
