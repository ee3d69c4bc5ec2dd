"""A read-only replica of the warehouse, so analysts never block the pipeline (README,
Querying while the pipeline runs).

DuckDB allows one writing process per file, and a reader of that file holds a lock the writer
cannot take. So readers never open the warehouse itself: after each write run the pipeline
copies it into `<stem>.read.duckdb` beside it, and analysts open that copy read-only
(`connect_readonly()` in Python, `duckdb -readonly data/warehouse.read.duckdb` in the shell).

Publishing copies the whole database while it holds the warehouse, so it is throttled: a run
publishes only when the replica is older than `pipeline.replica_max_lag_seconds` (default
120 s), and `replica_sensor` publishes what the last runs wrote once that much time has passed
(`replica_is_stale`, from the files' modification times: no connection). The replica is thus
at most about that bound plus the sensor's 30 s behind a changing warehouse.

The copy is built in a temporary file in the same folder and moved over the replica with
`os.replace`, which is atomic: a reader sees the old or the new copy, never half of one, and
a reader holding the old copy open keeps reading it (its file stays alive until closed) while
the next one is published. Views and the `money_div` macro travel with the copy.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

import duckdb

from smm_pipeline.warehouse.db import (
    DEFAULT_LOCK_TIMEOUT,
    Location,
    WarehouseError,
    as_location,
    connect,
    open_with_retry,
    warehouse_location,
)
from smm_pipeline.warehouse.postgres import PostgresTarget, connect_readonly_pg

REPLICA_SUFFIX = ".read.duckdb"


def replica_path(db_path: Path | str) -> Path:
    """`data/warehouse.duckdb` -> `data/warehouse.read.duckdb`."""
    path = Path(db_path)
    return path.with_name(f"{path.stem}{REPLICA_SUFFIX}")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def publish_snapshot(db_path: Path | str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Path:
    """Copy the warehouse into its replica atomically and return the replica's path.

    Call after each run that wrote the warehouse; it takes the write lock (waiting for it
    like any writer) for the copy and the rename, so publishers are serialised end to end.
    """
    db_path = Path(db_path)
    target = replica_path(db_path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    alias = f"snapshot_{uuid.uuid4().hex[:8]}"
    try:
        with connect(db_path, lock_timeout=lock_timeout) as conn:
            source = conn.execute("SELECT current_database()").fetchall()[0][0]
            conn.execute("CHECKPOINT")
            conn.execute(f"ATTACH {_sql_string(str(temp))} AS {alias}")
            try:
                quoted = source.replace('"', '""')
                conn.execute(f'COPY FROM DATABASE "{quoted}" TO {alias}')
                conn.execute(f"CHECKPOINT {alias}")
            finally:
                conn.execute(f"DETACH {alias}")
            # Still under the write lock: a slower publisher's older copy can never land
            # after a newer one.
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temp, target)
    finally:
        _remove_quietly(temp)
        _remove_quietly(temp.with_name(temp.name + ".wal"))
    return target


def replica_age(db_path: Path | str) -> float | None:
    """Seconds since the replica of `db_path` was published (None: never)."""
    path = replica_path(db_path)
    if not path.is_file():
        return None
    return max(0.0, time.time() - path.stat().st_mtime)


def warehouse_mtime(db_path: Path | str) -> float | None:
    """When the warehouse file (or its write-ahead log) last changed (None: no file yet)."""
    path = Path(db_path)
    times = []
    for candidate in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            times.append(candidate.stat().st_mtime)
    return max(times) if times else None


def replica_is_stale(db_path: Path | str, max_lag_seconds: float) -> bool:
    """The warehouse changed after the replica was published, and the replica is at least
    `max_lag_seconds` old (or missing while the warehouse exists)."""
    changed = warehouse_mtime(db_path)
    if changed is None:
        return False
    try:
        published = replica_path(db_path).stat().st_mtime
    except FileNotFoundError:
        return True
    return changed > published and time.time() - published >= max_lag_seconds


def connect_readonly(
    path: Location | str | None = None, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the replica, for notebooks and ad-hoc queries.

    `path` is the warehouse file (its replica is opened) or the replica itself; by default the
    warehouse of `SMM_WAREHOUSE_URL`, else `SMM_DUCKDB_PATH` / `SMM_DATA_DIR`. On Postgres (that
    URL, a PostgresTarget or a postgresql:// string) it is a read-only session on the warehouse
    itself: Postgres readers never block its writers, so there is no replica. The caller
    closes it (or uses `with`). Within one process, close a replica connection before
    expecting a newer copy: DuckDB hands a process the database it already has open for the
    same path.
    """
    location = as_location(path) if path is not None else warehouse_location()
    if isinstance(location, PostgresTarget):
        return connect_readonly_pg(location)
    path = location
    target = path if path.name.endswith(REPLICA_SUFFIX) else replica_path(path)
    if not target.exists():
        raise WarehouseError(
            f"no replica at {target} yet: the pipeline publishes one after each run that "
            f"writes the warehouse (or call publish_snapshot on {replica_source(target)})"
        )
    return open_with_retry(target, read_only=True, lock_timeout=lock_timeout)


def replica_source(replica: Path) -> Path:
    """The warehouse file a replica is copied from."""
    return replica.with_name(replica.name[: -len(REPLICA_SUFFIX)] + ".duckdb")
