"""An order file → validated order rows with their exact `add` fields and costs, or errors.

Every row is checked against the current catalog before anything is sent (README, CSV drops:
Orders); any error means the caller refuses the whole file. Row numbers: data records count
from 1, the header is row 0 (the same numbers `errors.csv` and `results.csv` use); batch errors
are row 0, column "batch".

Refs. A row's `ref` is the user's id for it, unique per panel. Without one, the ref is derived
from the row's content: "auto-" and 24 hex digits of the sha256 of the panel and the exact,
normalised `add` fields (service included; trimmed values, list items one per line, expiry as
d/m/Y, numbers without leading zeros). The campaign label is not part of it. The same order
dropped again, in any file, gets the same ref, which is what makes re-drops harmless. It also
means two identical rows without refs in one file are a duplicate error: to order the same
thing twice on purpose, give each row its own ref.

Speed and memory. Records come in batches (`CsvTable.batches`). A batch whose rows are all
plain Default-type rows (cells already in normal form: a trimmed http(s) link, a quantity in
plain digits within the service's limits, no drip-feed, no user ref, nothing in a column the
type does not take) is checked column by column in C (`_FileCheck.whole`: one regex pass for
the batch's links and one for its quantities, refs hashed from the cells as they are); in the
other batches such rows take the same fast path one at a time. Every other row (other types,
any problem to report, anything to normalise) goes through the general check, unchanged,
which reports its errors. The fast path takes only rows the general check would accept, with
the same ref, params and cost (`validate_order_file(..., fast=False)` checks every row the
general way: tests compare the two). Rows are kept by column (`ValidatedRows`), not as objects,
and duplicate refs are found by one sort once every row is checked.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from hashlib import sha256
from heapq import merge
from itertools import accumulate, islice, repeat
from operator import attrgetter, ge, itemgetter, le, methodcaller
from sys import intern

from smm_pipeline.config import Settings
from smm_pipeline.intake.budget import batch_errors
from smm_pipeline.intake.csv_files import file_hash, read_csv_table
from smm_pipeline.intake.panel_column import PanelChooser
from smm_pipeline.intake.row_errors import RowError
from smm_pipeline.intake.validated_rows import DIGEST_BYTES, Slot, ValidatedOrder, ValidatedRows
from smm_pipeline.panel.models import Service
from smm_pipeline.panel.order_types import (
    ALL_FIELDS,
    MONEY,
    ORDER_TYPES,
    FieldLayout,
    OrderFieldError,
    Pricing,
    all_http_urls,
    http_url_lines,
    is_http_url,
    unit_price,
)

__all__ = [
    "ORDER_COLUMNS",
    "CatalogEntry",
    "IntakeResult",
    "ValidatedOrder",
    "ValidatedRows",
    "derive_ref",
    "validate_order_file",
]

ORDER_COLUMNS = frozenset({"panel", "service", "ref", "campaign", *ALL_FIELDS})
MAX_REF_LENGTH = 128
_DEFAULT = ORDER_TYPES["Default"]
_AUTO_REF = re.compile(f"auto-[0-9a-f]{{{2 * DIGEST_BYTES}}}")
# A billed quantity of more digits than this is left to the general check (64-bit storage).
_FAST_DIGITS = 18


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A service as the warehouse knows it: `active` is False once it left the catalog."""

    service: Service
    active: bool = True


@dataclass(frozen=True)
class IntakeResult:
    """The outcome of checking one file: submit `rows` only when `errors` is empty."""

    file_name: str
    file_hash: str
    rows: ValidatedRows  # a read-only sequence of ValidatedOrder
    errors: list[RowError]
    panel_totals: dict[str, Decimal] = field(default_factory=dict)
    # The enabled panels the file names (all of them when it names none or has no panel
    # column); None when its records were not read (a file or header problem).
    panels: list[str] | None = None

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
    return "auto-" + sha256("\0".join(parts).encode()).hexdigest()[: 2 * DIGEST_BYTES]


class _FastDefault:
    """How the fast path checks the rows of one Default-type service under this header: cell
    indices, the service's limits, and the constant parts of the text its refs hash."""

    __slots__ = (
        "drip_head",
        "foreign",
        "head",
        "high",
        "interval",
        "link",
        "low",
        "max_billed",
        "quantity",
        "runs",
        "slot",
        "tail",
    )

    def __init__(self, plan, service: Service, panel: str, slot: int, unit: Decimal) -> None:
        at = {name: index for name, index, _, _ in plan.present}
        self.link: int = at["link"]
        self.quantity: int = at["quantity"]
        self.runs: int | None = at.get("runs")
        self.interval: int | None = at.get("interval")
        self.foreign = tuple(index for _, index in plan.foreign)
        self.low, self.high = service.min, service.max
        # Costs are exact: unit x billed must fit the MONEY context (and 64 bits).
        self.max_billed = min(10 ** (MONEY.prec - len(unit.as_tuple().digits)), 1 << 63) - 1
        self.slot = slot
        # derive_ref's text: panel, then the params' keys in sorted order with their values.
        self.head = f"{panel}\0link\0"
        self.drip_head = f"{panel}\0interval\0"
        self.tail = f"\0service\0{service.service_id}"


class _Target:
    """What a (panel cell, service cell) pair resolves to, computed once per distinct pair:
    the panel and service, or the error every row naming it gets."""

    __slots__ = ("column", "delay_values", "fast", "message", "panel", "service", "slots")

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
        self.fast: _FastDefault | None = None
        self.slots: dict[Pricing, int] = {}


def _ref_key(ref: str) -> bytes:
    """A user's ref as DIGEST_BYTES for the duplicate check: a ref in the derived form
    ("auto-" and hex) as the bytes a derived ref has (they collide exactly when the texts
    are equal), any other as bytes of its hash (a chance collision is checked on the texts)."""
    if _AUTO_REF.fullmatch(ref):
        return bytes.fromhex(ref[5:])
    return sha256(b"\1" + ref.encode("utf-8", "surrogatepass")).digest()[:DIGEST_BYTES]


class _FileCheck:
    """The checks of one file's rows, batch by batch, into `rows` and `errors`.

    Refs must be unique per panel. Rather than a dict of every ref seen so far, each valid
    row's ref is kept as DIGEST_BYTES (see `_ref_key`) and `finish` finds the duplicates at
    once (`ValidatedRows.duplicates`): a duplicate is a valid row whose (panel, ref) an
    earlier valid row has, reported at its row as if found in order, and left out."""

    def __init__(
        self,
        columns: tuple[str, ...],
        catalog: Mapping[tuple[str, int], CatalogEntry],
        settings: Settings,
        chooser: PanelChooser,
        today: date,
        errors: list[RowError],
        *,
        fast: bool = True,
    ) -> None:
        self.catalog = catalog
        self.chooser = chooser
        self.today = today
        self.errors = errors
        self.panel_at = columns.index("panel") if "panel" in columns else None
        self.service_at = columns.index("service")
        self.ref_at = columns.index("ref") if "ref" in columns else None
        self.campaign_at = columns.index("campaign") if "campaign" in columns else None
        self.link_at = columns.index("link") if "link" in columns else None
        self.layout = FieldLayout(columns, ignore=("panel", "service", "ref", "campaign"))
        self.use_fast = fast
        self.delays = {p.name: frozenset(p.delay_values) for p in settings.enabled_panels}
        self.default_panel = chooser.default or ""
        self.targets: dict[str, dict[str, _Target]] = {}
        self.slots: list[Slot] = []
        self.rows = ValidatedRows(self.slots)

    def panels_named(self, settings: Settings) -> list[str]:
        """The enabled panels the panel cells of the records checked name (all enabled
        panels when they name none, or the file has no panel column)."""
        enabled = set(settings.panel_names)
        if self.panel_at is None:
            return sorted(enabled)
        named = {cell.strip().lower() for cell in self.targets} & enabled
        return sorted(named) or sorted(enabled)

    def finish(self) -> None:
        """Report the duplicate refs (in row order among the other errors) and drop them."""
        duplicates = self.rows.duplicates()
        if not duplicates:
            return
        reports = []
        for index, first in duplicates:
            row = self.rows[index]
            first_row = self.rows[first].row_number
            message = _duplicate_message(row.ref_derived, row.ref, row.panel, first_row)
            reports.append(RowError(row.row_number, "ref", message))
        # Every error so far is in row order, and a duplicate row has no other error.
        self.errors[:] = merge(self.errors, reports, key=attrgetter("row"))
        self.rows.remove({index for index, _ in duplicates})

    # -- targets -------------------------------------------------------------------------

    def target(self, panel_cell: str, service_cell: str) -> _Target:
        by_service = self.targets.get(panel_cell)
        if by_service is None:
            by_service = self.targets[panel_cell] = {}
        target = by_service.get(service_cell)
        if target is None:
            target = by_service[service_cell] = self._resolve(panel_cell, service_cell)
        return target

    def _resolve(self, panel_cell: str, service_cell: str) -> _Target:
        panel, problem = self.chooser.choose(panel_cell)
        if panel is None:
            return _Target(column="panel", message=problem or "")
        raw = service_cell.strip()
        if not raw:
            return _Target(column="service", message="service is required")
        if not (raw.isdigit() and raw.isascii()):
            return _Target(
                column="service",
                message=f"service must be a service id (a whole number), got {raw[:60]!r}",
            )
        service_id = int(raw)
        entry = self.catalog.get((panel, service_id))
        if entry is None:
            return _Target(
                column="service",
                message=f"service {service_id} does not exist on panel {panel!r}; "
                "check the id against the service catalog",
            )
        if not entry.active:
            return _Target(
                column="service",
                message=f"service {service_id} on panel {panel!r} is no longer active "
                "(it left the catalog); choose another service",
            )
        target = _Target(panel, entry.service, self.delays[panel])
        plan = self.layout.plan(entry.service.type)
        if self.use_fast and plan.order_type is _DEFAULT and not plan.absent_required:
            slot = self.slot(target, Pricing.PER_THOUSAND)
            target.fast = _FastDefault(plan, entry.service, panel, slot, self.slots[slot].unit)
        return target

    def slot(self, target: _Target, pricing: Pricing) -> int:
        slot = target.slots.get(pricing)
        if slot is None:
            service = target.service
            assert service is not None and target.panel is not None
            slot = target.slots[pricing] = len(self.slots)
            unit = unit_price(service, pricing)
            self.slots.append(Slot(target.panel, service.service_id, service.type, unit))
        return slot

    # -- rows ----------------------------------------------------------------------------

    def batch(self, first: int, entries: list, regular: bool) -> None:
        """Check one batch of records (see `CsvTable.batches`)."""
        if not (
            regular and self.use_fast and self.link_at is not None and self.whole(first, entries)
        ):
            self.rows_one_by_one(first, entries, regular)

    def whole(self, first: int, entries: list[list[str]]) -> bool:
        """The batch at once, column by column in C (map, join, one regex pass per column),
        when every row in it is a plain Default-type row the fast path takes: same rows, refs
        and costs as row by row. False, having changed nothing, when some row is not (a
        problem to report, a cell to normalise, drip-feed, a user ref...)."""
        count = len(entries)
        service = map(itemgetter(self.service_at), entries)
        if self.panel_at is None:
            pairs: list = list(zip(repeat(self.default_panel), service))
        else:
            pairs = list(zip(map(itemgetter(self.panel_at), entries), service, strict=True))
        distinct = dict.fromkeys(pairs)
        fasts: list[_FastDefault] = []
        for pair in distinct:
            fast = self.target(*pair).fast
            if fast is None:
                return False
            distinct[pair] = len(fasts)
            fasts.append(fast)
        model = fasts[0]  # every Default target has the same plan under one header
        links = list(map(str.strip, map(itemgetter(model.link), entries)))
        joined = "\n".join(links)  # kept as the rows' links: no per-row string
        if not (all(links) and http_url_lines(joined, count) and len(joined) < 1 << 32):
            return False
        quantities = list(map(str.strip, map(itemgetter(model.quantity), entries)))
        if not _all_plain_numbers(quantities):
            return False
        for index in (model.runs, model.interval, *model.foreign):
            if index is not None and any(map(str.strip, map(itemgetter(index), entries))):
                return False
        if self.ref_at is not None and any(map(str.strip, map(itemgetter(self.ref_at), entries))):
            return False
        numbers = list(map(int, quantities))
        if len(fasts) == 1:
            if min(numbers) < model.low or max(numbers) > min(model.high, model.max_billed):
                return False
            heads: Iterable[str] = repeat(model.head, count)
            tails: Iterable[str] = repeat(model.tail, count)
            slots: Iterable[int] = repeat(model.slot, count)
        else:
            which = list(map(distinct.__getitem__, pairs))
            lows = [f.low for f in fasts]
            highs = [min(f.high, f.max_billed) for f in fasts]
            if not (
                all(map(le, map(lows.__getitem__, which), numbers))
                and all(map(ge, map(highs.__getitem__, which), numbers))
            ):
                return False
            heads = map([f.head for f in fasts].__getitem__, which)
            tails = map([f.tail for f in fasts].__getitem__, which)
            slots = map([f.slot for f in fasts].__getitem__, which)
        digests = _digests(heads, links, quantities, tails)
        if self.campaign_at is None:
            campaigns = [""] * count
        else:
            campaigns = list(
                map(intern, map(str.strip, map(itemgetter(self.campaign_at), entries)))
            )
        starts = islice(accumulate(map((1).__add__, map(len, links)), initial=0), count)
        self.rows.extend(first, slots, numbers, digests, joined, starts, campaigns)
        return True

    def rows_one_by_one(self, first: int, entries: list, regular: bool) -> None:
        """Check a batch row by row: the fast path where it can, the general check where not."""
        errors = self.errors
        general = self.general
        targets = self.targets
        target_of = self.target
        panel_at, service_at = self.panel_at, self.service_at
        ref_at, campaign_at = self.ref_at, self.campaign_at
        default_panel = self.default_panel
        rows = self.rows
        links_checked = (
            regular
            and self.link_at is not None
            and all_http_urls([cells[self.link_at].strip() for cells in entries])
        )
        row_number = first - 1
        for cells in entries:
            row_number += 1
            if cells.__class__ is not list:
                if cells is not None:
                    errors.append(cells)
                continue
            panel_cell = default_panel if panel_at is None else cells[panel_at]
            service_cell = cells[service_at]
            by_service = targets.get(panel_cell)
            target = None if by_service is None else by_service.get(service_cell)
            if target is None:
                target = target_of(panel_cell, service_cell)
            fast = target.fast
            if fast is None:
                general(row_number, cells, target)
                continue
            # The fast path: cells already in normal form, nothing to report.
            link = cells[fast.link].strip()
            quantity = cells[fast.quantity].strip()
            if (
                not (link and quantity.isdigit() and quantity.isascii())
                or quantity[0] == "0"
                or len(quantity) > _FAST_DIGITS
            ):
                general(row_number, cells, target)
                continue
            number = int(quantity)
            if number < fast.low or number > fast.high:
                general(row_number, cells, target)
                continue
            runs = interval = ""
            if fast.runs is not None:
                runs = cells[fast.runs].strip()
            if fast.interval is not None:
                interval = cells[fast.interval].strip()
            if runs or interval:
                if not (
                    runs.isdigit()
                    and runs.isascii()
                    and interval.isdigit()
                    and interval.isascii()
                    and runs[0] != "0"
                    and interval[0] != "0"
                    and len(runs) <= _FAST_DIGITS
                    and len(interval) <= _FAST_DIGITS
                    and number * int(runs) <= fast.max_billed
                ):
                    general(row_number, cells, target)
                    continue
            elif number > fast.max_billed:
                general(row_number, cells, target)
                continue
            if fast.foreign and _any_filled(cells, fast.foreign):
                general(row_number, cells, target)
                continue
            if not links_checked and not is_http_url(link):
                general(row_number, cells, target)
                continue

            ref = cells[ref_at].strip() if ref_at is not None else ""
            if ref:
                if len(ref) > MAX_REF_LENGTH or "\n" in ref or "\r" in ref:
                    message = f"ref must be one line of at most {MAX_REF_LENGTH} characters"
                    errors.append(RowError(row_number, "ref", message))
                    continue
                digest = _ref_key(ref)
            elif runs:
                text = (
                    f"{fast.drip_head}{interval}\0link\0{link}\0quantity\0{quantity}"
                    f"\0runs\0{runs}{fast.tail}"
                )
                digest = sha256(text.encode()).digest()[:DIGEST_BYTES]
            else:
                text = f"{fast.head}{link}\0quantity\0{quantity}{fast.tail}"
                digest = sha256(text.encode()).digest()[:DIGEST_BYTES]
            campaign = cells[campaign_at].strip() if campaign_at is not None else ""
            campaign = intern(campaign)  # a handful of labels, shared by many rows
            if runs:
                rows.add_drip(row_number, fast.slot, number, int(runs), int(interval), digest,
                              link, campaign)  # fmt: skip
            else:
                rows.add(row_number, fast.slot, number, digest, link, campaign)
            if ref:
                rows.set_user_ref(ref)

    def general(self, row_number: int, cells: list[str], target: _Target) -> None:
        """The general check of one row: any type, every problem reported."""
        service = target.service
        if service is None:
            self.errors.append(RowError(row_number, target.column, target.message))
            return
        panel: str = target.panel  # type: ignore[assignment]  # set whenever service is
        try:
            request = self.layout.build(service, cells, target.delay_values, panel, self.today)
        except OrderFieldError as exc:
            self.errors.extend(
                RowError(row_number, column, message) for column, message in exc.problems
            )
            return
        params = request.params

        ref_at, campaign_at = self.ref_at, self.campaign_at
        ref = cells[ref_at].strip() if ref_at is not None else ""
        derived = not ref
        if derived:
            ref = derive_ref(panel, params)
        elif len(ref) > MAX_REF_LENGTH or "\n" in ref or "\r" in ref:
            message = f"ref must be one line of at most {MAX_REF_LENGTH} characters"
            self.errors.append(RowError(row_number, "ref", message))
            return

        slot = self.slot(target, request.pricing)
        cost = MONEY.multiply(self.slots[slot].unit, request.billed_units)
        campaign = cells[campaign_at].strip() if campaign_at is not None else ""
        self.rows.add_general(
            ValidatedOrder(
                panel,
                ref,
                row_number,
                request.service_id,
                request.service_type,
                params.get("link"),
                request.quantity,
                params,
                cost,  # = estimate_cost(service, request)
                campaign or None,
                request.warnings,
                derived,
            ),
            slot,
            request.billed_units,
            _ref_key(ref),  # a derived ref is in the derived form: its digest bytes
        )


def validate_order_file(
    content: bytes,
    file_name: str,
    catalog: Mapping[tuple[str, int], CatalogEntry],
    settings: Settings,
    balances: Mapping[str, Decimal],
    *,
    today: date | None = None,
    content_hash: str | None = None,
    fast: bool = True,
) -> IntakeResult:
    """Check a whole order file (bytes already read) and price it.

    `catalog` maps (panel, service id) to the current catalog entry, `balances` each panel's
    fresh balance. `today` (default: the UTC date) refuses expiry dates in the past.
    `content_hash` is the content's sha256 when the caller has it (else it is computed).
    `fast=False` checks every row by the general path (the same result, only slower: for
    tests that compare the two).
    """
    digest = file_hash(content) if content_hash is None else content_hash
    table, errors = read_csv_table(
        content, known_columns=ORDER_COLUMNS, required_columns=("service",)
    )
    chooser = PanelChooser(settings)
    if table is not None:
        errors.extend(chooser.header_errors(table.columns))
    if table is None or errors:
        return IntakeResult(file_name, digest, ValidatedRows(), errors)
    if today is None:
        today = datetime.now(UTC).date()

    check = _FileCheck(table.columns, catalog, settings, chooser, today, errors, fast=fast)
    for first, entries, regular in table.batches():
        check.batch(first, entries, regular)
    check.finish()
    panels = check.panels_named(settings)
    if any(e.row == 0 for e in errors):  # the file has no data rows: nothing to price
        return IntakeResult(file_name, digest, ValidatedRows(), errors, panels=panels)
    rows = check.rows
    totals = rows.panel_totals()
    errors.extend(batch_errors(totals, settings, balances))
    return IntakeResult(file_name, digest, rows, errors, totals, panels)


_PLAIN_NUMBERS = re.compile(
    f"[1-9][0-9]{{0,{_FAST_DIGITS - 1}}}(?:\n[1-9][0-9]{{0,{_FAST_DIGITS - 1}}})*"
)


def _all_plain_numbers(values: list[str]) -> bool:
    """Every value a whole number > 0 in plain ASCII digits, no leading zero, at most
    _FAST_DIGITS digits (what the general check would keep as it is)."""
    joined = "\n".join(values)
    return joined.count("\n") == len(values) - 1 and _PLAIN_NUMBERS.fullmatch(joined) is not None


def _digests(
    heads: Iterable[str], links: list[str], quantities: list[str], tails: Iterable[str]
) -> list[bytes]:
    """The DIGEST_BYTES of each row's derived ref (derive_ref's text, built from the parts)."""
    texts = map("".join, zip(heads, links, repeat("\0quantity\0"), quantities, tails))
    hashes = map(sha256, map(str.encode, texts))
    return list(map(_FIRST_BYTES, map(_DIGEST, hashes)))


_DIGEST = methodcaller("digest")
_FIRST_BYTES = itemgetter(slice(0, DIGEST_BYTES))


def _any_filled(cells: list[str], indices: tuple[int, ...]) -> bool:
    """Whether a cell the row's type does not take holds something (not only whitespace)."""
    for index in indices:
        value = cells[index]
        if value and not value.isspace():
            return True
    return False


def _duplicate_message(derived: bool, ref: str, panel: str, first: int) -> str:
    if derived:
        return (
            f"this row is identical to row {first} (rows without a ref get one derived from "
            "their content); give each row its own ref to order the same thing twice"
        )
    return f"ref {ref!r} is already used by row {first} on panel {panel!r}; refs must be unique"
