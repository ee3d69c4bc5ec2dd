"""The validated rows of one order file, kept by column: a few bytes a row, not objects.

A 100,000-row file must not cost 100,000 sets of Python objects (a tuple, a dict of params, a
ref string, a Decimal...) alive until the file is recorded: memory would grow by about a
kilobyte a row. `ValidatedRows` keeps, for each row the fast path checked, its row number,
its *slot* (the panel, service and pricing it was checked and priced against), its billed
units and the 12 bytes of its ref (a derived ref's own; a user's ref is kept as text too) in
flat arrays, its campaign by reference, and its link as characters of its batch's links
joined: no Python object of its own. The row's `ValidatedOrder` is built only when it is
read, the same every time. Rows of the types the fast path leaves to the general check
(lists, subscriptions, unknown types...) are kept as the `ValidatedOrder` built for them.

Totals are computed from the billed units of each slot and come out exactly as the
row-by-row sums `budget.panel_totals` and `sum()` would give them, digit for digit (see
`_exact_sums`; a case it cannot prove falls back to the row-by-row sum). Duplicate refs are
found by one sort of every row's (panel, ref bytes) (`duplicates`).
"""

from __future__ import annotations

import decimal
from array import array
from collections.abc import Collection, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import NamedTuple, overload

import numpy as np

from smm_pipeline.intake.budget import panel_totals
from smm_pipeline.panel.order_types import MONEY

__all__ = ["DIGEST_BYTES", "Slot", "ValidatedOrder", "ValidatedRows"]

DIGEST_BYTES = 12  # a derived ref is "auto-" and these bytes of a sha256, in hex
_ZERO = Decimal(0)
# Exact sums of exact products; an amount that needs more digits raises (then: row by row).
_WIDE = decimal.Context(prec=1000, traps=[decimal.Inexact, decimal.InvalidOperation])


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


class Slot(NamedTuple):
    """What the rows of one (panel, service, pricing) share: cost = unit × billed units."""

    panel: str
    service_id: int
    service_type: str
    unit: Decimal


class ValidatedRows(Sequence[ValidatedOrder]):
    """The rows of a file that passed every check, in file order (a read-only sequence of
    `ValidatedOrder`). Filled by the intake check through the `add_*` methods."""

    __slots__ = (
        "_billed",
        "_campaigns",
        "_digests",
        "_general",
        "_intervals",
        "_text_at",
        "_text_of",
        "_texts",
        "_numbers",
        "_odd",
        "_runs",
        "_sums",
        "_slot_of",
        "_slots",
        "_user_refs",
    )

    def __init__(self, slots: list[Slot] | None = None) -> None:
        # `slots` may be shared with (and grown by) the checker filling these rows.
        self._slots: list[Slot] = [] if slots is None else slots
        self._numbers = array("I")
        self._slot_of = array("I")
        self._billed = array("q")
        self._digests = bytearray()
        # Links by reference into texts: a batch's links joined by line feeds (no link holds
        # one), or one link; a row's link starts at _text_at in _texts[_text_of].
        self._texts: list[str] = []
        self._text_of = array("I")
        self._text_at = array("I")
        self._campaigns: list[str] = []
        self._runs: array | None = None  # drip-feed runs and interval, once a row has them
        self._intervals: array | None = None
        self._user_refs: dict[int, str] = {}
        self._general: dict[int, ValidatedOrder] = {}
        self._odd = False  # some row's billed units do not fit 64 bits: totals row by row
        self._sums: tuple[int, list[int], list[int]] | None = None  # (rows, billed, order)

    # -- filling -------------------------------------------------------------------------

    def add(
        self, number: int, slot: int, billed: int, digest: bytes, link: str, campaign: str
    ) -> None:
        """A Default-type row without drip-feed: `billed` is its quantity, `digest` the
        DIGEST_BYTES of its derived ref (ignored when a user ref follows)."""
        self._numbers.append(number)
        self._slot_of.append(slot)
        self._billed.append(billed)
        self._digests += digest
        self._add_link(link)
        self._campaigns.append(campaign)
        if self._runs is not None:
            self._runs.append(0)
            self._intervals.append(0)  # type: ignore[union-attr]

    def _add_link(self, link: str) -> None:
        self._text_of.append(len(self._texts))
        self._text_at.append(0)
        self._texts.append(link)

    def extend(
        self,
        first: int,
        slots: Iterable[int],
        billed: Sequence[int],
        digests: Iterable[bytes],
        links: str,
        starts: Iterable[int],
        campaigns: list[str],
    ) -> None:
        """A batch of consecutive Default-type rows without drip-feed from row `first` on,
        like `add` for each (the iterables are as long as `billed`): their links are the
        lines of `links`, starting at `starts`."""
        count = len(billed)
        self._numbers.extend(range(first, first + count))
        self._slot_of.extend(slots)
        self._billed.extend(billed)
        self._digests += b"".join(digests)
        self._text_of.frombytes(array("I", [len(self._texts)]).tobytes() * count)
        self._text_at.extend(starts)
        self._texts.append(links)
        self._campaigns.extend(campaigns)
        if self._runs is not None:
            self._runs.frombytes(bytes(8 * count))
            self._intervals.frombytes(bytes(8 * count))  # type: ignore[union-attr]

    def add_drip(
        self,
        number: int,
        slot: int,
        quantity: int,
        runs: int,
        interval: int,
        digest: bytes,
        link: str,
        campaign: str,
    ) -> None:
        """A Default-type drip-feed row: `quantity` per run, billed `quantity × runs`."""
        if self._runs is None:
            self._runs = array("q", bytes(8 * len(self._numbers)))
            self._intervals = array("q", bytes(8 * len(self._numbers)))
        self._numbers.append(number)
        self._slot_of.append(slot)
        self._billed.append(quantity * runs)
        self._digests += digest
        self._add_link(link)
        self._campaigns.append(campaign)
        self._runs.append(runs)
        self._intervals.append(interval)  # type: ignore[union-attr]

    def set_user_ref(self, ref: str) -> None:
        """The last row added carries the user's own ref (not derived)."""
        self._user_refs[len(self._numbers) - 1] = ref

    def add_general(self, row: ValidatedOrder, slot: int, billed: int, key: bytes) -> None:
        """A row the general check built: kept as it is; `slot` and `billed` price it, `key`
        is its ref as DIGEST_BYTES for the duplicate check."""
        index = len(self._numbers)
        self._numbers.append(row.row_number)
        self._slot_of.append(slot)
        if billed >> 63:
            self._billed.append(0)
            self._odd = True
        else:
            self._billed.append(billed)
        self._digests += key
        self._text_of.append(0)  # not read: the row is kept whole
        self._text_at.append(0)
        self._campaigns.append("")
        if self._runs is not None:
            self._runs.append(0)
            self._intervals.append(0)  # type: ignore[union-attr]
        self._general[index] = row

    # -- duplicates ----------------------------------------------------------------------

    def duplicates(self) -> list[tuple[int, int]]:
        """(index, index of the first row with the same panel and ref) of every row whose
        ref an earlier row of its panel has, in order. Every row's DIGEST_BYTES (a derived
        ref's own, or its key for a user's ref) are sorted with its panel in one pass; rows
        whose bytes agree are then compared by their refs' text."""
        count = len(self._numbers)
        if count < 2:
            return []
        ids: dict[str, int] = {}
        panel_of_slot = np.array(
            [ids.setdefault(slot.panel, len(ids)) for slot in self._slots], dtype=np.uint64
        )
        slots = np.frombuffer(self._slot_of, dtype=f"u{self._slot_of.itemsize}")
        parts = np.frombuffer(self._digests, dtype=[("a", ">u4"), ("b", ">u8")])
        high = (panel_of_slot[slots] << np.uint64(32)) | parts["a"].astype(np.uint64)
        low = parts["b"].astype(np.uint64)
        order = np.lexsort((low, high))  # stable: equal keys stay in row order
        high, low = high[order], low[order]
        same = (high[1:] == high[:-1]) & (low[1:] == low[:-1])
        if not same.any():
            return []
        found: list[tuple[int, int]] = []
        starts = np.flatnonzero(same & ~np.concatenate(([False], same[:-1])))
        for start in starts.tolist():
            end = start + 1
            while end < count - 1 and same[end]:
                end += 1
            first_of: dict[tuple[str, str], int] = {}
            for index in order[start : end + 1].tolist():
                key = self._key(index)
                first = first_of.setdefault(key, index)
                if first != index:
                    found.append((index, first))
        return sorted(found)

    def _key(self, index: int) -> tuple[str, str]:
        general = self._general.get(index)
        if general is not None:
            return general.panel, general.ref
        return self._slots[self._slot_of[index]].panel, self._ref(index)[0]

    def remove(self, indices: Collection[int]) -> None:
        """Leave out the rows at `indices` (the duplicates)."""
        keep = [i for i in range(len(self._numbers)) if i not in indices]
        self._numbers = array("I", map(self._numbers.__getitem__, keep))
        self._slot_of = array("I", map(self._slot_of.__getitem__, keep))
        self._billed = array("q", map(self._billed.__getitem__, keep))
        width = DIGEST_BYTES
        self._digests = bytearray(
            b"".join(self._digests[i * width : (i + 1) * width] for i in keep)
        )
        self._text_of = array("I", map(self._text_of.__getitem__, keep))
        self._text_at = array("I", map(self._text_at.__getitem__, keep))
        self._campaigns = list(map(self._campaigns.__getitem__, keep))
        if self._runs is not None:
            self._runs = array("q", map(self._runs.__getitem__, keep))
            self._intervals = array("q", map(self._intervals.__getitem__, keep))  # type: ignore[union-attr]
        new_index = {old: new for new, old in enumerate(keep)}
        self._user_refs = {new_index[i]: r for i, r in self._user_refs.items() if i in new_index}
        self._general = {new_index[i]: r for i, r in self._general.items() if i in new_index}
        self._sums = None

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._numbers)

    @overload
    def __getitem__(self, index: int) -> ValidatedOrder: ...

    @overload
    def __getitem__(self, index: slice) -> list[ValidatedOrder]: ...

    def __getitem__(self, index: int | slice) -> ValidatedOrder | list[ValidatedOrder]:
        if isinstance(index, slice):
            return [self._row(i) for i in range(*index.indices(len(self._numbers)))]
        count = len(self._numbers)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("row index out of range")
        return self._row(index)

    def __iter__(self) -> Iterator[ValidatedOrder]:
        row = self._row
        for index in range(len(self._numbers)):
            yield row(index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ValidatedRows | list | tuple):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a sequence compared by value

    def __repr__(self) -> str:
        head = ", ".join(repr(r) for r in self[:3])
        more = f", ... ({len(self)} rows)" if len(self) > 3 else ""
        return f"ValidatedRows([{head}{more}])"

    def _ref(self, index: int) -> tuple[str, bool]:
        user = self._user_refs.get(index)
        if user is not None:
            return user, False
        at = index * DIGEST_BYTES
        return "auto-" + self._digests[at : at + DIGEST_BYTES].hex(), True

    def _row(self, index: int) -> ValidatedOrder:
        general = self._general.get(index)
        if general is not None:
            return general
        slot = self._slots[self._slot_of[index]]
        text = self._texts[self._text_of[index]]
        start = self._text_at[index]
        end = text.find("\n", start)
        link = text[start:] if end < 0 else text[start:end]
        billed = self._billed[index]
        sid = str(slot.service_id)
        runs = 0 if self._runs is None else self._runs[index]
        if runs:
            params = {
                "service": sid,
                "link": link,
                "quantity": str(billed // runs),
                "runs": str(runs),
                "interval": str(self._intervals[index]),  # type: ignore[index]
            }
        else:
            params = {"service": sid, "link": link, "quantity": str(billed)}
        ref, derived = self._ref(index)
        return ValidatedOrder(
            slot.panel,
            ref,
            self._numbers[index],
            slot.service_id,
            slot.service_type,
            link,
            billed,
            params,
            MONEY.multiply(slot.unit, billed),
            self._campaigns[index] or None,
            (),
            derived,
        )

    def key_columns(self, start: int, stop: int) -> tuple[list[str], list[str]]:
        """The panels and refs of rows `start` to `stop` (two lists), built in C, not row by
        row: for looking them up in the warehouse."""
        stop = min(stop, len(self._numbers))
        count = max(stop - start, 0)
        width = 2 * DIGEST_BYTES
        digits = self._digests[start * DIGEST_BYTES : stop * DIGEST_BYTES].hex()
        cuts = map(slice, range(0, width * count, width), range(width, width * (count + 1), width))
        refs = list(map("auto-".__add__, map(digits.__getitem__, cuts)))
        panel_of = [slot.panel for slot in self._slots]
        panels = list(map(panel_of.__getitem__, self._slot_of[start:stop]))
        if self._user_refs or self._general:
            user, general = self._user_refs, self._general
            for index in range(start, stop):
                ref = user.get(index)
                if ref is not None:
                    refs[index - start] = ref
                row = general.get(index)
                if row is not None:
                    panels[index - start], refs[index - start] = row.panel, row.ref
        return panels, refs

    def keys(self) -> Iterator[tuple[str, str]]:
        """(panel, ref) of every row, in order, without building the rows."""
        slots, general = self._slots, self._general
        for index, slot in enumerate(self._slot_of):
            row = general.get(index)
            if row is not None:
                yield row.panel, row.ref
            else:
                yield slots[slot].panel, self._ref(index)[0]

    def general_rows(self) -> Iterator[ValidatedOrder]:
        """The rows the general check built (the only ones that can carry warnings)."""
        for index in sorted(self._general):
            yield self._general[index]

    # -- money ---------------------------------------------------------------------------

    def panel_totals(self, exclude: Collection[int] = ()) -> dict[str, Decimal]:
        """Per panel, the sum of the estimated costs of the rows (but those at the indices in
        `exclude`): exactly `budget.panel_totals` over them, dict order included."""
        sums = self._exact_sums(exclude, by_panel=True)
        if sums is not None:
            return sums
        skip = set(exclude)
        return panel_totals(
            (row.panel, row.estimated_cost) for i, row in enumerate(self) if i not in skip
        )

    def total_cost(self, exclude: Collection[int] = ()) -> Decimal:
        """The sum of the estimated costs of the rows (but those in `exclude`): exactly
        `sum((row.estimated_cost for row in rows), Decimal(0))`."""
        sums = self._exact_sums(exclude, by_panel=False)
        if sums is not None:
            return sums.get("", _ZERO)
        skip = set(exclude)
        return sum((row.estimated_cost for i, row in enumerate(self) if i not in skip), _ZERO)

    def _slot_sums(self, exclude: Collection[int]) -> tuple[list[int], list[int]]:
        """Billed units per slot (exact integers), and the slots in order of their first
        row, rows in `exclude` left out; computed once for all rows. Summed in numpy as two
        halves of 32 bits, so that no sum can overflow (billed units are below 2**63)."""
        if not exclude and self._sums is not None and self._sums[0] == len(self._numbers):
            return self._sums[1], self._sums[2]
        count = len(self._slots)
        slots = np.frombuffer(self._slot_of, dtype=f"u{self._slot_of.itemsize}")
        billed = np.frombuffer(self._billed, dtype=np.int64)
        if exclude:
            keep = np.ones(len(slots), dtype=bool)
            keep[np.fromiter(exclude, dtype=np.int64, count=len(exclude))] = False
            slots, billed = slots[keep], billed[keep]
        low = np.zeros(count, dtype=np.uint64)
        high = np.zeros(count, dtype=np.uint64)
        np.add.at(low, slots, (billed & 0xFFFFFFFF).astype(np.uint64))
        np.add.at(high, slots, (billed >> 32).astype(np.uint64))
        sums = [(h << 32) + lo for h, lo in zip(high.tolist(), low.tolist(), strict=True)]
        first = np.full(count, len(slots), dtype=np.int64)
        np.minimum.at(first, slots, np.arange(len(slots), dtype=np.int64))
        order = [
            slot for slot in np.argsort(first, kind="stable").tolist() if first[slot] < len(slots)
        ]
        if not exclude:
            self._sums = (len(self._numbers), sums, order)
        return sums, order

    def _exact_sums(self, exclude: Collection[int], *, by_panel: bool) -> dict[str, Decimal] | None:
        """Sums per panel (or all under ""), as unit × billed units per slot, or None when
        they might differ from a row-by-row sum in the current decimal context.

        Each row's cost is exactly unit × billed (exponent: the unit's); a row-by-row sum
        starting at Decimal(0) is exact, hence equal to this one digit for digit (same value,
        exponent the smallest), unless the context rounded a partial sum. With no negative
        unit every partial sum is at most the total and has no smaller exponent, so a total
        whose coefficient fits the context's precision proves nothing was rounded."""
        if self._odd:
            return None
        billed, order = self._slot_sums(exclude)
        sums: dict[str, Decimal] = {}
        precision = decimal.getcontext().prec
        try:
            for slot in order:
                unit = self._slots[slot].unit
                if unit.is_signed() or not unit.is_finite():
                    return None
                key = self._slots[slot].panel if by_panel else ""
                sums[key] = _WIDE.add(sums.get(key, _ZERO), _WIDE.multiply(unit, billed[slot]))
        except decimal.DecimalException:
            return None
        if any(len(total.as_tuple().digits) > precision for total in sums.values()):
            return None
        return sums
