"""The operator's answer to ambiguous submissions: attach, resubmit on purpose, or abandon."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from smm_pipeline.operations.submission import SubmitReport, submit_file
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.orders import resolve_rows

ACTIONS = ("attach", "resubmit", "abandon")


@dataclass(frozen=True)
class Resolution:
    panel: str
    ref: str
    action: str
    order_id: int | None = None


@dataclass
class ResolveReport:
    applied: int = 0
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    resubmitted: list[SubmitReport] = field(default_factory=list)


def resolve_ambiguous(
    db_path: Path,
    resolutions: Sequence[Resolution],
    clients: Mapping[str, PanelClient],
    *,
    progress: Callable[[str], None] = print,
) -> ResolveReport:
    """Apply every resolution that fits (an ambiguous row, a known action); resubmitted rows
    are sent now, once. Rows that do not fit are reported and left unchanged."""
    report = ResolveReport()
    with connect(db_path) as conn:
        report.errors = resolve_rows(
            conn,
            [(r.panel, r.ref, r.action, r.order_id) for r in resolutions],
            datetime.now(UTC),
        )
        resubmit = [
            (r.panel, r.ref)
            for r in resolutions
            if r.action == "resubmit" and (r.panel, r.ref) not in report.errors
        ]
        hashes = sorted(
            {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT file_hash FROM orders WHERE submit_state = 'pending' "
                    "AND list_contains(?, panel || chr(31) || ref)",
                    [[f"{p}\x1f{r}" for p, r in resubmit]],
                ).fetchall()
            }
        )
    report.applied = len(resolutions) - len(report.errors)
    for file_hash in hashes:
        report.resubmitted.append(submit_file(db_path, file_hash, clients, progress=progress))
    return report
