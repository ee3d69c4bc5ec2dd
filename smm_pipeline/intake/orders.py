"""An order file → validated order rows with their exact `add` fields and costs, or errors.

Every row is checked against the current catalog before anything is sent (SPEC §3); any error
means the caller refuses the whole file. Row numbers: data records count from 1, the header is
row 0 (the same numbers `errors.csv` and `results.csv` use); batch errors are row 0, column
"batch".

Refs. A row's `ref` is the user's id for it, unique per panel. Without one, the ref is derived
from the row's content: "auto-" and 24 hex digits of the sha256 of the panel and the exact,
normalised `add` fields (service included; trimmed values, list items one per line, expiry as
d/m/Y, numbers without leading zeros). The campaign label is not part of it. The same order
dropped again, in any file, gets the same ref, which is what makes re-drops harmless. It also
means two identical rows without refs in one file are a duplicate error: to order the same
thing twice on purpose, give each row its own ref.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from hashlib import sha256
from typing import NamedTuple

from smm_pipeline.config import Settings
from smm_pipeline.intake.budget import batch_errors, panel_totals
from smm_pipeline.intake.csv_files import file_hash, read_csv_table
from smm_pipeline.intake.panel_column import PanelChooser
from smm_pipeline.intake.row_errors import RowError
from smm_pipeline.panel.models import Service
from smm_pipeline.panel.order_types import (
    ALL_FIELDS,
    MONEY,
    FieldLayout,
    OrderFieldError,
    Pricing,
    unit_price,
)

__all__ = [
    "ORDER_COLUMNS",
    "CatalogEntry",
    "IntakeResult",
    "ValidatedOrder",
    "derive_ref",
    "validate_order_file",
]

ORDER_COLUMNS = frozenset({"panel", "service", "ref", "campaign", *ALL_FIELDS})
MAX_REF_LENGTH = 128


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A service as the warehouse knows it: `active` is False once it left the catalog."""

    service: Service
    active: bool = True


class ValidatedOrder(NamedTuple):
    """One row ready to submit: `params` are the exact `add` fields (all strings, `service`
    included, no key/action); `ref_derived` says the ref came from the row's content.
    (A NamedTuple rather than a frozen dataclass: one is built per CSV row, it must be cheap.)"""

    panel: str
    ref: str
    row_number: int
    service_id: int
    service_type: str
    link: str | None
    quantity: int | None
    params: dict[str, str]
    estimated_cost: Decimal
    campaign: str | None = None
    warnings: tuple[str, ...] = ()
    ref_derived: bool = False


@dataclass(frozen=True)
class IntakeResult:
    """The outcome of checking one file: submit `rows` only when `errors` is empty."""

    file_name: str
    file_hash: str
    rows: list[ValidatedOrder]
    errors: list[RowError]
    panel_totals: dict[str, Decimal] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def derive_ref(panel: str, params: Mapping[str, str]) -> str:
    """The content ref of an order (see the module docstring). NUL separates the parts:
    `decode_csv` refuses files with NUL, so no value can contain one and the encoding is
    unambiguous."""
    parts = [panel]
    for key in sorted(params):
        parts.append(key)
        parts.append(params[key])
    return "auto-" + sha256("\0".join(parts).encode()).hexdigest()[:24]


class _ServiceCell:
    """What a (panel cell, service cell) pair resolves to, computed once per distinct pair."""

    __slots__ = ("column", "delay_values", "message", "panel", "service", "unit_prices")

    def __init__(
        self,
        panel: str | None = None,
        service: Service | None = None,
        delay_values: Collection[int] = (),
        column: str = "",
        message: str = "",
    ) -> None:
        self.panel = panel
        self.service = service
        self.delay_values = delay_values
        self.column = column
        self.message = message
        self.unit_prices: dict[Pricing, Decimal] = {}


def validate_order_file(
    content: bytes,
    file_name: str,
    catalog: Mapping[tuple[str, int], CatalogEntry],
    settings: Settings,
    balances: Mapping[str, Decimal],
    *,
    today: date | None = None,
) -> IntakeResult:
    """Check a whole order file (bytes already read) and price it.

    `catalog` maps (panel, service id) to the current catalog entry, `balances` each panel's
    fresh balance. `today` (default: the UTC date) refuses expiry dates in the past.
    """
    digest = file_hash(content)
    table, errors = read_csv_table(
        content, known_columns=ORDER_COLUMNS, required_columns=("service",)
    )
    chooser = PanelChooser(settings)
    if table is not None:
        errors.extend(chooser.header_errors(table.columns))
    if table is None or errors:
        return IntakeResult(file_name, digest, [], errors)
    if today is None:
        today = datetime.now(UTC).date()

    columns = table.columns
    panel_at = table.index("panel")
    service_at = columns.index("service")
    ref_at = table.index("ref")
    campaign_at = table.index("campaign")
    layout = FieldLayout(columns, ignore=("panel", "service", "ref", "campaign"))
    build = layout.build
    multiply = MONEY.multiply
    delays = {p.name: frozenset(p.delay_values) for p in settings.enabled_panels}
    default_panel = chooser.default or ""
    # Keys join two cells with NUL, which no cell can contain (decode_csv refuses it):
    # a string key instead of a tuple spares the garbage collector 100,000 tuples.
    resolved: dict[str, _ServiceCell] = {}

    def resolve(panel_cell: str, service_cell: str) -> _ServiceCell:
        panel, problem = chooser.choose(panel_cell)
        if panel is None:
            return _ServiceCell(column="panel", message=problem or "")
        raw = service_cell.strip()
        if not raw:
            return _ServiceCell(column="service", message="service is required")
        if not (raw.isdigit() and raw.isascii()):
            return _ServiceCell(
                column="service",
                message=f"service must be a service id (a whole number), got {raw[:60]!r}",
            )
        service_id = int(raw)
        entry = catalog.get((panel, service_id))
        if entry is None:
            return _ServiceCell(
                column="service",
                message=f"service {service_id} does not exist on panel {panel!r}; "
                "check the id against the service catalog",
            )
        if not entry.active:
            return _ServiceCell(
                column="service",
                message=f"service {service_id} on panel {panel!r} is no longer active "
                "(it left the catalog); choose another service",
            )
        return _ServiceCell(panel, entry.service, delays[panel])

    rows: list[ValidatedOrder] = []
    refs: dict[str, int] = {}
    for row_number, cells in table.records:
        panel_cell = cells[panel_at] if panel_at is not None else default_panel
        service_cell = cells[service_at]
        key = panel_cell + "\0" + service_cell
        target = resolved.get(key)
        if target is None:
            target = resolved[key] = resolve(panel_cell, service_cell)
        service = target.service
        if service is None:
            errors.append(RowError(row_number, target.column, target.message))
            continue
        panel: str = target.panel  # type: ignore[assignment]  # set whenever service is
        try:
            request = build(service, cells, target.delay_values, panel, today)
        except OrderFieldError as exc:
            errors.extend(RowError(row_number, column, message) for column, message in exc.problems)
            continue
        params = request.params

        ref = cells[ref_at].strip() if ref_at is not None else ""
        derived = not ref
        if derived:
            ref = derive_ref(panel, params)
        elif len(ref) > MAX_REF_LENGTH or "\n" in ref or "\r" in ref:
            message = f"ref must be one line of at most {MAX_REF_LENGTH} characters"
            errors.append(RowError(row_number, "ref", message))
            continue
        first = refs.setdefault(panel + "\0" + ref, row_number)
        if first != row_number:
            errors.append(
                RowError(row_number, "ref", _duplicate_message(derived, ref, panel, first))
            )
            continue

        unit = target.unit_prices.get(request.pricing)
        if unit is None:
            unit = target.unit_prices[request.pricing] = unit_price(service, request.pricing)
        cost = multiply(unit, request.billed_units)  # = estimate_cost(service, request)
        campaign = cells[campaign_at].strip() if campaign_at is not None else ""
        rows.append(
            ValidatedOrder(
                panel,
                ref,
                row_number,
                request.service_id,
                request.service_type,
                params.get("link"),
                request.quantity,
                params,
                cost,
                campaign or None,
                request.warnings,
                derived,
            )
        )
    if any(e.row == 0 for e in errors):  # the file has no data rows: nothing to price
        return IntakeResult(file_name, digest, [], errors)
    totals = panel_totals((row.panel, row.estimated_cost) for row in rows)
    errors.extend(batch_errors(totals, settings, balances))
    return IntakeResult(file_name, digest, rows, errors, totals)


def _duplicate_message(derived: bool, ref: str, panel: str, first: int) -> str:
    if derived:
        return (
            f"this row is identical to row {first} (rows without a ref get one derived from "
            "their content); give each row its own ref to order the same thing twice"
        )
    return f"ref {ref!r} is already used by row {first} on panel {panel!r}; refs must be unique"
