"""The `refills` and `cancels` tables: requests made from dropped files, and refill statuses.

Both tables hold one row per order sent to a panel in a `refill` or `cancel` call; rows a file
named but the pipeline refused to send live only in that file's results.csv.

Crash safety without a pending state: before a window of requests leaves, its rows are recorded
as `ambiguous` with the `IN_FLIGHT` message, and the panel's answers then overwrite them. A run
killed mid-request therefore leaves exactly the requests whose outcome is unknown as ambiguous,
and ambiguous requests are never sent again automatically.

A request row is identified by (panel, order_id, source_file, requested_at). `source_file` is
the name under which the file's content was *first* seen in its inbox (`processed_files`), and
`file_hash` the content's sha256, by which a re-drop of the same content under any name finds
the requests that content already made.

Refill status cadence: `updated_at` is when a refill row was last written (its request or a
poll); an open refill is due again a quarter of its age at that moment later, clamped to the
cadence's [min, max]. A fresh refill is looked at every few minutes, a day-old one every few
hours. A per-item error of a poll (say, "Refill not found") is kept in `error`, which is
otherwise empty for a submitted refill.

Every write is one set-based statement over a registered DataFrame or a list parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import duckdb
import pandas as pd

from smm_pipeline.panel.models import CancelResult, RefillResult
from smm_pipeline.panel.statuses import FINISHED_REFILL_STATUSES
from smm_pipeline.warehouse.processed_files import FileClaim
from smm_pipeline.warehouse.status import Cadence
from smm_pipeline.warehouse.timestamps import require_aware

RequestTable = Literal["refills", "cancels"]
IN_FLIGHT = (
    "no answer recorded: the run stopped while this request may have been in flight; check "
    "the order on the panel before asking again"
)
_FINISHED_REFILLS = tuple(sorted(FINISHED_REFILL_STATUSES))
_OPEN_REFILLS = f"""
    request_state = 'submitted' AND refill_id IS NOT NULL
    AND coalesce(status, '') NOT IN {_FINISHED_REFILLS}
"""
TARGET_COLUMNS = ["row_number", "panel", "order_id", "ref"]


# ------------------------------------------------------------------ which orders a file names


def order_targets(conn: duckdb.DuckDBPyConnection, targets: pd.DataFrame) -> pd.DataFrame:
    """What the warehouse knows of each order a file names (by panel order id or by ref).

    `targets` has TARGET_COLUMNS (order_id or ref set per row). The answer has one row per
    target, in row order: row_number, panel, order_id, ref (both resolved when the order is
    known), known, submit_state, service_id, status, in_catalog, refill, cancel.
    """
    frame = pd.DataFrame(
        {
            "row_number": pd.array(targets["row_number"], dtype="Int64"),
            "panel": pd.array(targets["panel"], dtype="string"),
            "order_id": pd.array(targets["order_id"], dtype="Int64"),
            "ref": pd.array(targets["ref"], dtype="string"),
        }
    )
    conn.register("_targets", frame)
    try:
        return conn.execute(
            """
            WITH by_id AS (
                SELECT panel, order_id, ref, submit_state, service_id, status
                FROM (SELECT panel, order_id, ref, submit_state, service_id, status,
                             row_number() OVER (PARTITION BY panel, order_id
                                 ORDER BY submit_state = 'submitted' DESC, submitted_at DESC,
                                          ref) AS n
                      FROM orders WHERE order_id IS NOT NULL) AS ranked
                WHERE n = 1
            )
            SELECT k.row_number, k.panel,
                   CAST(coalesce(k.order_id, r.order_id) AS BIGINT) AS order_id,
                   coalesce(i.ref, k.ref) AS ref,
                   (i.ref IS NOT NULL OR r.ref IS NOT NULL) AS known,
                   coalesce(i.submit_state, r.submit_state) AS submit_state,
                   coalesce(i.service_id, r.service_id) AS service_id,
                   coalesce(i.status, r.status) AS status,
                   s.service_id IS NOT NULL AS in_catalog,
                   coalesce(s.refill, false) AS refill,
                   coalesce(s.cancel, false) AS cancel
            FROM _targets k
            LEFT JOIN by_id i
                ON k.order_id IS NOT NULL AND i.panel = k.panel AND i.order_id = k.order_id
            LEFT JOIN orders r
                ON k.order_id IS NULL AND r.panel = k.panel AND r.ref = k.ref
            LEFT JOIN services s
                ON s.panel = k.panel AND s.service_id = coalesce(i.service_id, r.service_id)
            ORDER BY k.row_number
            """
        ).df()
    finally:
        conn.unregister("_targets")


# ------------------------------------------------------------------ requests


def file_requests(
    conn: duckdb.DuckDBPyConnection, table: RequestTable, claim: FileClaim
) -> pd.DataFrame:
    """The latest request per (panel, order_id) this file's content made in `table`:
    panel, order_id, state, refill_id (refills only, else NULL), error, requested_at."""
    state = "request_state" if table == "refills" else "result"
    refill_id = "refill_id" if table == "refills" else "CAST(NULL AS BIGINT)"
    return conn.execute(
        f"""
        SELECT panel, order_id, state, refill_id, error, requested_at
        FROM (SELECT panel, order_id, {state} AS state, {refill_id} AS refill_id, error,
                     requested_at,
                     row_number() OVER (PARTITION BY panel, order_id
                                        ORDER BY requested_at DESC) AS n
              FROM {table}
              WHERE file_hash = ?
                 OR (file_hash IS NULL AND source_file = ? AND requested_at >= ?)  -- before v5
             ) AS requests
        WHERE n = 1
        ORDER BY panel, order_id
        """,
        [claim.file_hash, claim.file_name, claim.first_seen_at],
    ).df()


def record_in_flight(
    conn: duckdb.DuckDBPyConnection,
    table: RequestTable,
    panel: str,
    order_ids: Sequence[int],
    claim: FileClaim,
    requested_at: datetime,
) -> list[int]:
    """Durably mark requests as possibly sent, before they leave (see the module docstring),
    and return the order ids this call claimed: an order this content already requested (or
    has in flight: another run of the same content may be on it right now) is left out, and
    must not be sent. One statement, under the warehouse's one-writer lock, so two runs can
    never both claim an order."""
    if not order_ids:
        return []
    requested_at = require_aware(requested_at, "requested_at")
    if table == "refills":
        columns = (
            "panel, order_id, requested_at, request_state, error, source_file, file_hash, "
            "updated_at"
        )
        values = "?, t.id, ?, 'ambiguous', ?, ?, ?, ?"
        params = [panel, requested_at, IN_FLIGHT, claim.file_name, claim.file_hash, requested_at]
        done = "r.request_state IN ('submitted', 'ambiguous')"
    else:
        columns = "panel, order_id, requested_at, result, error, source_file, file_hash"
        values = "?, t.id, ?, 'ambiguous', ?, ?, ?"
        params = [panel, requested_at, IN_FLIGHT, claim.file_name, claim.file_hash]
        done = "r.result IN ('accepted', 'ambiguous')"
    rows = conn.execute(
        f"""
        INSERT INTO {table} ({columns})
        SELECT {values} FROM (SELECT DISTINCT unnest(CAST(? AS BIGINT[])) AS id) t
        WHERE NOT EXISTS (
            SELECT 1 FROM {table} r
            WHERE r.panel = ? AND r.order_id = t.id AND r.file_hash = ? AND {done}
        )
        RETURNING order_id
        """,
        [*params, list(order_ids), panel, claim.file_hash],
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def refill_state(result: RefillResult) -> str:
    """submitted (a refill id), ambiguous (outcome unknown) or failed (the panel refused)."""
    if result.ambiguous:
        return "ambiguous"
    return "submitted" if result.refill_id is not None and not result.error else "failed"


def cancel_state(result: CancelResult) -> str:
    """accepted, ambiguous (outcome unknown) or refused (the panel said no)."""
    if result.ambiguous:
        return "ambiguous"
    return "accepted" if result.accepted else "refused"


def _one_row_per_refill_id(
    conn: duckdb.DuckDBPyConnection, panel: str, results: Sequence[RefillResult]
) -> list[RefillResult]:
    """A refill id the panel answered that another order's refill already holds (or an
    earlier answer of this window) makes no second row with that id: that refill request is
    ambiguous (the panel may have made a refill of its own we cannot poll), like an `add`."""
    answered = [int(r.refill_id) for r in results if refill_state(r) == "submitted"]
    if not answered:
        return list(results)
    held = dict(
        conn.execute(
            """
            SELECT refill_id, min(order_id) FROM refills
            WHERE panel = ? AND refill_id IN (SELECT unnest(CAST(? AS BIGINT[])))
            GROUP BY refill_id
            """,
            [panel, answered],
        ).fetchall()
    )
    out = []
    for r in results:
        if refill_state(r) == "submitted":
            other = held.setdefault(int(r.refill_id), int(r.order_id))
            if other != int(r.order_id):
                r = RefillResult(
                    order_id=r.order_id, ambiguous=True,
                    error=f"the panel answered refill id {r.refill_id}, which the refill of "
                    f"order {other} already holds: check the order's refills on the panel",
                )  # fmt: skip
        out.append(r)
    return out


def record_refill_outcomes(
    conn: duckdb.DuckDBPyConnection,
    panel: str,
    source_file: str,
    requested_at: datetime,
    results: Sequence[RefillResult],
) -> list[RefillResult]:
    """Overwrite a window's in-flight rows with the panel's answers, in one statement;
    returns them as recorded (an answered refill id another refill holds: ambiguous)."""
    if not results:
        return []
    results = _one_row_per_refill_id(conn, panel, results)
    frame = pd.DataFrame(
        {
            "order_id": [int(r.order_id) for r in results],
            "refill_id": pd.array(
                [r.refill_id if refill_state(r) == "submitted" else None for r in results],
                dtype="Int64",
            ),
            "state": [refill_state(r) for r in results],
            "error": pd.array([r.error for r in results], dtype="string"),
        }
    )
    conn.register("_refill_outcomes", frame)
    try:
        conn.execute(
            """
            UPDATE refills SET refill_id = u.refill_id, request_state = u.state,
                error = u.error
            FROM _refill_outcomes u
            WHERE refills.panel = ? AND refills.source_file = ? AND refills.requested_at = ?
              AND refills.order_id = u.order_id
            """,
            [panel, source_file, require_aware(requested_at, "requested_at")],
        )
    finally:
        conn.unregister("_refill_outcomes")
    return results


def record_cancel_outcomes(
    conn: duckdb.DuckDBPyConnection,
    panel: str,
    source_file: str,
    requested_at: datetime,
    results: Sequence[CancelResult],
) -> list[CancelResult]:
    """Overwrite a window's in-flight rows with the panel's answers, and make every accepted
    order due for a status poll now (its Canceled status and refund are then picked up soon).
    Returns them as recorded."""
    if not results:
        return []
    requested_at = require_aware(requested_at, "requested_at")
    frame = pd.DataFrame(
        {
            "order_id": [int(r.order_id) for r in results],
            "result": [cancel_state(r) for r in results],
            "error": pd.array(
                [None if r.accepted and not r.ambiguous else r.error for r in results],
                dtype="string",
            ),
        }
    )
    conn.register("_cancel_outcomes", frame)
    try:
        conn.execute(
            """
            UPDATE cancels SET result = u.result, error = u.error
            FROM _cancel_outcomes u
            WHERE cancels.panel = ? AND cancels.source_file = ? AND cancels.requested_at = ?
              AND cancels.order_id = u.order_id
            """,
            [panel, source_file, requested_at],
        )
        conn.execute(
            """
            UPDATE orders SET next_poll_at = ?
            FROM _cancel_outcomes u
            WHERE orders.panel = ? AND orders.order_id = u.order_id AND u.result = 'accepted'
            """,
            [requested_at, panel],
        )
    finally:
        conn.unregister("_cancel_outcomes")
    return list(results)


# ------------------------------------------------------------------ refill statuses


def _interval_sql(at: str) -> str:
    """The wait after `at` (a column expression) for a refill requested at `requested_at`:
    a quarter of the microseconds, floored, the same on both engines."""
    return f"""to_microseconds(CAST(greatest($min_us, least($max_us,
        floor(CAST(date_diff('microsecond', requested_at, {at}) AS DOUBLE PRECISION) / 4)))
        AS BIGINT))"""


def _cadence_params(cadence: Cadence) -> dict[str, int]:
    return {
        "min_us": int(cadence.min_minutes * 60_000_000),
        "max_us": int(cadence.max_minutes * 60_000_000),
    }


def due_refills(
    conn: duckdb.DuckDBPyConnection, now: datetime, cadence: Cadence, *, poll_all: bool = False
) -> pd.DataFrame:
    """(panel, refill_id) of every open refill due now (every open one with poll_all), the
    longest overdue first."""
    last = "coalesce(updated_at, requested_at)"
    due = "" if poll_all else f"AND {last} + {_interval_sql(last)} <= $now"
    params: dict[str, object] = {
        **({} if poll_all else {"now": require_aware(now, "now")}),
        **_cadence_params(cadence),
    }
    return conn.execute(
        f"SELECT panel, refill_id FROM refills WHERE {_OPEN_REFILLS} {due} "
        f"ORDER BY {last} + {_interval_sql(last)}, panel, refill_id",
        params,
    ).df()


def open_refills_summary(
    conn: duckdb.DuckDBPyConnection, cadence: Cadence
) -> tuple[int, datetime | None]:
    """How many refills are unfinished, and when the next one is due."""
    last = "coalesce(updated_at, requested_at)"
    count, next_due = conn.execute(
        f"SELECT count(*), min({last} + {_interval_sql(last)}) FROM refills WHERE {_OPEN_REFILLS}",
        _cadence_params(cadence),
    ).fetchall()[0]
    return int(count), next_due


def open_refills_summary_by_panel(
    conn: duckdb.DuckDBPyConnection, cadence: Cadence
) -> dict[str, tuple[int, datetime | None]]:
    """Per panel: unfinished refills, and when the next one is due."""
    last = "coalesce(updated_at, requested_at)"
    rows = conn.execute(
        f"SELECT panel, count(*), min({last} + {_interval_sql(last)}) FROM refills "
        f"WHERE {_OPEN_REFILLS} GROUP BY panel",
        _cadence_params(cadence),
    ).fetchall()
    return {str(p): (int(n), due) for p, n, due in rows}


def open_refills_by_panel(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT panel, count(*) FROM refills WHERE {_OPEN_REFILLS} GROUP BY panel"
    ).fetchall()
    return {str(p): int(n) for p, n in rows}


def refill_status_frame_from_rows(rows: Sequence[tuple]) -> pd.DataFrame:
    """(panel, refill_id, status, raw_status, error) rows in the shape `apply_refill_statuses`
    takes."""
    columns = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    return pd.DataFrame(
        {
            "panel": pd.array(columns[0], dtype="string"),
            "refill_id": pd.array(columns[1], dtype="Int64"),
            "status": pd.array(columns[2], dtype="string"),
            "raw_status": pd.array(columns[3], dtype="string"),
            "error": pd.array(columns[4], dtype="string"),
        }
    )


def apply_refill_statuses(
    conn: duckdb.DuckDBPyConnection, observed: pd.DataFrame, now: datetime
) -> tuple[int, int]:
    """Write one poll's answers in one statement: the normalised status when the panel gave a
    known word, the raw word whenever it gave one, the per-item error otherwise.
    Returns (refills whose status changed, per-item errors)."""
    if observed.empty:
        return 0, 0
    now = require_aware(now, "now")
    conn.register("_refill_obs", observed[["panel", "refill_id", "status", "raw_status", "error"]])
    try:
        changed, errors = conn.execute(
            """
            SELECT count(*) FILTER (WHERE o.status IS NOT NULL
                                    AND r.status IS DISTINCT FROM o.status),
                   count(*) FILTER (WHERE o.error IS NOT NULL)
            FROM _refill_obs o JOIN refills r
                ON r.panel = o.panel AND r.refill_id = o.refill_id
               AND r.request_state = 'submitted'
            """
        ).fetchall()[0]
        conn.execute(
            """
            UPDATE refills SET
                status = coalesce(o.status, refills.status),
                raw_status = coalesce(o.raw_status, refills.raw_status),
                error = o.error,
                updated_at = ?
            FROM _refill_obs o
            WHERE refills.panel = o.panel AND refills.refill_id = o.refill_id
              AND refills.request_state = 'submitted'
            """,
            [now],
        )
    finally:
        conn.unregister("_refill_obs")
    return int(changed), int(errors)


def row_count(
    conn: duckdb.DuckDBPyConnection, table: Literal["orders", "refills", "cancels"]
) -> int:
    """Rows in `orders`, `refills` or `cancels` (the asset's `dagster/row_count`)."""
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def refill_rows(conn: duckdb.DuckDBPyConnection, limit: int = 20) -> pd.DataFrame:
    """The latest refill requests, for previews."""
    return conn.execute(
        """
        SELECT panel, order_id, refill_id, request_state, status, requested_at, error
        FROM refills ORDER BY requested_at DESC, panel, order_id LIMIT ?
        """,
        [limit],
    ).df()
