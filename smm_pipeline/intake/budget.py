"""Does a file's batch fit each panel's money? (README, CSV drops: Orders: fresh balance and
max_batch_spend.)

Checked per panel on the estimated costs of the rows that validated, before anything is sent.
A panel with no known balance cannot be checked, so it is refused rather than guessed. The
estimated cost of rows other files still have pending or sending is reserved: two files
validated back to back never together spend more than the balance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from smm_pipeline.config import Settings
from smm_pipeline.intake.row_errors import RowError
from smm_pipeline.money import format_money

__all__ = ["batch_errors", "panel_totals"]


def panel_totals(costs: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Sum (panel, cost) pairs per panel, exactly."""
    totals: dict[str, Decimal] = {}
    for panel, cost in costs:
        totals[panel] = totals.get(panel, Decimal(0)) + cost
    return totals


def batch_errors(
    totals: Mapping[str, Decimal],
    settings: Settings,
    balances: Mapping[str, Decimal],
    reserved: Mapping[str, Decimal] | None = None,
) -> list[RowError]:
    """One error (row 0, column "batch") per panel whose batch does not fit; empty when all do.

    `reserved` is, per panel, the estimated cost of rows not yet settled elsewhere (still to
    be sent, or in flight) that the balance must also cover."""
    errors: list[RowError] = []
    for panel, total in sorted(totals.items()):
        shown = format_money(total)
        balance = balances.get(panel)
        held = (reserved or {}).get(panel, Decimal(0))
        if balance is None:
            errors.append(
                RowError(
                    0,
                    "batch",
                    f"panel {panel!r}: no fresh balance is known, so the batch of {shown} "
                    "cannot be checked; refresh panel_balances and drop the file again",
                )
            )
        elif total > balance - held:
            less = (
                f" less {format_money(held)} reserved for rows of other files not sent yet"
                if held
                else ""
            )
            errors.append(
                RowError(
                    0,
                    "batch",
                    f"panel {panel!r}: the batch's estimated cost {shown} is more than the "
                    f"balance {format_money(balance)}{less}; top up the panel or split the file",
                )
            )
        limit = settings.panel(panel).max_batch_spend
        if limit is not None and total > limit:
            errors.append(
                RowError(
                    0,
                    "batch",
                    f"panel {panel!r}: the batch's estimated cost {shown} is more than its "
                    f"max_batch_spend {format_money(limit)}; split the file or raise the limit "
                    "in panels.yaml",
                )
            )
    return errors
