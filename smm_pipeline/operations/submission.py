"""Send a file's recorded (pending) orders to their panels, exactly once.

A panel answers each `add` after tens of milliseconds, so a batch is as fast as the panel's
concurrency cap allows only if every slot stays busy and no DuckDB write sits between one
request and the next. Hence the shape:

- Per panel, `max_concurrency` worker threads live for the whole batch, take rows from a
  queue and only talk HTTP (the client's limiter still spaces requests by the rate budget).
- The calling thread owns the one DuckDB connection and does every write. It *claims* rows
  ahead of the workers: whenever fewer than `max_concurrency` claimed rows are waiting, one
  statement flags the next `max_concurrency` rows `sending`, and only then are they queued, so
  a row is durably `sending` before its request can leave. It *records* the answers the
  workers hand back in batches, one set-based statement per OUTCOME_BATCH_ROWS answers or
  OUTCOME_BATCH_SECONDS, whichever comes first.

A crash at any point leaves a row `pending` (never sent: sent by the next run) or `sending`
(maybe sent: turned ambiguous by the next run, never resent). Per panel, the `sending` rows
are at most `max_concurrency` held by workers (in flight or about to be), at most
2 × `max_concurrency` claimed and queued (never sent: the only never-sent rows a crash can
turn ambiguous), and at most one outcome batch answered but not yet recorded.

"Not enough funds on balance" stops the panel's batch: the worker that gets it sets the
panel's stop flag, which every worker checks before each `add`. The row that got it is failed
with the panel's message, every row not sent (claimed or not) with NOT_ENOUGH_FUNDS_STOP.
Requests already in flight cannot be recalled, but each worker sends at most one `add` the
panel refuses, so a balance for exactly K orders costs at most K + `max_concurrency` calls.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb

from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.errors import (
    AmbiguousSubmissionError,
    InsufficientFundsError,
    PanelError,
)
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.orders import (
    SubmitOutcome,
    mark_interrupted_as_ambiguous,
    mark_sending,
    pending_rows,
    record_outcomes,
)

log = logging.getLogger(__name__)
NOT_ENOUGH_FUNDS_STOP = "not sent: Not enough funds on balance (the panel's batch stopped)"
OUTCOME_BATCH_ROWS = 64
OUTCOME_BATCH_SECONDS = 0.25
PROGRESS_SECONDS = 1.0


@dataclass
class SubmitReport:
    """What a submission did, per panel and in total."""

    total: int = 0
    submitted: int = 0
    failed: int = 0
    ambiguous: int = 0
    recovered_ambiguous: int = 0
    estimated_spend: Decimal = Decimal(0)
    calls: int = 0
    seconds: float = 0.0
    stopped_panels: list[str] = field(default_factory=list)

    def add(self, outcome: SubmitOutcome, cost: Decimal) -> None:
        if outcome.submit_state == "submitted":
            self.submitted += 1
            self.estimated_spend += cost
        elif outcome.submit_state == "failed":
            self.failed += 1
        elif outcome.submit_state == "ambiguous":
            self.ambiguous += 1

    @property
    def done(self) -> int:
        return self.submitted + self.failed + self.ambiguous


def outcome_of(panel: str, ref: str, result: int | BaseException) -> SubmitOutcome:
    """Classify one `add`: only a definite answer is submitted or failed."""
    now = datetime.now(UTC)
    if isinstance(result, int):
        return SubmitOutcome(panel, ref, "submitted", order_id=result, submitted_at=now)
    if isinstance(result, AmbiguousSubmissionError):
        return SubmitOutcome(panel, ref, "ambiguous", error=result.message, submitted_at=now)
    if isinstance(result, PanelError):
        return SubmitOutcome(panel, ref, "failed", error=result.message)
    # Anything else went wrong on our side, possibly after the request left: never resend.
    return SubmitOutcome(
        panel, ref, "ambiguous", error=f"unexpected {type(result).__name__}", submitted_at=now
    )


@dataclass(frozen=True)
class _Row:
    ref: str
    params: dict[str, str]
    cost: Decimal


# What a worker hands back: the row and the `add` result, or None when it was not sent.
_Answer = tuple["_PanelBatch", _Row, "int | BaseException | None"]


class _PanelBatch:
    """One panel's rows, its worker threads and its stop flag.

    Only the calling thread touches `claimed`, `open` and DuckDB; workers see the queue and
    the flags only."""

    def __init__(
        self,
        panel: str,
        client: PanelClient,
        rows: list[_Row],
        answers: queue.Queue[_Answer],
        abort: threading.Event,
    ) -> None:
        self.panel = panel
        self.client = client
        self.rows = rows
        self.size = client.panel.max_concurrency
        self.claimed = 0  # rows[:claimed] were flagged `sending` (or stopped)
        self.open = 0  # claimed rows whose answer has not come back yet
        self.closed = False
        self.stop = threading.Event()
        self._ready: queue.Queue[_Row | None] = queue.Queue()
        self._answers = answers
        self._abort = abort
        self._workers = [
            threading.Thread(target=self._work, name=f"submit-{self.panel}-{i}", daemon=True)
            for i in range(self.size)
        ]

    def start(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Claim the workers' first rows and the batch waiting behind them, then work."""
        for _ in range(2):
            self._claim_next(conn)
        for worker in self._workers:
            worker.start()

    def _work(self) -> None:
        while (row := self._ready.get()) is not None:
            if self._abort.is_set():
                return
            result: int | BaseException | None = None
            if not self.stop.is_set():
                try:
                    result = self.client.add(row.params)
                except Exception as exc:  # classified by outcome_of, never resent
                    result = exc
                if isinstance(result, InsufficientFundsError):
                    self.stop.set()
            self._answers.put((self, row, result))

    def claim(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Claim the next batch once fewer than `size` claimed rows wait: at most 2 × size."""
        if self._ready.qsize() < self.size:
            self._claim_next(conn)

    def _claim_next(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Flag the next rows `sending`, then queue them (never the other way round)."""
        if self.closed or self.stop.is_set():
            return
        batch = self.rows[self.claimed : self.claimed + self.size]
        flagged = mark_sending(conn, self.panel, [r.ref for r in batch])
        self.claimed += len(batch)
        for row in batch:
            if row.ref in flagged:  # a row someone else claimed meanwhile is theirs to send
                self.open += 1
                self._ready.put(row)
        if self.claimed == len(self.rows):
            self.close()

    def stop_unclaimed(self) -> list[tuple[SubmitOutcome, Decimal]]:
        """The rows never claimed, failed because the batch stopped; no more claims."""
        rest = self.rows[self.claimed :]
        self.claimed = len(self.rows)
        self.close()
        return [(_stopped(self.panel, r.ref), r.cost) for r in rest]

    def close(self) -> None:
        """No more rows: each worker exits once the queue is drained."""
        if not self.closed:
            self.closed = True
            for _ in self._workers:
                self._ready.put(None)

    @property
    def finished(self) -> bool:
        return self.closed and self.open == 0

    def join(self) -> None:
        for worker in self._workers:
            if worker.is_alive():  # never started if claiming failed first
                worker.join()


def _stopped(panel: str, ref: str) -> SubmitOutcome:
    return SubmitOutcome(panel, ref, "failed", error=NOT_ENOUGH_FUNDS_STOP)


def _answers_within(answers: queue.Queue[_Answer], timeout: float) -> list[_Answer]:
    """The answers that came back: waits up to `timeout` for the first, takes all there are."""
    try:
        got = [answers.get(timeout=max(0.0, timeout))]
    except queue.Empty:
        return []
    while True:
        try:
            got.append(answers.get_nowait())
        except queue.Empty:
            return got


class _Dispatcher:
    """The calling thread's loop: claims ahead, collects answers, records them in batches."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        batches: list[_PanelBatch],
        answers: queue.Queue[_Answer],
        report: SubmitReport,
        progress: Callable[[str], None],
        started: float,
    ) -> None:
        self.conn = conn
        self.batches = batches
        self.answers = answers
        self.report = report
        self.progress = progress
        self.started = started
        self.unrecorded: list[tuple[SubmitOutcome, Decimal]] = []
        self.oldest = 0.0  # when the oldest unrecorded outcome came in
        self.last_progress = started

    def run(self) -> None:
        while not all(b.finished for b in self.batches) or self.unrecorded:
            for batch in self.batches:
                if batch.stop.is_set() and batch.panel not in self.report.stopped_panels:
                    self.report.stopped_panels.append(batch.panel)
                    self._collect(batch.stop_unclaimed())
                    self.progress(f"{batch.panel}: Not enough funds on balance: batch stopped")
                batch.claim(self.conn)
            done = all(b.finished for b in self.batches)
            wait = 0.0 if done else OUTCOME_BATCH_SECONDS
            if self.unrecorded:
                wait = min(wait, self.oldest + OUTCOME_BATCH_SECONDS - time.perf_counter())
            for batch, row, result in _answers_within(self.answers, wait):
                batch.open -= 1
                outcome = (
                    _stopped(batch.panel, row.ref)
                    if result is None
                    else outcome_of(batch.panel, row.ref, result)
                )
                self._collect([(outcome, row.cost)])
            self._record_if_due(all(b.finished for b in self.batches))
        if self.report.total:
            self._progress_line()

    def _collect(self, outcomes: list[tuple[SubmitOutcome, Decimal]]) -> None:
        if outcomes and not self.unrecorded:
            self.oldest = time.perf_counter()
        self.unrecorded += outcomes

    def _record_if_due(self, finished: bool) -> None:
        now = time.perf_counter()
        due = (
            finished
            or len(self.unrecorded) >= OUTCOME_BATCH_ROWS
            or now - self.oldest >= OUTCOME_BATCH_SECONDS
        )
        if not self.unrecorded or not due:
            return
        record_outcomes(self.conn, [o for o, _ in self.unrecorded])
        for outcome, cost in self.unrecorded:
            self.report.add(outcome, cost)
        self.unrecorded = []
        if now - self.last_progress >= PROGRESS_SECONDS:
            self._progress_line()

    def _progress_line(self) -> None:
        self.last_progress = now = time.perf_counter()
        report = self.report
        self.progress(
            f"{report.done}/{report.total} rows done, {report.submitted} submitted, "
            f"estimated spend {report.estimated_spend}, {now - self.started:.1f}s elapsed"
        )


def _rows_by_panel(conn: duckdb.DuckDBPyConnection, file_hash: str) -> dict[str, list[_Row]]:
    """The file's pending rows per panel, in file order, with their `add` fields parsed."""
    by_panel: dict[str, list[_Row]] = {}
    for record in pending_rows(conn, file_hash).to_dict("records"):
        row = _Row(
            record["ref"], json.loads(record["params"]), Decimal(str(record["estimated_cost"]))
        )
        by_panel.setdefault(record["panel"], []).append(row)
    return dict(sorted(by_panel.items()))


def submit_file(
    db_path: Path,
    file_hash: str,
    clients: Mapping[str, PanelClient],
    *,
    progress: Callable[[str], None] = log.info,
) -> SubmitReport:
    """Send every pending row of a file; panels in parallel, each within its own limits."""
    started = time.perf_counter()
    report = SubmitReport()
    with connect(db_path) as conn:
        rows = _rows_by_panel(conn, file_hash)
        missing = sorted(set(rows) - set(clients))
        if missing:
            raise ValueError(f"no panel client for {', '.join(missing)}: nothing was sent")
        report.recovered_ambiguous = mark_interrupted_as_ambiguous(conn, file_hash)
        if report.recovered_ambiguous:
            progress(
                f"{report.recovered_ambiguous} rows were caught mid-send by an earlier run: "
                "marked ambiguous, not resent"
            )
        report.total = sum(len(r) for r in rows.values())
        calls_before = sum(c.total_calls for c in clients.values())
        answers: queue.Queue[_Answer] = queue.Queue()
        abort = threading.Event()
        batches = [_PanelBatch(p, clients[p], r, answers, abort) for p, r in rows.items()]
        try:
            for batch in batches:
                batch.start(conn)
            _Dispatcher(conn, batches, answers, report, progress, started).run()
        finally:
            abort.set()  # after a failure here, queued rows stay `sending`: never resent
            for batch in batches:
                batch.close()
            for batch in batches:
                batch.join()
    report.calls = sum(c.total_calls for c in clients.values()) - calls_before
    report.seconds = time.perf_counter() - started
    return report
