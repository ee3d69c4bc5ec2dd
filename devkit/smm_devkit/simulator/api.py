"""The API v2 actions, answered in exactly the shapes of the providers' reference pages.

Input is the decoded form (last value wins, as in PHP); output is the JSON value to send with
HTTP 200. Faults and transport concerns live elsewhere; this module is the protocol only.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from smm_devkit.simulator.money import format_charge
from smm_devkit.simulator.order_types import AddRejected
from smm_devkit.simulator.orders import Order, Subscription, order_view
from smm_devkit.simulator.panel_state import PanelState, Refused

ACTIONS = ("services", "add", "status", "refill", "refill_status", "cancel", "balance")
MAX_IDS = 100
INCORRECT_REQUEST = "Incorrect request"
_ID_FIELDS = {
    "status": ("orders", "order"),
    "refill": ("orders", "order"),
    "refill_status": ("refills", "refill"),
    "cancel": ("orders", ""),
}
# How a sloppier panel spells the same statuses (enabled by config or a one-shot fault).
STATUS_VARIANTS = {
    "Pending": "pending",
    "In progress": "In Progress",
    "Processing": "processing",
    "Completed": "completed",
    "Canceled": "Cancelled",
    "Refunded": "refunded",
    "Rejected": "rejected",
}


@dataclass(frozen=True)
class Style:
    """Presentation quirks of some real panels, switched on for robustness tests."""

    status_variants: bool = False
    bare_item_errors: bool = False

    def word(self, status: str) -> str:
        return STATUS_VARIANTS.get(status, status) if self.status_variants else status

    def item_error(self, message: str) -> Any:
        return message if self.bare_item_errors else {"error": message}


@dataclass(frozen=True)
class Answer:
    body: Any
    created: bool = False  # an order was placed

    @property
    def error(self) -> str | None:
        if isinstance(self.body, dict) and set(self.body) == {"error"}:
            return str(self.body["error"])
        return None


def _error(message: str) -> Answer:
    return Answer({"error": message})


def key_is_valid(key: str, keys: Collection[str]) -> bool:
    """Compare in constant time against every accepted key."""
    found = False
    for accepted in keys:
        found |= hmac.compare_digest(key.encode(), accepted.encode())
    return found


def count_ids(action: str, form: Mapping[str, str]) -> int:
    """How many ids a call carries (1 for a single-id call), for statistics."""
    multi, single = _ID_FIELDS.get(action, ("", ""))
    if multi and multi in form:
        return len([token for token in form[multi].split(",") if token.strip()])
    return 1 if single and single in form else 0


def _ids(text: str) -> list[str] | None:
    tokens = [token.strip() for token in text.split(",") if token.strip()]
    return tokens if 0 < len(tokens) <= MAX_IDS else None


def _as_id(token: str) -> int | None:
    return int(token) if token.isdigit() else None


def _item_id(token: str) -> int | str:
    return int(token) if token.isdigit() else token


def render_status(item: Order | Subscription, now: float, currency: str, style: Style) -> dict:
    if isinstance(item, Subscription):
        return {
            "status": item.status(now),
            "expiry": item.expiry.strftime("%d/%m/%Y") if item.expiry else None,
            "posts": str(item.posts_seen()),
            "orders": list(item.children),
        }
    view = order_view(item, now)
    return {
        "charge": format_charge(view.charge),
        "start_count": str(view.start_count),
        "status": style.word(view.status),
        "remains": str(view.remains),
        "currency": currency,
    }


def handle(
    state: PanelState,
    form: Mapping[str, str],
    keys: Collection[str],
    now: float,
    style: Style = Style(),
) -> Answer:
    """Answer one API v2 call."""
    if not key_is_valid(form.get("key", ""), keys):
        return _error("Invalid API key")
    action = form.get("action", "")
    if action == "services":
        return Answer(state.services())
    if action == "balance":
        state.settle(now)
        return Answer({"balance": state.balance_text(), "currency": state.currency})
    if action == "add":
        try:
            return Answer({"order": state.add(form, now)}, created=True)
        except AddRejected as exc:
            return _error(str(exc))
    if action == "status":
        return _status(state, form, now, style)
    if action == "refill":
        return _refill(state, form, now, style)
    if action == "refill_status":
        return _refill_status(state, form, now, style)
    if action == "cancel":
        return _cancel(state, form, now, style)
    return _error(INCORRECT_REQUEST)


def _status(state: PanelState, form: Mapping[str, str], now: float, style: Style) -> Answer:
    if "orders" in form:
        tokens = _ids(form["orders"])
        if tokens is None:
            return _error(INCORRECT_REQUEST)
        result: dict[str, Any] = {}
        for token in tokens:
            order_id = _as_id(token)
            item = state.lookup(order_id, now) if order_id is not None else None
            if item is None:
                result[token] = style.item_error("Incorrect order ID")
            else:
                result[token] = render_status(item, now, state.currency, style)
        return Answer(result)
    if "order" in form:
        order_id = _as_id(form["order"].strip())
        item = state.lookup(order_id, now) if order_id is not None else None
        if item is None:
            return _error("Incorrect order ID")
        return Answer(render_status(item, now, state.currency, style))
    return _error(INCORRECT_REQUEST)


def _refill(state: PanelState, form: Mapping[str, str], now: float, style: Style) -> Answer:
    if "orders" in form:
        tokens = _ids(form["orders"])
        if tokens is None:
            return _error(INCORRECT_REQUEST)
        items = []
        for token in tokens:
            order_id = _as_id(token)
            try:
                if order_id is None:
                    raise Refused("Incorrect order ID")
                outcome: Any = state.refill(order_id, now)
            except Refused as exc:
                outcome = style.item_error(str(exc))
            items.append({"order": _item_id(token), "refill": outcome})
        return Answer(items)
    if "order" in form:
        order_id = _as_id(form["order"].strip())
        try:
            if order_id is None:
                raise Refused("Incorrect order ID")
            return Answer({"refill": str(state.refill(order_id, now))})
        except Refused as exc:
            return _error(str(exc))
    return _error(INCORRECT_REQUEST)


def _refill_status(state: PanelState, form: Mapping[str, str], now: float, style: Style) -> Answer:
    if "refills" in form:
        tokens = _ids(form["refills"])
        if tokens is None:
            return _error(INCORRECT_REQUEST)
        items = []
        for token in tokens:
            refill_id = _as_id(token)
            status = state.refill_status(refill_id, now) if refill_id is not None else None
            shown = style.item_error("Refill not found") if status is None else style.word(status)
            items.append({"refill": _item_id(token), "status": shown})
        return Answer(items)
    if "refill" in form:
        refill_id = _as_id(form["refill"].strip())
        status = state.refill_status(refill_id, now) if refill_id is not None else None
        if status is None:
            return _error("Refill not found")
        return Answer({"status": style.word(status)})
    return _error(INCORRECT_REQUEST)


def _cancel(state: PanelState, form: Mapping[str, str], now: float, style: Style) -> Answer:
    if "orders" not in form:
        return _error(INCORRECT_REQUEST)
    tokens = _ids(form["orders"])
    if tokens is None:
        return _error(INCORRECT_REQUEST)
    items = []
    for token in tokens:
        order_id = _as_id(token)
        try:
            if order_id is None:
                raise Refused("Incorrect order ID")
            state.cancel(order_id, now)
            outcome: Any = 1
        except Refused as exc:
            outcome = style.item_error(str(exc))
        items.append({"order": _item_id(token), "cancel": outcome})
    return Answer(items)
