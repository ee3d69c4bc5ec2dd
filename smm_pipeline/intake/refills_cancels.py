"""Refill and cancel files → the orders they name, or per-row errors (README, Refills and
cancels: File format).

Columns: `order` (the panel's order id) or `ref` (the order row's ref), exactly one of them
filled per row, and `panel` where more than one panel is enabled. Whether an order may be
refilled or cancelled (service flags, finished or not) depends on the warehouse, so that check
belongs to the step that reads it; this module only says which orders a file names. The same
order twice in one file is an error: one request per order per file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from smm_pipeline.config import Settings
from smm_pipeline.intake.csv_files import file_hash, read_csv_table
from smm_pipeline.intake.panel_column import PanelChooser
from smm_pipeline.intake.row_errors import RowError

__all__ = [
    "ACTION_COLUMNS",
    "ActionFileResult",
    "ActionRow",
    "read_action_file",
    "read_cancel_file",
    "read_refill_file",
    "rows_by_panel",
]

ACTION_COLUMNS = frozenset({"panel", "order", "ref"})
ActionKind = Literal["refill", "cancel"]


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One order to refill or cancel: by panel order id, or by ref (exactly one is set)."""

    row_number: int
    panel: str
    order_id: int | None
    ref: str | None


@dataclass(frozen=True)
class ActionFileResult:
    file_name: str
    file_hash: str
    kind: ActionKind
    rows: list[ActionRow]
    errors: list[RowError]

    @property
    def ok(self) -> bool:
        return not self.errors


def read_refill_file(content: bytes, file_name: str, settings: Settings) -> ActionFileResult:
    """Read a file dropped in inbox/refills/."""
    return read_action_file(content, file_name, settings, "refill")


def read_cancel_file(content: bytes, file_name: str, settings: Settings) -> ActionFileResult:
    """Read a file dropped in inbox/cancels/."""
    return read_action_file(content, file_name, settings, "cancel")


def read_action_file(
    content: bytes, file_name: str, settings: Settings, kind: ActionKind
) -> ActionFileResult:
    """Check a refill or cancel file; `rows` are usable only when `errors` is empty."""
    digest = file_hash(content)
    table, errors = read_csv_table(content, known_columns=ACTION_COLUMNS)
    chooser = PanelChooser(settings)
    if table is not None:
        errors.extend(chooser.header_errors(table.columns))
        if "order" not in table.columns and "ref" not in table.columns:
            errors.append(
                RowError(
                    0,
                    "order",
                    f"missing column: a {kind} file needs an 'order' column (the panel's "
                    "order id) or a 'ref' column (the order row's ref)",
                )
            )
    if table is None or errors:
        return ActionFileResult(file_name, digest, kind, [], errors)

    panel_at = table.index("panel")
    order_at = table.index("order")
    ref_at = table.index("ref")
    rows: list[ActionRow] = []
    seen: dict[tuple[str, str, object], int] = {}
    for row_number, cells in table.records:
        panel, problem = chooser.choose(cells[panel_at] if panel_at is not None else "")
        if panel is None:
            errors.append(RowError(row_number, "panel", problem or ""))
            continue
        order_text = cells[order_at].strip() if order_at is not None else ""
        ref = cells[ref_at].strip() if ref_at is not None else ""
        if order_text and ref:
            errors.append(
                RowError(row_number, "ref", "give either order or ref in a row, not both")
            )
            continue
        if not order_text and not ref:
            column = "order" if order_at is not None else "ref"
            errors.append(
                RowError(row_number, column, f"which order to {kind}? fill in order or ref")
            )
            continue
        order_id: int | None = None
        if order_text:
            if not (order_text.isdigit() and order_text.isascii()) or int(order_text) == 0:
                errors.append(
                    RowError(
                        row_number,
                        "order",
                        "order must be the panel's order id (a positive whole number), "
                        f"got {order_text[:60]!r}",
                    )
                )
                continue
            order_id = int(order_text)
            key: tuple[str, str, object] = (panel, "order", order_id)
            label = f"order {order_id}"
        else:
            key = (panel, "ref", ref)
            label = f"ref {ref!r}"
        first = seen.setdefault(key, row_number)
        if first != row_number:
            errors.append(
                RowError(
                    row_number,
                    key[1],
                    f"{label} on panel {panel!r} is already listed in row {first}",
                )
            )
            continue
        rows.append(ActionRow(row_number, panel, order_id, ref or None))
    return ActionFileResult(file_name, digest, kind, rows, errors)


def rows_by_panel(rows: list[ActionRow]) -> Mapping[str, list[ActionRow]]:
    """Group rows per panel, keeping file order (requests are batched per panel)."""
    grouped: dict[str, list[ActionRow]] = {}
    for row in rows:
        grouped.setdefault(row.panel, []).append(row)
    return grouped
