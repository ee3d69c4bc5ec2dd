"""Answer bodies → typed models. Tolerant of what real panels send, strict about money.

Numbers arrive as strings or JSON numbers; JSON is decoded with `parse_float=Decimal` so a
binary float never exists. Per-item errors (an object with `error`, or a bare string) are data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

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

# A writing action's answer that does not mention an id: the panel may have acted on it.
MISSING_WRITE = "missing from the panel's answer: the request may have been carried out"


class ShapeError(ValueError):
    """An answer that is JSON but not the shape the API documents."""


def decode_json(text: str) -> Any:
    """Decode a JSON body with exact decimals; raises ValueError on anything else."""
    return json.loads(text, parse_float=Decimal)


def lone_error(body: Any) -> str | None:
    """The panel's message when the answer is `{"error": ...}` and nothing else."""
    if isinstance(body, dict) and "error" in body and len(body) == 1:
        return str(body["error"])
    return None


def to_decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ShapeError(f"{what} is not a number: {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ShapeError(f"{what} is not a number: {value!r}") from None
    if not amount.is_finite():
        raise ShapeError(f"{what} is not a finite number: {value!r}")
    return amount


def to_int(value: Any, what: str) -> int:
    amount = to_decimal(value, what)
    if amount != amount.to_integral_value():
        raise ShapeError(f"{what} is not a whole number: {value!r}")
    return int(amount)


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
        sid = to_int(item["service"], "service id")
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
    return to_int(body["order"], "order id")


def parse_order_status(order_id: int, item: Any) -> OrderStatus:
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
            orders=tuple(to_int(c, "child order id") for c in children),
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


def parse_multi_status(ids: Iterable[int], body: Any) -> dict[int, OrderStatus]:
    if not isinstance(body, dict):
        raise ShapeError("multi status answer is not an object keyed by order id")
    by_id: dict[int, Any] = {}
    for key, value in body.items():
        try:
            by_id[to_int(key, "order id")] = value
        except ShapeError:
            continue
    return {
        oid: parse_order_status(oid, by_id[oid])
        if oid in by_id
        else OrderStatus(order_id=oid, error="missing from the panel's answer")
        for oid in ids
    }


def _items_by(body: Any, id_field: str) -> dict[int, Any]:
    """Multi answers: a list of objects naming their id, keyed here by that id."""
    if isinstance(body, dict):
        body = [{id_field: k, "value": v} for k, v in body.items()]
    if not isinstance(body, list):
        raise ShapeError(f"multi answer is not a list of {id_field} items")
    out: dict[int, Any] = {}
    for item in body:
        if isinstance(item, dict) and id_field in item:
            try:
                out[to_int(item[id_field], id_field)] = item
            except ShapeError:
                continue
    return out


def parse_refill(order_id: int, body: Any) -> RefillResult:
    value = body.get("refill") if isinstance(body, dict) else body
    error = _item_error(value) if value is not None else "no refill id in the answer"
    if error is not None:
        return RefillResult(order_id=order_id, error=error)
    return RefillResult(order_id=order_id, refill_id=to_int(value, "refill id"))


def parse_multi_refill(ids: Iterable[int], body: Any) -> list[RefillResult]:
    items = _items_by(body, "order")
    return [
        parse_refill(oid, items[oid])
        if oid in items
        else RefillResult(order_id=oid, error=MISSING_WRITE, ambiguous=True)
        for oid in ids
    ]


def parse_refill_status(refill_id: int, item: Any) -> RefillStatus:
    value = item.get("status") if isinstance(item, dict) else item
    error = _item_error(value) if isinstance(value, dict) else None
    if isinstance(item, dict) and "error" in item and "status" not in item:
        error = str(item["error"])
    if error is not None or value is None:
        return RefillStatus(refill_id=refill_id, error=error or "no status in the answer")
    raw = str(value).strip()
    normalised = normalize_refill_status(raw)
    return RefillStatus(
        refill_id=refill_id,
        status=normalised,
        raw_status=raw,
        error=None if normalised else f"unknown refill status {raw!r}",
    )


def parse_multi_refill_status(ids: Iterable[int], body: Any) -> dict[int, RefillStatus]:
    items = _items_by(body, "refill")
    return {
        rid: parse_refill_status(rid, items[rid])
        if rid in items
        else RefillStatus(refill_id=rid, error="missing from the panel's answer")
        for rid in ids
    }


def parse_multi_cancel(ids: Iterable[int], body: Any) -> list[CancelResult]:
    items = _items_by(body, "order")
    results = []
    for oid in ids:
        item = items.get(oid)
        if item is None:
            results.append(CancelResult(oid, accepted=False, error=MISSING_WRITE, ambiguous=True))
            continue
        value = item.get("cancel", item.get("value"))
        error = _item_error(value)
        if error is None and value in (None, 0, "0", False):
            error = "the panel did not accept the cancel"
        results.append(CancelResult(oid, accepted=error is None, error=error))
    return results
