"""Typed answers of the API v2. Money is `Decimal`, ids are `int`, statuses normalised."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Service:
    service_id: int
    name: str
    type: str
    category: str
    rate: Decimal  # price per 1,000 (per package for Package types)
    min: int
    max: int
    refill: bool
    cancel: bool


@dataclass(frozen=True)
class Balance:
    balance: Decimal
    currency: str


@dataclass(frozen=True)
class OrderStatus:
    """One order's status, or a per-item error (then `error` is set and the rest is None).

    `status` is the normalised word (README, The warehouse (DuckDB)), `raw_status` the panel's
    own. Subscriptions (`is_subscription`) carry `expiry`, `posts` and their child `orders`
    instead of charge etc.
    """

    order_id: int
    status: str | None = None
    raw_status: str | None = None
    charge: Decimal | None = None
    start_count: int | None = None
    remains: int | None = None
    currency: str | None = None
    error: str | None = None
    is_subscription: bool = False
    expiry: str | None = None
    posts: int | None = None
    orders: tuple[int, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RefillResult:
    """Outcome of a refill request for one order: a refill id, or the panel's per-item error."""

    order_id: int
    refill_id: int | None = None
    error: str | None = None
    ambiguous: bool = False  # the request may have reached the panel; never resend blindly


@dataclass(frozen=True)
class RefillStatus:
    refill_id: int
    status: str | None = None
    raw_status: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CancelResult:
    """Outcome of a cancel request for one order: accepted, or the panel's per-item error."""

    order_id: int
    accepted: bool
    error: str | None = None
    ambiguous: bool = False  # the request may have reached the panel; never resend blindly
