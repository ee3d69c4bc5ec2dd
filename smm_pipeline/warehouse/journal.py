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

Where the journals live follows the warehouse (`journal_location`): beside a DuckDB file,
files as above; with the warehouse on Postgres, the table `submission_journal` of that
database, so a worker on any machine settles a claim a dead worker on another machine left.
There each entry is one committed INSERT (the `open` marker when the journal starts, then
`send` and `answer` rows) on a connection of the journal's own, and the journal's liveness is
the session advisory lock (JOURNAL_LOCK_CLASS, claim key) that connection holds: the server
drops it when the process dies or its connection is lost, and only then is the claim dead.
No HTTP in either: the warehouse's own companion.
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

from smm_pipeline.warehouse.postgres import PostgresTarget, connect_raw

_SUFFIX = ".jsonl"
JournalLocation = Path | PostgresTarget
JOURNAL_TABLE = "submission_journal"
JOURNAL_LOCK_CLASS = 7240010  # pg_advisory_lock(JOURNAL_LOCK_CLASS, claim key): a live journal
_JOURNAL_DDL = f"""
CREATE TABLE IF NOT EXISTS {JOURNAL_TABLE} (
    claim_id VARCHAR NOT NULL,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    kind VARCHAR NOT NULL CHECK (kind IN ('open', 'send', 'answer')),
    panel VARCHAR,
    ref VARCHAR,
    entry VARCHAR,
    written_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (claim_id, seq)
)
"""


def journal_location(location: Path | str | PostgresTarget) -> JournalLocation:
    """Where a warehouse's journals live: the folder beside a DuckDB file, or (warehouse on
    Postgres) that database's `submission_journal` table."""
    if isinstance(location, PostgresTarget):
        return location
    path = Path(location).resolve()  # one folder, however a process spells the path
    return path.with_name(path.name + ".journal")


def _claim_key(claim_id: str) -> int:
    """The advisory lock's second key of a claim: its first 32 bits, as a signed int4."""
    value = int(claim_id[:8], 16)
    return value - (1 << 32) if value >= 1 << 31 else value


def _pg(target: PostgresTarget):
    """A connection of the journal's own (autocommit), with the table in place."""
    raw = connect_raw(target)
    try:
        # Keepalive probes from the server's side: the session of a machine that vanished
        # (no FIN) ends within about a minute, and with it the claim's advisory lock, so the
        # next run settles that claim.
        for setting, value in (("idle", 30), ("interval", 10), ("count", 3)):
            raw.execute(f"SET tcp_keepalives_{setting} = {value}")
        raw.execute(_JOURNAL_DDL)
    except Exception:
        raw.close()
        raise
    return raw


def AnswerJournal(location: JournalLocation) -> FileJournal | PgJournal:  # noqa: N802
    """This process's journal, where `location` keeps them (journal_location)."""
    if isinstance(location, PostgresTarget):
        return PgJournal(location)
    return FileJournal(location)


class PgJournal:
    """One process's journal in Postgres, live while its connection holds the claim's session
    advisory lock. Thread-safe."""

    def __init__(self, target: PostgresTarget) -> None:
        self.claim_id = uuid.uuid4().hex
        self._conn = _pg(target)
        self._lock = threading.Lock()
        self._broken: Exception | None = None
        try:
            # Locked before the marker is visible: a journal others see is live or dead.
            self._conn.execute(
                "SELECT pg_advisory_lock(%s, %s)", [JOURNAL_LOCK_CLASS, _claim_key(self.claim_id)]
            )
            self._conn.execute(
                f"INSERT INTO {JOURNAL_TABLE} (claim_id, kind) VALUES (%s, 'open')",
                [self.claim_id],
            )
        except Exception:
            self._conn.close()
            raise

    def _append(self, kind: str, panel: str, ref: str, entry: dict | None) -> None:
        text = None if entry is None else json.dumps(entry)  # ASCII: Postgres text holds no NUL
        with self._lock:
            if self._broken is not None:  # after a failed write nothing may follow it
                raise OSError(f"the journal in {JOURNAL_TABLE} failed earlier: {self._broken}")
            try:
                self._conn.execute(
                    f"INSERT INTO {JOURNAL_TABLE} (claim_id, kind, panel, ref, entry) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [self.claim_id, kind, panel, ref, text],
                )
            except Exception as exc:  # the submission stops on OSError, as for a full disk
                self._broken = exc
                raise OSError(
                    f"the journal in {JOURNAL_TABLE} could not be written: {exc}"
                ) from exc

    def sending(self, panel: str, ref: str) -> None:
        """Before the request leaves: from now on the row may exist on the panel."""
        self._append("send", panel, ref, None)

    def answered(self, outcome: dict[str, Any]) -> None:
        """As soon as the outcome is known (`outcome` has at least panel and ref)."""
        self._append("answer", outcome["panel"], outcome["ref"], outcome)

    def close(self) -> None:
        """Delete the entries: call once every claimed row's outcome is in the warehouse."""
        with self._lock:
            try:
                self._conn.execute(
                    f"DELETE FROM {JOURNAL_TABLE} WHERE claim_id = %s", [self.claim_id]
                )
            finally:
                self._conn.close()

    def release(self) -> None:
        """Drop the lock, keeping the entries: the claim now reads as dead."""
        self._conn.close()


class FileJournal:
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
    path: Path | None  # None: entries in Postgres
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


def _pg_claim(claim_id: str, entries: list[tuple[str, str, str, str | None]]) -> DeadClaim:
    claim = DeadClaim(claim_id, None)
    for kind, panel, ref, entry in entries:
        if kind == "send":
            claim.sent.add((panel, ref))
        elif kind == "answer":
            claim.answers[(panel, ref)] = json.loads(entry)
    return claim


@contextlib.contextmanager
def _pg_dead_claims(target: PostgresTarget) -> Iterator[list[DeadClaim]]:
    conn = _pg(target)
    held: list[DeadClaim] = []
    try:
        ids = [r[0] for r in conn.execute(f"SELECT DISTINCT claim_id FROM {JOURNAL_TABLE}")]
        for claim_id in ids:
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", [JOURNAL_LOCK_CLASS, _claim_key(claim_id)]
            ).fetchone()[0]
            if not got:  # its process is alive (or another settler holds it)
                continue
            entries = conn.execute(
                f"SELECT kind, panel, ref, entry FROM {JOURNAL_TABLE} WHERE claim_id = %s "
                "ORDER BY seq",
                [claim_id],
            ).fetchall()
            if entries:  # else settled and deleted by another process meanwhile
                held.append(_pg_claim(claim_id, entries))
        yield held
        for claim in held:
            conn.execute(f"DELETE FROM {JOURNAL_TABLE} WHERE claim_id = %s", [claim.claim_id])
    finally:
        conn.close()  # and with it every lock this settler took


@contextlib.contextmanager
def dead_claims(location: JournalLocation) -> Iterator[list[DeadClaim]]:
    """The journals whose process is gone, each locked by this process while the caller
    settles them; a journal is deleted when the caller's block completes without error."""
    if isinstance(location, PostgresTarget):
        with _pg_dead_claims(location) as claims:
            yield claims
        return
    directory = location
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


def journal_ids(directory: JournalLocation) -> set[str]:
    """Claim ids that have a journal, live or not."""
    if isinstance(directory, PostgresTarget):
        conn = _pg(directory)
        try:
            return {r[0] for r in conn.execute(f"SELECT DISTINCT claim_id FROM {JOURNAL_TABLE}")}
        finally:
            conn.close()
    if not directory.is_dir():
        return set()
    return {path.name.removesuffix(_SUFFIX) for path in directory.glob(f"*{_SUFFIX}")}


def live_claim_ids(directory: JournalLocation) -> set[str]:
    """Claim ids whose process is alive (its journal is locked), for the monitoring checks."""
    if isinstance(directory, PostgresTarget):
        conn = _pg(directory)
        try:
            live = set()
            for (claim_id,) in conn.execute(f"SELECT DISTINCT claim_id FROM {JOURNAL_TABLE}"):
                key = [JOURNAL_LOCK_CLASS, _claim_key(claim_id)]
                if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
                else:
                    live.add(claim_id)
            return live
        finally:
            conn.close()
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
