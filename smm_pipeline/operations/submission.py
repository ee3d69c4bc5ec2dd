"""Send recorded (pending) orders to their panels, exactly once, without holding the warehouse.

A panel answers each `add` after tens of milliseconds (or, rate-limited, once a second), so
the shape is:

- Per panel, `max_concurrency` worker threads live for the whole batch, take rows from a
  queue and talk HTTP. Before a row's request leaves, the worker journals `send`; as soon as
  the answer is in, it journals the outcome (warehouse/journal.py: both flushed to disk).
- The calling thread owns the warehouse, in short write sections only, never across a
  network wait: it *claims* rows ahead of the workers (one statement flags the next
  CLAIM_ROWS rows `sending` under this process's journal, and only then are they queued),
  and *records* the outcomes the workers hand back, one set-based statement every
  OUTCOME_BATCH_SECONDS or OUTCOME_BATCH_ROWS answers.

A crash at any point loses nothing the panel said: the journal holds every answer received,
and the next submission settles the dead claim from it (answers recorded, rows never sent
pending again, only the requests truly in flight, at most `max_concurrency` per panel,
ambiguous). A run that is interrupted (terminated from the UI) stops its workers and settles
its own claim the same way before it exits.

A panel's batch stops at "Not enough funds on balance", and at the first answer that is not
the API at all (a redirect, an HTML or empty 4xx: a wrong url or key, a Cloudflare block),
which would repeat for every row: the worker that gets it sets the panel's stop flag, which
every worker checks before each `add`. That row is failed (funds) or ambiguous (the rest);
every row not sent is failed with the stop reason, and a later drop of the file sends them.
Requests already in flight cannot be recalled, so a balance for exactly K orders costs at most
K + `max_concurrency` calls.

Progress is logged as a person can follow it (`ProgressLog`, shared with the status polls): a
first line, then one every PROGRESS_SECONDS × 1.5, or sooner once PROGRESS_STEP more of the rows
are done, but never twice within PROGRESS_SECONDS; and a last line. Each gives rows done/total,
the spend so far, the calls made and an ETA: the rows left at the rate the panel's budget
allows (`rate_limit_per_minute`, and `max_concurrency` calls of the time a call takes), or at
the rate observed so far if that is slower.
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

from smm_pipeline.money import money_text
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.errors import (
    AmbiguousSubmissionError,
    InsufficientFundsError,
    PanelError,
)
from smm_pipeline.panel.ratelimit import Priority, poll_limit
from smm_pipeline.warehouse.db import Location, connect
from smm_pipeline.warehouse.journal import AnswerJournal, journal_location
from smm_pipeline.warehouse.orders import (
    Settled,
    SubmitOutcome,
    mark_sending,
    pending_rows,
    record_outcomes,
    settle_dead_claims,
)

log = logging.getLogger(__name__)
NOT_ENOUGH_FUNDS_STOP = "not sent: Not enough funds on balance (the panel's batch stopped)"
NOT_THE_API_STOP = (
    "not sent: the panel answered an earlier row with something that is not the API ({cause}); "
    "check the panel's url and key, then drop the file again to send these rows"
)
JOURNAL_STOP = (
    "not sent: the answer journal beside the warehouse could not be written ({cause}); free "
    "the disk, then drop the file again to send these rows"
)
CLAIM_ROWS_PER_SLOT = 8  # rows claimed at a time, per worker
OUTCOME_BATCH_ROWS = 256
OUTCOME_BATCH_SECONDS = 1.0
PROGRESS_SECONDS = 10.0  # progress lines never closer than this; at most 1.5 × this apart
PROGRESS_STEP = 0.05  # of the rows: done since the last line, it brings the next one forward
BUDGET_MINUTE_SECONDS = 61.0  # the budget counts its minute over 61 s (panel/ratelimit.py)
_JOIN_SECONDS_ON_INTERRUPT = 5.0


def duration_text(seconds: float) -> str:
    """`8.4s`, `3m05s`, `2h07m`."""
    if seconds < 59.95:
        return f"{max(0.0, seconds):.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def budget_rate(client: PanelClient, call_seconds: float | None = None) -> float:
    """Calls a second the panel's budget allows this client: `rate_limit_per_minute` over the
    budget's minute (a poll client: the polls' share of it), and, once the time a call takes
    is known, no more than `max_concurrency` such calls at once."""
    per_minute = client.panel.rate_limit_per_minute
    if client.priority is Priority.POLL:
        per_minute = poll_limit(per_minute)
    rate = per_minute / BUDGET_MINUTE_SECONDS
    if call_seconds:
        rate = min(rate, client.panel.max_concurrency / call_seconds)
    return rate


class Lane:
    """One panel's part of a run, for the ETA: its units of work (rows, or poll calls), how
    many are done, and the time its calls take (timed by the threads that make them)."""

    def __init__(self, client: PanelClient, total: int) -> None:
        self.client = client
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self._call_seconds = 0.0
        self._timed = 0

    def timed(self, seconds: float) -> None:
        with self._lock:
            self._call_seconds += seconds
            self._timed += 1

    def rate(self, elapsed: float) -> tuple[float, str]:
        """Units a second for the ETA, and what it is: the budget's, or the observed if slower."""
        with self._lock:
            call = self._call_seconds / self._timed if self._timed else None
        allowed = budget_rate(self.client, call)
        observed = self.done / elapsed if self.done and elapsed > 0 else None
        if observed is not None and observed < allowed:
            return observed, "observed"
        return allowed, "budget"


class ProgressLog:
    """When a long run writes a progress line, and the tail every line shares (calls made,
    time, ETA); the caller writes the head (what is done of what). See the module docstring.
    One thread writes a given log."""

    def __init__(
        self, emit: Callable[[str], None], lanes: list[Lane], *, unit: str = "rows",
        every: float | None = None,
    ) -> None:  # fmt: skip
        self.emit = emit
        self.lanes = lanes
        self.unit = unit
        self.every = PROGRESS_SECONDS if every is None else every
        self.started = time.perf_counter()
        self.lines = 0
        self._last: float | None = None
        self._last_done = 0

    @property
    def done(self) -> int:
        return sum(lane.done for lane in self.lanes)

    @property
    def total(self) -> int:
        return sum(lane.total for lane in self.lanes)

    def due(self) -> bool:
        """The first line is due; then one PROGRESS_STEP of the work or 1.5 × `every` later,
        never sooner than `every`; none once all is done (the last line follows)."""
        if self._last is None:
            return True
        if self.done >= self.total:
            return False
        gap = time.perf_counter() - self._last
        stepped = self.done - self._last_done >= PROGRESS_STEP * max(1, self.total)
        return gap >= 1.5 * self.every or (gap >= self.every and stepped)

    def until_due(self) -> float:
        """Seconds until a line is due with nothing more done."""
        since = self.started if self._last is None else self._last
        return max(0.0, since + 1.5 * self.every - time.perf_counter())

    def eta(self, elapsed: float) -> str:
        left = [(lane.total - lane.done, *lane.rate(elapsed)) for lane in self.lanes]
        left = [(n, rate, how) for n, rate, how in left if n > 0]
        if not left:
            return "ETA 0s"
        # Panels run side by side: the last to finish sets the ETA (and says what it rests on).
        n, rate, how = max(left, key=lambda x: x[0] / x[1])
        speed = sum(r for _, r, _ in left)
        return f"ETA {duration_text(n / rate)} ({how} {speed:.1f} {self.unit}/s)"

    def line(self, head: str, calls: int, *, last: bool = False) -> None:
        """Write `head` with the shared tail; the last line gives the time taken instead."""
        now = time.perf_counter()
        elapsed = now - self.started
        if last:
            tail = f", {calls} calls in {duration_text(elapsed)}"
        else:
            tail = f", {calls} calls, {duration_text(elapsed)} elapsed, {self.eta(elapsed)}"
        self._last, self._last_done = now, self.done
        self.lines += 1
        self.emit(head + tail)


@dataclass
class SubmitReport:
    """What a submission did, per panel and in total."""

    total: int = 0
    submitted: int = 0
    failed: int = 0
    ambiguous: int = 0
    settled: Settled = field(default_factory=Settled)
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
    def recovered_ambiguous(self) -> int:
        """Rows an earlier, dead run had in flight: ambiguous, never resent."""
        return self.settled.ambiguous

    @property
    def done(self) -> int:
        return self.submitted + self.failed + self.ambiguous


def _text(message: str) -> str:
    """A panel's words as storable text: a lone surrogate (`"\\ud800"` in its JSON) cannot be
    encoded as UTF-8 for the journal or DuckDB, so it is kept escaped."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def outcome_of(panel: str, ref: str, result: int | BaseException) -> SubmitOutcome:
    """Classify one `add`: only a definite answer is submitted or failed."""
    now = datetime.now(UTC)
    if isinstance(result, int):
        return SubmitOutcome(panel, ref, "submitted", order_id=result, submitted_at=now)
    if isinstance(result, AmbiguousSubmissionError):
        return SubmitOutcome(panel, ref, "ambiguous", error=_text(result.message), submitted_at=now)
    if isinstance(result, PanelError):
        return SubmitOutcome(panel, ref, "failed", error=_text(result.message))
    # Anything else went wrong on our side, possibly after the request left: never resend.
    return SubmitOutcome(
        panel, ref, "ambiguous", error=f"unexpected {type(result).__name__}", submitted_at=now
    )


def _stop_reason(result: int | BaseException) -> str | None:
    """Why the panel's batch stops after this answer, or None."""
    if isinstance(result, InsufficientFundsError):
        return NOT_ENOUGH_FUNDS_STOP
    if isinstance(result, AmbiguousSubmissionError) and result.stops_batch:
        return NOT_THE_API_STOP.format(cause=result.cause.message)
    return None


@dataclass(frozen=True)
class PendingRow:
    ref: str
    params: dict[str, str]
    cost: Decimal


# What a worker hands back: the row and its outcome, or None when it was not sent.
_Answer = tuple["_PanelBatch", PendingRow, "SubmitOutcome | None"]


class _PanelBatch:
    """One panel's rows, its worker threads and its stop flag.

    Only the calling thread touches `claimed`, `open` and the warehouse; workers see the
    queue, the journal and the flags only."""

    def __init__(
        self,
        panel: str,
        client: PanelClient,
        rows: list[PendingRow],
        journal: AnswerJournal,
        answers: queue.Queue[_Answer],
        abort: threading.Event,
    ) -> None:
        self.panel = panel
        self.client = client
        self.rows = rows
        self.size = client.panel.max_concurrency
        self.lane = Lane(client, len(rows))
        self.claim_rows = self.size * CLAIM_ROWS_PER_SLOT
        self.claimed = 0  # rows[:claimed] were offered to a claim (or stopped)
        self.open = 0  # claimed rows whose answer has not come back yet
        self.closed = False
        self.stop = threading.Event()
        self.stop_reason = ""
        self._journal = journal
        self._ready: queue.Queue[PendingRow | None] = queue.Queue()
        self._answers = answers
        self._abort = abort
        self._workers = [
            threading.Thread(target=self._work, name=f"submit-{self.panel}-{i}", daemon=True)
            for i in range(min(self.size, len(rows)))
        ]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def _work(self) -> None:
        while (row := self._ready.get()) is not None:
            if self._abort.is_set():
                return  # claimed, never sent: the claim's settlement makes it pending again
            try:
                self._send(row)
            except BaseException as exc:  # never leave the dispatcher waiting for an answer
                self._stop(f"not sent: a worker failed ({type(exc).__name__})")
                error = f"unexpected {type(exc).__name__} while sending: it may have left"
                self._answers.put((self, row, SubmitOutcome(self.panel, row.ref, "ambiguous",
                                                            error=error)))  # fmt: skip

    def _send(self, row: PendingRow) -> None:
        """One row: journaled, sent, journaled, handed back (or handed back not sent)."""
        if self.stop.is_set():
            self._answers.put((self, row, None))
            return
        try:
            self._journal.sending(self.panel, row.ref)
        except OSError as exc:  # nothing may leave that the journal does not know of
            self._stop(JOURNAL_STOP.format(cause=exc))
            self._answers.put((self, row, None))
            return
        sent = time.perf_counter()
        try:
            result: int | BaseException = self.client.add(row.params)
        except Exception as exc:  # classified by outcome_of, never resent
            result = exc
        self.lane.timed(time.perf_counter() - sent)
        outcome = outcome_of(self.panel, row.ref, result)
        try:
            self._journal.answered(outcome.to_json())
        except OSError as exc:  # the dispatcher still records this answer
            self._stop(JOURNAL_STOP.format(cause=exc))
        reason = _stop_reason(result)
        if reason is not None:
            self._stop(reason)
        self._answers.put((self, row, outcome))

    def _stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()

    @property
    def wants_rows(self) -> bool:
        """Fewer than two rounds of work wait in the queue, and rows are left to claim."""
        return not self.closed and not self.stop.is_set() and self._ready.qsize() < 2 * self.size

    def next_claim(self) -> list[PendingRow]:
        batch = self.rows[self.claimed : self.claimed + self.claim_rows]
        self.claimed += len(batch)
        return batch

    def queue_claimed(self, batch: list[PendingRow], flagged: set[str]) -> None:
        """Queue the rows the claim flagged (a row someone else claimed is theirs to send)."""
        for row in batch:
            if row.ref in flagged:
                self.open += 1
                self._ready.put(row)
            else:
                self.lane.total -= 1  # not this run's to send: out of the ETA
        if self.claimed == len(self.rows):
            self.close()

    def stop_unclaimed(self) -> list[tuple[SubmitOutcome, Decimal]]:
        """The rows never claimed, failed with the stop reason; no more claims."""
        rest = self.rows[self.claimed :]
        self.claimed = len(self.rows)
        self.close()
        return [(self.stopped(r.ref), r.cost) for r in rest]

    def stopped(self, ref: str) -> SubmitOutcome:
        return SubmitOutcome(self.panel, ref, "failed", error=self.stop_reason)

    def close(self) -> None:
        """No more rows: each worker exits once the queue is drained."""
        if not self.closed:
            self.closed = True
            for _ in self._workers:
                self._ready.put(None)

    @property
    def finished(self) -> bool:
        return self.closed and self.open == 0

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers; True when none is left running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            if worker.is_alive():
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                worker.join(left)
        return not any(w.is_alive() for w in self._workers)


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
    """The calling thread's loop: claims ahead, collects answers, records them in batches,
    each warehouse write a short connection of its own."""

    def __init__(
        self,
        location: Location,
        journal: AnswerJournal,
        batches: list[_PanelBatch],
        answers: queue.Queue[_Answer],
        report: SubmitReport,
        progress: Callable[[str], None],
        started: float,
    ) -> None:
        self.location = location
        self.journal = journal
        self.batches = batches
        self.answers = answers
        self.report = report
        self.progress = progress
        self.started = started
        self.unrecorded: list[tuple[SubmitOutcome, Decimal]] = []
        self.oldest = 0.0  # when the oldest unrecorded outcome came in
        self.log = ProgressLog(progress, [b.lane for b in batches])
        self.log.started = started
        self._lanes = {b.panel: b.lane for b in batches}
        self._calls_before = sum(b.client.total_calls for b in batches)

    def claim(self) -> None:
        """One write section: flag the next rows `sending` for every panel that wants rows."""
        wanting = [b for b in self.batches if b.wants_rows]
        if not wanting:
            return
        with connect(self.location) as conn:
            for batch in wanting:
                # Rows another worker claimed first (runs on other machines share the outbox
                # on Postgres) are skipped at once, up to rows that are free: waiting for the
                # next round instead would leave this worker idle behind the other.
                while batch.wants_rows:
                    rows = batch.next_claim()
                    flagged = mark_sending(
                        conn, batch.panel, [r.ref for r in rows], self.journal.claim_id
                    )
                    batch.queue_claimed(rows, flagged)
                    if flagged or not rows:
                        break

    def _stop_stopped(self) -> None:
        for batch in self.batches:
            if batch.stop.is_set() and batch.panel not in self.report.stopped_panels:
                self.report.stopped_panels.append(batch.panel)
                self._collect(batch.stop_unclaimed())
                self.progress(f"{batch.panel}: batch stopped: {batch.stop_reason}")

    def run(self) -> None:
        if self.report.total:
            self._progress_line()
        while not all(b.finished for b in self.batches) or self.unrecorded:
            self._stop_stopped()
            self.claim()
            done = all(b.finished for b in self.batches)
            wait = 0.0 if done else min(OUTCOME_BATCH_SECONDS, self.log.until_due())
            if self.unrecorded:
                wait = min(wait, self.oldest + OUTCOME_BATCH_SECONDS - time.perf_counter())
            for batch, row, outcome in _answers_within(self.answers, wait):
                batch.open -= 1
                self._collect([(outcome or batch.stopped(row.ref), row.cost)])
            self._stop_stopped()  # a stop whose rows were all claimed ends the loop here
            self.record_if_due(all(b.finished for b in self.batches))
            if self.report.total and self.log.due():
                self._progress_line()
        if self.report.total:
            self._progress_line(last=True)

    def _collect(self, outcomes: list[tuple[SubmitOutcome, Decimal]]) -> None:
        if outcomes and not self.unrecorded:
            self.oldest = time.perf_counter()
        self.unrecorded += outcomes

    def record_if_due(self, finished: bool) -> None:
        now = time.perf_counter()
        due = (
            finished
            or len(self.unrecorded) >= OUTCOME_BATCH_ROWS
            or now - self.oldest >= OUTCOME_BATCH_SECONDS
        )
        if not self.unrecorded or not due:
            return
        costs = {(o.panel, o.ref): cost for o, cost in self.unrecorded}
        with connect(self.location) as conn:
            written = record_outcomes(
                conn, [o for o, _ in self.unrecorded], claim_id=self.journal.claim_id
            )
        for outcome in written:
            self.report.add(outcome, costs[(outcome.panel, outcome.ref)])
            self._lanes[outcome.panel].done += 1
        self.unrecorded = []

    def record_answers_in_hand(self) -> None:
        """After an interruption: record what came back and is not written yet (best effort:
        what fails here is still in the journal, unless its journal write failed too)."""
        for batch, row, outcome in _answers_within(self.answers, 0.0):
            batch.open -= 1
            self._collect([(outcome or batch.stopped(row.ref), row.cost)])
        try:
            self.record_if_due(True)
        except Exception as exc:  # the original interruption is the run's error
            log.warning("answers of an interrupted submission not recorded: %s", exc)

    def _progress_line(self, *, last: bool = False) -> None:
        r = self.report
        head = (
            f"{r.done}/{r.total} rows done, {r.submitted} submitted, "
            f"estimated spend {money_text(r.estimated_spend)}"
        )
        head += f", {r.failed} failed" if r.failed else ""
        head += f", {r.ambiguous} ambiguous" if r.ambiguous else ""
        calls = sum(b.client.total_calls for b in self.batches) - self._calls_before
        self.log.line(head, calls, last=last)


def settle_interrupted(location: Location, progress: Callable[[str], None]) -> Settled:
    """Settle what dead submitting processes left `sending` (see journal.py)."""
    with connect(location) as conn:
        settled = settle_dead_claims(conn, journal_location(location))
    if settled.rows:
        progress(
            f"an earlier run stopped mid-send: {settled.answered} answers it had received "
            f"recorded, {settled.released} rows it never sent pending again, "
            f"{settled.ambiguous} rows in flight marked ambiguous (never resent)"
        )
    return settled


def _require_clients(rows: Mapping[str, object], clients: Mapping[str, PanelClient]) -> None:
    missing = sorted(set(rows) - set(clients))
    if missing:
        raise ValueError(f"no panel client for {', '.join(missing)}: nothing was sent")


def submit_rows(
    location: Location,
    rows: Mapping[str, list[PendingRow]],
    clients: Mapping[str, PanelClient],
    *,
    progress: Callable[[str], None] = log.info,
    report: SubmitReport | None = None,
) -> SubmitReport:
    """Send these pending rows (per panel, in order), panels in parallel, each within its own
    limits; a row some other process claimed meanwhile is left to it."""
    started = time.perf_counter()
    report = report or SubmitReport()
    _require_clients(rows, clients)
    report.total = sum(len(r) for r in rows.values())
    calls_before = sum(c.total_calls for c in clients.values())
    journal = AnswerJournal(journal_location(location))
    answers: queue.Queue[_Answer] = queue.Queue()
    abort = threading.Event()
    batches = [
        _PanelBatch(p, clients[p], r, journal, answers, abort) for p, r in sorted(rows.items())
    ]
    dispatcher = _Dispatcher(location, journal, batches, answers, report, progress, started)
    clean = False
    try:
        for batch in batches:
            batch.start()
        dispatcher.run()
        clean = True
    finally:
        if not clean:
            abort.set()
        for batch in batches:
            batch.close()
        stopped = all(b.join(None if clean else _JOIN_SECONDS_ON_INTERRUPT) for b in batches)
        if clean:
            journal.close()
        elif stopped:
            # Interrupted: the answers in hand are recorded, the journal holds the rest, and
            # claims never journaled were never sent. Settled now, so the warehouse is as true
            # as after a finished run. (With a request still in flight the journal stays
            # locked until the process is gone.)
            dispatcher.record_answers_in_hand()
            journal.release()
            settle_interrupted(location, progress)
    report.calls = sum(c.total_calls for c in clients.values()) - calls_before
    report.seconds = time.perf_counter() - started
    return report


def rows_by_panel(records: list[dict]) -> dict[str, list[PendingRow]]:
    """Pending outbox records (PENDING_COLUMNS) as rows to send, per panel, in order."""
    by_panel: dict[str, list[PendingRow]] = {}
    for record in records:
        row = PendingRow(
            record["ref"], json.loads(record["params"]), Decimal(str(record["estimated_cost"]))
        )
        by_panel.setdefault(record["panel"], []).append(row)
    return by_panel


def submit_file(
    location: Location,
    file_hash: str,
    clients: Mapping[str, PanelClient],
    *,
    progress: Callable[[str], None] = log.info,
) -> SubmitReport:
    """Settle what dead runs left in flight, then send every pending row of a file."""
    with connect(location) as conn:
        records = pending_rows(conn, file_hash).to_dict("records")
    rows = rows_by_panel(records)
    _require_clients(rows, clients)
    report = SubmitReport(settled=settle_interrupted(location, progress))
    if report.settled.released:  # rows a dead run claimed but never sent: this file's too
        with connect(location) as conn:
            rows = rows_by_panel(pending_rows(conn, file_hash).to_dict("records"))
    return submit_rows(location, rows, clients, progress=progress, report=report)
