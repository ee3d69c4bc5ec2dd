"""Status polls: every due order (or refill) of the polled panels, 100 ids a call.

One fan-out serves order and refill polls (`fan_out`):
- panels are polled side by side, each panel's calls at most `max_concurrency` at once, within
  its request budget (shared with every other process, and after the panel's submissions:
  a poll client takes only what they leave);
- ids go out most-overdue first, so when the budget runs short the orders waiting longest are
  the ones polled, and the rest stay due for the next run (`deferred`): the cadence then fits
  the budget instead of exceeding it;
- answers are written as they arrive, in batches, by one writer thread, each batch in its own
  short warehouse connection: memory stays flat in the number of orders, writing overlaps the
  network waits, and no connection is held while a panel is asked;
- a panel that fails (after the client's retries) stops there: what it answered is kept, the
  rest stays due, and the other panels go on;
- each panel's progress is logged the way a submission's is (`submission.ProgressLog`: a
  first line, then every 10-15 s, and a last one, with an ETA from the poll's budget).

Only the panels that have a client (the enabled ones) are polled and counted as open; open
orders of a disabled or removed panel are logged each run and left as they are."""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import pandas as pd

from smm_pipeline.errors import PollWriteError
from smm_pipeline.operations.submission import Lane, ProgressLog
from smm_pipeline.panel.client import PanelClient, chunked
from smm_pipeline.panel.errors import BudgetExhausted, PanelError
from smm_pipeline.panel.models import OrderStatus
from smm_pipeline.warehouse.db import Location, connect
from smm_pipeline.warehouse.status import (
    OBSERVATION_COLUMNS,
    Cadence,
    apply_observations,
    due_orders,
    open_by_panel,
    open_summary,
)

T = TypeVar("T")

WRITE_BATCH_ROWS = 20_000  # answers per write (each one scans and checkpoints the table)
WRITE_EVERY_SECONDS = 2.0  # a slow (rate-limited) poll still writes what it has this often
PROGRESS_EVERY_SECONDS = 10.0  # a panel's progress lines never closer (submission.ProgressLog)
WRITE_QUEUE_CALLS = 64  # answered calls waiting for the writer at most


@dataclass
class FanOut:
    """What one fan-out did, per panel where it matters."""

    polled: int = 0
    changed: int = 0
    item_errors: int = 0
    calls: int = 0
    writes: int = 0
    http_seconds: float = 0.0
    write_seconds: float = 0.0
    deferred: dict[str, int] = field(default_factory=dict)  # left due: budget spent
    failed_panels: dict[str, str] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)


class _Writer:
    """One thread writing batches of answer rows, each in its own short connection."""

    def __init__(
        self,
        write: Callable[[list[tuple]], tuple[int, int]],
        result: FanOut,
        status_at: int,
    ) -> None:
        self._write = write
        self._result = result
        self._status_at = status_at
        # Bounded: when the warehouse is slower than the panels, the calls wait for it rather
        # than piling answers up in memory.
        self._queue: queue.Queue[list[tuple] | None] = queue.Queue(maxsize=WRITE_QUEUE_CALLS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="poll-writer", daemon=True)
        self._thread.start()

    def add(self, rows: list[tuple]) -> None:
        if self._error is not None:
            raise PollWriteError(f"the poll's answers could not be written: {self._error}")
        self._queue.put(rows)

    def _run(self) -> None:
        pending: list[tuple] = []
        last = time.monotonic()
        done = False
        while not done:
            try:
                item = self._queue.get(timeout=WRITE_EVERY_SECONDS)
            except queue.Empty:
                item = []
            if item is None:
                done = True
            else:
                pending.extend(item)
            due = time.monotonic() - last >= WRITE_EVERY_SECONDS
            if pending and (done or len(pending) >= WRITE_BATCH_ROWS or due):
                if self._error is None:
                    self._flush(pending)
                pending, last = [], time.monotonic()

    def _flush(self, rows: list[tuple]) -> None:
        started = time.perf_counter()
        try:
            changed, errors = self._write(rows)
        except BaseException as exc:  # handed to the poll's thread, which raises it
            self._error = exc
            return
        r = self._result
        r.write_seconds += time.perf_counter() - started
        r.writes += 1
        r.polled += len(rows)
        r.changed += changed
        r.item_errors += errors
        r.statuses.update(row[self._status_at] or "(error)" for row in rows)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise PollWriteError(
                f"the poll's answers could not be written: {self._error}"
            ) from self._error


def fan_out(
    clients: Mapping[str, PanelClient],
    ids_by_panel: Mapping[str, Sequence[int]],
    fetch: Callable[[PanelClient, list[int], Callable[[], None]], Mapping[int, T]],
    rows_of: Callable[[str, Mapping[int, T]], list[tuple]],
    write: Callable[[list[tuple]], tuple[int, int]],
    *,
    status_at: int,
    what: str,
    progress: Callable[[str], None],
) -> FanOut:
    """Poll `ids_by_panel` (in the order given: most-overdue first) with `fetch` (one call of
    at most 100 ids; it calls its third argument once the call holds its budget) and write
    the answers with `write` as they come (see the module docstring). `rows_of` turns one
    call's answers into rows; `status_at` is the index of the status in a row (for the
    tally). A panel's calls take their budget in order, so when it runs short the calls
    left out are the last ones: the least overdue."""
    result = FanOut()
    writer = _Writer(write, result, status_at)
    lock = threading.Lock()
    abort = threading.Event()  # the writer failed, or the run is stopping: send no more
    started = time.perf_counter()
    calls_before = sum(c.total_calls for c in clients.values())

    def one_panel(panel: str) -> None:
        client = clients[panel]
        chunks = chunked(list(ids_by_panel[panel]), client.max_ids_per_call)
        stop = threading.Event()
        counts = {"done": 0, "answered": 0}
        lane = Lane(client, len(chunks))
        plog = ProgressLog(progress, [lane], unit="calls", every=PROGRESS_EVERY_SECONDS)
        calls_before = client.total_calls
        turn = threading.Condition()
        started = [0]  # calls that took their budget (or gave up) so far, in order

        def one(indexed: tuple[int, list[int]]) -> Mapping[int, T] | Exception | None:
            index, chunk = indexed
            with turn:  # the call before this one has its budget first
                while started[0] < index and not (stop.is_set() or abort.is_set()):
                    turn.wait(0.1)

            def has_budget() -> None:
                with turn:
                    started[0] = max(started[0], index + 1)
                    turn.notify_all()

            try:
                if stop.is_set() or abort.is_set():
                    return None  # not sent: left due
                sent = time.perf_counter()
                answer = fetch(client, chunk, has_budget)
                lane.timed(time.perf_counter() - sent)
                return answer
            except Exception as exc:  # BudgetExhausted included: nothing was sent
                stop.set()
                return exc
            finally:
                has_budget()

        def line(*, last: bool = False) -> None:
            head = f"{panel}: {counts['done']}/{len(chunks)} {what} calls answered"
            so_far = "" if last else " so far"
            head += f" ({counts['answered']} {what}es{so_far})"
            plog.line(head, client.total_calls - calls_before, last=last)

        if chunks:
            line()
        for (_, chunk), answer in client.map_concurrent(one, list(enumerate(chunks))):
            lane.done += 1  # answered, deferred or failed: no longer ahead
            if isinstance(answer, BudgetExhausted) or answer is None:
                with lock:
                    result.deferred[panel] = result.deferred.get(panel, 0) + len(chunk)
                continue
            if isinstance(answer, BaseException):  # this panel stops; the others go on
                message = answer.message if isinstance(answer, PanelError) else repr(answer)
                with lock:
                    result.failed_panels.setdefault(panel, message)
                    result.deferred[panel] = result.deferred.get(panel, 0) + len(chunk)
                continue
            try:
                writer.add(rows_of(panel, answer))
            except BaseException:
                abort.set()
                raise
            counts["done"] += 1
            counts["answered"] += len(answer)
            if plog.due():
                line()
        if panel in result.failed_panels:
            progress(f"{panel}: {what} poll failed: {result.failed_panels[panel]}")
        elif result.deferred.get(panel):
            progress(
                f"{panel}: {result.deferred[panel]} due ids left for the next poll: the panel's "
                "request budget went to its submissions"
            )
        line(last=True)

    panels = [p for p in ids_by_panel if ids_by_panel[p]]
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(panels)), thread_name_prefix="poll") as ex:
            futures = [ex.submit(one_panel, p) for p in panels]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # a writer error, or the run interrupted: stop sending
                abort.set()
                raise
    except BaseException:
        result.http_seconds = time.perf_counter() - started
        with contextlib.suppress(Exception):  # the first error is the one to report
            writer.close()
        raise
    result.http_seconds = time.perf_counter() - started
    writer.close()
    result.calls = sum(c.total_calls for c in clients.values()) - calls_before
    return result


def ids_by_panel(due: pd.DataFrame, column: str) -> dict[str, list[int]]:
    """The ids of a due frame per panel, in the frame's order (most overdue first)."""
    if not len(due):
        return {}
    return {str(p): [int(i) for i in f[column]] for p, f in due.groupby("panel", sort=False)}


def warehouse_writer(
    location: Location,
    to_frame: Callable[[list[tuple]], pd.DataFrame],
    apply: Callable[[Any, pd.DataFrame, datetime], tuple[int, int]],
) -> Callable[[list[tuple]], tuple[int, int]]:
    """The `write` of a poll's fan-out: a batch of answer rows as a frame, applied in its own
    short connection and stamped when written (the cadence counts from then)."""

    def write(rows: list[tuple]) -> tuple[int, int]:
        frame = to_frame(rows)
        with connect(location) as conn:
            return apply(conn, frame, datetime.now(UTC))

    return write


# ------------------------------------------------------------------ order status polls


@dataclass
class PollReport(FanOut):
    """What a status poll did: its fan-out's counts (`take`), and what it found before and
    after (an order poll's; a refill poll's is a `RefillPollReport`)."""

    statuses: dict[str, int] = field(default_factory=dict)  # sorted by status
    due: int = 0
    open_before: int = 0
    fixed_interval_calls: int = 0
    open_after: int = 0
    next_due_at: datetime | None = None
    disabled_open: dict[str, int] = field(default_factory=dict)

    @property
    def calls_saved(self) -> int:
        return self.fixed_interval_calls - self.calls

    def take(self, fan: FanOut) -> None:
        for f in fields(FanOut):
            setattr(self, f.name, getattr(fan, f.name))
        self.statuses = dict(sorted(fan.statuses.items()))


def observation_rows(panel: str, statuses: Mapping[int, OrderStatus]) -> list[tuple[Any, ...]]:
    """The panel's answers as rows of OBSERVATION_COLUMNS (money as text)."""
    return [
        (
            panel, s.order_id, s.status, s.raw_status,
            None if s.charge is None else str(s.charge),
            s.start_count, s.remains, s.currency, s.error, s.expiry, s.posts,
            ",".join(map(str, s.orders)) if s.is_subscription else None,
        )
        for s in statuses.values()
    ]  # fmt: skip


def rows_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """Observation rows as the frame `apply_observations` takes."""
    frame = pd.DataFrame(rows, columns=OBSERVATION_COLUMNS)
    for column in ("start_count", "remains", "subscription_posts"):
        frame[column] = pd.array(frame[column], dtype="Int64")
    for column in ("status", "raw_status", "charge", "currency", "error", "subscription_expiry",
                   "subscription_orders"):  # fmt: skip
        frame[column] = pd.array(frame[column], dtype="string")
    return frame


def observations_frame(panel: str, statuses: Mapping[int, OrderStatus]) -> pd.DataFrame:
    """The panel's answers in the warehouse's observation shape."""
    return rows_frame(observation_rows(panel, statuses))


def poll_orders(
    location: Location,
    clients: Mapping[str, PanelClient],
    cadence: Cadence,
    *,
    poll_all: bool = False,
    enabled: Collection[str] | None = None,
    progress: Callable[[str], None] = print,
) -> PollReport:
    """Poll the due unfinished orders of the panels in `clients` (every unfinished one with
    `poll_all`); see the module docstring. `enabled` are all the enabled panels (default: the
    polled ones): open orders of other panels are reported as not polled."""
    report = PollReport()
    now = datetime.now(UTC)
    enabled = set(clients if enabled is None else enabled)
    with connect(location) as conn:
        due = due_orders(conn, now, poll_all=poll_all)
        report.open_before, _ = open_summary(conn, clients)
        open_counts = open_by_panel(conn)
    due = due[due["panel"].isin(list(clients))]
    report.due = len(due)
    report.fixed_interval_calls = sum(
        math.ceil(n / clients[p].max_ids_per_call) for p, n in open_counts.items() if p in clients
    )
    report.disabled_open = {p: n for p, n in sorted(open_counts.items()) if p not in enabled}
    if report.disabled_open:
        progress(
            "not polling open orders of panels that are not enabled (not counted as open): "
            + ", ".join(f"{p} ({n})" for p, n in report.disabled_open.items())
        )
    by_panel = ids_by_panel(due, "order_id")  # most-overdue first, as due_orders gives them
    del due
    write = warehouse_writer(
        location, rows_frame, lambda conn, frame, now: apply_observations(conn, frame, now, cadence)
    )
    fan = fan_out(
        clients, by_panel, PanelClient.status_chunk, observation_rows, write,
        status_at=OBSERVATION_COLUMNS.index("status"), what="status", progress=progress,
    )  # fmt: skip
    report.take(fan)
    with connect(location) as conn:
        report.open_after, report.next_due_at = open_summary(conn, clients)
    return report
