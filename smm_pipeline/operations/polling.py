"""Poll every due order's status: 100 ids a call, panels and chunks concurrently within each
panel's limits, then one set-based write of everything that was observed.

Only the panels that have a client (the enabled ones) are polled and counted as open; open
orders of a disabled or removed panel are logged each run and left as they are."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from smm_pipeline.panel.client import MAX_IDS_PER_CALL, PanelClient
from smm_pipeline.panel.errors import PanelError
from smm_pipeline.panel.models import OrderStatus
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.status import (
    OBSERVATION_COLUMNS,
    Cadence,
    apply_observations,
    due_orders,
    open_by_panel,
    open_summary,
)


@dataclass
class PollReport:
    due: int = 0
    open_before: int = 0
    polled: int = 0
    changed: int = 0
    item_errors: int = 0
    calls: int = 0
    fixed_interval_calls: int = 0
    http_seconds: float = 0.0
    write_seconds: float = 0.0
    open_after: int = 0
    next_due_at: datetime | None = None
    failed_panels: dict[str, str] = field(default_factory=dict)
    disabled_open: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def calls_saved(self) -> int:
        return self.fixed_interval_calls - self.calls


def observations_frame(panel: str, statuses: Mapping[int, OrderStatus]) -> pd.DataFrame:
    """The panel's answers as rows of the warehouse's observation shape (money as text)."""
    rows = [
        (
            panel, s.order_id, s.status, s.raw_status,
            None if s.charge is None else str(s.charge),
            s.start_count, s.remains, s.currency, s.error, s.expiry, s.posts,
            ",".join(map(str, s.orders)) if s.is_subscription else None,
        )
        for s in statuses.values()
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=OBSERVATION_COLUMNS)
    for column in ("start_count", "remains", "subscription_posts"):
        frame[column] = pd.array(frame[column], dtype="Int64")
    for column in ("status", "raw_status", "charge", "currency", "error", "subscription_expiry",
                   "subscription_orders"):  # fmt: skip
        frame[column] = pd.array(frame[column], dtype="string")
    return frame


def poll_orders(
    db_path: Path,
    clients: Mapping[str, PanelClient],
    cadence: Cadence,
    *,
    poll_all: bool = False,
    progress: Callable[[str], None] = print,
) -> PollReport:
    report = PollReport()
    now = datetime.now(UTC)
    with connect(db_path) as conn:
        due = due_orders(conn, now, poll_all=poll_all)
        report.open_before, _ = open_summary(conn, clients)
        open_counts = open_by_panel(conn)
    due = due[due["panel"].isin(list(clients))]
    report.due = len(due)
    report.fixed_interval_calls = sum(
        math.ceil(n / MAX_IDS_PER_CALL) for p, n in open_counts.items() if p in clients
    )
    report.disabled_open = {p: n for p, n in sorted(open_counts.items()) if p not in clients}
    if report.disabled_open:
        progress(
            "not polling open orders of panels that are not enabled (not counted as open): "
            + ", ".join(f"{p} ({n})" for p, n in report.disabled_open.items())
        )
    by_panel = {p: list(f["order_id"]) for p, f in due.groupby("panel")} if len(due) else {}
    started = time.perf_counter()
    calls_before = sum(c.total_calls for c in clients.values())

    def one(panel: str) -> pd.DataFrame | PanelError:
        client = clients[panel]
        before = client.total_calls
        try:
            statuses = client.statuses(by_panel[panel])
        except PanelError as exc:
            return exc
        progress(f"{panel}: {len(statuses)} statuses in {client.total_calls - before} calls")
        return observations_frame(panel, statuses)

    panels = list(by_panel)
    frames = []
    with ThreadPoolExecutor(max_workers=max(1, len(panels))) as pool:
        for panel, result in zip(panels, pool.map(one, panels), strict=True):
            if isinstance(result, PanelError):
                report.failed_panels[panel] = result.message
                progress(f"{panel}: poll failed: {result.message}")
            else:
                frames.append(result)
    report.http_seconds = time.perf_counter() - started
    report.calls = sum(c.total_calls for c in clients.values()) - calls_before
    observed = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    report.polled = len(observed)
    write_started = time.perf_counter()
    with connect(db_path) as conn:
        report.changed, report.item_errors = apply_observations(conn, observed, now, cadence)
        report.open_after, report.next_due_at = open_summary(conn, clients)
    report.write_seconds = time.perf_counter() - write_started
    if len(observed):
        report.statuses = observed["status"].fillna("(error)").value_counts().sort_index().to_dict()
    return report
