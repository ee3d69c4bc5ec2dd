"""Cancel files: which orders may be cancelled, and how a cancel is sent and recorded.

The rest of a cancel file's life is the lifecycle it shares with refill files
(`operations/action_files.py`).

Only orders on cancel=true services that are still unfinished are sent (README, Refills and
cancels: What is sent, what is refused). An accepted cancel makes the order due for a status
poll at once, so its Canceled status and the refund are picked up by the next
`poll_order_statuses` run rather than at the order's old cadence.
"""

from __future__ import annotations

from typing import Any

from smm_pipeline.operations.action_files import ActionSpec, order_problem
from smm_pipeline.panel.statuses import FINISHED_STATUSES
from smm_pipeline.warehouse.refills import cancel_state, record_cancel_outcomes

CANCEL_REPORT_COLUMNS = ("row", "panel", "order", "ref", "service", "result", "error")


def cancel_refusal(target: Any) -> str | None:
    """Why an order may not be cancelled: unknown, cancel=false service, or finished."""
    problem = order_problem(target, "canceled")
    if problem:
        return problem
    if not target.cancel:
        return f"service {target.service_id} does not allow cancels (cancel=false in the catalog)"
    if target.status in FINISHED_STATUSES:
        return f"order {int(target.order_id)} is already {target.status}: nothing to cancel"
    return None


CANCEL_SPEC = ActionSpec(
    kind="cancel",
    folder="cancels",
    table="cancels",
    done_states=("accepted", "ambiguous"),
    refusal=cancel_refusal,
    send=lambda client, ids, stop: client.cancel(ids, stop),
    record=record_cancel_outcomes,
    state_of=cancel_state,
    report_columns=CANCEL_REPORT_COLUMNS,
)


# Handle one file dropped in inbox/cancels/ (raises FileRejected).
process_cancel_file = CANCEL_SPEC.process
