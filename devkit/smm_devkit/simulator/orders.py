"""Records of orders, subscriptions and refills, and how each looks at a given moment.

A record holds what was decided when it was created (price, fate, duration); its visible
status is a pure function of the record and the simulator clock, unless an operator or a
cancel froze it. That keeps state small and makes restarts exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from smm_devkit.simulator.money import refund_for

PENDING_SHARE = 0.2  # share of an order's duration spent Pending before delivery starts
SLOW_FACTOR = 40  # a Slow order takes this many times its normal duration
POST_INTERVAL = 6 * 3600  # a subscribed account publishes a new post every 6 simulated hours
UNFINISHED = frozenset({"Pending", "In progress", "Processing"})
ORDER_WORDS = ("Pending", "In progress", "Processing", "Completed", "Partial", "Canceled")
ORDER_WORDS += ("Refunded",)


@dataclass(frozen=True)
class Frozen:
    """Values an operator (or a cancel) fixed; the clock no longer moves this order."""

    status: str
    remains: int
    start_count: int


@dataclass
class Order:
    id: int
    service: dict[str, Any]  # catalog entry at the time of the order
    params: dict[str, str]  # what the client sent, without key and action
    link: str
    quantity: int
    runs: int
    interval: int
    total: int
    charge: Decimal  # taken from the balance at `add`
    created_at: float
    duration: float  # simulated seconds from add to the end of normal delivery
    outcome: str
    start_count: int
    partial_remains: int
    parent: int | None = None  # the subscription that spawned it
    frozen: Frozen | None = None
    refunded: Decimal = Decimal(0)  # part of `charge` given back so far

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "params": self.params,
            "link": self.link,
            "quantity": self.quantity,
            "runs": self.runs,
            "interval": self.interval,
            "total": self.total,
            "charge": str(self.charge),
            "created_at": self.created_at,
            "duration": self.duration,
            "outcome": self.outcome,
            "start_count": self.start_count,
            "partial_remains": self.partial_remains,
            "parent": self.parent,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Order:
        return cls(**{**data, "charge": Decimal(data["charge"])})

    @property
    def finish_at(self) -> float:
        """When the order reaches its final status (if nobody freezes it first)."""
        if self.outcome == "Canceled":
            return self.created_at + self.duration * PENDING_SHARE
        factor = SLOW_FACTOR if self.outcome == "Slow" else 1
        return self.created_at + self.duration * factor


@dataclass(frozen=True)
class OrderView:
    status: str
    remains: int
    start_count: int
    charge: Decimal


def charge_for(order: Order, status: str, remains: int) -> Decimal:
    """What the order costs in `status`: Partial refunds the undelivered share, cancels all."""
    if status in ("Canceled", "Refunded"):
        return Decimal(0)
    if status == "Partial":
        return order.charge - refund_for(order.charge, remains, order.total)
    return order.charge


def order_view(order: Order, now: float) -> OrderView:
    """The order as the panel reports it at simulated time `now`."""
    if order.frozen is not None:
        f = order.frozen
        return OrderView(f.status, f.remains, f.start_count, charge_for(order, f.status, f.remains))
    elapsed = now - order.created_at
    pending = order.duration * PENDING_SHARE
    if elapsed < pending:
        return OrderView("Pending", order.total, 0, order.charge)
    if order.outcome == "Canceled":
        return OrderView("Canceled", order.total, 0, Decimal(0))
    end = order.finish_at - order.created_at
    final_remains = order.partial_remains if order.outcome == "Partial" else 0
    if elapsed >= end:
        status = "Partial" if order.outcome == "Partial" else "Completed"
        return OrderView(
            status,
            final_remains,
            order.start_count,
            charge_for(order, status, final_remains),
        )
    share = (elapsed - pending) / (end - pending)
    delivered = int((order.total - final_remains) * share)
    status = "Processing" if order.outcome == "Processing" else "In progress"
    return OrderView(status, order.total - delivered, order.start_count, order.charge)


@dataclass
class Subscription:
    id: int
    service: dict[str, Any]
    params: dict[str, str]
    username: str
    min: int
    max: int
    posts: int | None
    old_posts: int
    delay: int
    expiry: date | None
    created_at: float
    frozen_status: str | None = None
    children: list[int] = field(default_factory=list)
    new_posts: int = 0  # future posts seen so far
    skipped_posts: int = 0  # posts seen while the balance could not pay for them

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "params": self.params,
            "username": self.username,
            "min": self.min,
            "max": self.max,
            "posts": self.posts,
            "old_posts": self.old_posts,
            "delay": self.delay,
            "expiry": self.expiry.isoformat() if self.expiry else None,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Subscription:
        expiry = date.fromisoformat(data["expiry"]) if data.get("expiry") else None
        return cls(**{**data, "expiry": expiry})

    @property
    def expires_at(self) -> float | None:
        """End of the expiry day (UTC) in simulated epoch seconds."""
        if self.expiry is None:
            return None
        end = datetime.combine(self.expiry, time(0), tzinfo=UTC) + timedelta(days=1)
        return end.timestamp()

    def post_time(self, post: int) -> float:
        """When the order for the `post`-th future post is placed (after the chosen delay)."""
        return self.created_at + post * POST_INTERVAL + self.delay * 60

    def status(self, now: float) -> str:
        if self.frozen_status is not None:
            return self.frozen_status
        if self.posts is not None and self.new_posts >= self.posts:
            return "Completed"
        expires_at = self.expires_at
        if expires_at is not None and now >= expires_at:
            return "Expired"
        return "Active"

    def posts_seen(self) -> int:
        return self.old_posts + self.new_posts


@dataclass
class Refill:
    id: int
    order_id: int
    created_at: float
    duration: float
    outcome: str
    frozen_status: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order_id": self.order_id,
            "created_at": self.created_at,
            "duration": self.duration,
            "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Refill:
        return cls(**data)

    def status(self, now: float) -> str:
        if self.frozen_status is not None:
            return self.frozen_status
        elapsed = now - self.created_at
        if elapsed < self.duration * PENDING_SHARE:
            return "Pending"
        if elapsed < self.duration:
            return "In progress"
        return self.outcome


def iso(ts: float) -> str:
    """Simulated epoch seconds as an ISO-8601 UTC timestamp, for admin answers."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()
