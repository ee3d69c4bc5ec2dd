"""Refill files: which orders may be refilled, and how a refill is sent and recorded.

The rest of a refill file's life (claimed by content, checked, sent in windows, reported) is the
lifecycle it shares with cancel files, in `operations/action_files.py`; refill status polls are
in `operations/refill_polling.py`.
"""

from __future__ import annotations

from typing import Any

from smm_pipeline.operations.action_files import ActionSpec, order_problem
from smm_pipeline.warehouse.refills import record_refill_outcomes, refill_state

__all__ = ["REFILL_SPEC", "process_refill_file"]

REFILLABLE_STATUSES = ("Completed", "Partial")


def refill_refusal(target: Any) -> str | None:
    """Why an order may not be refilled (README, Refills and cancels: refill=true
    services, orders finished Completed or Partial)."""
    problem = order_problem(target, "refilled")
    if problem:
        return problem
    if not target.refill:
        return f"service {target.service_id} does not offer refills (refill=false in the catalog)"
    if target.status not in REFILLABLE_STATUSES:
        status = target.status if isinstance(target.status, str) else "not polled yet"
        return (
            f"order {target.order_id} is {status}: only finished orders (Completed or Partial) "
            "can be refilled"
        )
    return None


REFILL_SPEC = ActionSpec(
    kind="refill",
    folder="refills",
    table="refills",
    done_states=("submitted", "ambiguous"),
    refusal=refill_refusal,
    send=lambda client, ids, stop: client.refills(ids, stop),
    record=record_refill_outcomes,
    state_of=refill_state,
)

# Handle one file dropped in inbox/refills/ (raises FileRejected).
process_refill_file = REFILL_SPEC.process
