"""Normalisation of the status words panels use (README, The warehouse (DuckDB))."""

from __future__ import annotations

# The one definition of a finished order (subscriptions end Expired): never polled again.
# A tuple, so that SQL can use its repr as an IN list.
FINISHED_STATUSES = ("Completed", "Partial", "Canceled", "Refunded", "Expired")

REFILL_STATUSES = ("Pending", "In progress", "Processing", "Completed", "Rejected", "Canceled")
FINISHED_REFILL_STATUSES = frozenset({"Completed", "Rejected", "Canceled"})

_ORDER_ALIASES = {
    "pending": "Pending",
    "in progress": "In progress",
    "inprogress": "In progress",
    "in_progress": "In progress",
    "processing": "Processing",
    "completed": "Completed",
    "complete": "Completed",
    "partial": "Partial",
    "canceled": "Canceled",
    "cancelled": "Canceled",
    "refunded": "Refunded",
}
_REFILL_ALIASES = {
    **{k: v for k, v in _ORDER_ALIASES.items() if v in REFILL_STATUSES},
    "rejected": "Rejected",
}
# Subscriptions report their own lifecycle words.
SUBSCRIPTION_STATUSES = {
    "active": "Active",
    "paused": "Paused",
    "completed": "Completed",
    "expired": "Expired",
    "canceled": "Canceled",
    "cancelled": "Canceled",
}


def _key(word: str) -> str:
    return " ".join(str(word).strip().lower().split())


def normalize_order_status(word: str) -> str | None:
    """The normalised order status for a panel's word, or None when the word is unknown."""
    return _ORDER_ALIASES.get(_key(word))


def normalize_refill_status(word: str) -> str | None:
    return _REFILL_ALIASES.get(_key(word))


def normalize_subscription_status(word: str) -> str | None:
    return SUBSCRIPTION_STATUSES.get(_key(word))
