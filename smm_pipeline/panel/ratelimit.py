"""Each panel's request budget and concurrency cap, shared by every process that talks to it.

A panel allows `rate_limit_per_minute` requests and `max_concurrency` at once. Dagster runs are
separate processes, so both limits live outside any one process: in the warehouse's Postgres
when the warehouse is on Postgres (runs may then be on several machines), else in a budget
folder on this machine (`SMM_DATA_DIR/panel_budget/` for the pipeline). Both keep the same
rules:

- **Rate**: a pyrate-limiter bucket (a sliding-window log, one table per panel) taken with a
  fresh timestamp while every other process is held off. Two rates hold at once: the minute's
  budget, and a sixtieth of it in any second (below 60 a minute: one request per 60/rate
  seconds), so the budget is never spent in one burst.
- **Priority**: a submission waiting for the budget announces itself (a shared lock); a poll
  takes a request only while no submission is announced (it tests that lock), so a submission
  running at the rate limit leaves polls nothing and polls spend only what submissions leave.
  Polls also stop at `POLL_SHARE` of each minute, so a submission that starts always finds
  room at once. A poll waits at most a bounded time (`wait`): then it gives up with
  `BudgetExhausted` (nothing was sent), and the poll defers the rest of its orders to the next
  run instead of queueing behind the submission.
- **Concurrency**: `max_concurrency` slots per panel, each held with a lock while a request is
  in flight, released by the kernel or the database server if the process dies.
- **Back-off**: a 429's Retry-After holds every process's requests to that panel, through a
  `not_before` row beside the buckets.

In a folder (`budget_dir=<Path>`): pyrate's `SQLiteBucket` in `budget.sqlite`, serialised by a
blocking `flock` on `budget.sqlite.lock`; a shared `flock` on `<panel>.submitting` announces a
submission; the slots are `<panel>.slots/<i>.lock` files held with `flock`.

On Postgres (`budget_dir=<PostgresTarget>`), in the schema `panel_budget` of the warehouse
database (created here, not by the warehouse migrations): pyrate's `PostgresBucket` (table
`ratelimit___<panel>`), taken in a transaction that first holds the transaction advisory lock
`(panel key, -1)` and then reads the database clock, so machines whose clocks differ still
count one timeline; a submission is announced by the shared session advisory lock
`(panel key, -2)`; slot `i` is the session advisory lock `(panel key, i)`; a 429's
Retry-After is a `not_before` time on the database clock. Each process keeps one connection
to the budget (apart from the warehouse's data connections) for all of it: the session locks
live on it, so the server frees the slots of a process that dies at once, and, by TCP
keepalive, those of a machine that vanishes within about a minute.

Without either (`budget_dir=None`, the library default for scripts and tests) the same
buckets live in a private in-memory SQLite database: shared by the threads of one process only.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pyrate_limiter import Rate, RateItem, SQLiteBucket

from smm_pipeline.errors import WarehouseError
from smm_pipeline.panel.errors import BudgetExhausted

if TYPE_CHECKING:
    from smm_pipeline.warehouse.postgres import PostgresTarget

    BudgetLocation = Path | PostgresTarget

log = logging.getLogger(__name__)

BUDGET_FILE = "budget.sqlite"
POLL_SHARE = 0.9  # of each minute's budget: the rest is kept for submissions
_MINUTE_MS = 60_000
_WINDOW_MS = 61_000  # the minute, with a second's margin for the way to the panel
_SLOT_RETRY_SECONDS = (0.002, 0.02)
_POLL_RECHECK = 0.05
_LEAK_EVERY_SECONDS = 10.0
_NOT_BEFORE_EVERY_SECONDS = 0.5


class Priority(Enum):
    SUBMIT = "submit"  # writes, and the reads a submission needs (balance, catalog)
    POLL = "poll"  # status and refill-status polls: what is left of the budget


def _rates(per_minute: int) -> list[Rate]:
    """The minute's budget, preceded by a per-second one (a sixtieth of it, rounded up; below
    60 a minute, one request per 60/rate seconds), so the budget is never spent in a burst at
    the start of a minute. The minute is counted over 61 s: a request's way to the panel
    varies, and the panel counts by arrival. pyrate wants generous-before-tight order."""
    per_minute = max(1, per_minute)
    if per_minute == 1:
        return [Rate(1, _WINDOW_MS)]
    if per_minute < 60:
        return [Rate(1, _MINUTE_MS // per_minute), Rate(per_minute, _WINDOW_MS)]
    return [Rate(math.ceil(per_minute / 60), 1000), Rate(per_minute, _WINDOW_MS)]


def poll_limit(per_minute: int) -> int:
    """How many requests a minute polls may take of a budget of `per_minute`."""
    return max(1, math.floor(per_minute * POLL_SHARE))


def _wait_of(wait_ms: object) -> float:
    """A bucket's `waiting()` figure as seconds to wait before trying again."""
    return max(0.001, wait_ms / 1000) if isinstance(wait_ms, int) and wait_ms >= 0 else 0.05


class _Backend(Protocol):
    """Where one panel's budget lives (this process, a folder, or Postgres)."""

    def describe(self) -> str: ...

    def take(self, priority: Priority) -> float:
        """One request of the budget now (0.0), else the seconds to wait before trying again."""

    def acquire_slot(self, deadline: float | None) -> Any | None: ...

    def try_slot(self) -> Any | None: ...

    def release_slot(self, held: Any) -> None: ...

    def announce(self) -> AbstractContextManager[None]:
        """A submission waits for the budget while inside."""

    def anyone_waiting(self) -> bool: ...

    def not_before(self) -> float:
        """The latest Retry-After of any process, as this machine's epoch seconds (0: none)."""

    def back_off(self, seconds: float) -> None: ...

    def spent_last_minute(self) -> int: ...


# ------------------------------------------------------------------ this process, or a folder


class _Slots:
    """At most `n` holders across processes: `n` lock files, each held with flock."""

    def __init__(self, folder: Path, panel: str, n: int) -> None:
        folder = folder / f"{panel}.slots"
        folder.mkdir(parents=True, exist_ok=True)
        self._paths = [folder / f"{i}.lock" for i in range(n)]
        self._local = [threading.Lock() for _ in range(n)]
        self._fds: list[int | None] = [None] * n

    def _try(self, i: int) -> bool:
        if not self._local[i].acquire(blocking=False):
            return False
        try:
            fd = self._fds[i]
            if fd is None:
                fd = self._fds[i] = os.open(self._paths[i], os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            self._local[i].release()
            return False

    def try_any(self) -> int | None:
        order = list(range(len(self._paths)))
        random.shuffle(order)
        for i in order:
            if self._try(i):
                return i
        return None

    def release(self, i: int) -> None:
        fd = self._fds[i]
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self._local[i].release()


def _poll_for_slot(try_slot: Any, deadline: float | None) -> Any | None:
    """A slot from `try_slot`, tried every few milliseconds until `deadline` (None: no end)."""
    while True:
        held = try_slot()
        if held is not None:
            return held
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(random.uniform(*_SLOT_RETRY_SECONDS))


class _FileLock:
    """A lock shared by the threads of this process and by every process: an RLock, and a
    blocking flock on one file while a thread of this process holds it (the kernel wakes the
    next waiter at once; filelock's polling would add up to 50 ms a wait)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> _FileLock:
        self._rlock.acquire()
        if self._depth == 0:
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                self._rlock.release()
                raise
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
        self._rlock.release()


class _Intent:
    """Who is waiting to submit: a shared flock on one file per panel (or, within one
    process, a counter), held by each submitter while it waits for the budget."""

    def __init__(self, folder: Path | None, panel: str) -> None:
        self._path = None if folder is None else folder / f"{panel}.submitting"
        self._lock = threading.Lock()
        self._waiting = 0

    @contextmanager
    def waiting(self) -> Iterator[None]:
        if self._path is None:
            with self._lock:
                self._waiting += 1
            try:
                yield
            finally:
                with self._lock:
                    self._waiting -= 1
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def anyone_waiting(self) -> bool:
        if self._path is None:
            with self._lock:
                return self._waiting > 0
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)


class _LocalBackend:
    """The budget in this process's memory (`folder` None) or in a folder on this machine."""

    def __init__(self, panel: str, per_minute: int, max_concurrency: int, folder: Path | None):
        self.panel = panel
        self.folder = folder
        self._table = table = "panel_" + panel.encode().hex()
        if folder is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level="DEFERRED")
            lock: threading.RLock | _FileLock = threading.RLock()
            conn.execute(f"CREATE TABLE '{table}' (name VARCHAR, item_timestamp INTEGER)")
            conn.execute(f"CREATE INDEX 'idx_{table}' ON '{table}' (item_timestamp)")
            self._semaphore: threading.BoundedSemaphore | None = threading.BoundedSemaphore(
                max_concurrency
            )
            self._slots: _Slots | None = None
        else:
            folder.mkdir(parents=True, exist_ok=True)
            lock = _FileLock(folder / (BUDGET_FILE + ".lock"))
            with lock:
                conn = sqlite3.connect(
                    folder / BUDGET_FILE, check_same_thread=False, isolation_level="DEFERRED"
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # a budget needs no fsync
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS '{table}' (name VARCHAR, item_timestamp INTEGER)"
                )
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS 'idx_{table}' ON '{table}' (item_timestamp)"
                )
                conn.commit()
            self._semaphore = None
            self._slots = _Slots(folder, panel, max_concurrency)
        with lock:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS not_before (panel TEXT PRIMARY KEY, until_ms INTEGER)"
            )
            conn.commit()
        self._conn, self._lock = conn, lock
        self._intent = _Intent(folder, panel)
        submit = SQLiteBucket(_rates(per_minute), conn, table, lock=lock)
        poll = SQLiteBucket(_rates(poll_limit(per_minute)), conn, table, lock=lock)
        self._buckets = {Priority.SUBMIT: submit, Priority.POLL: poll}
        self._next_leak = 0.0

    def describe(self) -> str:
        return str(self.folder) if self.folder is not None else "this process"

    def take(self, priority: Priority) -> float:
        bucket = self._buckets[priority]
        with self._lock:
            now_ms = bucket.now()
            if time.monotonic() >= self._next_leak:
                self._next_leak = time.monotonic() + _LEAK_EVERY_SECONDS
                self._buckets[Priority.SUBMIT].leak(now_ms)
            item = RateItem(self.panel, now_ms)
            if bucket.put(item):
                return 0.0
            wait_ms = bucket.waiting(item)
        return _wait_of(wait_ms)

    def acquire_slot(self, deadline: float | None) -> int | None:
        if self._semaphore is not None:
            if deadline is None:
                self._semaphore.acquire()
                return 0
            left = max(0.0, deadline - time.monotonic())
            return 0 if self._semaphore.acquire(timeout=left) else None
        assert self._slots is not None
        return _poll_for_slot(self._slots.try_any, deadline)

    def try_slot(self) -> int | None:
        if self._semaphore is not None:
            return 0 if self._semaphore.acquire(blocking=False) else None
        assert self._slots is not None
        return self._slots.try_any()

    def release_slot(self, held: int) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
        else:
            assert self._slots is not None
            self._slots.release(held)

    def announce(self) -> AbstractContextManager[None]:
        return self._intent.waiting()

    def anyone_waiting(self) -> bool:
        return self._intent.anyone_waiting()

    def not_before(self) -> float:
        with self._lock:
            row = self._conn.execute(
                "SELECT until_ms FROM not_before WHERE panel = ?", [self.panel]
            ).fetchone()
        return 0.0 if row is None else row[0] / 1000

    def back_off(self, seconds: float) -> None:
        until_ms = int((time.time() + seconds) * 1000)
        with self._lock:
            self._conn.execute(
                """
                INSERT INTO not_before (panel, until_ms) VALUES (?, ?)
                ON CONFLICT (panel) DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)
                """,
                [self.panel, until_ms],
            )
            self._conn.commit()

    def spent_last_minute(self) -> int:
        since = int(time.time() * 1000) - _MINUTE_MS
        with self._lock:
            row = self._conn.execute(
                f"SELECT count(*) FROM '{self._table}' WHERE item_timestamp >= ?", [since]
            ).fetchone()
        return int(row[0])


# ------------------------------------------------------------------ Postgres

PG_SCHEMA = "panel_budget"
_PG_SETUP_LOCK = 7_240_101  # pg_advisory_xact_lock(bigint) while the schema is set up
_PG_RATE = -1  # (panel key, -1): the rate transaction's lock
_PG_ANNOUNCED = -2  # (panel key, -2): shared by every submission waiting for the budget
_PG_CONNECT_TIMEOUT = 10
_PG_RETRY_LOCKED = 0.005  # the bucket table was locked by autovacuum: try again this soon
_PG_OPTIONS = (
    f"-c TimeZone=UTC -c search_path={PG_SCHEMA} "
    # Keepalive probes from the server's side: a session whose machine vanished (no FIN) is
    # dropped within about a minute, and with it the slots that machine held.
    "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3 "
    # A rate transaction lasts milliseconds; one left open (a process stopped mid-way) would
    # hold every other process's takes: the server ends that session instead.
    "-c idle_in_transaction_session_timeout=30s"
)

_PG_SETUP = f"""
CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA};
CREATE TABLE IF NOT EXISTS {PG_SCHEMA}.not_before (
    panel TEXT PRIMARY KEY,
    until_at TIMESTAMPTZ NOT NULL
);
-- The first slot of `free` whose session advisory lock (panel, i) this session gets, or
-- NULL. A function, so the locks are tried in order and none past the first it gets.
CREATE OR REPLACE FUNCTION {PG_SCHEMA}.try_slot(panel integer, free integer[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    i integer;
BEGIN
    FOREACH i IN ARRAY free LOOP
        IF pg_try_advisory_lock(panel, i) THEN
            RETURN i;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
-- The rate's turn: the transaction lock (panel, -1), then the database clock (ms), read once
-- the lock is held (so a timestamp is never older than the previous holder's).
CREATE OR REPLACE FUNCTION {PG_SCHEMA}.rate_turn(panel integer)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(panel, {_PG_RATE});
    RETURN (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
END
$$;
-- Whether another session announced a submission: it holds (panel, -2) shared.
CREATE OR REPLACE FUNCTION {PG_SCHEMA}.submission_waits(panel integer)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_lock(panel, {_PG_ANNOUNCED}) THEN
        PERFORM pg_advisory_unlock(panel, {_PG_ANNOUNCED});
        RETURN false;
    END IF;
    RETURN true;
END
$$;
"""


def _pg_panel_key(panel: str) -> int:
    """The panel's first advisory-lock key: a stable signed 32-bit hash of its name."""
    digest = hashlib.blake2b(panel.encode(), digest_size=4, person=b"smm-budget").digest()
    return int.from_bytes(digest, "big", signed=True)


def _pg_table(panel: str) -> str:
    """The panel's bucket table (pyrate prefixes `ratelimit___`): its name made a plain
    identifier, and a hash, so names that differ only in what was replaced never share one,
    within Postgres's 63 characters."""
    slug = re.sub(r"[^a-z0-9]+", "_", panel.lower()).strip("_")[:24]
    digest = hashlib.blake2b(panel.encode(), digest_size=5, person=b"smm-budget").hexdigest()
    return f"{slug}_{digest}"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # the `postgres` extra is not installed
        raise WarehouseError(
            "the panels' budget is on Postgres, but psycopg is not installed: "
            "pip install 'smm-pipeline[postgres]'"
        ) from exc
    return psycopg


class _PgSession:
    """This process's one connection to the budget in one Postgres, used by one thread at a
    time: autocommit, each rate take an explicit transaction on it, and the holder of this
    process's session advisory locks (slots, announced submissions), so the server frees them
    when the process, or its machine, goes away. Opened on first use (the first opening in
    a process also sets up the schema); if it breaks, the locks it held went with it, and the
    next use opens a new one (`generation` tells them apart)."""

    def __init__(self, target: PostgresTarget) -> None:
        self.target = target
        self._mutex = threading.Lock()  # the connection: one statement or transaction at once
        self._conn: Any = None
        self._generation = 0
        self._set_up = False
        self._shared = threading.Lock()  # the two maps below
        self._slot_locks: dict[tuple[int, int], threading.Lock] = {}
        self._announced: dict[int, _PgAnnounced] = {}

    def error(self, exc: BaseException) -> WarehouseError:
        # psycopg's messages name host, port, user and database, never the password.
        return WarehouseError(f"the panels' budget in Postgres {self.target.safe}: {exc}")

    @contextmanager
    def use(self) -> Iterator[tuple[Any, int]]:
        """The connection (opened if need be) and its generation, for this thread alone."""
        psycopg = _psycopg()
        with self._mutex:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._open(psycopg)
                    self._generation += 1
                yield self._conn, self._generation
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.closed:
                    self._conn = None  # it broke, and its locks went with it: a new one next
                raise self.error(exc) from None

    def value(self, sql: str, params: list[Any]) -> tuple[Any, int]:
        """One statement's one value, and the generation of the session that ran it."""
        with self.use() as (conn, generation):
            return conn.execute(sql, params).fetchone()[0], generation

    def unlock(self, sql: str, params: list[Any], generation: int) -> None:
        """Release a session lock taken in `generation`. If that session is gone, so is the
        lock, and nothing is sent (the new session may hold the same lock for someone else);
        a failure is logged, not raised: the request it guarded is over."""
        try:
            with self.use() as (conn, current):
                if current == generation:
                    conn.execute(sql, params)
        except WarehouseError as exc:
            log.warning("could not release a panel budget lock: %s", exc)

    def _open(self, psycopg: Any) -> Any:
        conn = psycopg.connect(
            self.target.url,
            autocommit=True,
            connect_timeout=_PG_CONNECT_TIMEOUT,
            options=_PG_OPTIONS,
            application_name="smm_pipeline panel budget",
        )
        if not self._set_up:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_SETUP_LOCK])
                    conn.execute(_PG_SETUP)
            except BaseException:
                conn.close()
                raise
            self._set_up = True
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # closing a broken connection
                conn.close()

    def close(self) -> None:
        """Close the connection now: every slot and announcement it held is released."""
        with self._mutex:
            self._close()

    def slot_lock(self, key: int, i: int) -> threading.Lock:
        """The lock that keeps slot `i` to one thread of this process: advisory locks are
        re-entrant within a session, so the server alone would let two threads share one."""
        with self._shared:
            return self._slot_locks.setdefault((key, i), threading.Lock())

    def announced(self, key: int) -> _PgAnnounced:
        with self._shared:
            found = self._announced.get(key)
            if found is None:
                found = self._announced[key] = _PgAnnounced(self, key)
            return found


class _PgAnnounced:
    """This process's submissions waiting for one panel's budget: a count, and the shared
    session lock (panel key, -2) while it is above zero, which every other process's polls
    test. One per panel and process: a session never conflicts with its own locks, so the
    count answers for this process."""

    def __init__(self, session: _PgSession, key: int) -> None:
        self._session = session
        self._key = key
        self._mutex = threading.Lock()
        self._count = 0
        self._generation = 0

    @contextmanager
    def waiting(self) -> Iterator[None]:
        with self._mutex:
            if self._count == 0:
                _, self._generation = self._session.value(
                    "SELECT pg_advisory_lock_shared(%s::int4, %s::int4)::text",
                    [self._key, _PG_ANNOUNCED],
                )
            self._count += 1
        try:
            yield
        finally:
            with self._mutex:
                self._count -= 1
                if self._count == 0:
                    self._session.unlock(
                        "SELECT pg_advisory_unlock_shared(%s::int4, %s::int4)",
                        [self._key, _PG_ANNOUNCED],
                        self._generation,
                    )

    def anyone_waiting(self) -> bool:
        with self._mutex:  # so no submission of this process starts waiting meanwhile
            if self._count:
                return True
            waits, _ = self._session.value(
                f"SELECT {PG_SCHEMA}.submission_waits(%s::int4)", [self._key]
            )
            return bool(waits)


_PgBucket: type | None = None


def _pg_bucket_class() -> type:
    """pyrate's PostgresBucket, run on the connection of the rate transaction under way (so
    the advisory lock, the clock, the count and the insert are one transaction). Defined on
    first use: pyrate's Postgres module imports psycopg."""
    global _PgBucket
    if _PgBucket is None:
        from pyrate_limiter import PostgresBucket

        class PgBucket(PostgresBucket):
            def __init__(self, backend: _PostgresBackend, table: str, rates: list[Rate]):
                self._backend = backend
                # No pool: `_get_conn` hands out our connection, and pyrate's clock is
                # never asked (`take` reads the database clock under the lock).
                super().__init__(None, table, rates)

            @contextmanager
            def _get_conn(self) -> Iterator[Any]:
                conn = self._backend.in_transaction
                if conn is not None:
                    yield conn
                else:  # creating the table
                    with self._backend.session.use() as (conn, _), conn.transaction():
                        yield conn

        _PgBucket = PgBucket
    return _PgBucket


class _PostgresBackend:
    """The budget in Postgres, shared by every process of every machine on that database."""

    def __init__(self, panel: str, per_minute: int, max_concurrency: int, target: PostgresTarget):
        self.panel = panel
        self.session = _pg_session(target)
        self.in_transaction: Any = None  # the rate transaction's connection, while under way
        self._key = _pg_panel_key(panel)
        self._n = max_concurrency
        bucket, table = _pg_bucket_class(), _pg_table(panel)
        self._buckets = {
            Priority.SUBMIT: bucket(self, table, _rates(per_minute)),
            Priority.POLL: bucket(self, table, _rates(poll_limit(per_minute))),
        }
        self._table = self._buckets[Priority.SUBMIT]._full_tbl
        self._announced = self.session.announced(self._key)
        self._next_leak = 0.0

    def describe(self) -> str:
        return f"Postgres {self.session.target.safe}"

    def take(self, priority: Priority) -> float:
        psycopg = _psycopg()
        bucket = self._buckets[priority]
        wait_ms: object = None
        with self.session.use() as (conn, _), conn.transaction():
            (now_ms,) = conn.execute(
                f"SELECT {PG_SCHEMA}.rate_turn(%s::int4)", [self._key]
            ).fetchone()
            self.in_transaction = conn
            try:
                if time.monotonic() >= self._next_leak:
                    self._next_leak = time.monotonic() + _LEAK_EVERY_SECONDS
                    self._buckets[Priority.SUBMIT].leak(now_ms)
                item = RateItem(self.panel, now_ms)
                if bucket.put(item):
                    return 0.0
                if bucket._last_wait is None:
                    # pyrate's LOCK TABLE ... NOWAIT met autovacuum: the transaction is
                    # aborted and the wait unknown.
                    raise psycopg.Rollback
                wait_ms = bucket.waiting(item)
            finally:
                self.in_transaction = None
        return _PG_RETRY_LOCKED if wait_ms is None else _wait_of(wait_ms)

    def try_slot(self) -> tuple[int, int] | None:
        mine = []  # the slots no other thread of this process holds
        for i in random.sample(range(self._n), self._n):
            lock = self.session.slot_lock(self._key, i)
            if lock.acquire(blocking=False):
                mine.append((i, lock))
        got = None
        try:
            if mine:
                got, generation = self.session.value(
                    f"SELECT {PG_SCHEMA}.try_slot(%s::int4, %s::int4[])",
                    [self._key, [i for i, _ in mine]],
                )
        finally:
            for i, lock in mine:
                if i != got:
                    lock.release()
        return None if got is None else (got, generation)

    def acquire_slot(self, deadline: float | None) -> tuple[int, int] | None:
        return _poll_for_slot(self.try_slot, deadline)

    def release_slot(self, held: tuple[int, int]) -> None:
        i, generation = held
        try:
            self.session.unlock(
                "SELECT pg_advisory_unlock(%s::int4, %s::int4)", [self._key, i], generation
            )
        finally:
            self.session.slot_lock(self._key, i).release()

    def announce(self) -> AbstractContextManager[None]:
        return self._announced.waiting()

    def anyone_waiting(self) -> bool:
        return self._announced.anyone_waiting()

    def not_before(self) -> float:
        # The database clock on both sides: machines whose clocks differ wait the same time.
        left, _ = self.session.value(
            "SELECT extract(epoch FROM max(until_at) - clock_timestamp())::float8 "
            "FROM not_before WHERE panel = %s",
            [self.panel],
        )
        return 0.0 if left is None else time.time() + left

    def back_off(self, seconds: float) -> None:
        self.session.value(
            """
            INSERT INTO not_before (panel, until_at)
            VALUES (%s, clock_timestamp() + %s * interval '1 second')
            ON CONFLICT (panel) DO UPDATE
            SET until_at = greatest(not_before.until_at, excluded.until_at)
            RETURNING 1
            """,
            [self.panel, float(seconds)],
        )

    def spent_last_minute(self) -> int:
        sql = _psycopg().sql
        count, _ = self.session.value(
            sql.SQL(
                "SELECT count(*) FROM {} "
                "WHERE item_timestamp >= clock_timestamp() - interval '60 seconds'"
            ).format(sql.Identifier(self._table)),
            [],
        )
        return int(count)


_pg_sessions: dict[tuple[str, int], _PgSession] = {}


def _pg_session(target: PostgresTarget) -> _PgSession:
    key = (target.url, os.getpid())  # a forked child opens its own connection
    with _registry_lock:
        session = _pg_sessions.get(key)
        if session is None:
            session = _pg_sessions[key] = _PgSession(target)
        return session


def close_postgres_budgets(target: PostgresTarget | None = None) -> None:
    """Close this process's budget connection to `target` (None: to every Postgres) now; it
    reopens when next needed. For tests, which drop or reuse databases, and for a long-lived
    process that is done with the panels."""
    with _registry_lock:
        sessions = [s for k, s in _pg_sessions.items() if target is None or k[0] == target.url]
    for session in sessions:
        session.close()


# ------------------------------------------------------------------ the budget


class PanelBudget:
    """The request budget and concurrency cap of one panel (see the module docstring)."""

    def __init__(
        self,
        panel: str,
        rate_limit_per_minute: int,
        max_concurrency: int,
        where: BudgetLocation | None,
    ) -> None:
        self.panel = panel
        self.rate_limit_per_minute = rate_limit_per_minute
        self.max_concurrency = max_concurrency
        self.where = where
        if where is None or isinstance(where, Path):
            self._backend: _Backend = _LocalBackend(
                panel, rate_limit_per_minute, max_concurrency, where
            )
        else:
            self._backend = _PostgresBackend(panel, rate_limit_per_minute, max_concurrency, where)
        self._not_before_seen = (0.0, 0.0)  # (until, when read), see _not_before
        # Acquiring is the backend's `take`, not pyrate's blocking Limiter (which moves a
        # waiting item's timestamp ahead of the clock), and entries older than the minute are
        # deleted by `take` now and then, not by pyrate's background thread (which outlives a
        # budget whose folder is gone).

    def __repr__(self) -> str:
        return (
            f"PanelBudget({self.panel!r}, {self.rate_limit_per_minute}/min, "
            f"{self.max_concurrency} at once, shared by {self._backend.describe()})"
        )

    def _not_before(self) -> float:
        """The latest Retry-After of any process (read at most every half second)."""
        value, read_at = self._not_before_seen
        if time.monotonic() - read_at < _NOT_BEFORE_EVERY_SECONDS:
            return value
        value = self._backend.not_before()
        self._not_before_seen = (value, time.monotonic())
        return value

    def back_off(self, seconds: float) -> None:
        """The panel asked us to wait (429 Retry-After): no process starts a request to it
        before then."""
        self._backend.back_off(seconds)
        self._not_before_seen = (0.0, 0.0)  # read again at once

    @contextmanager
    def slot(
        self, priority: Priority = Priority.SUBMIT, wait: float | None = None
    ) -> Iterator[None]:
        """Hold one concurrency slot and one request of the budget for the request sent
        inside. `wait` bounds the time spent waiting (None: as long as it takes); past it,
        BudgetExhausted is raised and nothing may be sent.

        A submission announces itself (the shared submission lock) before it asks for a slot
        and keeps that until it has both slot and request; a poll takes a slot only while no
        submission is announced, and never holds one while it waits for the rate, so polls
        can neither fill the slots nor take a request a submission waits for."""
        deadline = None if wait is None else time.monotonic() + wait
        backend = self._backend
        if priority is Priority.POLL:
            held = self._poll_turn(deadline, wait)
        else:
            with backend.announce():
                held = backend.acquire_slot(deadline)
                if held is None:
                    raise BudgetExhausted(self.panel, wait or 0.0)
                try:
                    self._wait_not_before(deadline, wait)
                    while pause := backend.take(priority):
                        self._pause(pause, deadline, wait)
                except BaseException:
                    backend.release_slot(held)
                    raise
        try:
            yield
        finally:
            backend.release_slot(held)

    def _poll_turn(self, deadline: float | None, wait: float | None) -> Any:
        """A slot and a request for a poll (see `slot`)."""
        backend = self._backend
        while True:
            self._wait_not_before(deadline, wait)
            if backend.anyone_waiting():
                self._pause(_POLL_RECHECK, deadline, wait)
                continue
            held = backend.try_slot()
            if held is None:
                self._pause(random.uniform(*_SLOT_RETRY_SECONDS), deadline, wait)
                continue
            try:
                pause = backend.take(Priority.POLL)
            except BaseException:
                backend.release_slot(held)
                raise
            if not pause:
                return held
            backend.release_slot(held)
            self._pause(min(pause, _POLL_RECHECK), deadline, wait)

    def _wait_not_before(self, deadline: float | None, wait: float | None) -> None:
        """Honour a 429's Retry-After, whichever process heard it."""
        pause = self._not_before() - time.time()
        if pause > 0:
            if deadline is not None and time.monotonic() + pause > deadline:
                raise BudgetExhausted(self.panel, wait or 0.0)
            time.sleep(pause)

    def _pause(self, seconds: float, deadline: float | None, wait: float | None) -> None:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BudgetExhausted(self.panel, wait or 0.0)
            seconds = min(seconds, left)
        time.sleep(min(seconds, 1.0) + random.uniform(0, 0.002))

    def spent_last_minute(self) -> int:
        """Requests started in the last 60 s, by every process sharing this budget."""
        return self._backend.spent_last_minute()


_registry: dict[tuple[str, int, int, str, int], PanelBudget] = {}
_registry_lock = threading.Lock()


def budget_for(
    panel: str,
    rate_limit_per_minute: int,
    max_concurrency: int,
    where: BudgetLocation | None = None,
) -> PanelBudget:
    """This process's handle on a panel's budget (one per panel, limits and location), so every
    client of the panel in the process shares it. `where` chooses where the budget lives: a
    folder (this machine), a `PostgresTarget` (every machine on that database), or None (this
    process only)."""
    if where is None:
        name, location = "", None
    elif isinstance(where, str | Path):
        location = Path(where).resolve()
        name = str(location)
    else:
        name, location = "postgres:" + where.url, where
    key = (panel, rate_limit_per_minute, max_concurrency, name, os.getpid())
    with _registry_lock:
        budget = _registry.get(key)
    if budget is None:  # built outside the lock: on Postgres, this connects
        budget = PanelBudget(panel, rate_limit_per_minute, max_concurrency, location)
        with _registry_lock:
            budget = _registry.setdefault(key, budget)
    return budget
