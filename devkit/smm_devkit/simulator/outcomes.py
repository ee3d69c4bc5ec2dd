"""Deterministic fates: how each order, refill and subscription post turns out, from its id.

A real panel's orders end differently (most complete, some partially, a few hang); tests need
that variety to be reproducible, so every choice is a hash of the id, never a random draw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

ORDER_OUTCOMES = ("Completed", "Partial", "Processing", "Slow", "Canceled")
DEFAULT_OUTCOME_WEIGHTS: dict[str, int] = {
    "Completed": 72,
    "Partial": 12,
    "Processing": 6,  # delivered under the word "Processing", then Completed
    "Slow": 6,  # stays "In progress" SLOW_FACTOR times longer than usual, then Completed
    "Canceled": 4,  # the panel gives up before starting: Canceled, full refund
}
DEFAULT_REFILL_REJECTED_PERCENT = 15


def _roll(label: str, modulus: int) -> int:
    digest = hashlib.sha256(label.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % modulus


def validate_weights(weights: Mapping[str, object]) -> dict[str, int]:
    """Outcome weights as ints over the known outcomes, at least one of them positive."""
    unknown = set(weights) - set(ORDER_OUTCOMES)
    if unknown:
        raise ValueError(f"unknown outcomes {sorted(unknown)}; known: {list(ORDER_OUTCOMES)}")
    clean = {name: int(str(weights.get(name, 0))) for name in ORDER_OUTCOMES}
    if any(v < 0 for v in clean.values()) or sum(clean.values()) == 0:
        raise ValueError("outcome weights must be >= 0 with a positive total")
    return clean


def order_outcome(order_id: int, weights: Mapping[str, int], divisible: bool) -> str:
    """The fate of order `order_id`; a package (not `divisible`) cannot end Partial."""
    point = _roll(f"order:{order_id}", sum(weights.values()))
    for name in ORDER_OUTCOMES:
        point -= weights.get(name, 0)
        if point < 0:
            return "Completed" if name == "Partial" and not divisible else name
    raise AssertionError("weights exhausted")


def start_count(order_id: int) -> int:
    """The counter the panel reads on the target when delivery starts."""
    return 100 + _roll(f"start:{order_id}", 50_000)


def partial_remains(order_id: int, total: int) -> int:
    """Units left undelivered by a Partial order: 5% to 60% of `total`, at least 1."""
    if total < 2:
        return 0
    share = 5 + _roll(f"partial:{order_id}", 56)
    return min(total - 1, max(1, total * share // 100))


def refill_outcome(refill_id: int, rejected_percent: int) -> str:
    return "Rejected" if _roll(f"refill:{refill_id}", 100) < rejected_percent else "Completed"


def child_quantity(subscription_id: int, post: int, low: int, high: int) -> int:
    """Units ordered for the `post`-th post of a subscription, within its min..max."""
    return low + _roll(f"post:{subscription_id}:{post}", high - low + 1)
