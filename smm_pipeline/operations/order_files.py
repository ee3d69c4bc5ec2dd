"""An order file's life around its submission: validate and record it, then report and file it.

`prepare_order_file` refreshes what validation needs (a stale catalog, the fresh balance),
validates every row, and records the rows to send in the outbox, or refuses the whole file
(errors.csv beside it in rejected/). `finish_order_file` writes results.csv and moves the file
to processed/. Rows whose ref was already handled by an earlier file are not sent again; a ref
whose earlier attempt definitely failed is sent again.

The run's config names the file and the sha256 the sensor saw. The bytes read are hashed again:
a file rewritten since the sensor looked is not this run's content, so the run refuses it and
leaves it for the run the sensor launches for the new bytes. Content whose rows are already
recorded is resumed (an interrupted run of it) or reported (a re-drop) from the warehouse,
unless some of its rows failed: then it is validated afresh and only those rows are resent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd

from smm_pipeline.config import Settings
from smm_pipeline.errors import InputRefused
from smm_pipeline.intake.budget import batch_errors
from smm_pipeline.intake.csv_files import file_hash as content_hash
from smm_pipeline.intake.csv_files import read_csv_table
from smm_pipeline.intake.orders import (
    ORDER_COLUMNS,
    CatalogEntry,
    ValidatedOrder,
    ValidatedRows,
    validate_order_file,
)
from smm_pipeline.intake.reports import (
    ResultRow,
    results_report_path,
    write_results_csv,
)
from smm_pipeline.intake.row_errors import RowError
from smm_pipeline.money import money_text
from smm_pipeline.operations.catalog import CatalogRefresh, refresh_balance, refresh_catalog
from smm_pipeline.operations.inbox import (
    FileRejected,
    Folders,
    bare_file_name,
    free_target,
    move_handled,
    reject_file,
)
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.errors import PanelError
from smm_pipeline.panel.models import Balance
from smm_pipeline.warehouse.balances import previous_currency, record_balance
from smm_pipeline.warehouse.catalog import catalog_age, load_catalog
from smm_pipeline.warehouse.db import Location, connect
from smm_pipeline.warehouse.orders import (
    RESUBMITTABLE_STATES,
    ExistingRef,
    FileRow,
    existing_refs,
    existing_refs_of,
    file_rows,
    hold_intake,
    record_pending,
    reserved_spend,
)
from smm_pipeline.warehouse.processed_files import file_state, record_file

log = logging.getLogger(__name__)


class FileChanged(InputRefused):
    """The file in the inbox is not the content this run was launched for."""


@dataclass
class SkippedRow:
    row: int
    ref: str
    panel: str
    service: int
    order_id: int | None
    estimated_cost: Decimal
    reason: str


@dataclass
class PreparedOrderFile:
    """What the validation step hands to the submission and report steps."""

    file_name: str
    file_hash: str
    rows: int
    to_submit: int
    panels: list[str]
    estimated_spend: Decimal
    balances_before: dict[str, tuple[Decimal, str]] = field(default_factory=dict)
    skipped: list[SkippedRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resumed: bool = False
    redrop_of: str | None = None
    catalog_refreshes: list[CatalogRefresh] = field(default_factory=list)


def _panels_in_file(content: bytes, settings: Settings) -> list[str]:
    """The enabled panels a file names (all of them when it has no usable panel column)."""
    enabled = set(settings.panel_names)
    if len(enabled) == 1:  # whatever the file says, the answer is that panel
        return sorted(enabled)
    table, _ = read_csv_table(content, known_columns=ORDER_COLUMNS)
    at = table.index("panel") if table is not None else None
    if table is None or at is None:
        return sorted(enabled)
    named = {cell.strip().lower() for cell in table.distinct(at)} & enabled
    return sorted(named) or sorted(enabled)


def _reject_in(
    conn: duckdb.DuckDBPyConnection,
    settings: Settings,
    source: Path,
    file_hash: str,
    errors: list[RowError],
) -> FileRejected:
    """Refuse the file: moved to rejected/ beside its errors.csv, recorded as rejected."""
    rejected = reject_file(source, Folders(settings.data_dir), errors, nothing="submitted")
    record_file(
        conn, file_hash=file_hash, kind="orders", file_name=source.name,
        outcome="rejected", rows=0, seen_at=datetime.now(UTC),
    )  # fmt: skip
    return rejected


def _catalog(
    conn: duckdb.DuckDBPyConnection, panels: list[str]
) -> dict[tuple[str, int], CatalogEntry]:
    return {
        key: CatalogEntry(row.as_service(), row.active)
        for key, row in load_catalog(conn).items()
        if key[0] in panels
    }


def _record_balances(conn: duckdb.DuckDBPyConnection, fetched: list[tuple[str, Balance]]) -> None:
    """Append the balances fetched (what `refresh_balance` records for each)."""
    for panel, balance in fetched:
        record_balance(conn, panel, balance, datetime.now(UTC))


def _currency_errors(
    conn: duckdb.DuckDBPyConnection, balances: Mapping[str, tuple[Decimal, str]]
) -> list[RowError]:
    """The estimates are in the currency the panel's prices were seen in: that of its balances
    so far. A fresh balance in another currency means the rates may not be what they seem."""
    errors = []
    for panel, (_, currency) in sorted(balances.items()):
        before = previous_currency(conn, panel)
        if before is not None and currency and before != currency:
            errors.append(
                RowError(0, "batch", f"panel {panel!r}: its balance is now in {currency}, "
                         f"but its prices and earlier balances were in {before}; the estimated "
                         "costs cannot be compared with the balance: check the panel account's "
                         "currency, then refresh service_catalog and drop the file again")
            )  # fmt: skip
    return errors


def _outbox_frame(rows: list[ValidatedOrder], file_name: str, file_hash: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "panel": [r.panel for r in rows],
            "ref": [r.ref for r in rows],
            "source_file": file_name,
            "file_hash": file_hash,
            "row_number": [r.row_number for r in rows],
            "campaign": pd.array([r.campaign for r in rows], dtype="string"),
            "service_id": [r.service_id for r in rows],
            "service_type": [r.service_type for r in rows],
            "link": pd.array([r.link for r in rows], dtype="string"),
            "quantity": pd.array([r.quantity for r in rows], dtype="Int64"),
            "params": [json.dumps(r.params, ensure_ascii=False, sort_keys=True) for r in rows],
            "estimated_cost": [r.estimated_cost for r in rows],
        }
    )


# Keys looked up in the warehouse, and outbox rows recorded, this many at a time: a 100,000-row
# file never has all its keys or rows as Python objects at once.
_CHUNK_ROWS = 20_000


def _existing_refs(
    conn: duckdb.DuckDBPyConnection, rows: ValidatedRows
) -> dict[tuple[str, str], ExistingRef]:
    """The rows already recorded under the (panel, ref) keys of `rows`, fed to the warehouse
    by columns a chunk at a time."""
    found: dict[tuple[str, str], ExistingRef] = {}
    for start in range(0, len(rows), _CHUNK_ROWS):
        panels, refs = rows.key_columns(start, start + _CHUNK_ROWS)
        keys = pd.DataFrame({"panel": panels, "ref": refs}, dtype=object)
        found.update(existing_refs_of(conn, keys))
    return found


def _outbox_frames(
    rows: ValidatedRows, skip: list[int], file_name: str, file_hash: str
) -> Iterator[pd.DataFrame]:
    """The outbox frames of `rows` but those at the indices in `skip`, in file order."""
    skipping = set(skip)
    chunk: list[ValidatedOrder] = []
    for index, row in enumerate(rows):
        if index in skipping:
            continue
        chunk.append(row)
        if len(chunk) == _CHUNK_ROWS:
            yield _outbox_frame(chunk, file_name, file_hash)
            chunk = []
    if chunk:
        yield _outbox_frame(chunk, file_name, file_hash)


def _redrop(file_name: str, file_hash: str, recorded: list[FileRow], original: str,
            log: Callable[[str], None]) -> PreparedOrderFile:  # fmt: skip
    """The same content was handled before (under any name): report, send nothing."""
    log(f"{file_name} has the same content as {original}, handled before: nothing to submit")
    return PreparedOrderFile(
        file_name, file_hash, len(recorded), 0, [], Decimal(0), redrop_of=original
    )


def _currency(balances: Mapping[str, tuple[Decimal, str]]) -> str | None:
    """The currency of a spend over these panels: theirs when they share one, else unsaid."""
    currencies = {currency for _, currency in balances.values() if currency}
    return currencies.pop() if len(currencies) == 1 else None


def _balances(
    location: Location,
    clients: Mapping[str, PanelClient],
    panels: list[str],
    log: Callable[[str], None],
) -> dict[str, tuple[Decimal, str]]:
    """The fresh balances of `panels` (recorded), for the actual spend of the report."""
    balances: dict[str, tuple[Decimal, str]] = {}
    for panel in panels:
        try:
            balance = refresh_balance(clients[panel], location)
        except PanelError as exc:
            log(f"{panel}: balance not available ({exc.message}); actual spend will be n/a")
            continue
        balances[panel] = (balance.balance, balance.currency)
    return balances


def _unrecorded_rows(
    settings: Settings,
    location: Location,
    content: bytes,
    file_name: str,
    recorded: list[FileRow],
    log: Callable[[str], None],
) -> list[SkippedRow]:
    """The rows of a resumed file that were not recorded: they were skipped at its validation
    because an earlier file had handled their ref. Found again by re-reading the file."""
    with connect(location) as conn:
        catalog = {k: CatalogEntry(r.as_service(), r.active) for k, r in load_catalog(conn).items()}
    result = validate_order_file(content, file_name, catalog, settings, {})
    if any(e.column != "batch" for e in result.errors):
        log(f"{file_name}: some rows no longer validate; results.csv lists the recorded rows only")
    mine = {(r.panel, r.ref) for r in recorded}
    others = [r for r in result.rows if (r.panel, r.ref) not in mine]
    with connect(location) as conn:
        existing = existing_refs(conn, [(r.panel, r.ref) for r in others])
    return [
        SkippedRow(r.row_number, r.ref, r.panel, r.service_id, before.order_id, r.estimated_cost,
                   f"ref already {before.submit_state} from {before.source_file}; not sent again")
        for r in others
        if (before := existing.get((r.panel, r.ref))) is not None
    ]  # fmt: skip


def _resume(
    settings: Settings,
    location: Location,
    file_name: str,
    file_hash: str,
    content: bytes | None,
    accepted_as: str,
    recorded: list[FileRow],
    clients: Mapping[str, PanelClient],
    log: Callable[[str], None],
) -> PreparedOrderFile:
    """Rows of this content were recorded by a run that has not finished: an interrupted run
    (resumed here: its pending rows are sent, its sending rows become ambiguous), or another
    file with the same content whose run is on it (reported as that file's, never sent here)."""
    if accepted_as != file_name:
        log(f"{file_name} has the same content as {accepted_as}, whose run is handling it: "
            "nothing is sent by this run")  # fmt: skip
        return PreparedOrderFile(
            file_name, file_hash, len(recorded), 0, [], Decimal(0), redrop_of=accepted_as
        )
    pending = [r for r in recorded if r.submit_state == "pending"]
    panels = sorted({r.panel for r in pending} & set(clients))
    skipped = [
        SkippedRow(r.row_number, r.ref, r.panel, r.service_id, r.order_id, r.estimated_cost,
                   f"ref already {r.submit_state} from {r.source_file}; not sent again")
        for r in recorded
        if r.source_file != file_name
    ]  # fmt: skip
    if content is not None:
        skipped += _unrecorded_rows(settings, location, content, file_name, recorded, log)
    spend = sum((r.estimated_cost for r in pending), Decimal(0))
    balances = _balances(location, clients, panels, log)
    log(f"{file_name}: {len(recorded)} rows already recorded by an earlier run: resuming, "
        f"{len(pending)} still to send, estimated spend "
        f"{money_text(spend, _currency(balances))}")  # fmt: skip
    return PreparedOrderFile(
        file_name, file_hash, len(recorded) + len(skipped), len(pending), panels, spend,
        balances_before=balances, skipped=skipped, resumed=True,
    )  # fmt: skip


def prepare_order_file(
    settings: Settings,
    location: Location,
    file_name: str,
    file_hash: str,
    clients: Mapping[str, PanelClient],
    *,
    log: Callable[[str], None] = log.info,
) -> PreparedOrderFile:
    """Validate a dropped file and record its rows to send, or raise FileRejected (refused:
    moved to rejected/) or FileChanged (not the content the run is for: left in the inbox)."""
    source = Folders(settings.data_dir).inbox("orders") / bare_file_name(file_name)
    content = source.read_bytes() if source.is_file() else None
    changed = content is not None and content_hash(content) != file_hash
    with connect(location) as conn:
        recorded = file_rows(conn, file_hash)
        state = file_state(conn, file_hash, "orders")
    # Filed already, yet rows of it are pending (an interrupted resubmit, or a run re-executed
    # after its rows were released): they are sent, whoever's run this is (claims are atomic).
    unsent = (
        state is not None
        and state[1] == "processed"
        and any(r.submit_state == "pending" for r in recorded)
    )
    if recorded and state is not None and (state[1] == "accepted" or unsent):
        if changed:
            log(f"{file_name} was rewritten since this run began; the recorded rows are resumed "
                "and the new content is left for its own run")  # fmt: skip
        return _resume(settings, location, file_name, file_hash, None if changed else content,
                       file_name if unsent else state[0], recorded, clients, log)  # fmt: skip
    if changed:
        raise FileChanged(
            f"{source} changed after the sensor saw it (its sha256 is no longer "
            f"{file_hash[:16]}...): nothing was recorded or sent, and the file stays in the "
            "inbox, where the sensor launches a run for its new content"
        )
    failed = any(r.submit_state in RESUBMITTABLE_STATES for r in recorded)
    if recorded and state is not None and state[1] == "processed" and not failed:
        return _redrop(file_name, file_hash, recorded, state[0], log)
    if content is None:
        raise FileNotFoundError(f"{source} is gone; drop the file again to submit it")
    # One short connection before validating (catalog ages, the catalog) and one after (the
    # fresh balances, the refs already handled, the budget, and the outbox or the refusal):
    # each DuckDB connection costs tens of milliseconds, and none is held during the checks
    # or across a request to a panel.
    enabled = settings.panel_names
    with connect(location) as conn:
        ages = {panel: catalog_age(conn, panel) for panel in enabled}
        catalog = _catalog(conn, enabled)
    result = validate_order_file(content, file_name, catalog, settings, {}, content_hash=file_hash)
    # The panels the file names (what its first reading found); any whose catalog is older
    # than the limit is refreshed from the panel, and then the file is checked again.
    panels = result.panels if result.panels is not None else _panels_in_file(content, settings)
    refreshes: list[CatalogRefresh] = []
    fetched: list[tuple[str, Balance]] = []
    problems: list[RowError] = []
    max_age = timedelta(minutes=settings.pipeline.catalog_max_age_minutes)
    balance_read_at = datetime.now(UTC)  # rows other runs submit from now on are reserved
    for panel in panels:
        client = clients[panel]
        try:
            age = ages[panel]
            if age is None or age > max_age:
                refreshes.append(refresh_catalog(client, location))
                log(f"{panel}: catalog refreshed ({refreshes[-1].result.services} services)")
            fetched.append((panel, client.balance()))
        except PanelError as exc:
            problems.append(
                RowError(0, "batch", f"panel {panel!r} could not be reached ({exc.message}); "
                         "nothing was submitted: drop the file again later")
            )  # fmt: skip
            continue
    balances = {panel: (b.balance, b.currency) for panel, b in fetched}
    recorded_balances = False
    if problems or refreshes:
        with connect(location) as conn:
            _record_balances(conn, fetched)
            recorded_balances = True
            if problems:
                raise _reject_in(conn, settings, source, file_hash, problems)
            catalog = _catalog(conn, enabled)
        del result
        result = validate_order_file(
            content, file_name, catalog, settings, {}, content_hash=file_hash
        )

    rows = result.rows
    errors = [e for e in result.errors if e.column != "batch"]
    with connect(location) as conn:
        hold_intake(conn)  # the refs and budget checked, and the rows recorded, as one
        if not recorded_balances:
            _record_balances(conn, fetched)
        if errors:
            raise _reject_in(conn, settings, source, file_hash, errors)
        existing = _existing_refs(conn, rows)
        skip: list[int] = []  # rows whose ref was handled by an earlier file
        skipped: list[SkippedRow] = []
        if existing:
            for index, key in enumerate(rows.keys()):
                before = existing.get(key)
                if before is not None and before.submit_state not in RESUBMITTABLE_STATES:
                    row = rows[index]
                    skip.append(index)
                    skipped.append(
                        SkippedRow(
                            row.row_number, row.ref, row.panel, row.service_id, before.order_id,
                            row.estimated_cost,
                            f"ref already {before.submit_state} from {before.source_file}; "
                            "not sent again",
                        )
                    )  # fmt: skip
        budget = batch_errors(
            rows.panel_totals(skip),
            settings,
            {p: b for p, (b, _) in balances.items()},
            reserved_spend(conn, file_hash, balance_read_at),
        ) + _currency_errors(conn, balances)
        if budget:
            raise _reject_in(conn, settings, source, file_hash, budget)
        conn.begin()  # the outbox rows and the file's `accepted` outcome, or neither
        created_at = datetime.now(UTC)
        for frame in _outbox_frames(rows, skip, file_name, file_hash):
            record_pending(conn, frame, created_at)
        record_file(
            conn, file_hash=file_hash, kind="orders", file_name=file_name,
            outcome="accepted", rows=len(rows), seen_at=datetime.now(UTC),
        )  # fmt: skip
        conn.commit()
    to_submit = len(rows) - len(skip)
    spend = rows.total_cost(skip)
    warnings = [f"row {r.row_number}: {w}" for r in rows.general_rows() for w in r.warnings]
    for w in warnings[:20]:
        log(f"warning: {w}")
    log(
        f"{file_name}: {len(rows)} rows valid, {to_submit} to submit, "
        f"{len(skipped)} already handled, estimated spend {money_text(spend, _currency(balances))}"
    )
    return PreparedOrderFile(
        file_name=file_name,
        file_hash=file_hash,
        rows=len(rows),
        to_submit=to_submit,
        panels=panels,
        estimated_spend=spend,
        balances_before=balances,
        skipped=skipped,
        warnings=warnings,
        catalog_refreshes=refreshes,
    )


@dataclass
class FinishSummary:
    results_file: Path
    results: pd.DataFrame
    rows: int
    submitted: int
    failed: int
    ambiguous: int
    skipped: int
    estimated_spend: Decimal
    actual_spend: dict[str, tuple[Decimal, str]]
    written: bool = True

    @property
    def line(self) -> str:
        where = (
            f"results in {self.results_file}"
            if self.written
            else f"already reported in {self.results_file} (left as it is)"
        )
        return (
            f"{self.rows} rows: {self.submitted} submitted, {self.failed} failed, "
            f"{self.ambiguous} ambiguous, {self.skipped} already handled; {where}"
        )

    def actual_spend_markdown(self) -> str:
        if not self.actual_spend:
            return "n/a (balance not available)"
        lines = ["| panel | spent (balance before − after) |", "|---|---|"]
        lines += [
            f"| {p} | {money_text(a, c)} |" for p, (a, c) in sorted(self.actual_spend.items())
        ]
        return "\n".join(lines)


def _result_rows(
    prepared: PreparedOrderFile, recorded: list[FileRow], state: tuple[str, str] | None
) -> list[ResultRow]:
    """This file's rows: those it recorded (with their outcome) and those it skipped. A re-drop
    reports every row of the content as skipped, with what became of it."""
    if prepared.redrop_of is not None:
        name, outcome = state or (prepared.redrop_of, "accepted")
        how = "already handled" if outcome == "processed" else "being handled by the run of"
        skipped = [
            SkippedRow(r.row_number, r.ref, r.panel, r.service_id, r.order_id, r.estimated_cost,
                       f"this content was {how} {name} ({r.submit_state}); not sent again")
            for r in recorded
        ]  # fmt: skip
        recorded = []
    else:
        skipped = prepared.skipped
        keys = {(s.panel, s.ref) for s in skipped}
        recorded = [
            r for r in recorded
            if r.source_file == prepared.file_name and (r.panel, r.ref) not in keys
        ]  # fmt: skip
    results = [
        ResultRow(r.row_number, r.ref, r.panel, r.service_id, r.order_id, r.submit_error,
                  r.estimated_cost, r.submit_state)
        for r in recorded
    ]  # fmt: skip
    results += [
        ResultRow(s.row, s.ref, s.panel, s.service, s.order_id, s.reason, s.estimated_cost,
                  "skipped")
        for s in skipped
    ]  # fmt: skip
    return sorted(results, key=lambda r: r.row)


def _report_target(
    folders: Folders, prepared: PreparedOrderFile, state: tuple[str, str] | None
) -> tuple[str, bool]:
    """The file's name in processed/, and whether its report is to be written (False: it was
    reported already, leave that report alone). The file moves only if it still holds this
    content; a name clash gets a time-stamped name for the file and its report."""
    source = folders.inbox("orders") / prepared.file_name
    if source.is_file() and content_hash(source.read_bytes()) == prepared.file_hash:
        return move_handled(source, folders.processed, results_report_path).name, True
    if state is not None and state[1] == "processed":  # reported already (re-execution)
        return state[0], False
    # Gone, or rewritten with other content (left for its own run): a report of its own.
    return free_target(folders.processed, prepared.file_name, results_report_path).name, True


def finish_order_file(
    settings: Settings,
    location: Location,
    prepared: PreparedOrderFile,
    clients: Mapping[str, PanelClient],
) -> FinishSummary:
    """Write results.csv, move the file to processed/, measure the actual spend.

    An existing report is never rewritten: re-executing a finished run reports nothing new."""
    folders = Folders(settings.data_dir)
    bare_file_name(prepared.file_name)
    with connect(location) as conn:
        recorded = file_rows(conn, prepared.file_hash)
        state = file_state(conn, prepared.file_hash, "orders")
    results = _result_rows(prepared, recorded, state)
    target_name, write = _report_target(folders, prepared, state)
    results_file = results_report_path(folders.processed, target_name)
    if write:
        folders.processed.mkdir(parents=True, exist_ok=True)
        write_results_csv(results_file, results)

    actual: dict[str, tuple[Decimal, str]] = {}
    for panel, (before, currency) in prepared.balances_before.items():
        client = clients.get(panel)
        if client is None:
            continue
        try:
            after = refresh_balance(client, location)
        except PanelError:
            continue
        actual[panel] = (before - after.balance, currency)
    if prepared.redrop_of is None and write:
        with connect(location) as conn:  # the name in processed/, which its report is named by
            record_file(
                conn, file_hash=prepared.file_hash, kind="orders", file_name=target_name,
                outcome="processed", rows=len(results), seen_at=datetime.now(UTC),
            )  # fmt: skip
    states = [r.submit_state for r in results]
    frame = pd.DataFrame(
        [
            (r.row, r.ref, r.panel, r.service, r.order_id, r.submit_state, r.error or "")
            for r in results
        ],
        columns=["row", "ref", "panel", "service", "order_id", "state", "error"],
        dtype=object,
    )
    return FinishSummary(
        results_file=results_file,
        results=frame,
        rows=len(results),
        submitted=states.count("submitted"),
        failed=states.count("failed"),
        ambiguous=states.count("ambiguous"),
        skipped=states.count("skipped"),
        estimated_spend=sum(
            (r.estimated_cost or Decimal(0) for r in results if r.submit_state == "submitted"),
            Decimal(0),
        ),
        actual_spend=actual,
        written=write,
    )
