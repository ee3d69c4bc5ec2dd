"""The `add` fields of each service type (the type table of README, CSV drops:
Orders) and the cost of an order.

A panel's catalog says a service's `type`; the type decides which form fields `add` needs,
which of them are lists (sent one item per line), where the order's quantity comes from and
how the order is priced. Everything here is pure: strings in, strings and `Decimal` out, so the
CSV intake can validate a whole file before a single request leaves the machine, and the
submission step can send exactly the fields that were validated.

Choices the API pages leave open, written down here once:

- Values are trimmed; an empty cell is an absent field. List cells are split on `\\r\\n`/`\\n`,
  items trimmed, blank lines dropped, and sent joined with `\\n`.
- Drip-feed (Default with `runs`): `runs` and `interval` go together; the panel checks
  `quantity` per run against min/max, so we do too; the analytics quantity is
  `quantity × runs` and so is the billed quantity.
- Package: the rate is the price of one package; quantity for analytics is 1.
- Custom Comments / Mentions Custom List: quantity is the number of lines, checked against
  min/max. A `quantity` cell is accepted only when it equals that count.
- Custom Comments Package / Comment Replies: the line count is informative (it is the
  analytics quantity; outside min/max it is a warning, not an error). Custom Comments Package
  is priced as one package; Comment Replies per 1,000 replies (one reply per line).
- Subscriptions: `min`/`max` are checked against the service's min/max and each other; the
  analytics quantity is `max`. The estimate is an upper bound for the posts we can count:
  rate × max / 1000 × (posts + old_posts), where an absent `posts` (unlimited future posts)
  counts as one post and is flagged with a warning, since no finite bound exists.
- A type not in the table is passed through with the non-empty fields the row carries
  (well-known fields such as link and quantity are still checked) and flagged with a warning;
  it is priced per 1,000 of `quantity`, or as one package when there is no quantity.
- A non-empty cell the type does not take is an error: it usually means the wrong service id.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Context, Decimal, Inexact
from typing import NamedTuple

from smm_pipeline.errors import OrderFieldError
from smm_pipeline.panel.models import Service

__all__ = [
    "ALL_FIELDS",
    "LIST_FIELDS",
    "MONEY",
    "ORDER_TYPES",
    "AddRequest",
    "OrderFieldError",
    "OrderType",
    "Pricing",
    "QuantitySource",
    "FieldLayout",
    "all_http_urls",
    "build_add_params",
    "http_url_lines",
    "estimate_cost",
    "is_http_url",
    "parse_expiry",
    "unit_price",
]


class QuantitySource(enum.Enum):
    """Where an order's quantity comes from."""

    FIELD = "field"  # the `quantity` cell, sent, checked against min/max
    LINES = "lines"  # the line count of `lines_field`, not sent, checked against min/max
    INFORMATIVE_LINES = "informative_lines"  # the line count, not sent, outside min/max warns
    PACKAGE = "package"  # one package
    SUBSCRIPTION = "subscription"  # the `min`/`max` cells


class Pricing(enum.Enum):
    """How `estimate_cost` turns rate and quantity into money."""

    PER_THOUSAND = "per_thousand"  # rate × billed units / 1000
    FLAT = "flat"  # rate × 1 (the rate is the price of one package)


@dataclass(frozen=True)
class OrderType:
    """One row of the README's type table (CSV drops: Orders)."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    quantity_source: QuantitySource
    pricing: Pricing
    lines_field: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional

    @property
    def list_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if f in LIST_FIELDS)


LIST_FIELDS = frozenset({"comments", "keywords", "usernames", "hashtags", "groups"})
_POSITIVE_INT_FIELDS = frozenset(
    {"quantity", "runs", "interval", "answer_number", "min", "max", "posts"}
)
_NON_NEGATIVE_INT_FIELDS = frozenset({"old_posts"})
_TEXT_FIELDS = frozenset({"username", "hashtag", "media"})

_Q = QuantitySource
_P = Pricing
ORDER_TYPES: dict[str, OrderType] = {
    t.name: t
    for t in (
        OrderType("Default", ("link", "quantity"), ("runs", "interval"), _Q.FIELD, _P.PER_THOUSAND),
        OrderType("Package", ("link",), (), _Q.PACKAGE, _P.FLAT),
        OrderType("SEO", ("link", "quantity", "keywords"), (), _Q.FIELD, _P.PER_THOUSAND),
        OrderType(
            "Custom Comments", ("link", "comments"), (), _Q.LINES, _P.PER_THOUSAND, "comments"
        ),
        OrderType(
            "Custom Comments Package",
            ("link", "comments"),
            (),
            _Q.INFORMATIVE_LINES,
            _P.FLAT,
            "comments",
        ),
        OrderType("Mentions", ("link", "quantity", "usernames"), (), _Q.FIELD, _P.PER_THOUSAND),
        OrderType(
            "Mentions with Hashtags",
            ("link", "quantity", "usernames", "hashtags"),
            (),
            _Q.FIELD,
            _P.PER_THOUSAND,
        ),
        OrderType(
            "Mentions Custom List",
            ("link", "usernames"),
            (),
            _Q.LINES,
            _P.PER_THOUSAND,
            "usernames",
        ),
        OrderType(
            "Mentions Hashtag", ("link", "quantity", "hashtag"), (), _Q.FIELD, _P.PER_THOUSAND
        ),
        OrderType(
            "Mentions User Followers",
            ("link", "quantity", "username"),
            (),
            _Q.FIELD,
            _P.PER_THOUSAND,
        ),
        OrderType(
            "Mentions Media Likers", ("link", "quantity", "media"), (), _Q.FIELD, _P.PER_THOUSAND
        ),
        OrderType("Comment Likes", ("link", "quantity", "username"), (), _Q.FIELD, _P.PER_THOUSAND),
        OrderType(
            "Comment Replies",
            ("link", "username", "comments"),
            (),
            _Q.INFORMATIVE_LINES,
            _P.PER_THOUSAND,
            "comments",
        ),
        OrderType("Poll", ("link", "quantity", "answer_number"), (), _Q.FIELD, _P.PER_THOUSAND),
        OrderType(
            "Invites from Groups", ("link", "quantity", "groups"), (), _Q.FIELD, _P.PER_THOUSAND
        ),
        OrderType(
            "Subscriptions",
            ("username", "min", "max", "delay"),
            ("posts", "old_posts", "expiry"),
            _Q.SUBSCRIPTION,
            _P.PER_THOUSAND,
        ),
    )
}
ALL_FIELDS: tuple[str, ...] = tuple(sorted({f for t in ORDER_TYPES.values() for f in t.fields}))
"""Every field any known type takes: the order-file columns besides panel/service/ref/campaign."""


class AddRequest(NamedTuple):
    """What to POST for one order besides key/action, and what it is worth.

    `params` holds the exact form fields, all strings, `service` included. `quantity` is the
    analytics quantity (see the module docstring), `billed_units` what the rate applies to.
    (A NamedTuple rather than a frozen dataclass: built once per CSV row, it must be cheap.)
    """

    service_id: int
    service_type: str
    params: dict[str, str]
    quantity: int | None
    billed_units: int
    pricing: Pricing
    known_type: bool
    warnings: tuple[str, ...] = ()


# tuple.__new__ builds a NamedTuple without running its Python-level __new__: one per CSV row.
_new_request = tuple.__new__


# A link is an http(s) URL with a host: scheme, optional userinfo, a host name or [IPv6],
# optional port, then a path/query/fragment. No whitespace anywhere.
# Possessive quantifiers: a link is scanned once, never backtracked (it runs for every row).
_URL_RE = re.compile(
    r"[hH][tT][tT][pP][sS]?+://(?:[^\s/?#@]++@)?+(?:[^\s/?#@:\[\]]++|\[[0-9A-Fa-f:.]++\])"
    r"(?::[0-9]*+)?+(?:[/?#]\S*+)?+"
)
_DMY_RE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_ISO_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
MONEY = Context(prec=60, traps=[Inexact])
"""Decimal context for money arithmetic: wide enough for any price, and raising rather than
ever rounding silently."""


def is_http_url(value: str) -> bool:
    """True for an http(s) URL with a host and no whitespace."""
    return _URL_RE.fullmatch(value) is not None


# Lines each empty or an http(s) URL: no URL can hold a line feed (every class in _URL_RE
# excludes whitespace), so the lines of a joined text match one by one, exactly as
# `is_http_url` would match each of them on its own.
_URL_LINES_RE = re.compile(f"(?:{_URL_RE.pattern})?+(?:\n(?:{_URL_RE.pattern})?+)*+")
# The same for an ASCII text without "@": no userinfo can match, and among ASCII characters
# \s is exactly tab, LF, VT, FF, CR, the separators 0x1C-0x1F and space (as str.isspace), so
# explicit classes (cheaper than \s) and no userinfo attempt give the same answer.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f "
_URL_ASCII = (
    rf"[hH][tT][tT][pP][sS]?+://(?:[^{_SPACE}/?#@:\[\]]++|\[[0-9A-Fa-f:.]++\])"
    rf"(?::[0-9]*+)?+(?:[/?#][^{_SPACE}]*+)?+"
)
_URL_LINES_ASCII_RE = re.compile(f"(?:{_URL_ASCII})?+(?:\n(?:{_URL_ASCII})?+)*+")


def all_http_urls(values: Sequence[str]) -> bool:
    """True when every non-empty value is an http(s) URL (`is_http_url`), in one regex pass
    over the values joined (a per-value call costs more than the match itself). False when
    some value is not, or holds a line feed: then check them one by one."""
    return not values or http_url_lines("\n".join(values), len(values))


def http_url_lines(joined: str, count: int) -> bool:
    """`all_http_urls` of `count` values given joined by line feeds."""
    if joined.count("\n") != count - 1:
        return False
    lines = _URL_LINES_ASCII_RE if joined.isascii() and "@" not in joined else _URL_LINES_RE
    return lines.fullmatch(joined) is not None


def parse_expiry(value: str) -> date:
    """Read an expiry given as d/m/Y or YYYY-MM-DD; ValueError when it is neither."""
    m = _DMY_RE.fullmatch(value)
    if m:
        return date(int(m[3]), int(m[2]), int(m[1]))
    m = _ISO_RE.fullmatch(value)
    if m:
        return date(int(m[1]), int(m[2]), int(m[3]))
    raise ValueError(value)


def _shown(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


# How each field is checked. A plan is compiled once per (columns, type): the fields present
# with their cell index and check, so the per-row loop only does the checks themselves.
_LINK, _POSITIVE, _NON_NEGATIVE, _LIST, _TEXT, _DELAY, _EXPIRY, _OTHER = range(8)


def _kind(name: str) -> int:
    if name == "link":
        return _LINK
    if name in _POSITIVE_INT_FIELDS:
        return _POSITIVE
    if name in _NON_NEGATIVE_INT_FIELDS:
        return _NON_NEGATIVE
    if name in LIST_FIELDS:
        return _LIST
    if name in _TEXT_FIELDS:
        return _TEXT
    return {"delay": _DELAY, "expiry": _EXPIRY}.get(name, _OTHER)


class _Plan(NamedTuple):
    order_type: OrderType | None  # None: a type we do not know, passed through
    present: tuple[tuple[str, int, int, bool], ...]  # (field, cell index, kind, required)
    absent_required: tuple[str, ...]  # required fields with no column at all
    foreign: tuple[tuple[str, int], ...]  # columns this type does not take
    quantity_index: int | None  # the quantity cell of a line-count type, compared to lines


class FieldLayout:
    """Where each order field sits in a row of cells, for rows of any service type.

    Built once per CSV header (`columns`, minus the `ignore`d non-field columns such as panel
    or ref); `build` then checks one row given as its list of cells. `build_add_params` is the
    same check for a single mapping.
    """

    __slots__ = ("_fields", "_plans")

    def __init__(self, columns: Sequence[str], ignore: Collection[str] = ()) -> None:
        self._fields = tuple((n, i) for i, n in enumerate(columns) if n not in ignore)
        self._plans: dict[str, _Plan] = {}

    def plan(self, type_name: str) -> _Plan:
        """The compiled check of rows of `type_name` under this header (cached)."""
        return self._plans.get(type_name) or self._plan(type_name)

    def _plan(self, type_name: str) -> _Plan:
        plan = self._plans.get(type_name)
        if plan is None:
            plan = self._plans[type_name] = self._compile(ORDER_TYPES.get(type_name))
        return plan

    def _compile(self, order_type: OrderType | None) -> _Plan:
        at = dict(self._fields)
        if order_type is None:  # pass-through: every column is a field, none is foreign
            present = tuple((n, i, _kind(n), False) for n, i in self._fields)
            return _Plan(None, present, (), (), None)
        present = tuple(
            (n, at[n], _kind(n), n in order_type.required) for n in order_type.fields if n in at
        )
        absent = tuple(n for n in order_type.required if n not in at)
        quantity_index = at.get("quantity") if order_type.lines_field else None
        takes = set(order_type.fields)
        if quantity_index is not None:
            takes.add("quantity")
        foreign = tuple((n, i) for n, i in self._fields if n not in takes)
        return _Plan(order_type, present, absent, foreign, quantity_index)

    def build(
        self,
        service: Service,
        cells: Sequence[str],
        delay_values: Collection[int],
        panel_name: str = "",
        today: date | None = None,
    ) -> AddRequest:
        """Check one row (its cells, in `columns` order) like `build_add_params`."""
        plan = self._plans.get(service.type) or self._plan(service.type)
        if plan.order_type is None:
            return _pass_through(service, plan, cells)
        return _build_known(service, plan, cells, delay_values, panel_name, today)


def _int_or_problem(name: str, raw: str, minimum: int) -> int | str:
    """The number in `raw`, or the message saying why it is not an acceptable one."""
    digits = raw[1:] if raw[0] in "+-" else raw
    if not (digits.isdigit() and digits.isascii()):
        return f"{name} must be a whole number, got {_shown(raw)}"
    number = int(raw)
    if number < minimum:
        bound = "greater than 0" if minimum == 1 else f"at least {minimum}"
        return f"{name} must be {bound}, got {number}"
    return number


def _lines(raw: str) -> list[str]:
    """The items of a list cell: split on \\r\\n, \\n or \\r only (not on the other characters
    `str.splitlines` knows, which a panel would not split on), trimmed, blanks dropped."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    return [s for s in (part.strip() for part in text.split("\n")) if s]


def build_add_params(
    service: Service,
    fields: Mapping[str, str],
    delay_values: Collection[int],
    *,
    panel_name: str = "",
    today: date | None = None,
) -> AddRequest:
    """Check one order's fields against its service and build the `add` form fields.

    `fields` maps field names to cell text (an empty string is an absent field); fields the
    type does not take must be empty. `delay_values` are the panel's allowed subscription
    delays; `panel_name` only makes messages clearer. With `today`, an expiry before it is
    refused. Raises `OrderFieldError` naming every problem of the row.
    """
    layout = FieldLayout(tuple(fields))
    return layout.build(service, tuple(fields.values()), delay_values, panel_name, today)


def _rejected(problems: list[tuple[str, str]]) -> OrderFieldError:
    column, message = problems[0]
    return OrderFieldError(column, message, tuple(problems))


def _build_known(
    service: Service,
    plan: _Plan,
    cells: Sequence[str],
    delay_values: Collection[int],
    panel_name: str,
    today: date | None,
) -> AddRequest:
    order_type = plan.order_type
    assert order_type is not None
    type_name = order_type.name
    sid = service.service_id
    problems: list[tuple[str, str]] = []
    fail = problems.append
    params: dict[str, str] = {"service": str(sid)}
    ints: dict[str, int] = {}
    line_counts: dict[str, int] = {}
    for name in plan.absent_required:
        fail((name, f"{name} is required for service type {type_name!r}"))
    for name, index, kind, required in plan.present:
        raw = cells[index].strip()
        if not raw:
            if required:
                fail((name, f"{name} is required for service type {type_name!r}"))
        elif kind == _POSITIVE and raw.isdigit() and raw.isascii() and raw[0] != "0":
            ints[name] = int(raw)
            params[name] = raw
        elif kind == _LINK:
            if _URL_RE.fullmatch(raw) is None:
                fail((name, f"link must be an http(s) URL with a host, got {_shown(raw)}"))
            else:
                params[name] = raw
        elif kind in (_POSITIVE, _NON_NEGATIVE):
            number = _int_or_problem(name, raw, 1 if kind == _POSITIVE else 0)
            if isinstance(number, str):
                fail((name, number))
            else:
                ints[name] = number
                params[name] = str(number)
        elif kind == _LIST:
            items = _lines(raw)
            line_counts[name] = len(items)
            params[name] = "\n".join(items)
        elif kind == _TEXT:
            if "\n" in raw or "\r" in raw:
                fail((name, f"{name} must be a single line (one value)"))
            else:
                params[name] = raw
        elif kind == _DELAY:
            number = _int_or_problem(name, raw, 0)
            if isinstance(number, str):
                fail((name, number))
            elif number not in delay_values:
                where = f"panel {panel_name!r}" if panel_name else "this panel"
                allowed = ", ".join(str(v) for v in sorted(delay_values))
                fail((name, f"delay {number} is not allowed on {where}; allowed: {allowed}"))
            else:
                params[name] = str(number)
        elif kind == _EXPIRY:
            _check_expiry(raw, today, params, problems)

    for name, index in plan.foreign:
        value = cells[index]
        if value and not value.isspace():
            fail(
                (
                    name,
                    f"service {sid} is type {type_name!r}, which takes no {name}; "
                    "leave this cell empty (or check the service id)",
                )
            )

    warnings: tuple[str, ...] = ()  # rare: a tuple spares a list per row
    source = order_type.quantity_source
    quantity: int | None = None
    billed = 0
    if source is QuantitySource.FIELD:
        runs = ints.get("runs")
        if (runs is None) != ("interval" not in ints) and not _failed(problems, "runs", "interval"):
            fail(
                (
                    "interval" if runs is not None else "runs",
                    "runs and interval go together (drip-feed); give both or neither",
                )
            )
        quantity = ints.get("quantity")
        if quantity is not None:
            if quantity < service.min or quantity > service.max:
                _out_of_range(problems, "quantity", f"quantity {quantity}", quantity, service)
            if runs is not None:
                quantity *= runs
            billed = quantity
    elif source is QuantitySource.PACKAGE:
        quantity = billed = 1
    elif source is QuantitySource.SUBSCRIPTION:
        quantity, billed, warnings = _subscription_units(ints, service, problems)
    else:
        lines_field = order_type.lines_field
        assert lines_field is not None
        count = line_counts.get(lines_field)
        if count is not None:
            label = f"{lines_field} has {count} line{'s' if count != 1 else ''},"
            if source is QuantitySource.LINES:
                _out_of_range(problems, lines_field, label, count, service)
            elif not service.min <= count <= service.max:
                warnings = (
                    f"{label} outside the min/max {service.min}-{service.max} of service {sid}",
                )
            given = "" if plan.quantity_index is None else cells[plan.quantity_index].strip()
            if given and given != str(count):
                fail(
                    (
                        "quantity",
                        f"quantity {_shown(given)} does not match the {count} lines of "
                        f"{lines_field}; leave quantity empty for service type {type_name!r}",
                    )
                )
            quantity = billed = count
            if order_type.pricing is Pricing.FLAT:
                billed = 1
    if problems:
        raise _rejected(problems)
    return _new_request(
        AddRequest, (sid, type_name, params, quantity, billed, order_type.pricing, True, warnings)
    )


def _check_expiry(
    raw: str, today: date | None, params: dict[str, str], problems: list[tuple[str, str]]
) -> None:
    try:
        day = parse_expiry(raw)
    except ValueError:
        problems.append(
            (
                "expiry",
                f"expiry {_shown(raw)} is not a valid date; "
                "use d/m/Y (31/12/2025) or YYYY-MM-DD (2025-12-31)",
            )
        )
        return
    if today is not None and day < today:
        problems.append(("expiry", f"expiry {day:%d/%m/%Y} is in the past"))
    else:
        params["expiry"] = f"{day:%d/%m/%Y}"


def _subscription_units(
    ints: dict[str, int],
    service: Service,
    problems: list[tuple[str, str]],
) -> tuple[int | None, int, tuple[str, ...]]:
    """(analytics quantity, billed units, warnings) of a subscription; see the module
    docstring."""
    low, high = ints.get("min"), ints.get("max")
    if low is not None:
        _out_of_range(problems, "min", f"min {low}", low, service)
    if high is not None:
        _out_of_range(problems, "max", f"max {high}", high, service)
    if low is not None and high is not None and low > high:
        problems.append(("min", f"min {low} is above max {high}"))
    if high is None:
        return None, 0, ()
    posts = ints.get("posts")
    warnings: tuple[str, ...] = ()
    if posts is None:
        warnings = (
            "no posts limit: the subscription runs for unlimited future posts; "
            "the estimated cost covers one post",
        )
    return high, high * ((posts or 1) + ints.get("old_posts", 0)), warnings


def _failed(problems: list[tuple[str, str]], *columns: str) -> bool:
    return any(column in columns for column, _ in problems)


def _out_of_range(
    problems: list[tuple[str, str]], column: str, label: str, value: int, service: Service
) -> None:
    if value < service.min:
        problems.append(
            (column, f"{label} below the minimum {service.min} of service {service.service_id}")
        )
    elif value > service.max:
        problems.append(
            (column, f"{label} above the maximum {service.max} of service {service.service_id}")
        )


def _pass_through(service: Service, plan: _Plan, cells: Sequence[str]) -> AddRequest:
    """An unknown type: send what the row carries, check what has a well-known meaning."""
    problems: list[tuple[str, str]] = []
    params: dict[str, str] = {"service": str(service.service_id)}
    ints: dict[str, int] = {}
    for name, index, kind, _ in plan.present:
        raw = cells[index].strip()
        if not raw:
            continue
        if kind == _LINK and not is_http_url(raw):
            problems.append((name, f"link must be an http(s) URL with a host, got {_shown(raw)}"))
            continue
        if name in ("quantity", "runs", "interval"):
            number = _int_or_problem(name, raw, 1)
            if isinstance(number, str):
                problems.append((name, number))
                continue
            ints[name] = number
            raw = str(number)
        elif kind == _LIST:
            raw = "\n".join(_lines(raw))
        params[name] = raw
    if problems:
        raise _rejected(problems)
    quantity = ints.get("quantity")
    if quantity is not None:
        quantity *= ints.get("runs", 1)
    return AddRequest(
        service.service_id,
        service.type,
        params,
        quantity,
        quantity if quantity is not None else 1,
        Pricing.PER_THOUSAND if quantity is not None else Pricing.FLAT,
        False,
        (
            f"service type {service.type!r} is not known to this pipeline: the row's fields "
            "are passed through unchecked and the cost is a guess",
        ),
    )


def unit_price(service: Service, pricing: Pricing) -> Decimal:
    """The price of one billed unit: rate / 1000, or the rate itself for flat pricing."""
    return service.rate if pricing is Pricing.FLAT else service.rate.scaleb(-3)


def estimate_cost(service: Service, request: AddRequest) -> Decimal:
    """The order's estimated price in the panel's currency, exact (no rounding at all).

    Per-1,000 types: rate × billed units / 1000 (drip-feed runs, comment lines and
    subscription posts are already in `billed_units`); flat types: the rate itself.
    """
    return MONEY.multiply(unit_price(service, request.pricing), request.billed_units)
