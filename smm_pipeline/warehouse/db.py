"""Short-lived DuckDB connections to the warehouse file, shared by concurrent run processes.

DuckDB lets one process open a file for writing at a time and makes every other process fail
at once with "Could not set lock on file". Runs are separate processes that may run at once, so
no run keeps the file open: every read or write is a short connection (claims, outcomes,
observations), never held across a network wait. Two layers make the hand-over between
processes prompt and fair:

- the **gate**: before opening the file, a process takes an exclusive `flock` on
  `<warehouse>.gate` beside it (held while any connection of this process is open, released by
  the kernel if the process dies). Waiting processes retry every few milliseconds, so the next
  one opens the file as soon as the last connection of the holder closes, instead of backing
  off for seconds on DuckDB's lock error;
- DuckDB's own lock: something outside the pipeline (a DuckDB shell on the live file) may still
  hold it, so opening retries that error with a short exponential backoff.

Both waits give up after `lock_timeout` seconds with WarehouseLockedError naming the file.
Every connection speaks UTC so TIMESTAMPTZ values never depend on the host's time zone.

With `SMM_WAREHOUSE_URL=postgresql://...` the warehouse is a Postgres database instead
(`warehouse/postgres.py`): `connect` hands out the same kind of short connection, with no gate
(Postgres takes many writers at once and locks rows, not the file) and the same migrations.
A *location* is either: a `Path` (the DuckDB file) or a `PostgresTarget`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import duckdb

from smm_pipeline.config import PROJECT_ROOT
from smm_pipeline.errors import WarehouseError, WarehouseLockedError
from smm_pipeline.warehouse.dialect import ensure_functions
from smm_pipeline.warehouse.migrations import apply_migrations
from smm_pipeline.warehouse.postgres import PostgresTarget, is_postgres, pg_connect

Location = Path | PostgresTarget
# Migrations on Postgres run under this advisory lock, so two processes starting at once do
# not both apply an entry.
_PG_MIGRATION_LOCK = 7_240_001

log = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT = 30.0
_FIRST_DELAY = 0.02
_MAX_DELAY = 0.5
_GATE_RETRY_SECONDS = (0.001, 0.005)
GATE_SUFFIX = ".gate"

# Files this process has already brought up to date: later write connections skip the check.
_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def default_db_path(environ: Mapping[str, str] | None = None) -> Path:
    """The warehouse file: `SMM_DUCKDB_PATH`, else `SMM_DATA_DIR/warehouse.duckdb` (README,
    Configuration: Environment).

    Resolved from the environment alone so that notebooks need no panels.yaml or API keys.
    """
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("SMM_DATA_DIR") or PROJECT_ROOT / "data")
    return Path(env.get("SMM_DUCKDB_PATH") or data_dir / "warehouse.duckdb")


def warehouse_location(environ: Mapping[str, str] | None = None) -> Location:
    """The warehouse: Postgres when `SMM_WAREHOUSE_URL` is set, else the DuckDB file."""
    env = os.environ if environ is None else environ
    url = (env.get("SMM_WAREHOUSE_URL") or "").strip()
    return PostgresTarget(url) if url else default_db_path(env)


def as_location(location: Location | str) -> Location:
    """A location from a Path, a PostgresTarget, or a string (a postgresql:// URL or a path)."""
    if isinstance(location, PostgresTarget):
        return location
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresTarget(text)
    return Path(location)


def location_key(location: Location) -> str:
    """A name for a location fit for logs and caches (no password)."""
    return location.safe if isinstance(location, PostgresTarget) else str(Path(location).resolve())


class _Gate:
    """This process's share of one warehouse file: an exclusive flock on `<file>.gate`, taken
    by the first open connection of the process and released with the last one."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + GATE_SUFFIX)
        self._lock = threading.Lock()
        self._users = 0
        self._fd: int | None = None

    def enter(self, deadline: float, db_path: Path, lock_timeout: float) -> None:
        with self._lock:
            if self._users == 0:
                self._take(deadline, db_path, lock_timeout)
            self._users += 1

    def _take(self, deadline: float, db_path: Path, lock_timeout: float) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise WarehouseLockedError(
                        f"DuckDB file {db_path} stayed in use by another pipeline process for "
                        f"more than {lock_timeout:g} s (its gate {self.path} is held): a run "
                        "holding the warehouse that long is a bug worth reporting; retry"
                    ) from None
                time.sleep(random.uniform(*_GATE_RETRY_SECONDS))

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None


_gates: dict[str, _Gate] = {}
_gates_lock = threading.Lock()


def _gate(path: Path) -> _Gate:
    key = str(path.resolve())
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = _Gate(Path(key))
        return gate


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, duckdb.IOException) and "lock" in text


def open_with_retry(
    path: Path, *, read_only: bool, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
) -> duckdb.DuckDBPyConnection:
    """Open `path`, waiting for another process's lock for up to `lock_timeout` seconds."""
    deadline = time.monotonic() + lock_timeout
    delay = _FIRST_DELAY
    attempt = 0
    while True:
        attempt += 1
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WarehouseLockedError(
                    f"DuckDB file {path} stayed locked by another process for more than "
                    f"{lock_timeout:g} s ({attempt} attempts); close the other connection "
                    f"(a notebook or DuckDB shell on this file? analysts should read the "
                    f"replica instead) and retry. DuckDB said: {exc}"
                ) from None
            pause = min(delay * random.uniform(0.5, 1.0), remaining)
            log.info(
                "DuckDB file %s is locked by another process; retrying in %.2f s (attempt %d)",
                path,
                pause,
                attempt,
            )
            time.sleep(pause)
            delay = min(delay * 2, _MAX_DELAY)
            continue
        try:
            conn.execute("SET TimeZone = 'UTC'")
        except BaseException:
            conn.close()
            raise
        return conn


def _ensure_migrated(conn: duckdb.DuckDBPyConnection, key: str) -> None:
    with _migrate_lock:
        if key in _migrated:
            return
        if is_postgres(conn):
            conn.execute("SELECT pg_advisory_lock(?)", [_PG_MIGRATION_LOCK])
            try:
                ensure_functions(conn)
                applied = apply_migrations(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(?)", [_PG_MIGRATION_LOCK])
        else:
            applied = apply_migrations(conn)
        if applied:
            log.info("warehouse %s: applied migrations %s", key, ", ".join(applied))
        _migrated.add(key)


@contextmanager
def connect(
    path: Location | str,
    *,
    read_only: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the warehouse, closed on exit.

    A write connection creates the folder and the file and, the first time this process opens
    the file, applies pending migrations, so callers never see an old schema. A read-only
    connection needs the file to exist and never migrates. On Postgres (a PostgresTarget or
    a postgresql:// string) the same, without gate or file: a read-only connection refuses
    writes, and a write connection migrates the database once per process.
    """
    location = as_location(path)
    if isinstance(location, PostgresTarget):
        with pg_connect(location, read_only=read_only) as pg:
            if not read_only:
                _ensure_migrated(pg, location.safe)
            yield pg
        return
    path = location
    key = str(path.resolve())
    if read_only:
        if not path.exists():
            raise WarehouseError(
                f"DuckDB file {path} does not exist yet; a pipeline run creates it"
            )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            with _migrate_lock:
                _migrated.discard(key)
    gate = _gate(path)
    started = time.monotonic()
    gate.enter(started + lock_timeout, path, lock_timeout)
    try:
        remaining = max(0.1, lock_timeout - (time.monotonic() - started))
        conn = open_with_retry(path, read_only=read_only, lock_timeout=remaining)
        try:
            if not read_only:
                _ensure_migrated(conn, key)
            yield conn
        finally:
            conn.close()
    finally:
        gate.leave()
