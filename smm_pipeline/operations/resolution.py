"""The operator's answer to ambiguous submissions: attach, resubmit on purpose, or abandon.

A resubmit sends exactly the listed rows, once each, and nothing else of their files (a file's
other pending rows belong to its own run). Like a file's batch, the rows to resend must fit the
panel's fresh balance and its max_batch_spend, or none of that panel's resubmits is applied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import duckdb

from smm_pipeline.config import Settings
from smm_pipeline.errors import ResolutionRefused
from smm_pipeline.intake.budget import batch_errors, panel_totals
from smm_pipeline.money import money_text
from smm_pipeline.operations.submission import (
    SubmitReport,
    duration_text,
    rows_by_panel,
    settle_interrupted,
    submit_rows,
)
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.errors import PanelError
from smm_pipeline.warehouse.db import Location, connect
from smm_pipeline.warehouse.orders import (
    RESENDABLE_STATES,
    attached_elsewhere,
    existing_refs,
    pending_keys,
    resolve_rows,
)

ACTIONS = ("attach", "resubmit", "abandon")


@dataclass(frozen=True)
class Resolution:
    panel: str
    ref: str
    action: str
    order_id: int | None = None


@dataclass
class ResolveReport:
    applied: int = 0
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    submitted: int = 0
    ambiguous: int = 0
    failed: int = 0


def _refuse_duplicates(resolutions: Sequence[Resolution]) -> None:
    keys = Counter((r.panel, r.ref) for r in resolutions)
    twice = sorted(k for k, n in keys.items() if n > 1)
    if twice:
        named = ", ".join(f"{p}/{r}" for p, r in twice)
        raise ResolutionRefused(
            f"{named} listed more than once: give one resolution per row; nothing was changed"
        )


def _attach_errors(
    conn: duckdb.DuckDBPyConnection, resolutions: Sequence[Resolution]
) -> dict[tuple[str, str], str]:
    """An order id belongs to one ref: refuse one that another ref of the panel already holds,
    or that two attach entries claim."""
    attach = [(r.panel, r.ref, r.order_id) for r in resolutions if r.action == "attach"]
    wanted = [(p, r, o) for p, r, o in attach if o is not None]
    holders = attached_elsewhere(conn, wanted)
    errors = {
        (p, r): f"order {o} is already attached to ref {holders[(p, r)]!r} on panel {p!r}"
        for (p, r, o) in wanted
        if (p, r) in holders
    }
    claims = Counter((p, o) for p, _, o in wanted)
    for p, r, o in wanted:
        if claims[(p, o)] > 1:
            errors.setdefault((p, r), f"order {o} is claimed by more than one ref on {p!r}")
    return errors


def _unknown_orders(
    resolutions: Sequence[Resolution], clients: Mapping[str, PanelClient]
) -> dict[tuple[str, str], str]:
    """An attached order id must be one the panel knows: a typo would otherwise attach a
    stranger's order (or none) and the row would be polled as 'Incorrect order ID' forever.
    One multi-status call per panel (100 ids a call) checks them all."""
    wanted: dict[str, list[Resolution]] = {}
    for r in resolutions:
        if r.action == "attach" and r.order_id is not None:
            wanted.setdefault(r.panel, []).append(r)
    errors: dict[tuple[str, str], str] = {}
    for panel, items in sorted(wanted.items()):
        client = clients.get(panel)
        if client is None:
            errors.update({(panel, r.ref): f"panel {panel!r} is not enabled in panels.yaml; "
                           "cannot check the order id" for r in items})  # fmt: skip
            continue
        try:
            statuses = client.statuses([r.order_id for r in items])
        except PanelError as exc:
            errors.update({(panel, r.ref): f"could not check order {r.order_id} on the panel "
                           f"({exc.message}); try again later" for r in items})  # fmt: skip
            continue
        for r in items:
            status = statuses[r.order_id]
            if status.error is not None and status.raw_status is None:
                errors[(panel, r.ref)] = (
                    f"the panel does not know order {r.order_id} ({status.error}): "
                    "check the id on the panel's website"
                )
    return errors


def _resubmit_costs(
    conn: duckdb.DuckDBPyConnection, resubmit: list[tuple[str, str]]
) -> dict[str, list[tuple[str, Decimal]]]:
    """Per panel, the (ref, estimated cost) of the rows a resubmit would send."""
    current = existing_refs(conn, resubmit)
    costs: dict[str, list[tuple[str, Decimal]]] = {}
    for panel, ref in resubmit:
        row = current.get((panel, ref))
        if row is not None and row.submit_state in RESENDABLE_STATES:
            costs.setdefault(panel, []).append((ref, row.estimated_cost))
    return costs


def _budget_errors(
    costs: dict[str, list[tuple[str, Decimal]]],
    settings: Settings,
    clients: Mapping[str, PanelClient],
) -> dict[tuple[str, str], str]:
    """Per resubmitted key, why its panel's resend does not fit the fresh balance or
    max_batch_spend (or the panel cannot be reached); empty when every panel's does.
    Asks the panels for their balance: called with no warehouse connection open."""
    errors: dict[tuple[str, str], str] = {}
    for panel, items in sorted(costs.items()):
        client = clients.get(panel)
        if client is None:
            reason = f"panel {panel!r} is not enabled in panels.yaml"
        else:
            try:
                balance = client.balance().balance
            except PanelError as exc:
                reason = f"panel {panel!r} could not be reached ({exc.message})"
            else:
                limits = batch_errors(
                    panel_totals((panel, c) for _, c in items), settings, {panel: balance}
                )
                reason = "; ".join(e.message for e in limits)
        if reason:
            errors.update({(panel, ref): f"not resubmitted: {reason}" for ref, _ in items})
    return errors


def _send(
    location: Location,
    keys: list[tuple[str, str]],
    clients: Mapping[str, PanelClient],
    report: ResolveReport,
    progress: Callable[[str], None],
) -> None:
    """Send exactly these pending rows, once each, the way a file's rows are sent (claimed
    under this process's answer journal, so a crash leaves nothing only SQL could settle;
    progress logged by the submission's `ProgressLog`, then a summary line)."""
    with connect(location) as conn:
        rows = rows_by_panel(pending_keys(conn, keys).to_dict("records"))
    sent: SubmitReport = submit_rows(location, rows, clients, progress=progress)
    report.submitted += sent.submitted
    report.ambiguous += sent.ambiguous
    report.failed += sent.failed
    progress(
        f"resubmitted {sent.total} rows: {sent.submitted} submitted, {sent.failed} failed, "
        f"{sent.ambiguous} ambiguous, estimated spend {money_text(sent.estimated_spend)}, "
        f"{sent.calls} calls in {duration_text(sent.seconds)}"
    )


def resolve_ambiguous(
    settings: Settings,
    location: Location,
    resolutions: Sequence[Resolution],
    clients: Mapping[str, PanelClient],
    *,
    progress: Callable[[str], None] = print,
) -> ResolveReport:
    """Apply every resolution that fits (an ambiguous row, a known action, an unclaimed order
    id, a resend the panel's money allows); resubmitted rows are sent now, once. Rows that do
    not fit are reported and left unchanged. Raises ResolutionRefused (nothing changed) when a
    row is listed twice."""
    _refuse_duplicates(resolutions)
    settle_interrupted(location, progress)  # a killed resubmit's `sending` rows first
    report = ResolveReport()
    resubmit = [(r.panel, r.ref) for r in resolutions if r.action == "resubmit"]
    # The panels are asked (order ids, balances) with no warehouse connection open; the rows
    # are then resolved in one short write, which re-checks each row's state itself.
    with connect(location) as conn:
        costs = _resubmit_costs(conn, resubmit)
    asked = _unknown_orders(resolutions, clients) | _budget_errors(costs, settings, clients)
    with connect(location) as conn:
        refused = asked | _attach_errors(conn, resolutions)
        report.errors = resolve_rows(
            conn,
            [(r.panel, r.ref, r.action, r.order_id) for r in resolutions
             if (r.panel, r.ref) not in refused],
            datetime.now(UTC),
        )  # fmt: skip
    report.errors = refused | report.errors
    report.applied = len(resolutions) - len(report.errors)
    to_send = [key for key in resubmit if key not in report.errors]
    if to_send:
        _send(location, to_send, clients, report, progress)
    return report
