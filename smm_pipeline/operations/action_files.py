"""The lifecycle refill and cancel files share: claim the file, check its rows, send, record.

A refill or cancel file goes: read (file-level problems reject it whole: rejected/ beside
errors.csv) → the named orders' statuses refreshed from the panel (so "finished" means finished
now, not at the last poll) → each row checked against the warehouse (known order, service flag,
finished or not; a row that fails is reported, the others still go) → rows this content already
requested skipped → the rest requested in windows, each recorded as in flight before it leaves
→ results.csv beside the file in processed/.

Exactly once: content already processed (by sha256, whatever its name) sends nothing again; a
run that died midway is resumed by the next run of the same content, which skips every order
the content already requested (or may have: ambiguous) and sends only the rest.

What differs between the two is an `ActionSpec`: `operations/refills.py` (`REFILL_SPEC`) and
`operations/cancels.py` (`CANCEL_SPEC`) each say which orders may be sent, how to send them and
how to record the answers; `ActionSpec.process` runs this lifecycle with them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from smm_pipeline.config import Settings
from smm_pipeline.intake.csv_files import file_hash as content_hash
from smm_pipeline.intake.refills_cancels import ActionFileResult, ActionKind, read_action_file
from smm_pipeline.intake.reports import results_report_path, write_csv_atomic
from smm_pipeline.intake.row_errors import RowError
from smm_pipeline.operations.inbox import FileRejected, Folders, move_handled, reject_file
from smm_pipeline.operations.polling import observations_frame
from smm_pipeline.panel.client import MAX_IDS_PER_CALL, BatchStop, PanelClient, chunked
from smm_pipeline.panel.errors import PanelError
from smm_pipeline.panel.models import RefillResult
from smm_pipeline.warehouse.db import Location, connect
from smm_pipeline.warehouse.processed_files import FileClaim, claim_file, record_file
from smm_pipeline.warehouse.refills import (
    RequestTable,
    file_requests,
    order_targets,
    record_in_flight,
)
from smm_pipeline.warehouse.status import Cadence, apply_observations

log = logging.getLogger(__name__)

# Report-only states: refused by the pipeline before sending, or already requested.
NOT_SENT = "not_sent"
SKIPPED = "skipped"
REPORT_COLUMNS = ("row", "panel", "order", "ref", "service", "state", "refill_id", "error")


@dataclass(frozen=True)
class RowOutcome:
    """What became of one row of a refill or cancel file (one line of results.csv)."""

    row: int
    panel: str
    order_id: int | None
    ref: str | None
    service_id: int | None
    state: str
    refill_id: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class ActionSpec:
    """What differs between refill and cancel files; the lifecycle is the same."""

    kind: ActionKind
    folder: str  # inbox/<folder>/ and processed_files.kind
    table: RequestTable
    done_states: tuple[str, ...]  # earlier requests that must not be repeated
    refusal: Callable[[Any], str | None]  # why a target row may not be sent, or None
    send: Callable[[PanelClient, list[int], BatchStop], Sequence[Any]]
    record: Callable[[duckdb.DuckDBPyConnection, str, str, datetime, Sequence[Any]], list[Any]]
    state_of: Callable[[Any], str]
    report_columns: tuple[str, ...] = REPORT_COLUMNS

    def process(
        self,
        settings: Settings,
        location: Location,
        file_name: str,
        file_hash: str,
        clients: Mapping[str, PanelClient],
        cadence: Cadence,
        *,
        progress: Callable[[str], None] = log.info,
    ) -> ActionFileSummary:
        """Read, check, request and report one file dropped in inbox/<folder>/ (see the
        module docstring); raises FileRejected when the file is refused as a whole."""
        started = time.perf_counter()
        folders = Folders(settings.data_dir)
        source = folders.inbox(self.folder) / file_name
        if not source.is_file():
            raise FileNotFoundError(f"{source} is gone; drop the file again to handle it")
        content = source.read_bytes()
        digest = content_hash(content)
        warnings: list[str] = []
        if digest != file_hash:
            warnings.append(
                f"{file_name} changed since the sensor saw it; handling its new content"
            )
        read = read_action_file(content, file_name, settings, self.kind)
        calls_before = sum(c.total_calls for c in clients.values())
        summary = ActionFileSummary(self.kind, file_name, digest, Path(), [], warnings=warnings)
        # Short connections only: the warehouse is never held while a panel is asked (other runs
        # write between this file's windows).
        with connect(location) as conn:
            claim = claim_file(conn, digest, self.folder, file_name, datetime.now(UTC))
            if not read.ok:
                raise _reject(self, conn, folders, source, claim, read.errors)
            if claim.previous_outcome == "processed":
                targets = order_targets(conn, _targets_frame(read))
                earlier = _earlier_by_order(file_requests(conn, self.table, claim))
        if claim.previous_outcome == "processed":
            summary.already_processed = True
            summary.outcomes = _already_processed(targets, claim, earlier)
            progress(
                f"{file_name}: this content was already processed as {claim.file_name} "
                f"({claim.first_seen_at:%Y-%m-%d %H:%M} UTC): nothing is requested again"
            )
        else:
            summary.resumed = claim.previous_outcome == "requesting"
            if summary.resumed:
                progress(f"{file_name}: an earlier run on this content stopped midway: resuming")
            summary.outcomes = _check_and_send(self, location, read, claim, clients, cadence,
                                               summary, progress)  # fmt: skip

        target_name = move_handled(source, folders.processed).name
        summary.results_file = _write_results(
            results_report_path(folders.processed, target_name), self, summary.outcomes
        )
        with connect(location) as conn:
            _record(conn, self, claim, "processed", len(summary.outcomes))
        summary.calls = sum(c.total_calls for c in clients.values()) - calls_before
        summary.seconds = time.perf_counter() - started
        progress(summary.line)
        return summary


@dataclass
class ActionFileSummary:
    """What a run did with one file, for the run's metadata and log."""

    kind: str
    file_name: str
    file_hash: str
    results_file: Path
    outcomes: list[RowOutcome]
    already_processed: bool = False
    resumed: bool = False
    calls: int = 0
    status_refreshed: int = 0
    orders_changed: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(o.state for o in self.outcomes).items()))

    def count(self, state: str) -> int:
        return sum(1 for o in self.outcomes if o.state == state)

    @property
    def line(self) -> str:
        parts = ", ".join(f"{n} {s}" for s, n in self.counts.items()) or "no rows"
        return (
            f"{self.file_name}: {len(self.outcomes)} rows: {parts}; results in {self.results_file}"
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                (
                    o.row,
                    o.panel,
                    o.order_id,
                    o.ref,
                    o.service_id,
                    o.state,
                    o.refill_id,
                    o.error or "",
                )
                for o in self.outcomes
            ],  # fmt: skip
            columns=list(REPORT_COLUMNS),
        )


# ------------------------------------------------------------------ refused alike


def order_problem(target: Any, verb: str) -> str | None:
    """The refusals refills and cancels share: an order we do not know, or cannot name."""
    if not target.known:
        if _present(target.order_id) and not _present(target.ref):
            return (
                f"order {int(target.order_id)} is not in the warehouse for panel "
                f"{target.panel!r}: only orders this pipeline placed can be {verb}"
            )
        return f"no order with ref {target.ref!r} on panel {target.panel!r}"
    if target.submit_state != "submitted" or not _present(target.order_id):
        return (
            f"ref {target.ref!r} has no panel order id (submit_state {target.submit_state}): "
            "resolve it first"
        )
    if not target.in_catalog:
        return (
            f"service {target.service_id} is not in {target.panel}'s catalog; refresh the "
            "catalog and drop the file again"
        )
    return None


def _present(value: Any) -> bool:
    return (
        value is not None
        and not (isinstance(value, float) and pd.isna(value))
        and (value is not pd.NA)
    )


# ------------------------------------------------------------------ the lifecycle's steps


def _reject(
    spec: ActionSpec,
    conn: duckdb.DuckDBPyConnection,
    folders: Folders,
    source: Path,
    claim: FileClaim,
    errors: list[RowError],
) -> FileRejected:
    rejected = reject_file(source, folders, errors, nothing="requested")
    if claim.previous_outcome != "processed":  # never forget that content was processed
        _record(conn, spec, claim, "rejected", 0)
    return rejected


def _record(
    conn: duckdb.DuckDBPyConnection, spec: ActionSpec, claim: FileClaim, outcome: str, rows: int
) -> None:
    """The claimed file's outcome; it keeps the name and time of its first sighting."""
    record_file(
        conn, file_hash=claim.file_hash, kind=spec.folder, file_name=claim.file_name,
        outcome=outcome, rows=rows, seen_at=claim.first_seen_at,
    )  # fmt: skip


def _earlier_by_order(frame: pd.DataFrame) -> dict[tuple[str, int], Any]:
    return {(r.panel, int(r.order_id)): r for r in frame.itertuples(index=False)}


def _int_or_none(value: Any) -> int | None:
    return int(value) if _present(value) else None


def _target_fields(t: Any) -> tuple[int, str, int | None, str | None, int | None]:
    """row, panel, order_id, ref, service_id of an `order_targets` row, nulls as None."""
    ref = t.ref if isinstance(t.ref, str) else None
    return (
        int(t.row_number),
        str(t.panel),
        _int_or_none(t.order_id),
        ref,
        _int_or_none(t.service_id),
    )


def _already_processed(
    targets: pd.DataFrame, claim: FileClaim, earlier: dict[tuple[str, int], Any]
) -> list[RowOutcome]:
    note = (
        f"not requested again: this content was already processed as {claim.file_name} "
        f"({claim.first_seen_at:%Y-%m-%d %H:%M} UTC)"
    )
    outcomes = []
    for t in targets.itertuples(index=False):
        row, panel, order_id, ref, service_id = _target_fields(t)
        before = earlier.get((panel, order_id)) if order_id is not None else None
        detail = f"; that request was {before.state}" if before is not None else ""
        refill_id = _int_or_none(before.refill_id) if before is not None else None
        outcomes.append(
            RowOutcome(row, panel, order_id, ref, service_id, SKIPPED, refill_id, note + detail)
        )
    return outcomes


def _targets_frame(read: ActionFileResult) -> pd.DataFrame:
    return pd.DataFrame(
        [(r.row_number, r.panel, r.order_id, r.ref) for r in read.rows],
        columns=["row_number", "panel", "order_id", "ref"],
    )


def _refresh_statuses(
    location: Location,
    targets: pd.DataFrame,
    clients: Mapping[str, PanelClient],
    cadence: Cadence,
    summary: ActionFileSummary,
    progress: Callable[[str], None],
) -> None:
    """Fetch the current status of every known order the file names (100 ids a call) and
    record it like a status poll would; a panel that cannot be reached keeps its stored
    statuses, with a warning."""
    known = targets[targets["known"] & targets["order_id"].notna()]
    frames = []
    for panel, group in known.groupby("panel", sort=True):
        client = clients.get(str(panel))
        if client is None:
            continue
        ids = [int(i) for i in group["order_id"]]
        try:
            statuses = client.statuses(ids)
        except PanelError as exc:
            warning = f"{panel}: could not refresh order statuses ({exc.message}); using the "
            summary.warnings.append(warning + "last polled ones")
            progress(summary.warnings[-1])
            continue
        frames.append(observations_frame(str(panel), statuses))
    if not frames:
        return
    observed = pd.concat(frames, ignore_index=True)
    with connect(location) as conn:
        summary.orders_changed, _ = apply_observations(conn, observed, datetime.now(UTC), cadence)
    summary.status_refreshed = len(observed)
    progress(f"refreshed {len(observed)} order statuses, {summary.orders_changed} changed")


def _check_and_send(
    spec: ActionSpec,
    location: Location,
    read: ActionFileResult,
    claim: FileClaim,
    clients: Mapping[str, PanelClient],
    cadence: Cadence,
    summary: ActionFileSummary,
    progress: Callable[[str], None],
) -> list[RowOutcome]:
    wanted = _targets_frame(read)
    with connect(location) as conn:
        before_refresh = order_targets(conn, wanted)
    _refresh_statuses(location, before_refresh, clients, cadence, summary, progress)
    with connect(location) as conn:
        targets = order_targets(conn, wanted)
        earlier = _earlier_by_order(file_requests(conn, spec.table, claim))

    outcomes: dict[int, RowOutcome] = {}
    to_send: dict[str, list[Any]] = {}
    queued: dict[tuple[str, int | None], int] = {}
    for t in targets.itertuples(index=False):
        row, panel, order_id, ref, service_id = _target_fields(t)
        before = earlier.get((panel, order_id)) if order_id is not None else None
        if before is not None and before.state in spec.done_states:
            outcomes[row] = RowOutcome(
                row, panel, order_id, ref, service_id, SKIPPED, _int_or_none(before.refill_id),
                f"already requested from this file's content ({before.state}); not sent again",
            )  # fmt: skip
            continue
        refusal = spec.refusal(t)
        first = queued.setdefault((panel, order_id), row) if refusal is None else row
        if refusal is None and first != row:  # one by order id, one by its ref
            refusal = f"order {order_id} is already listed in row {first}"
        if refusal is not None:
            outcomes[row] = RowOutcome(row, panel, order_id, ref, service_id, NOT_SENT,
                                       error=refusal)  # fmt: skip
            continue
        to_send.setdefault(panel, []).append(t)
    sent = sum(len(v) for v in to_send.values())
    progress(
        f"{read.file_name}: {len(read.rows)} rows, {sent} to request, "
        f"{sum(o.state == NOT_SENT for o in outcomes.values())} refused, "
        f"{sum(o.state == SKIPPED for o in outcomes.values())} already requested"
    )
    for panel, rows in to_send.items():
        for outcome in _send_panel(spec, location, clients[panel], rows, claim, progress):
            outcomes[outcome.row] = outcome
    return [outcomes[r] for r in sorted(outcomes)]


def _send_panel(
    spec: ActionSpec,
    location: Location,
    client: PanelClient,
    rows: list[Any],
    claim: FileClaim,
    progress: Callable[[str], None],
) -> list[RowOutcome]:
    """Request a panel's rows in windows of (100 ids x the panel's concurrency): each window
    is claimed in flight (one short write), sent (the client splits it into calls of 100),
    then recorded (another). An order another run of the same content claimed meanwhile is
    skipped, never sent twice."""
    panel = client.panel.name
    by_order = {int(r.order_id): r for r in rows}
    window = MAX_IDS_PER_CALL * client.panel.max_concurrency
    outcomes: list[RowOutcome] = []
    stop = BatchStop()  # an answer that is not the API stops the whole file's panel batch
    for ids in chunked(list(by_order), window):
        requested_at = datetime.now(UTC)
        with connect(location) as conn:
            mine = set(record_in_flight(conn, spec.table, panel, ids, claim, requested_at))
        claimed = [i for i in ids if i in mine]  # in the file's order
        for order_id in [i for i in ids if i not in mine]:
            row, _, _, ref, service_id = _target_fields(by_order[order_id])
            outcomes.append(
                RowOutcome(row, panel, order_id, ref, service_id, SKIPPED, None,
                           "requested meanwhile by another run of this file's content; "
                           "not sent again")
            )  # fmt: skip
        if not claimed:
            continue
        results = spec.send(client, claimed, stop)
        with connect(location) as conn:
            results = spec.record(conn, panel, claim.file_name, requested_at, results)
        for result in results:
            row, _, order_id, ref, service_id = _target_fields(by_order[int(result.order_id)])
            state = spec.state_of(result)
            refill_id = result.refill_id if isinstance(result, RefillResult) else None
            outcomes.append(
                RowOutcome(
                    row, panel, order_id, ref, service_id, state,
                    refill_id if state == "submitted" else None,
                    None if state in ("submitted", "accepted") else result.error,
                )
            )  # fmt: skip
        progress(
            f"{panel}: {len(outcomes)}/{len(by_order)} {spec.kind} requests answered "
            f"({dict(Counter(o.state for o in outcomes))})"
        )
    return outcomes


def _write_results(path: Path, spec: ActionSpec, outcomes: list[RowOutcome]) -> Path:
    values = {
        "row": lambda o: o.row,
        "panel": lambda o: o.panel,
        "order": lambda o: "" if o.order_id is None else o.order_id,
        "ref": lambda o: o.ref or "",
        "service": lambda o: "" if o.service_id is None else o.service_id,
        "state": lambda o: o.state,
        "result": lambda o: o.state,
        "refill_id": lambda o: "" if o.refill_id is None else o.refill_id,
        "error": lambda o: o.error or "",
    }
    columns = spec.report_columns
    return write_csv_atomic(path, columns, ([values[c](o) for c in columns] for o in outcomes))
