"""The `orders` table as an outbox: rows are recorded before their `add` is sent.

States (`submit_state`): pending (recorded, not sent) → sending (claimed by a submitting
process, whose answer journal says whether its `add` left) → submitted | failed | ambiguous;
the operator may later turn ambiguous into submitted (attach the panel's id), pending
(resubmit on purpose) or abandoned. A row left in `sending` by a dead process is settled from
its journal: answered, ambiguous (in flight: it may exist on the panel, never resent by
itself) or pending again (provably never sent).

Every write is one set-based statement over a DataFrame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import duckdb
import pandas as pd

from smm_pipeline.money import format_money
from smm_pipeline.warehouse.journal import JournalLocation, dead_claims, journal_ids
from smm_pipeline.warehouse.postgres import is_postgres
from smm_pipeline.warehouse.timestamps import require_aware

# A ref in one of these states may be sent again by a later file: it never reached the panel.
RESUBMITTABLE_STATES = ("failed",)
# The operator may resubmit (or abandon) a row in these states: ambiguous, or pending (left by
# a resubmit or a file run that was killed before sending it).
RESENDABLE_STATES = ("ambiguous", "pending")

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
    return existing_refs_of(conn, pd.DataFrame(list(keys), columns=["panel", "ref"]))


def existing_refs_of(
    conn: duckdb.DuckDBPyConnection, frame: pd.DataFrame
) -> dict[tuple[str, str], ExistingRef]:
    """Rows already recorded for the (panel, ref) keys of `frame`'s two columns."""
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


INTAKE_LOCK = 7240003  # pg_advisory_lock: one order file's budget check and outbox insert


def hold_intake(conn: duckdb.DuckDBPyConnection) -> None:
    """Until this (short) connection closes, no other order file checks its budget or
    records its rows: two files read the same reserved spend and balance otherwise, and both
    could be accepted beyond the money. On Postgres a session advisory lock (the server drops
    it with the connection, a dead process's too); on DuckDB the gate (db.py) already lets one
    process at a time hold the file."""
    if is_postgres(conn):
        conn.execute("SELECT pg_advisory_lock(?)", [INTAKE_LOCK])


def reserved_spend(
    conn: duckdb.DuckDBPyConnection, exclude_file_hash: str, balance_read_at: datetime
) -> dict[str, Decimal]:
    """Per panel, the estimated cost of other files' rows the balance read at
    `balance_read_at` may not show yet: still pending or sending, or submitted since (other
    runs go on while this one validates). A row charged just before the read counts twice:
    in doubt the file is refused, never accepted beyond the money."""
    rows = conn.execute(
        """
        SELECT panel, sum(estimated_cost) FROM orders
        WHERE file_hash IS DISTINCT FROM ?
          AND (submit_state IN ('pending', 'sending')
               OR (submit_state IN ('submitted', 'ambiguous') AND submitted_at >= ?))
        GROUP BY panel
        """,
        [exclude_file_hash, require_aware(balance_read_at, "balance_read_at")],
    ).fetchall()
    return {panel: _plain(total) for panel, total in rows}


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


def claim_statement(conn: duckdb.DuckDBPyConnection) -> str:
    """mark_sending's statement (parameters: panel, refs, claim_id).

    The rows are chosen and locked once, in a materialised CTE, then updated by key. Postgres:
    several workers may claim from one panel's outbox at once; a row another worker's claim has
    locked is skipped (it is becoming theirs), not waited for. The CTE is what keeps this one
    pass whatever the planner thinks of the table: written as `ref IN (SELECT ... FOR UPDATE
    SKIP LOCKED)`, a freshly filed file (no statistics yet for its rows) got a nested loop
    that re-ran the locking subquery for every outbox row, and four workers spun for minutes
    in one claim; `ref = ANY(?)` is a filter on the panel's rows where `IN (SELECT unnest(?))`
    became a join re-reading the list for each of them (160 ms a claim of 128 rows among
    3,000, against 4 ms). DuckDB has no row locks and needs none: one process at a time
    writes the file (db.py's gate)."""
    skip_locked = " FOR UPDATE SKIP LOCKED" if is_postgres(conn) else ""
    return f"""
        WITH claimed AS MATERIALIZED (
            SELECT panel, ref FROM orders
            WHERE panel = ? AND submit_state = 'pending' AND ref = ANY(?)
            {skip_locked}
        )
        UPDATE orders SET submit_state = 'sending', claim_id = ?
        FROM claimed
        WHERE orders.panel = claimed.panel AND orders.ref = claimed.ref
            AND orders.submit_state = 'pending'
        RETURNING orders.ref
        """


def mark_sending(
    conn: duckdb.DuckDBPyConnection, panel: str, refs: Sequence[str], claim_id: str
) -> set[str]:
    """Durably flag rows as possibly in flight under a journal's claim, before their
    requests leave (journal.py says which of them did).

    Returns the refs this call flagged: only those may be sent. A ref that is no longer
    `pending` (another process claimed it, an operator resolved it) is not returned."""
    if not refs:
        return set()
    rows = conn.execute(claim_statement(conn), [panel, list(refs), claim_id]).fetchall()
    return {r[0] for r in rows}


@dataclass(frozen=True)
class SubmitOutcome:
    panel: str
    ref: str
    submit_state: str  # submitted | failed | ambiguous | pending
    order_id: int | None = None
    error: str | None = None
    submitted_at: datetime | None = None
    answered_order_id: int | None = None  # an id the panel answered that another row holds

    def to_json(self) -> dict[str, Any]:
        """The outcome as the answer journal keeps it."""
        return {
            "panel": self.panel,
            "ref": self.ref,
            "state": self.submit_state,
            "order_id": self.order_id,
            "error": self.error,
            "at": self.submitted_at.isoformat() if self.submitted_at else None,
        }

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> SubmitOutcome:
        at = entry.get("at")
        return cls(
            entry["panel"], entry["ref"], entry["state"], entry.get("order_id"),
            entry.get("error"), datetime.fromisoformat(at) if at else None,
        )  # fmt: skip


def _outcome_frame(outcomes: Sequence[SubmitOutcome]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "panel": [o.panel for o in outcomes],
            "ref": [o.ref for o in outcomes],
            "submit_state": [o.submit_state for o in outcomes],
            "order_id": pd.array([o.order_id for o in outcomes], dtype="Int64"),
            "answered_order_id": pd.array([o.answered_order_id for o in outcomes], dtype="Int64"),
            "error": pd.array([o.error for o in outcomes], dtype="string"),
            "submitted_at": pd.to_datetime([o.submitted_at for o in outcomes], utc=True),
        }
    )


def _one_row_per_order_id(
    conn: duckdb.DuckDBPyConnection, outcomes: Sequence[SubmitOutcome]
) -> list[SubmitOutcome]:
    """An order id the panel answered that another row already holds (or an earlier outcome
    of the same batch) does not make a second `submitted` row: that row is ambiguous, the id
    kept as `answered_order_id` (so spend counts the order once) for the operator to check."""
    answered = [o for o in outcomes if o.submit_state == "submitted" and o.order_id is not None]
    if not answered:
        return list(outcomes)
    conn.register("_answered", _outcome_frame(answered))
    try:
        held = conn.execute(
            """
            SELECT o.panel, o.order_id, min(o.ref) FROM orders o
            JOIN _answered a ON o.panel = a.panel AND o.order_id = a.order_id AND o.ref <> a.ref
            GROUP BY o.panel, o.order_id
            """
        ).fetchall()
    finally:
        conn.unregister("_answered")
    holder = {(panel, order_id): ref for panel, order_id, ref in held}
    result = []
    for o in outcomes:
        key = (o.panel, o.order_id)
        other = holder.get(key) if o.submit_state == "submitted" else None
        if o.submit_state == "submitted" and other is None:
            holder[key] = o.ref  # a later outcome of this batch with the same id is the twin
        elif other is not None and other != o.ref:
            o = SubmitOutcome(
                o.panel, o.ref, "ambiguous", None,
                f"the panel answered order id {o.order_id}, which ref {other!r} already "
                "holds: maybe one order for both rows, maybe two; check the panel's order "
                "list, then attach the right id, resubmit or abandon",
                o.submitted_at, answered_order_id=o.order_id,
            )  # fmt: skip
        result.append(o)
    return result


def record_outcomes(
    conn: duckdb.DuckDBPyConnection, outcomes: Sequence[SubmitOutcome], *, claim_id: str | None
) -> list[SubmitOutcome]:
    """Write the outcomes of a claim's sends in one statement; returns them as written (an
    order id another row holds turns its row ambiguous).

    Only rows this claim flagged `sending` take an outcome (a settled journal never
    overwrites what happened since; `claim_id` None: rows flagged before journals existed),
    and pending rows only a `failed` one (not sent: their panel's batch stopped). The claim
    ends with the outcome."""
    if not outcomes:
        return []
    outcomes = _one_row_per_order_id(conn, outcomes)
    conn.register("_outcomes", _outcome_frame(outcomes))
    try:
        conn.execute(
            """
            UPDATE orders SET submit_state = u.submit_state, order_id = u.order_id,
                answered_order_id = u.answered_order_id, claim_id = NULL,
                submit_error = u.error, submitted_at = u.submitted_at,
                next_poll_at = CASE WHEN u.submit_state = 'submitted'
                                    THEN u.submitted_at END,
                updated_at = coalesce(u.submitted_at, orders.updated_at)
            FROM _outcomes u
            WHERE orders.panel = u.panel AND orders.ref = u.ref
              AND ((orders.submit_state = 'sending' AND orders.claim_id IS NOT DISTINCT FROM ?)
                   OR (orders.submit_state = 'pending' AND u.submit_state = 'failed'))
            """,
            [claim_id],
        )
    finally:
        conn.unregister("_outcomes")
    return outcomes


INTERRUPTED = "interrupted while sending: the order may exist on the panel"


@dataclass
class Settled:
    """What settling dead claims did to their `sending` rows."""

    answered: int = 0  # the journal held the answer: recorded
    ambiguous: int = 0  # in flight when the process died: ambiguous
    released: int = 0  # never sent: pending again

    @property
    def rows(self) -> int:
        return self.answered + self.ambiguous + self.released


def settle_dead_claims(conn: duckdb.DuckDBPyConnection, directory: JournalLocation) -> Settled:
    """Settle every `sending` row whose claiming process is gone (journal.py): its journaled
    answer is recorded, a request in flight becomes ambiguous, a row never sent is pending
    again. A `sending` row whose claim has no journal at all (written before journals, or a
    journal lost with its disk) may have been sent: ambiguous."""
    settled = Settled()
    with dead_claims(directory) as dead:
        journals = {claim.claim_id: claim for claim in dead}
        live = journal_ids(directory) - set(journals)  # present but locked: alive
        rows = conn.execute(
            "SELECT panel, ref, claim_id FROM orders WHERE submit_state = 'sending'"
        ).fetchall()
        by_claim: dict[str | None, list[tuple[str, str]]] = {}
        for panel, ref, claim_id in rows:
            if claim_id not in live:
                by_claim.setdefault(claim_id, []).append((panel, ref))
        for claim_id, keys in by_claim.items():
            journal = journals.get(claim_id) if claim_id is not None else None
            outcomes = []
            for panel, ref in keys:
                answer = journal.answers.get((panel, ref)) if journal else None
                if answer is not None:
                    outcomes.append(SubmitOutcome.from_json(answer))
                    settled.answered += 1
                elif journal is None or journal.damaged or (panel, ref) in journal.sent:
                    outcomes.append(SubmitOutcome(panel, ref, "ambiguous", error=INTERRUPTED))
                    settled.ambiguous += 1
                else:
                    outcomes.append(SubmitOutcome(panel, ref, "pending"))
                    settled.released += 1
            record_outcomes(conn, outcomes, claim_id=claim_id)
    return settled


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
    """Apply operator resolutions (panel, ref, action, order_id) to ambiguous rows (resubmit
    and abandon: to pending rows too).

    attach → submitted with the panel's order id; resubmit → pending (sent by the caller);
    abandon → abandoned. Returns an error message per key that could not be applied."""
    errors: dict[tuple[str, str], str] = {}
    current = existing_refs(conn, [(p, r) for p, r, _, _ in resolutions])
    for panel, ref, action, order_id in resolutions:
        row = current.get((panel, ref))
        if row is None:
            errors[(panel, ref)] = f"no order with ref {ref!r} on panel {panel!r}"
        elif row.submit_state not in RESENDABLE_STATES or (
            action == "attach" and row.submit_state != "ambiguous"
        ):
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
                    answered_order_id = NULL, claim_id = NULL,
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
