"""Refill status polls: ask each panel for the status of its due refills and record them.

A refill is polled like an order (`warehouse/refills.py` says which are due, by the same
cadence), 100 ids a call, panels side by side, answers written as they come: the fan-out of
order status polls (`operations/polling.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from smm_pipeline.operations.polling import PollReport, fan_out, ids_by_panel, warehouse_writer
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.models import RefillStatus
from smm_pipeline.warehouse.db import Location, connect
from smm_pipeline.warehouse.refills import (
    apply_refill_statuses,
    due_refills,
    open_refills_by_panel,
    open_refills_summary,
    refill_status_frame_from_rows,
)
from smm_pipeline.warehouse.status import Cadence

log = logging.getLogger(__name__)


@dataclass
class RefillPollReport(PollReport):
    """What a refill status poll did: an order poll's report, and the time it took."""

    seconds: float = 0.0


def poll_refills(
    location: Location,
    clients: Mapping[str, PanelClient],
    cadence: Cadence,
    *,
    poll_all: bool = False,
    progress: Callable[[str], None] = log.info,
) -> RefillPollReport:
    """Ask each panel for the status of its due refills (every open one with `poll_all`),
    100 ids a call, panels side by side, answers written as they come (operations/polling.py
    `fan_out`)."""
    started = time.perf_counter()
    report = RefillPollReport()
    now = datetime.now(UTC)
    with connect(location) as conn:
        due = due_refills(conn, now, cadence, poll_all=poll_all)
        report.open_before = sum(open_refills_by_panel(conn).values())
    report.due = len(due)
    by_panel = ids_by_panel(due, "refill_id")
    skipped = sorted(set(by_panel) - set(clients))
    if skipped:
        progress(f"not polling refills of panels that are not enabled: {', '.join(skipped)}")
    by_panel = {p: ids for p, ids in by_panel.items() if p in clients}

    def rows_of(panel: str, statuses: Mapping[int, RefillStatus]) -> list[tuple]:
        return [(panel, int(s.refill_id), s.status, s.raw_status, s.error)
                for s in statuses.values()]  # fmt: skip

    write = warehouse_writer(location, refill_status_frame_from_rows, apply_refill_statuses)
    fan = fan_out(
        clients, by_panel, PanelClient.refill_status_chunk, rows_of, write,
        status_at=2, what="refill status", progress=progress,
    )  # fmt: skip
    report.take(fan)
    with connect(location) as conn:
        report.open_after, report.next_due_at = open_refills_summary(conn, cadence)
    report.seconds = time.perf_counter() - started
    return report
