"""Answer bodies → typed models. Tolerant of what real panels send, strict about money and ids.

Numbers arrive as strings or JSON numbers; JSON is decoded with `parse_float=Decimal` so a
binary float never exists. Per-item errors (an object with `error`, or a bare string) are data,
and so is an item we cannot read: one odd item never costs the other 99 of its call. An
unreadable item of a writing action (refill, cancel) is *ambiguous*, because the panel may
have acted on it; so is an id the answer does not name (even when it names others instead)
or names twice with different outcomes. Ids are read as the panel gives them: an `add` answer
naming an id that is already known is still just that id (duplicates are the warehouse's to
find, across rows).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from decimal import Context, Decimal
from typing import Any, TypeVar

from smm_pipeline.errors import ShapeError
from smm_pipeline.panel.models import (
    Balance,
    CancelResult,
    OrderStatus,
    RefillResult,
    RefillStatus,
    Service,
)
from smm_pipeline.panel.statuses import (
    normalize_order_status,
    normalize_refill_status,
    normalize_subscription_status,
)

MAY_HAVE_ACTED = "the request may have been carried out"
# A writing action's answer that does not mention an id (it may name other ids instead): the
# panel may have acted on it.
MISSING_WRITE = f"missing from the panel's answer: {MAY_HAVE_ACTED}"
# An answer that names one id twice with different outcomes: neither can be trusted.
CONFLICTING = "named more than once in the panel's answer, with different outcomes"
CONFLICTING_WRITE = f"{CONFLICTING}: {MAY_HAVE_ACTED}"
_CONFLICT = object()  # marks such an id among the items of a multi answer

# Stored money is DECIMAL(38,18) and costs are rate × quantity / 1000: an amount with at most
# 15 places keeps every cost exact; 20 integer digits is far beyond any real balance.
MAX_MONEY_PLACES = 15
MAX_MONEY_INTEGER_DIGITS = 20
_MONEY_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WHOLE_TEXT = re.compile(r"-?[0-9]{1,19}")
_MAX_INT = 2**63 - 1  # ids and counts are stored as BIGINT
_WIDE = Context(prec=80)  # room to re-scale any accepted amount exactly

# Words the API's error sentences are made of ("Incorrect order ID", "Refill not found",
# "Incorrect request", "Cancel is disabled for this service", "The order cannot be canceled").
_ERROR_WORDS = frozenset(
    {
        "error", "incorrect", "invalid", "not", "no", "cannot", "can't", "unable", "denied",
        "disabled", "unavailable", "failed", "forbidden", "wrong", "refused", "insufficient",
        "exceeded", "already", "unknown", "missing",
    }
)  # fmt: skip

T = TypeVar("T")


def decode_json(text: str) -> Any:
    """Decode a JSON body with exact decimals; raises ValueError on anything else."""
    return json.loads(text, parse_float=Decimal)


def lone_error(body: Any) -> str | None:
    """The panel's message when the answer is `{"error": ...}` and nothing else."""
    if isinstance(body, dict) and "error" in body and len(body) == 1:
        return str(body["error"])
    return None


def looks_like_error(text: str) -> bool:
    """Whether a bare string reads as one of the API's error sentences, not a status or id."""
    return any(word in _ERROR_WORDS for word in re.findall(r"[a-z']+", text.lower()))


def to_decimal(value: Any, what: str) -> Decimal:
    """An exact amount: a JSON number or a plain decimal string, within the stored precision."""
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    elif isinstance(value, str) and _MONEY_TEXT.fullmatch(value.strip()):
        amount = Decimal(value.strip())
    else:
        raise ShapeError(f"{what} is not a number: {value!r:.80}")
    if not amount.is_finite():
        raise ShapeError(f"{what} is not a finite number: {value!r:.80}")
    if amount and amount.adjusted() >= MAX_MONEY_INTEGER_DIGITS:
        raise ShapeError(
            f"{what} has more than {MAX_MONEY_INTEGER_DIGITS} integer digits: {value!r:.80}"
        )
    places = _places(amount)
    if places > MAX_MONEY_PLACES:
        raise ShapeError(
            f"{what} has {places} decimal places, more than the {MAX_MONEY_PLACES} kept "
            f"exactly: {value!r:.80}"
        )
    exponent = int(amount.as_tuple().exponent)
    if exponent > 0 or -exponent > MAX_MONEY_PLACES:  # "1E+3", or trailing zeros past 15
        amount = amount.quantize(Decimal(1).scaleb(-places), context=_WIDE)
    return amount


def _places(amount: Decimal) -> int:
    """Decimal places of the value itself (trailing zeros do not count)."""
    if not amount:
        return 0
    _sign, digits, exponent = amount.as_tuple()
    places, end = -int(exponent), len(digits)
    while places > 0 and digits[end - 1] == 0:
        places, end = places - 1, end - 1
    return max(places, 0)


def to_int(value: Any, what: str) -> int:
    """A whole number written as digits (a JSON integer or a string of digits, maybe signed).

    "1e3", "10.0" and booleans are refused: a panel that writes a count that way is not
    answering what the API documents, and guessing would hide it.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _WHOLE_TEXT.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise ShapeError(f"{what} is not a whole number written as digits: {value!r:.80}")
    if abs(number) > _MAX_INT:
        raise ShapeError(f"{what} is out of range: {value!r:.80}")
    return number


def to_id(value: Any, what: str) -> int:
    """A panel id: a positive whole number written as digits."""
    number = to_int(value, what)
    if number <= 0:
        raise ShapeError(f"{what} is not a positive id: {value!r:.80}")
    return number


def _opt_decimal(value: Any, what: str) -> Decimal | None:
    return None if value in (None, "") else to_decimal(value, what)


def _opt_int(value: Any, what: str) -> int | None:
    return None if value in (None, "") else to_int(value, what)


def to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _item_error(value: Any) -> str | None:
    """A per-item error: `{"error": msg}` or a bare string that is not an id."""
    if isinstance(value, dict) and "error" in value:
        return str(value["error"])
    if isinstance(value, str) and not value.strip().isdigit():
        return value
    return None


def parse_services(body: Any) -> list[Service]:
    if isinstance(body, dict):  # a few panels wrap the list or key it by id
        body = body.get("services", body.get("data", list(body.values())))
    if not isinstance(body, list):
        raise ShapeError("services answer is not a list")
    services: list[Service] = []
    for item in body:
        if not isinstance(item, dict) or item.get("service") in (None, ""):
            continue
        sid = to_id(item["service"], "service id")
        services.append(
            Service(
                service_id=sid,
                name=str(item.get("name", "")).strip(),
                type=str(item.get("type") or "Default").strip(),
                category=str(item.get("category", "")).strip(),
                rate=to_decimal(item.get("rate"), f"rate of service {sid}"),
                min=to_int(item.get("min", 0), f"min of service {sid}"),
                max=to_int(item.get("max", 0), f"max of service {sid}"),
                refill=to_bool(item.get("refill", False)),
                cancel=to_bool(item.get("cancel", False)),
            )
        )
    return services


def parse_balance(body: Any) -> Balance:
    if not isinstance(body, dict) or "balance" not in body:
        raise ShapeError("balance answer has no 'balance'")
    return Balance(
        balance=to_decimal(body["balance"], "balance"),
        currency=str(body.get("currency") or "").strip().upper(),
    )


def parse_add(body: Any) -> int:
    if not isinstance(body, dict) or "order" not in body:
        raise ShapeError("add answer has no 'order'")
    return to_id(body["order"], "order id")


def parse_order_status(order_id: int, item: Any) -> OrderStatus:
    """One status item; raises ShapeError when a field (charge, remains...) is malformed."""
    error = _item_error(item)
    if error is not None:
        return OrderStatus(order_id=order_id, error=error)
    if not isinstance(item, dict) or "status" not in item:
        return OrderStatus(order_id=order_id, error=f"unreadable status item: {item!r:.80}")
    raw = str(item["status"]).strip()
    if "charge" not in item and ("orders" in item or "expiry" in item or "posts" in item):
        children = item.get("orders") or []
        if not isinstance(children, list):
            children = [children]
        normalised = normalize_subscription_status(raw)
        return OrderStatus(
            order_id=order_id,
            status=normalised,
            raw_status=raw,
            error=None if normalised else f"unknown subscription status {raw!r}",
            is_subscription=True,
            expiry=None if item.get("expiry") in (None, "") else str(item["expiry"]),
            posts=_opt_int(item.get("posts"), "posts"),
            orders=tuple(to_id(c, "child order id") for c in children),
        )
    normalised = normalize_order_status(raw)
    return OrderStatus(
        order_id=order_id,
        status=normalised,
        raw_status=raw,
        charge=_opt_decimal(item.get("charge"), "charge"),
        start_count=_opt_int(item.get("start_count"), "start_count"),
        remains=_opt_int(item.get("remains"), "remains"),
        currency=(str(item["currency"]).strip().upper() or None) if item.get("currency") else None,
        error=None if normalised else f"unknown status word {raw!r}",
    )


def _status_item(order_id: int, item: Any) -> OrderStatus:
    try:
        return parse_order_status(order_id, item)
    except ShapeError as exc:
        return OrderStatus(order_id=order_id, error=f"unreadable status item: {exc}")


def parse_multi_status(ids: Iterable[int], body: Any) -> dict[int, OrderStatus]:
    if not isinstance(body, dict):
        raise ShapeError("multi status answer is not an object keyed by order id")
    by_id: dict[int, Any] = {}
    for key, value in body.items():
        try:
            by_id[to_id(key, "order id")] = value
        except ShapeError:
            continue
    return {
        oid: _status_item(oid, by_id[oid])
        if oid in by_id
        else OrderStatus(order_id=oid, error="missing from the panel's answer")
        for oid in ids
    }


def _items_by(body: Any, id_field: str, value_field: str) -> dict[int, Any]:
    """Multi answers keyed here by id: the documented list of objects naming their id, or an
    object keyed by id whose values are either the item (`{"1": {"refill": 5}}`) or its value
    (`{"1": 5}`, `{"1": {"error": ...}}`); both become `{id_field: id, value_field: ...}`.
    An id named twice with different items maps to `_CONFLICT`."""
    if isinstance(body, dict):
        body = [
            {**v, id_field: k}
            if isinstance(v, dict) and value_field in v
            else {id_field: k, value_field: v}
            for k, v in body.items()
        ]
    if not isinstance(body, list):
        raise ShapeError(f"multi answer is not a list of {id_field} items")
    out: dict[int, Any] = {}
    for item in body:
        if isinstance(item, dict) and id_field in item:
            try:
                ident = to_id(item[id_field], id_field)
            except ShapeError:
                continue
            if ident in out and not _same_item(out[ident], item, id_field):
                out[ident] = _CONFLICT
            else:
                out[ident] = item
    return out


def _same_item(seen: Any, item: dict[str, Any], id_field: str) -> bool:
    if seen is _CONFLICT:
        return False
    rest = {k: v for k, v in item.items() if k != id_field}
    return {k: v for k, v in seen.items() if k != id_field} == rest


def _per_item(
    ids: Iterable[int],
    items: dict[int, Any],
    parse: Callable[[int, Any], T],
    missing: Callable[[int], T],
    conflicting: Callable[[int], T],
) -> list[T]:
    def one(i: int) -> T:
        if i not in items:
            return missing(i)
        if items[i] is _CONFLICT:
            return conflicting(i)
        return parse(i, items[i])

    return [one(i) for i in ids]


def parse_refill(order_id: int, body: Any) -> RefillResult:
    """A refill answer (`{"refill": id}`) or one multi item; never raises.

    A refusal (`{"error": ...}` or an error sentence) is a failure; an answer without a
    readable refill id is ambiguous, because the panel may have created the refill.
    """
    if isinstance(body, dict) and "refill" not in body and "error" in body:
        return RefillResult(order_id=order_id, error=str(body["error"]))
    value = body.get("refill") if isinstance(body, dict) else body
    if value in (None, ""):
        return RefillResult(
            order_id=order_id, error=f"no refill id in the answer: {MAY_HAVE_ACTED}", ambiguous=True
        )
    if isinstance(value, dict) and "error" in value:
        return RefillResult(order_id=order_id, error=str(value["error"]))
    if isinstance(value, str) and looks_like_error(value):
        return RefillResult(order_id=order_id, error=value.strip())
    try:
        return RefillResult(order_id=order_id, refill_id=to_id(value, "refill id"))
    except ShapeError as exc:
        return RefillResult(order_id=order_id, error=f"{exc}: {MAY_HAVE_ACTED}", ambiguous=True)


def parse_multi_refill(ids: Iterable[int], body: Any) -> list[RefillResult]:
    return _per_item(
        ids,
        _items_by(body, "order", "refill"),
        parse_refill,
        lambda oid: RefillResult(order_id=oid, error=MISSING_WRITE, ambiguous=True),
        lambda oid: RefillResult(order_id=oid, error=CONFLICTING_WRITE, ambiguous=True),
    )


def parse_refill_status(refill_id: int, item: Any) -> RefillStatus:
    """A refill status answer or one multi item; never raises.

    An error sentence in place of the status ("Refill not found") is the item's error; any
    other unknown word is kept as `raw_status` and reported, never taken for "Pending".
    """
    value = item.get("status") if isinstance(item, dict) else item
    if isinstance(item, dict) and "status" not in item and "error" in item:
        return RefillStatus(refill_id=refill_id, error=str(item["error"]))
    if value in (None, ""):
        return RefillStatus(refill_id=refill_id, error="no status in the answer")
    if isinstance(value, dict):
        error = str(value["error"]) if "error" in value else f"unreadable status {value!r:.80}"
        return RefillStatus(refill_id=refill_id, error=error)
    raw = str(value).strip()
    normalised = normalize_refill_status(raw)
    if normalised is None and looks_like_error(raw):
        return RefillStatus(refill_id=refill_id, error=raw)
    return RefillStatus(
        refill_id=refill_id,
        status=normalised,
        raw_status=raw,
        error=None if normalised else f"unknown refill status {raw!r}",
    )


def parse_multi_refill_status(ids: Iterable[int], body: Any) -> dict[int, RefillStatus]:
    results = _per_item(
        ids,
        _items_by(body, "refill", "status"),
        parse_refill_status,
        lambda rid: RefillStatus(refill_id=rid, error="missing from the panel's answer"),
        lambda rid: RefillStatus(refill_id=rid, error=CONFLICTING),
    )
    return {r.refill_id: r for r in results}


def parse_cancel(order_id: int, item: Any) -> CancelResult:
    """One cancel item (`{"order": id, "cancel": 1}`); never raises.

    1 is accepted, 0 or a refusal is refused; anything else is ambiguous, because the panel
    may have cancelled the order.
    """
    if isinstance(item, dict) and "cancel" not in item and "error" in item:
        return CancelResult(order_id, accepted=False, error=str(item["error"]))
    value = item.get("cancel") if isinstance(item, dict) else item
    if isinstance(value, bool | int | str) and str(value).strip().lower() in ("1", "true"):
        return CancelResult(order_id, accepted=True)
    if isinstance(value, bool | int | str) and str(value).strip().lower() in ("0", "false"):
        return CancelResult(order_id, accepted=False, error="the panel did not accept the cancel")
    if isinstance(value, dict) and "error" in value:
        return CancelResult(order_id, accepted=False, error=str(value["error"]))
    if isinstance(value, str) and looks_like_error(value):
        return CancelResult(order_id, accepted=False, error=value.strip())
    return CancelResult(
        order_id,
        accepted=False,
        error=f"unreadable cancel answer {value!r:.80}: {MAY_HAVE_ACTED}",
        ambiguous=True,
    )


def parse_multi_cancel(ids: Iterable[int], body: Any) -> list[CancelResult]:
    return _per_item(
        ids,
        _items_by(body, "order", "cancel"),
        parse_cancel,
        lambda oid: CancelResult(oid, accepted=False, error=MISSING_WRITE, ambiguous=True),
        lambda oid: CancelResult(oid, accepted=False, error=CONFLICTING_WRITE, ambiguous=True),
    )
