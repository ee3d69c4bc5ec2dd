"""Each panel's request budget and concurrency cap, shared by every process that talks to it.

A panel allows `rate_limit_per_minute` requests and `max_concurrency` at once. Dagster runs are
separate processes, so both limits live outside any one process, in a budget folder
(`SMM_DATA_DIR/panel_budget/` for the pipeline):

- **Rate**: pyrate-limiter's `SQLiteBucket` (a sliding-window log in `budget.sqlite`, one table
  per panel), serialised across processes by a blocking `flock` on `budget.sqlite.lock`. Two
  rates hold at once: the minute's budget, and a sixtieth of it in any second (below 60 a
  minute: one request per 60/rate seconds), so the budget is never spent in one burst.
- **Priority**: a submission waiting for the budget holds a shared `flock` on
  `<panel>.submitting`; a poll takes a request only while no submission waits (it checks that
  lock), so a submission running at the rate limit leaves polls nothing and polls spend only
  what submissions leave. Polls also stop at `POLL_SHARE` of each minute, so a submission that
  starts always finds room at once. A poll waits at most a bounded time (`wait`): then it
  gives up with `BudgetExhausted` (nothing was sent), and the poll defers the rest of its
  orders to the next run instead of queueing behind the submission.
- **Concurrency**: `max_concurrency` slot files per panel, each held with `flock` while a
  request is in flight (released by the kernel if the process dies).
- **Back-off**: a 429's Retry-After holds every process's requests to that panel, through a
  `not_before` row in the same SQLite file.

Without a folder (`budget_dir=None`, the library default for scripts and tests) the same
buckets live in a private in-memory SQLite database: shared by the threads of one process only.
"""

from __future__ import annotations

import fcntl
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

from pyrate_limiter import Rate, RateItem, SQLiteBucket

from smm_pipeline.panel.errors import BudgetExhausted

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

    def acquire(self, deadline: float | None) -> int | None:
        while True:
            held = self.try_any()
            if held is not None:
                return held
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(random.uniform(*_SLOT_RETRY_SECONDS))

    def close(self) -> None:
        for i, fd in enumerate(self._fds):
            if fd is not None:
                os.close(fd)
                self._fds[i] = None

    def release(self, i: int) -> None:
        fd = self._fds[i]
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self._local[i].release()


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


class PanelBudget:
    """The request budget and concurrency cap of one panel (see the module docstring)."""

    def __init__(
        self, panel: str, rate_limit_per_minute: int, max_concurrency: int, folder: Path | None
    ) -> None:
        self.panel = panel
        self.rate_limit_per_minute = rate_limit_per_minute
        self.max_concurrency = max_concurrency
        self.folder = folder
        table = "panel_" + panel.encode().hex()
        if folder is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level="DEFERRED")
            lock: threading.RLock | _FileLock = threading.RLock()
            conn.execute(f"CREATE TABLE '{table}' (name VARCHAR, item_timestamp INTEGER)")
            conn.execute(f"CREATE INDEX 'idx_{table}' ON '{table}' (item_timestamp)")
            submit = SQLiteBucket(_rates(rate_limit_per_minute), conn, table, lock=lock)
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
            submit = SQLiteBucket(_rates(rate_limit_per_minute), conn, table, lock=lock)
            self._semaphore = None
            self._slots = _Slots(folder, panel, max_concurrency)
        with lock:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS not_before (panel TEXT PRIMARY KEY, until_ms INTEGER)"
            )
            conn.commit()
        self._conn, self._lock = conn, lock
        self._intent = _Intent(folder, panel)
        self._not_before_seen = (0.0, 0.0)  # (until, when read), see _not_before
        poll_rates = _rates(poll_limit(rate_limit_per_minute))
        poll = SQLiteBucket(poll_rates, conn, table, lock=lock)
        self._buckets = {Priority.SUBMIT: submit, Priority.POLL: poll}
        # Acquiring is `_take`, not pyrate's blocking Limiter (which moves a waiting item's
        # timestamp ahead of the clock), and entries older than the minute are deleted by
        # `_take` now and then, not by pyrate's background thread (which outlives a budget
        # whose folder is gone).
        self._next_leak = 0.0

    def __repr__(self) -> str:
        where = self.folder if self.folder is not None else "this process"
        return (
            f"PanelBudget({self.panel!r}, {self.rate_limit_per_minute}/min, "
            f"{self.max_concurrency} at once, shared by {where})"
        )

    def _not_before(self) -> float:
        """The latest Retry-After of any process (read at most every half second)."""
        value, read_at = self._not_before_seen
        if time.monotonic() - read_at < _NOT_BEFORE_EVERY_SECONDS:
            return value
        with self._lock:
            row = self._conn.execute(
                "SELECT until_ms FROM not_before WHERE panel = ?", [self.panel]
            ).fetchone()
        value = 0.0 if row is None else row[0] / 1000
        self._not_before_seen = (value, time.monotonic())
        return value

    def back_off(self, seconds: float) -> None:
        """The panel asked us to wait (429 Retry-After): no process starts a request to it
        before then."""
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
        self._not_before_seen = (0.0, 0.0)  # read again at once

    @contextmanager
    def slot(
        self, priority: Priority = Priority.SUBMIT, wait: float | None = None
    ) -> Iterator[None]:
        """Hold one concurrency slot and one request of the budget for the request sent
        inside. `wait` bounds the time spent waiting (None: as long as it takes); past it,
        BudgetExhausted is raised and nothing may be sent.

        A submission announces itself (the shared `<panel>.submitting` lock) before it asks
        for a slot and keeps that until it has both slot and request; a poll takes a slot
        only while no submission is announced, and never holds one while it waits for the
        rate, so polls can neither fill the slots nor take a request a submission waits for."""
        deadline = None if wait is None else time.monotonic() + wait
        if priority is Priority.POLL:
            held = self._poll_turn(deadline, wait)
        else:
            with self._intent.waiting():
                held = self._acquire_slot(deadline)
                if held is None:
                    raise BudgetExhausted(self.panel, wait or 0.0)
                try:
                    self._wait_not_before(deadline, wait)
                    while pause := self._take(priority):
                        self._pause(pause, deadline, wait)
                except BaseException:
                    self._release_slot(held)
                    raise
        try:
            yield
        finally:
            self._release_slot(held)

    def _poll_turn(self, deadline: float | None, wait: float | None) -> int:
        """A slot and a request for a poll (see `slot`)."""
        while True:
            self._wait_not_before(deadline, wait)
            if self._intent.anyone_waiting():
                self._pause(_POLL_RECHECK, deadline, wait)
                continue
            held = self._try_slot()
            if held is None:
                self._pause(random.uniform(*_SLOT_RETRY_SECONDS), deadline, wait)
                continue
            pause = self._take(Priority.POLL)
            if not pause:
                return held
            self._release_slot(held)
            self._pause(min(pause, _POLL_RECHECK), deadline, wait)

    def _acquire_slot(self, deadline: float | None) -> int | None:
        if self._semaphore is not None:
            if deadline is None:
                self._semaphore.acquire()
                return 0
            left = max(0.0, deadline - time.monotonic())
            return 0 if self._semaphore.acquire(timeout=left) else None
        assert self._slots is not None
        return self._slots.acquire(deadline)

    def _try_slot(self) -> int | None:
        if self._semaphore is not None:
            return 0 if self._semaphore.acquire(blocking=False) else None
        assert self._slots is not None
        return self._slots.try_any()

    def _release_slot(self, held: int) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
        else:
            assert self._slots is not None
            self._slots.release(held)

    def _wait_not_before(self, deadline: float | None, wait: float | None) -> None:
        """Honour a 429's Retry-After, whichever process heard it."""
        pause = self._not_before() - time.time()
        if pause > 0:
            if deadline is not None and time.monotonic() + pause > deadline:
                raise BudgetExhausted(self.panel, wait or 0.0)
            time.sleep(pause)

    def _take(self, priority: Priority) -> float:
        """One request of the budget now if every rate has room (0.0), else how long to wait
        before trying again (the bucket's own figure, never waiting here)."""
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
        return max(0.001, wait_ms / 1000) if isinstance(wait_ms, int) and wait_ms >= 0 else 0.05

    def _pause(self, seconds: float, deadline: float | None, wait: float | None) -> None:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BudgetExhausted(self.panel, wait or 0.0)
            seconds = min(seconds, left)
        time.sleep(min(seconds, 1.0) + random.uniform(0, 0.002))

    def spent_last_minute(self) -> int:
        """Requests started in the last 60 s, by every process sharing this budget."""
        table = "panel_" + self.panel.encode().hex()
        since = int(time.time() * 1000) - _MINUTE_MS
        with self._lock:
            row = self._conn.execute(
                f"SELECT count(*) FROM '{table}' WHERE item_timestamp >= ?", [since]
            ).fetchone()
        return int(row[0])


_registry: dict[tuple[str, int, int, str], PanelBudget] = {}
_registry_lock = threading.Lock()


def budget_for(
    panel: str, rate_limit_per_minute: int, max_concurrency: int, folder: Path | None = None
) -> PanelBudget:
    """This process's handle on a panel's budget (one per panel, limits and folder), so every
    client of the panel in the process shares it."""
    where = "" if folder is None else str(Path(folder).resolve())
    key = (panel, rate_limit_per_minute, max_concurrency, where)
    with _registry_lock:
        budget = _registry.get(key)
        if budget is None:
            budget = _registry[key] = PanelBudget(
                panel,
                rate_limit_per_minute,
                max_concurrency,
                None if folder is None else Path(where),
            )
        return budget
