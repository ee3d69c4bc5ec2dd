"""The `orders` table as an outbox: rows are recorded before their `add` is sent.

States (`submit_state`): pending (recorded, not sent) → sending (the `add` may be in flight) →
submitted | failed | ambiguous; the operator may later turn ambiguous into submitted
(attach the panel's id), pending (resubmit on purpose) or abandoned. A row left in `sending` by
a crash becomes ambiguous: it may have reached the panel, so it is never resent by itself.

Every write is one set-based statement over a DataFrame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

import duckdb
import pandas as pd

from smm_pipeline.panel.order_types import format_money

SUBMIT_STATES = ("pending", "sending", "submitted", "ambiguous", "failed", "abandoned")
# A ref in one of these states may be sent again by a later file: it never reached the panel.
RESUBMITTABLE_STATES = ("failed",)

OUTBOX_COLUMNS = [
    "panel", "ref", "source_file", "file_hash", "row_number", "campaign", "service_id",
    "service_type", "link", "quantity", "params", "estimated_cost",
]  # fmt: skip


@dataclass(frozen=True)
class ExistingRef:
    panel: str
    ref: str
    submit_state: str
    order_id: int | None
    source_file: str | None
    file_hash: str | None
    estimated_cost: Decimal | None


def existing_refs(
    conn: duckdb.DuckDBPyConnection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], ExistingRef]:
    """Rows already recorded for these (panel, ref) keys."""
    frame = pd.DataFrame(list(keys), columns=["panel", "ref"])
    if frame.empty:
        return {}
    conn.register("_keys", frame)
    try:
        rows = conn.execute(
            """
            SELECT o.panel, o.ref, o.submit_state, o.order_id, o.source_file, o.file_hash,
                o.estimated_cost
            FROM orders o JOIN _keys k ON o.panel = k.panel AND o.ref = k.ref
            """
        ).fetchall()
    finally:
        conn.unregister("_keys")
    return {(r[0], r[1]): ExistingRef(*r) for r in rows}


def record_pending(
    conn: duckdb.DuckDBPyConnection, rows: pd.DataFrame, created_at: datetime
) -> int:
    """Insert new rows as `pending`; rows whose ref previously failed are reset to pending
    under the new file (same primary key (panel, ref), the old attempt's error and ids
    cleared). A ref in any other state is left untouched even if the caller passes it (the
    caller filters those out and reports them). Returns the number of rows given."""
    if rows.empty:
        return 0
    frame = rows[OUTBOX_COLUMNS].copy()
    frame["estimated_cost"] = frame["estimated_cost"].map(str)
    conn.register("_pending", frame)
    try:
        conn.execute(
            """
            INSERT INTO orders (panel, ref, source_file, file_hash, row_number, campaign,
                service_id, service_type, link, quantity, params, estimated_cost, created_at,
                submit_state)
            SELECT panel, ref, source_file, file_hash, row_number, campaign, service_id,
                service_type, link, quantity, params, CAST(estimated_cost AS DECIMAL(38,18)),
                ?, 'pending'
            FROM _pending
            ON CONFLICT (panel, ref) DO UPDATE SET
                source_file = excluded.source_file, file_hash = excluded.file_hash,
                row_number = excluded.row_number, campaign = excluded.campaign,
                service_id = excluded.service_id, service_type = excluded.service_type,
                link = excluded.link, quantity = excluded.quantity, params = excluded.params,
                estimated_cost = excluded.estimated_cost, created_at = excluded.created_at,
                submit_state = 'pending', submit_error = NULL, order_id = NULL,
                submitted_at = NULL, updated_at = excluded.created_at, next_poll_at = NULL
            WHERE list_contains(?, orders.submit_state)
            """,
            [created_at, list(RESUBMITTABLE_STATES)],
        )
    finally:
        conn.unregister("_pending")
    return len(frame)


def mark_interrupted_as_ambiguous(
    conn: duckdb.DuckDBPyConnection, file_hash: str | None = None
) -> int:
    """Rows left in `sending` (a run died mid-send) become ambiguous. Returns how many."""
    where = "submit_state = 'sending'" + (" AND file_hash = ?" if file_hash else "")
    params = [file_hash] if file_hash else []
    count = conn.execute(f"SELECT count(*) FROM orders WHERE {where}", params).fetchall()[0][0]
    if count:
        conn.execute(
            f"""
            UPDATE orders SET submit_state = 'ambiguous',
                submit_error = 'interrupted while sending: the order may exist on the panel'
            WHERE {where}
            """,
            params,
        )
    return count


PENDING_COLUMNS = [
    "panel", "ref", "row_number", "service_id", "service_type", "params", "estimated_cost",
]  # fmt: skip


def pending_rows(conn: duckdb.DuckDBPyConnection, file_hash: str) -> pd.DataFrame:
    """The file's rows still to send, in file order.

    Built from fetchall(), not `.df()`: `estimated_cost` stays a Decimal (object column)."""
    rows = conn.execute(
        f"""
        SELECT {", ".join(PENDING_COLUMNS)}
        FROM orders WHERE file_hash = ? AND submit_state = 'pending'
        ORDER BY row_number, panel, ref
        """,
        [file_hash],
    ).fetchall()
    return pd.DataFrame(rows, columns=PENDING_COLUMNS, dtype=object)


def pending_keys(conn: duckdb.DuckDBPyConnection, keys: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The pending rows among these (panel, ref) keys, whatever their file (for a resubmit)."""
    rows = conn.execute(
        f"""
        SELECT {", ".join(PENDING_COLUMNS)}
        FROM orders WHERE submit_state = 'pending'
            AND list_contains(?::VARCHAR[], panel || chr(31) || ref)
        ORDER BY panel, ref
        """,
        [[f"{p}\x1f{r}" for p, r in keys]],
    ).fetchall()
    return pd.DataFrame(rows, columns=PENDING_COLUMNS, dtype=object)


def mark_sending(conn: duckdb.DuckDBPyConnection, panel: str, refs: Sequence[str]) -> set[str]:
    """Durably flag rows as possibly in flight, before their requests leave.

    Returns the refs this call flagged: only those may be sent. A ref that is no longer
    `pending` (another run claimed it, an operator resolved it) is not returned."""
    if not refs:
        return set()
    rows = conn.execute(
        """
        UPDATE orders SET submit_state = 'sending'
        WHERE panel = ? AND submit_state = 'pending' AND ref IN (SELECT unnest(?))
        RETURNING ref
        """,
        [panel, list(refs)],
    ).fetchall()
    return {r[0] for r in rows}


@dataclass(frozen=True)
class SubmitOutcome:
    panel: str
    ref: str
    submit_state: str  # submitted | failed | ambiguous | pending
    order_id: int | None = None
    error: str | None = None
    submitted_at: datetime | None = None


def record_outcomes(conn: duckdb.DuckDBPyConnection, outcomes: Sequence[SubmitOutcome]) -> None:
    """Write the outcomes of one window of sends in one statement."""
    if not outcomes:
        return
    frame = pd.DataFrame(
        {
            "panel": [o.panel for o in outcomes],
            "ref": [o.ref for o in outcomes],
            "submit_state": [o.submit_state for o in outcomes],
            "order_id": pd.array([o.order_id for o in outcomes], dtype="Int64"),
            "error": pd.array([o.error for o in outcomes], dtype="string"),
            "submitted_at": pd.to_datetime([o.submitted_at for o in outcomes], utc=True),
        }
    )
    conn.register("_outcomes", frame)
    try:
        conn.execute(
            """
            UPDATE orders SET submit_state = u.submit_state, order_id = u.order_id,
                submit_error = u.error, submitted_at = u.submitted_at,
                next_poll_at = CASE WHEN u.submit_state = 'submitted'
                                    THEN u.submitted_at END,
                updated_at = u.submitted_at
            FROM _outcomes u
            WHERE orders.panel = u.panel AND orders.ref = u.ref
            """
        )
    finally:
        conn.unregister("_outcomes")


class FileRow(NamedTuple):
    """One recorded row of a file, exactly as stored (money a Decimal, ids int or None)."""

    row_number: int
    ref: str
    panel: str
    service_id: int
    order_id: int | None
    submit_state: str
    submit_error: str | None
    estimated_cost: Decimal
    source_file: str | None


def file_rows(conn: duckdb.DuckDBPyConnection, file_hash: str) -> list[FileRow]:
    """Every row recorded for a file, in file order, for the results report."""
    rows = conn.execute(
        f"""
        SELECT {", ".join(FileRow._fields)}
        FROM orders WHERE file_hash = ? ORDER BY row_number, panel, ref
        """,
        [file_hash],
    ).fetchall()
    # DECIMAL(38,18) comes back with 18 places: the same value, written as it was given.
    return [r._replace(estimated_cost=_plain(r.estimated_cost)) for r in map(FileRow._make, rows)]


def _plain(amount: Decimal | None) -> Decimal | None:
    return None if amount is None else Decimal(format_money(amount))


def resolve_rows(
    conn: duckdb.DuckDBPyConnection,
    resolutions: Sequence[tuple[str, str, str, int | None]],
    resolved_at: datetime,
) -> dict[tuple[str, str], str]:
    """Apply operator resolutions (panel, ref, action, order_id) to ambiguous rows.

    attach → submitted with the panel's order id; resubmit → pending (sent by the caller);
    abandon → abandoned. Returns an error message per key that could not be applied."""
    errors: dict[tuple[str, str], str] = {}
    current = existing_refs(conn, [(p, r) for p, r, _, _ in resolutions])
    for panel, ref, action, order_id in resolutions:
        row = current.get((panel, ref))
        if row is None:
            errors[(panel, ref)] = f"no order with ref {ref!r} on panel {panel!r}"
        elif row.submit_state != "ambiguous":
            errors[(panel, ref)] = f"ref {ref!r} is {row.submit_state}, not ambiguous"
        elif action == "attach" and order_id is None:
            errors[(panel, ref)] = "attach needs the panel's order_id"
        elif action not in ("attach", "resubmit", "abandon"):
            errors[(panel, ref)] = f"unknown action {action!r} (attach, resubmit or abandon)"
    ok = [r for r in resolutions if (r[0], r[1]) not in errors]
    if ok:
        frame = pd.DataFrame(ok, columns=["panel", "ref", "action", "order_id"])
        frame["order_id"] = pd.array(frame["order_id"], dtype="Int64")
        conn.register("_res", frame)
        try:
            conn.execute(
                """
                UPDATE orders SET
                    submit_state = CASE r.action WHEN 'attach' THEN 'submitted'
                        WHEN 'resubmit' THEN 'pending' ELSE 'abandoned' END,
                    order_id = CASE WHEN r.action = 'attach' THEN r.order_id ELSE NULL END,
                    submit_error = CASE r.action WHEN 'attach' THEN NULL
                        WHEN 'resubmit' THEN NULL
                        ELSE 'abandoned by the operator: ' || coalesce(submit_error, '') END,
                    submitted_at = CASE WHEN r.action = 'attach'
                        THEN coalesce(submitted_at, ?) END,
                    next_poll_at = CASE WHEN r.action = 'attach' THEN ? END,
                    updated_at = ?
                FROM _res r WHERE orders.panel = r.panel AND orders.ref = r.ref
                """,
                [resolved_at, resolved_at, resolved_at],
            )
        finally:
            conn.unregister("_res")
    return errors


def attached_elsewhere(
    conn: duckdb.DuckDBPyConnection, wanted: Sequence[tuple[str, str, int]]
) -> dict[tuple[str, str], str]:
    """For (panel, ref, order_id) triples: the other ref of that panel that already holds the
    order id, per key that collides."""
    frame = pd.DataFrame(list(wanted), columns=["panel", "ref", "order_id"])
    if frame.empty:
        return {}
    frame["order_id"] = pd.array(frame["order_id"], dtype="Int64")
    conn.register("_attach", frame)
    try:
        rows = conn.execute(
            """
            SELECT a.panel, a.ref, o.ref FROM _attach a
            JOIN orders o ON o.panel = a.panel AND o.order_id = a.order_id AND o.ref <> a.ref
            ORDER BY o.ref
            """
        ).fetchall()
    finally:
        conn.unregister("_attach")
    return {(panel, ref): other for panel, ref, other in rows}
