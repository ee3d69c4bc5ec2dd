"""An order file's life around its submission: validate and record it, then report and file it.

`prepare_order_file` refreshes what validation needs (a stale catalog, the fresh balance),
validates every row, and records the rows to send in the outbox, or refuses the whole file
(errors.csv beside it in rejected/). `finish_order_file` writes results.csv and moves the file
to processed/. Rows whose ref was already handled by an earlier file are not sent again; a ref
whose earlier attempt definitely failed is sent again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd

from smm_pipeline.config import Settings
from smm_pipeline.intake.budget import batch_errors, panel_totals
from smm_pipeline.intake.csv_files import read_csv_table
from smm_pipeline.intake.orders import (
    ORDER_COLUMNS,
    CatalogEntry,
    ValidatedOrder,
    validate_order_file,
)
from smm_pipeline.intake.reports import (
    ResultRow,
    results_report_path,
    write_results_csv,
)
from smm_pipeline.intake.row_errors import RowError
from smm_pipeline.operations.catalog import CatalogRefresh, refresh_catalog
from smm_pipeline.operations.inbox import FileRejected, Folders, move_handled, reject_file
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.errors import PanelError
from smm_pipeline.warehouse.balances import record_balance
from smm_pipeline.warehouse.catalog import catalog_age, load_catalog
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.orders import (
    RESUBMITTABLE_STATES,
    count_file_rows,
    existing_refs,
    file_rows,
    handled_file,
    record_file,
    record_pending,
)

log = logging.getLogger(__name__)


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
    table, _ = read_csv_table(content, known_columns=ORDER_COLUMNS)
    enabled = set(settings.panel_names)
    at = table.index("panel") if table is not None else None
    if table is None or at is None:
        return sorted(enabled)
    named = {cells[at].strip().lower() for _, cells in table.records} & enabled
    return sorted(named) or sorted(enabled)


def _reject(
    settings: Settings, db_path: Path, source: Path, file_hash: str, errors: list[RowError]
) -> FileRejected:
    rejected = reject_file(source, Folders(settings.data_dir), errors, nothing="submitted")
    with connect(db_path) as conn:
        record_file(
            conn, file_hash=file_hash, kind="orders", file_name=source.name,
            outcome="rejected", rows=0, seen_at=datetime.now(UTC),
        )  # fmt: skip
    return rejected


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


def _redrop(
    settings: Settings,
    db_path: Path,
    file_name: str,
    file_hash: str,
    original: str,
    log: Callable[[str], None],
) -> PreparedOrderFile:
    """The same content was handled before (under any name): report, send nothing."""
    with connect(db_path) as conn:
        earlier = file_rows(conn, file_hash)
    skipped = [
        SkippedRow(
            int(r.row_number), r.ref, r.panel, int(r.service_id),
            None if pd.isna(r.order_id) else int(r.order_id), Decimal(str(r.estimated_cost)),
            f"this content was already handled as {original} ({r.submit_state}); not sent again",
        )
        for r in earlier.itertuples(index=False)
    ]  # fmt: skip
    log(f"{file_name} has the same content as {original}, handled before: nothing to submit")
    return PreparedOrderFile(
        file_name, file_hash, len(skipped), 0, [], Decimal(0), skipped=skipped, redrop_of=original
    )


def prepare_order_file(
    settings: Settings,
    db_path: Path,
    file_name: str,
    file_hash: str,
    clients: Mapping[str, PanelClient],
    *,
    log: Callable[[str], None] = log.info,
) -> PreparedOrderFile:
    """Validate a dropped file and record its rows to send, or raise FileRejected."""
    source = Folders(settings.data_dir).inbox("orders") / file_name
    with connect(db_path) as conn:
        recorded = count_file_rows(conn, file_hash)
        handled = handled_file(conn, file_hash)
    if recorded and handled is not None:
        return _redrop(settings, db_path, file_name, file_hash, handled, log)
    if recorded:
        log(f"{file_name}: {recorded} rows already recorded by an earlier run: resuming")
        return PreparedOrderFile(
            file_name, file_hash, recorded, recorded, sorted(clients), Decimal(0), resumed=True
        )
    if not source.is_file():
        raise FileNotFoundError(f"{source} is gone; drop the file again to submit it")
    content = source.read_bytes()
    panels = _panels_in_file(content, settings)
    refreshes: list[CatalogRefresh] = []
    balances: dict[str, tuple[Decimal, str]] = {}
    problems: list[RowError] = []
    max_age = timedelta(minutes=settings.pipeline.catalog_max_age_minutes)
    for panel in panels:
        client = clients[panel]
        try:
            with connect(db_path) as conn:
                age = catalog_age(conn, panel)
            if age is None or age > max_age:
                refreshes.append(refresh_catalog(client, db_path))
                log(f"{panel}: catalog refreshed ({refreshes[-1].result.services} services)")
            balance = client.balance()
        except PanelError as exc:
            problems.append(
                RowError(0, "batch", f"panel {panel!r} could not be reached ({exc.message}); "
                         "nothing was submitted: drop the file again later")
            )  # fmt: skip
            continue
        with connect(db_path) as conn:
            record_balance(conn, panel, balance, datetime.now(UTC))
        balances[panel] = (balance.balance, balance.currency)
    if problems:
        raise _reject(settings, db_path, source, file_hash, problems)

    with connect(db_path) as conn:
        catalog = {
            key: CatalogEntry(row.as_service(), row.active)
            for key, row in load_catalog(conn).items()
            if key[0] in panels
        }
    result = validate_order_file(
        content, file_name, catalog, settings, {p: b for p, (b, _) in balances.items()}
    )
    errors = [e for e in result.errors if e.column != "batch"]
    if errors:
        raise _reject(settings, db_path, source, file_hash, errors)

    with connect(db_path) as conn:
        existing = existing_refs(conn, [(r.panel, r.ref) for r in result.rows])
        to_send: list[ValidatedOrder] = []
        skipped: list[SkippedRow] = []
        for row in result.rows:
            before = existing.get((row.panel, row.ref))
            if before is None or before.submit_state in RESUBMITTABLE_STATES:
                to_send.append(row)
            else:
                skipped.append(
                    SkippedRow(
                        row.row_number, row.ref, row.panel, row.service_id, before.order_id,
                        row.estimated_cost,
                        f"ref already {before.submit_state} from {before.source_file}; "
                        "not sent again",
                    )
                )  # fmt: skip
        budget = batch_errors(
            panel_totals((r.panel, r.estimated_cost) for r in to_send),
            settings,
            {p: b for p, (b, _) in balances.items()},
        )
        if not budget:
            record_pending(conn, _outbox_frame(to_send, file_name, file_hash), datetime.now(UTC))
            record_file(
                conn, file_hash=file_hash, kind="orders", file_name=file_name,
                outcome="accepted", rows=len(result.rows), seen_at=datetime.now(UTC),
            )  # fmt: skip
    if budget:
        raise _reject(settings, db_path, source, file_hash, budget)
    spend = sum((r.estimated_cost for r in to_send), Decimal(0))
    warnings = [f"row {r.row_number}: {w}" for r in result.rows for w in r.warnings]
    for w in warnings[:20]:
        log(f"warning: {w}")
    log(
        f"{file_name}: {len(result.rows)} rows valid, {len(to_send)} to submit, "
        f"{len(skipped)} already handled, estimated spend {spend}"
    )
    return PreparedOrderFile(
        file_name=file_name,
        file_hash=file_hash,
        rows=len(result.rows),
        to_submit=len(to_send),
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

    @property
    def line(self) -> str:
        return (
            f"{self.rows} rows: {self.submitted} submitted, {self.failed} failed, "
            f"{self.ambiguous} ambiguous, {self.skipped} already handled; "
            f"results in {self.results_file}"
        )

    def actual_spend_markdown(self) -> str:
        if not self.actual_spend:
            return "n/a (balance not available)"
        lines = ["| panel | spent (balance before − after) |", "|---|---|"]
        lines += [f"| {p} | {a} {c} |" for p, (a, c) in sorted(self.actual_spend.items())]
        return "\n".join(lines)


def finish_order_file(
    settings: Settings,
    db_path: Path,
    prepared: PreparedOrderFile,
    clients: Mapping[str, PanelClient],
) -> FinishSummary:
    """Write results.csv, move the file to processed/, measure the actual spend."""
    folders = Folders(settings.data_dir)
    with connect(db_path) as conn:
        recorded = file_rows(conn, prepared.file_hash)
    if prepared.redrop_of is not None:
        recorded = recorded.iloc[0:0]
    results = [
        ResultRow(
            row=int(r.row_number),
            ref=r.ref,
            panel=r.panel,
            service=int(r.service_id),
            order_id=None if pd.isna(r.order_id) else int(r.order_id),
            error=None if pd.isna(r.submit_error) else r.submit_error,
            estimated_cost=Decimal(str(r.estimated_cost)),
            submit_state=r.submit_state,
        )
        for r in recorded.itertuples(index=False)
    ]
    results += [
        ResultRow(s.row, s.ref, s.panel, s.service, s.order_id, s.reason, s.estimated_cost,
                  "skipped")
        for s in prepared.skipped
    ]  # fmt: skip
    results.sort(key=lambda r: r.row)
    source = folders.inbox("orders") / prepared.file_name
    target_name = prepared.file_name
    if source.is_file():
        target_name = move_handled(source, folders.processed).name
    results_file = write_results_csv(results_report_path(folders.processed, target_name), results)

    actual: dict[str, tuple[Decimal, str]] = {}
    now = datetime.now(UTC)
    for panel, (before, currency) in prepared.balances_before.items():
        client = clients.get(panel)
        if client is None:
            continue
        try:
            after = client.balance()
        except PanelError:
            continue
        with connect(db_path) as conn:
            record_balance(conn, panel, after, now)
        actual[panel] = (before - after.balance, currency)
    if prepared.redrop_of is None:
        with connect(db_path) as conn:
            record_file(
                conn, file_hash=prepared.file_hash, kind="orders", file_name=prepared.file_name,
                outcome="processed", rows=len(results), seen_at=now,
            )  # fmt: skip
    states = [r.submit_state for r in results]
    frame = pd.DataFrame(
        [
            (r.row, r.ref, r.panel, r.service, r.order_id, r.submit_state, r.error or "")
            for r in results
        ],
        columns=["row", "ref", "panel", "service", "order_id", "state", "error"],
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
    )
