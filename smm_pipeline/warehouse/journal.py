"""The answer journal: what a submitting process sent and heard, durable before it moves on.

The outbox in the warehouse is written in short sections (claims, then outcomes in batches),
so that no process holds the warehouse while it waits on a panel. Between those sections the
journal keeps the truth. Each submitting process has one journal file,
`<warehouse>.journal/<claim_id>.jsonl`, and flags the rows it claims `sending` with that
claim id. A worker appends, each time flushed to disk (fdatasync) before it goes on:

- `send` (panel, ref) before the row's `add` leaves;
- `answer` (the outcome) as soon as the panel's answer (or the failure) is in.

The file is locked (flock) for as long as its process lives, so any other process can tell a
live claim from a dead one. A dead claim is settled by `settle_dead_claims`: a row with an
answer gets it; a row with a `send` but no answer was truly in flight and becomes ambiguous;
a row without a `send` provably never left and is pending again. A crash therefore turns into
ambiguous only the requests that were in flight: at most `max_concurrency` per panel.

Files only, no HTTP: the warehouse's own companion on the same disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SUFFIX = ".jsonl"


def journal_dir(db_path: Path | str) -> Path:
    """The journal folder beside a warehouse file."""
    path = Path(db_path).resolve()  # one folder, however a process spells the path
    return path.with_name(path.name + ".journal")


class AnswerJournal:
    """One process's journal file, locked while the process uses it. Thread-safe."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.claim_id = uuid.uuid4().hex
        self.path = directory / f"{self.claim_id}{_SUFFIX}"
        # Created and locked under a name settle_dead_claims ignores, then renamed: a file
        # it sees is always locked by a live owner or left by a dead one.
        staging = directory / f".{self.claim_id}.new"
        self._fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(staging, self.path)
        self._lock = threading.Lock()
        self._broken: OSError | None = None

    def _append(self, entry: dict) -> None:
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._broken is not None:  # after a failed write nothing may follow its cut
                raise OSError(f"the journal {self.path} failed earlier: {self._broken}")
            try:
                view = memoryview(line)
                while view:  # a short write (a nearly full disk) goes on, or raises
                    view = view[os.write(self._fd, view) :]
                os.fdatasync(self._fd)
            except OSError as exc:
                self._broken = exc
                raise

    def sending(self, panel: str, ref: str) -> None:
        """Before the request leaves: from now on the row may exist on the panel."""
        self._append({"k": "send", "panel": panel, "ref": ref})

    def answered(self, outcome: dict[str, Any]) -> None:
        """As soon as the outcome is known (`outcome` has at least panel and ref)."""
        self._append({**outcome, "k": "answer"})

    def close(self) -> None:
        """Delete the file: call once every claimed row's outcome is in the warehouse."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)

    def release(self) -> None:
        """Unlock, keeping the file: its claim now reads as dead, for settle_dead_claims."""
        os.close(self._fd)


@dataclass
class DeadClaim:
    """What a dead process's journal says."""

    claim_id: str
    path: Path
    sent: set[tuple[str, str]] = field(default_factory=set)
    answers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # A line other than the last could not be read: the journal cannot prove a row unsent.
    damaged: bool = False


def _read(path: Path) -> DeadClaim:
    claim = DeadClaim(path.name.removesuffix(_SUFFIX), path)
    with path.open("rb") as f:
        lines = f.read().split(b"\n")
    last = len(lines) - 1 if lines[-1] else len(lines) - 2
    for at, raw in enumerate(lines):
        if raw:
            try:
                entry = json.loads(raw)
            except ValueError:  # the last line: cut by the crash before its send left
                claim.damaged |= at != last
                continue
            key = (entry["panel"], entry["ref"])
            if entry["k"] == "send":
                claim.sent.add(key)
            else:
                claim.answers[key] = entry
    return claim


@contextlib.contextmanager
def dead_claims(directory: Path) -> Iterator[list[DeadClaim]]:
    """The journals whose process is gone, each locked by this process while the caller
    settles them; a journal is deleted when the caller's block completes without error."""
    held: list[tuple[int, DeadClaim]] = []
    try:
        for path in sorted(directory.glob(f"*{_SUFFIX}")) if directory.is_dir() else []:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # settled by another process meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its process is alive
                os.close(fd)
                continue
            if not path.exists():  # settled and deleted by another process meanwhile
                os.close(fd)
                continue
            held.append((fd, _read(path)))
        yield [claim for _, claim in held]
        for _, claim in held:
            with contextlib.suppress(FileNotFoundError):
                claim.path.unlink()
    finally:
        for fd, _ in held:
            os.close(fd)


def journal_ids(directory: Path) -> set[str]:
    """Claim ids that have a journal file, live or not."""
    if not directory.is_dir():
        return set()
    return {path.name.removesuffix(_SUFFIX) for path in directory.glob(f"*{_SUFFIX}")}


def live_claim_ids(directory: Path) -> set[str]:
    """Claim ids whose process is alive (its journal is locked), for the monitoring checks."""
    live = set()
    for path in directory.glob(f"*{_SUFFIX}") if directory.is_dir() else []:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            live.add(path.name.removesuffix(_SUFFIX))
        finally:
            os.close(fd)
    return live
