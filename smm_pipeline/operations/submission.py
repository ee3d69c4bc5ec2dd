"""Send a file's recorded (pending) orders to their panels, exactly once.

Rows go out in windows: one statement flags a window `sending`, its requests run concurrently
within the panel's limits, and one statement records their outcomes. A crash at any point
leaves a row either `pending` (never sent: sent by the next run) or `sending` (maybe sent:
turned ambiguous by the next run, never resent). "Not enough funds on balance" stops the
panel's batch: the rows not yet sent are marked failed with that reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd

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
WINDOW_PER_CONCURRENCY = 4
NOT_ENOUGH_FUNDS_STOP = "not sent: Not enough funds on balance (the panel's batch stopped)"


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
    lock = threading.Lock()  # one DuckDB connection, one writer at a time
    with connect(db_path) as conn:
        report.recovered_ambiguous = mark_interrupted_as_ambiguous(conn, file_hash)
        if report.recovered_ambiguous:
            progress(
                f"{report.recovered_ambiguous} rows were caught mid-send by an earlier run: "
                "marked ambiguous, not resent"
            )
        rows = pending_rows(conn, file_hash)
        report.total = len(rows)
        calls_before = sum(c.total_calls for c in clients.values())

        def run_panel(panel: str, frame: pd.DataFrame) -> None:
            client = clients[panel]
            window = client.panel.max_concurrency * WINDOW_PER_CONCURRENCY
            records = frame.to_dict("records")
            costs = {r["ref"]: Decimal(str(r["estimated_cost"])) for r in records}
            for start in range(0, len(records), window):
                chunk = records[start : start + window]
                refs = [r["ref"] for r in chunk]
                with lock:
                    mark_sending(conn, panel, refs)
                sends = [(r["ref"], json.loads(r["params"])) for r in chunk]
                results = {
                    item[0]: result
                    for item, result in client.map_concurrent(lambda i: client.add(i[1]), sends)
                }
                outcomes = [outcome_of(panel, ref, results[ref]) for ref in refs]
                out_of_funds = any(isinstance(results[ref], InsufficientFundsError) for ref in refs)
                rest = records[start + window :] if out_of_funds else []
                outcomes += [
                    SubmitOutcome(panel, r["ref"], "failed", error=NOT_ENOUGH_FUNDS_STOP)
                    for r in rest
                ]
                with lock:
                    record_outcomes(conn, outcomes)
                    for o in outcomes:
                        report.add(o, costs[o.ref])
                    done = report.submitted + report.failed + report.ambiguous
                    progress(
                        f"{panel}: {done}/{report.total} rows done, {report.submitted} "
                        f"submitted, estimated spend {report.estimated_spend}, "
                        f"{time.perf_counter() - started:.1f}s elapsed"
                    )
                if out_of_funds:
                    report.stopped_panels.append(panel)
                    progress(f"{panel}: Not enough funds on balance: batch stopped")
                    return

        groups = dict(tuple(rows.groupby("panel", sort=True))) if len(rows) else {}
        with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
            for future in [pool.submit(run_panel, p, f) for p, f in groups.items()]:
                future.result()
    report.calls = sum(c.total_calls for c in clients.values()) - calls_before
    report.seconds = time.perf_counter() - started
    return report
