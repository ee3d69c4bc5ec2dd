"""One simulated panel account: catalog, balance, orders, subscriptions, refills.

Every change is an event: validated first, written to the journal, then applied by the same
code that replays the journal at start, so a restarted panel is the panel that stopped. Time
driven effects (a Partial refund, a subscription's new post) are timers processed in time
order by `settle(now)` before any operation, which makes them replay identically too.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from smm_devkit.simulator.catalog import normalize_catalog
from smm_devkit.simulator.clock import SimClock
from smm_devkit.simulator.journal import Journal
from smm_devkit.simulator.money import cost, format_amount, format_charge
from smm_devkit.simulator.order_types import (
    DEFAULT_DELAY_VALUES,
    SUBSCRIPTION_TYPE,
    AddRejected,
    validate_order,
    validate_subscription,
)
from smm_devkit.simulator.orders import (
    UNFINISHED,
    Frozen,
    Order,
    Refill,
    Subscription,
    iso,
    order_view,
)
from smm_devkit.simulator.outcomes import (
    DEFAULT_OUTCOME_WEIGHTS,
    DEFAULT_REFILL_REJECTED_PERCENT,
    child_quantity,
    order_outcome,
    partial_remains,
    refill_outcome,
    start_count,
    validate_weights,
)

FIRST_ORDER_ID = 10001
FIRST_REFILL_ID = 501
JOURNAL_VERSION = 1


class Refused(Exception):
    """The panel refuses a refill or cancel; `str(exc)` is the sentence it answers."""


@dataclass
class Tuning:
    """Knobs that shape new orders; journaled, because replay must shape them the same way."""

    progress_seconds: float = 30.0
    outcome_weights: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_OUTCOME_WEIGHTS))
    refill_rejected_percent: int = DEFAULT_REFILL_REJECTED_PERCENT

    def to_json(self) -> dict[str, Any]:
        return {
            "progress_seconds": self.progress_seconds,
            "outcome_weights": dict(self.outcome_weights),
            "refill_rejected_percent": self.refill_rejected_percent,
        }


def _today(now: float) -> date:
    return datetime.fromtimestamp(now, tz=UTC).date()


class PanelState:
    """The account behind one simulator. Not thread-safe: the server's event loop owns it."""

    def __init__(self, clock: SimClock, journal: Journal, delay_values: Iterable[int]) -> None:
        self.clock = clock
        self.journal = journal
        self.delay_values = tuple(delay_values)
        self.catalog: dict[int, dict[str, Any]] = {}
        self.balance = Decimal(0)
        self.currency = "USD"
        self.orders: dict[int, Order | Subscription] = {}
        self.refills: dict[int, Refill] = {}
        self.next_order_id = FIRST_ORDER_ID
        self.next_refill_id = FIRST_REFILL_ID
        self.tuning = Tuning()
        self._timers: list[tuple[float, int, str, int, int]] = []
        self._timer_seq = 0
        self._by_link: dict[tuple[int, str], list[int]] = {}
        self._active_subs: dict[tuple[int, str], int] = {}
        self._latest_refill: dict[int, int] = {}

    @classmethod
    def open(
        cls,
        clock: SimClock,
        journal: Journal,
        *,
        catalog: list[dict[str, Any]],
        balance: Decimal,
        currency: str = "USD",
        progress_seconds: float = 30.0,
        delay_values: Iterable[int] = DEFAULT_DELAY_VALUES,
    ) -> PanelState:
        """The panel from its journal, or a new one (catalog, balance...) if there is none.

        With a journal, the journal wins: the catalog, balance and currency given here only
        seed a new panel; a different `progress_seconds` applies to orders placed from now on.
        """
        state = cls(clock, journal, delay_values)
        events = journal.read()
        if events:
            for event in events:
                state._replay(event)
            state.tune(clock.now(), progress_seconds=progress_seconds)
            return state
        now = clock.now()
        state._commit(
            {
                "e": "genesis",
                "v": JOURNAL_VERSION,
                "t": now,
                "balance": str(balance),
                "currency": currency,
                "catalog": normalize_catalog(catalog),
                "tuning": Tuning(progress_seconds=float(progress_seconds)).to_json(),
            }
        )
        return state

    # -- time ---------------------------------------------------------------------------------

    def settle(self, now: float) -> None:
        """Apply every timer due by `now`, in time order (refunds, subscription posts)."""
        while self._timers and self._timers[0][0] <= now:
            when, _, kind, ident, post = heapq.heappop(self._timers)
            item = self.orders[ident]
            if kind == "final" and isinstance(item, Order):
                self._sync_refund(item, when)
            elif kind == "post" and isinstance(item, Subscription):
                self._subscription_post(item, post, when)

    def advance(self, seconds: float) -> float:
        """Move the simulated clock forward; returns the new simulated time."""
        self.settle(self.clock.now())
        now = self.clock.advance(seconds)
        self._commit({"e": "advance", "t": now, "seconds": seconds})
        return now

    # -- API actions ---------------------------------------------------------------------------

    def services(self) -> list[dict[str, Any]]:
        return [dict(service) for service in self.catalog.values()]

    def add(self, params: Mapping[str, str], now: float) -> int:
        """Place an order; returns its id or raises AddRejected with the panel's sentence."""
        self.settle(now)
        service = self._service_for(params.get("service", ""))
        stored = {k: v for k, v in params.items() if k not in ("key", "action")}
        order_id = self.next_order_id
        if service["type"] == SUBSCRIPTION_TYPE:
            sub_req = validate_subscription(service, params, self.delay_values, _today(now))
            active = self._active_subs.get((service["service"], sub_req.username))
            if active is not None and self._subscription(active).status(now) == "Active":
                raise AddRejected(
                    "You have active subscription with this username. "
                    "Please wait until subscription being completed."
                )
            rate = Decimal(service["rate"])
            needed = sum(
                (
                    cost(rate, child_quantity(order_id, -n, sub_req.min, sub_req.max))
                    for n in range(1, sub_req.old_posts + 1)
                ),
                Decimal(0),
            )
            if needed > self.balance:
                raise AddRejected("Not enough funds on balance")
            sub = Subscription(
                id=order_id,
                service=dict(service),
                params=stored,
                username=sub_req.username,
                min=sub_req.min,
                max=sub_req.max,
                posts=sub_req.posts,
                old_posts=sub_req.old_posts,
                delay=sub_req.delay,
                expiry=sub_req.expiry,
                created_at=now,
            )
            self._commit({"e": "add", "t": now, "kind": "subscription", "record": sub.to_json()})
            return order_id
        req = validate_order(service, params)
        if self._has_active_order(service["service"], req.link, now):
            raise AddRejected(
                "You have active order with this link. Please wait until order being completed."
            )
        if req.charge > self.balance:
            raise AddRejected("Not enough funds on balance")
        duration = self.tuning.progress_seconds + req.interval * 60 * (req.runs - 1)
        order = self._new_order(
            order_id, service, stored, req.link, req.quantity, req.runs, req.interval,
            req.charge, now, duration, divisible=not req.flat,
        )  # fmt: skip
        self._commit({"e": "add", "t": now, "kind": "order", "record": order.to_json()})
        return order_id

    def lookup(self, order_id: int, now: float) -> Order | Subscription | None:
        self.settle(now)
        return self.orders.get(order_id)

    def refill(self, order_id: int, now: float) -> int:
        """Ask for a refill of a finished order; returns the refill id or raises Refused."""
        self.settle(now)
        item = self.orders.get(order_id)
        if item is None:
            raise Refused("Incorrect order ID")
        if isinstance(item, Subscription) or not self._flag(item, "refill"):
            raise Refused("Refill is disabled for this service")
        if order_view(item, now).status not in ("Completed", "Partial"):
            raise Refused("Refill is not available for this order")
        latest = self._latest_refill.get(order_id)
        if latest is not None and self.refills[latest].status(now) in ("Pending", "In progress"):
            raise Refused("The refill task is not completed for this order")
        refill_id = self.next_refill_id
        record = Refill(
            id=refill_id,
            order_id=order_id,
            created_at=now,
            duration=self.tuning.progress_seconds,
            outcome=refill_outcome(refill_id, self.tuning.refill_rejected_percent),
        )
        self._commit({"e": "refill", "t": now, "record": record.to_json()})
        return refill_id

    def refill_status(self, refill_id: int, now: float) -> str | None:
        self.settle(now)
        refill = self.refills.get(refill_id)
        return None if refill is None else refill.status(now)

    def cancel(self, order_id: int, now: float) -> None:
        """Cancel an unfinished order (full refund), or raise Refused with the panel's words."""
        self.settle(now)
        item = self.orders.get(order_id)
        if item is None:
            raise Refused("Incorrect order ID")
        if not self._flag(item, "cancel"):
            raise Refused("Cancel is disabled for this service")
        if isinstance(item, Subscription):
            if item.status(now) != "Active":
                raise Refused("The order cannot be canceled in its current status")
        elif order_view(item, now).status not in UNFINISHED:
            raise Refused("The order cannot be canceled in its current status")
        self._commit({"e": "cancel", "t": now, "order": order_id})

    # -- operator controls ---------------------------------------------------------------------

    def set_balance(self, amount: Decimal, now: float, currency: str | None = None) -> None:
        self.settle(now)
        event: dict[str, Any] = {"e": "balance", "t": now, "balance": str(amount)}
        if currency:
            event["currency"] = currency
        self._commit(event)

    def set_catalog(self, services: list[dict[str, Any]], now: float) -> None:
        """Replace the catalog (already normalised); open orders keep the terms they got."""
        self.settle(now)
        self._commit({"e": "catalog", "t": now, "catalog": normalize_catalog(services)})

    def force_order(
        self,
        order_id: int,
        now: float,
        status: str | None = None,
        remains: int | None = None,
        start_count_value: int | None = None,
    ) -> None:
        """Freeze an order (or subscription) in a chosen state; the refund follows the state."""
        self.settle(now)
        item = self.orders.get(order_id)
        if item is None:
            raise KeyError(order_id)
        if isinstance(item, Subscription):
            if not status:
                raise ValueError("a subscription is forced by status only")
            self._commit({"e": "force", "t": now, "order": order_id, "status": status})
            return
        view = order_view(item, now)
        new_status = status or view.status
        if remains is None:
            if new_status == "Completed":
                remains = 0
            elif new_status in ("Canceled", "Refunded", "Pending"):
                remains = item.total
            elif new_status == "Partial":
                remains = view.remains if 0 < view.remains < item.total else item.total // 2
            else:
                remains = view.remains
        if not 0 <= remains <= item.total:
            raise ValueError(f"remains must be within 0..{item.total}")
        if start_count_value is None:
            start_count_value = view.start_count or (
                0 if new_status == "Pending" else item.start_count
            )
        self._commit(
            {
                "e": "force",
                "t": now,
                "order": order_id,
                "status": new_status,
                "remains": remains,
                "start_count": start_count_value,
            }
        )

    def force_refill(self, refill_id: int, status: str, now: float) -> None:
        self.settle(now)
        if refill_id not in self.refills:
            raise KeyError(refill_id)
        self._commit({"e": "force_refill", "t": now, "refill": refill_id, "status": status})

    def tune(
        self,
        now: float,
        progress_seconds: float | None = None,
        outcome_weights: Mapping[str, object] | None = None,
        refill_rejected_percent: int | None = None,
    ) -> Tuning:
        """Change how future orders and refills behave; journaled only when something changed."""
        self.settle(now)
        new = Tuning(**self.tuning.to_json())
        if progress_seconds is not None:
            if float(progress_seconds) <= 0:
                raise ValueError("progress_seconds must be positive")
            new.progress_seconds = float(progress_seconds)
        if outcome_weights is not None:
            new.outcome_weights = validate_weights(outcome_weights)
        if refill_rejected_percent is not None:
            if not 0 <= int(refill_rejected_percent) <= 100:
                raise ValueError("refill_rejected_percent must be within 0..100")
            new.refill_rejected_percent = int(refill_rejected_percent)
        if new != self.tuning:
            self._commit({"e": "tuning", "t": now, "tuning": new.to_json()})
        return self.tuning

    # -- views for the operator ----------------------------------------------------------------

    def describe(self, item: Order | Subscription, now: float) -> dict[str, Any]:
        """Everything about one order for admin answers and duplicate checks."""
        common = {
            "order": item.id,
            "service": item.service["service"],
            "type": item.service["type"],
            "params": dict(item.params),
            "created_at": iso(item.created_at),
        }
        if isinstance(item, Subscription):
            return {
                **common,
                "kind": "subscription",
                "username": item.username,
                "status": item.status(now),
                "posts": item.posts_seen(),
                "skipped_posts": item.skipped_posts,
                "orders": list(item.children),
                "expiry": item.expiry.strftime("%d/%m/%Y") if item.expiry else None,
                "forced": item.frozen_status is not None,
            }
        view = order_view(item, now)
        return {
            **common,
            "kind": "order",
            "link": item.link,
            "quantity": item.quantity,
            "runs": item.runs,
            "interval": item.interval,
            "total": item.total,
            "charged": format_charge(item.charge),
            "charge": format_charge(view.charge),
            "status": view.status,
            "remains": view.remains,
            "start_count": view.start_count,
            "outcome": item.outcome,
            "finishes_at": iso(item.finish_at),
            "forced": item.frozen is not None,
            "subscription": item.parent,
        }

    def balance_text(self) -> str:
        return format_amount(self.balance)

    # -- events ----------------------------------------------------------------------------------

    def _commit(self, event: dict[str, Any]) -> None:
        event["w"] = self.clock.wall()
        self.journal.append(event)
        self._apply(event)

    def _replay(self, event: dict[str, Any]) -> None:
        self.settle(event["t"])
        self._apply(event)
        self.clock.restore(event["t"], event["w"])

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event["e"]
        if kind == "genesis":
            self.catalog = {s["service"]: s for s in event["catalog"]}
            self.balance = Decimal(event["balance"])
            self.currency = event["currency"]
            self.tuning = Tuning(**event["tuning"])
        elif kind == "add":
            self._apply_add(event)
        elif kind == "cancel":
            item = self.orders[event["order"]]
            if isinstance(item, Subscription):
                item.frozen_status = "Canceled"
            else:
                view = order_view(item, event["t"])
                item.frozen = Frozen("Canceled", item.total, view.start_count)
                self._sync_refund(item, event["t"])
        elif kind == "refill":
            refill = Refill.from_json(event["record"])
            self.refills[refill.id] = refill
            self._latest_refill[refill.order_id] = refill.id
            self.next_refill_id = refill.id + 1
        elif kind == "force":
            self._apply_force(event)
        elif kind == "force_refill":
            self.refills[event["refill"]].frozen_status = event["status"]
        elif kind == "catalog":
            self.catalog = {s["service"]: s for s in event["catalog"]}
        elif kind == "balance":
            self.balance = Decimal(event["balance"])
            self.currency = event.get("currency", self.currency)
        elif kind == "tuning":
            self.tuning = Tuning(**event["tuning"])
        elif kind != "advance":
            raise ValueError(f"unknown journal event {kind!r}")

    def _apply_add(self, event: dict[str, Any]) -> None:
        if event["kind"] == "subscription":
            sub = Subscription.from_json(event["record"])
            self.orders[sub.id] = sub
            self.next_order_id = sub.id + 1
            self._active_subs[(sub.service["service"], sub.username)] = sub.id
            for n in range(1, sub.old_posts + 1):
                self._spawn_child(sub, -n, sub.created_at)
            self._schedule(sub.post_time(1), "post", sub.id, 1)
            return
        order = Order.from_json(event["record"])
        self.orders[order.id] = order
        self.next_order_id = order.id + 1
        self.balance -= order.charge
        self._by_link.setdefault((order.service["service"], order.link), []).append(order.id)
        if order.outcome in ("Partial", "Canceled"):
            self._schedule(order.finish_at, "final", order.id, 0)

    def _apply_force(self, event: dict[str, Any]) -> None:
        item = self.orders[event["order"]]
        if isinstance(item, Subscription):
            item.frozen_status = event["status"]
            return
        item.frozen = Frozen(event["status"], event["remains"], event["start_count"])
        self._sync_refund(item, event["t"])
        if event["status"] in UNFINISHED:
            ids = self._by_link.setdefault((item.service["service"], item.link), [])
            if item.id not in ids:
                ids.append(item.id)

    # -- helpers ---------------------------------------------------------------------------------

    def _new_order(
        self,
        order_id: int,
        service: Mapping[str, Any],
        params: dict[str, str],
        link: str,
        quantity: int,
        runs: int,
        interval: int,
        charge: Decimal,
        now: float,
        duration: float,
        divisible: bool,
        parent: int | None = None,
    ) -> Order:
        total = quantity * runs
        return Order(
            id=order_id,
            service=dict(service),
            params=params,
            link=link,
            quantity=quantity,
            runs=runs,
            interval=interval,
            total=total,
            charge=charge,
            created_at=now,
            duration=duration,
            outcome=order_outcome(order_id, self.tuning.outcome_weights, divisible and total > 1),
            start_count=start_count(order_id),
            partial_remains=partial_remains(order_id, total),
            parent=parent,
        )

    def _spawn_child(self, sub: Subscription, post: int, when: float) -> None:
        """The order a subscription places for one post (old posts have post numbers < 0)."""
        quantity = child_quantity(sub.id, post, sub.min, sub.max)
        charge = cost(Decimal(sub.service["rate"]), quantity)
        if charge > self.balance:
            sub.skipped_posts += 1
            return
        order_id = self.next_order_id
        label = f"old-{-post}" if post < 0 else str(post)
        order = self._new_order(
            order_id, sub.service, {"subscription": str(sub.id), "post": label},
            f"https://social.example/{sub.username}/posts/{label}", quantity, 1, 0, charge,
            when, self.tuning.progress_seconds, divisible=True, parent=sub.id,
        )  # fmt: skip
        self.orders[order_id] = order
        self.next_order_id = order_id + 1
        self.balance -= charge
        sub.children.append(order_id)
        if order.outcome in ("Partial", "Canceled"):
            self._schedule(order.finish_at, "final", order.id, 0)

    def _subscription_post(self, sub: Subscription, post: int, when: float) -> None:
        if sub.status(when) != "Active":
            return
        sub.new_posts += 1
        self._spawn_child(sub, post, when)
        if sub.posts is None or sub.new_posts < sub.posts:
            self._schedule(sub.post_time(post + 1), "post", sub.id, post + 1)

    def _schedule(self, when: float, kind: str, ident: int, post: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, ident, post))

    def _sync_refund(self, order: Order, at: float) -> None:
        """Bring the balance in line with what the order costs now (Partial/Canceled refund)."""
        owed_back = order.charge - order_view(order, at).charge
        self.balance += owed_back - order.refunded
        order.refunded = owed_back

    def _service_for(self, raw_id: str) -> dict[str, Any]:
        text = str(raw_id).strip()
        if not text.isdigit() or int(text) not in self.catalog:
            raise AddRejected("Incorrect service ID")
        return self.catalog[int(text)]

    def _flag(self, item: Order | Subscription, flag: str) -> bool:
        """Refill/cancel permission: the service's current terms, else those it was sold with."""
        current = self.catalog.get(item.service["service"])
        return bool((current or item.service).get(flag))

    def _has_active_order(self, service_id: int, link: str, now: float) -> bool:
        ids = self._by_link.get((service_id, link))
        if not ids:
            return False
        ids[:] = [i for i in ids if order_view(self._order(i), now).status in UNFINISHED]
        return bool(ids)

    def _order(self, order_id: int) -> Order:
        item = self.orders[order_id]
        assert isinstance(item, Order)
        return item

    def _subscription(self, order_id: int) -> Subscription:
        item = self.orders[order_id]
        assert isinstance(item, Subscription)
        return item
