"""Short-lived DuckDB connections to the warehouse file.

DuckDB lets one process write a file at a time and makes everyone else fail at once with
"Could not set lock on file". Our runs are serialised by the Dagster pool `duckdb`, but a
notebook or a DuckDB shell may still hold the file for a moment, so opening waits for the lock
(exponential backoff with jitter) instead of failing a run that would succeed a second later.
Every connection speaks UTC so TIMESTAMPTZ values never depend on the host's time zone.
"""

from __future__ import annotations

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
from smm_pipeline.warehouse.migrations import apply_migrations

log = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT = 30.0
_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0

# Files this process has already brought up to date: later write connections skip the check.
_migrated: set[str] = set()
_migrate_lock = threading.Lock()


class WarehouseError(RuntimeError):
    """The warehouse file cannot be used; the message names the file and what to do."""


class WarehouseLockedError(WarehouseError):
    """Another process kept the DuckDB file locked longer than we were willing to wait."""


def default_db_path(environ: Mapping[str, str] | None = None) -> Path:
    """The warehouse file of SPEC §2 (`SMM_DUCKDB_PATH`, else `SMM_DATA_DIR/warehouse.duckdb`).

    Resolved from the environment alone so that notebooks need no panels.yaml or API keys.
    """
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("SMM_DATA_DIR") or PROJECT_ROOT / "data")
    return Path(env.get("SMM_DUCKDB_PATH") or data_dir / "warehouse.duckdb")


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
        applied = apply_migrations(conn)
        if applied:
            log.info("warehouse %s: applied migrations %s", key, ", ".join(applied))
        _migrated.add(key)


@contextmanager
def connect(
    path: Path | str,
    *,
    read_only: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the warehouse file, closed on exit.

    A write connection creates the folder and the file and, the first time this process opens
    the file, applies pending migrations, so callers never see an old schema. A read-only
    connection needs the file to exist and never migrates.
    """
    path = Path(path)
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
    conn = open_with_retry(path, read_only=read_only, lock_timeout=lock_timeout)
    try:
        if not read_only:
            _ensure_migrated(conn, key)
        yield conn
    finally:
        conn.close()
