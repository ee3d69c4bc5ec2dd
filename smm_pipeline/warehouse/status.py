"""Order status upkeep: which orders are due for a poll, and applying what the panel said.

Cadence: after each poll an order is due again after a quarter of the time it has gone
unchanged (or, never changed, of its age), clamped to [min, max] minutes. A fresh or just-moved
order is polled every few minutes; one stuck for a day, every few hours. Finished orders
(Completed, Partial, Canceled, Refunded; subscriptions also Expired) are never polled again.

A final Canceled or Refunded answer without a charge clears the stored charge: the panel gave
the money back, so an older full charge must not be kept over it (the views count it 0).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from smm_pipeline.panel.statuses import FINISHED_STATUSES

REFUNDED_STATUSES = ("Canceled", "Refunded")
_OPEN = f"""
    submit_state = 'submitted' AND order_id IS NOT NULL
    AND coalesce(status, '') NOT IN {FINISHED_STATUSES}
"""
OBSERVATION_COLUMNS = [
    "panel", "order_id", "status", "raw_status", "charge", "start_count", "remains",
    "currency", "error", "subscription_expiry", "subscription_posts", "subscription_orders",
]  # fmt: skip


# What each observation makes of an order: an item error keeps the stored values; a value the
# panel left out keeps the stored one, except the charge of a final Canceled/Refunded, which
# the panel refunded (NULL: the views count it 0). `changed` compares these effective values,
# so a panel that omits a field does not look like a change on every poll.
_EFFECTIVE_OBSERVATIONS = f"""
CREATE OR REPLACE TEMP TABLE _obs AS
WITH r AS (
    SELECT panel, CAST(order_id AS BIGINT) AS order_id, status, raw_status,
           CAST(charge AS DECIMAL(38,18)) AS charge, CAST(start_count AS BIGINT) AS start_count,
           CAST(remains AS BIGINT) AS remains, currency, error, subscription_expiry,
           CAST(subscription_posts AS BIGINT) AS subscription_posts, subscription_orders
    FROM _obs_raw
),
e AS (
    SELECT r.panel, r.order_id, r.raw_status, r.currency, r.error, r.subscription_expiry,
           r.subscription_posts, r.subscription_orders,
           o.status AS old_status, o.charge AS old_charge, o.start_count AS old_start_count,
           o.remains AS old_remains,
           CASE WHEN r.error IS NULL THEN r.status ELSE o.status END AS status,
           CASE WHEN r.error IS NOT NULL THEN o.charge
                WHEN r.charge IS NULL AND r.status IN {REFUNDED_STATUSES} THEN NULL
                ELSE coalesce(r.charge, o.charge) END AS charge,
           CASE WHEN r.error IS NULL THEN coalesce(r.start_count, o.start_count)
                ELSE o.start_count END AS start_count,
           CASE WHEN r.error IS NULL THEN coalesce(r.remains, o.remains)
                ELSE o.remains END AS remains
    FROM r JOIN orders o ON o.panel = r.panel AND o.order_id = r.order_id
)
SELECT panel, order_id, status, raw_status, charge, start_count, remains, currency, error,
       subscription_expiry, subscription_posts, subscription_orders,
       (error IS NULL AND (old_status IS DISTINCT FROM status
                           OR old_charge IS DISTINCT FROM charge
                           OR old_start_count IS DISTINCT FROM start_count
                           OR old_remains IS DISTINCT FROM remains)) AS changed
FROM e
"""


@dataclass(frozen=True)
class Cadence:
    min_minutes: float = 2.0
    max_minutes: float = 240.0


def due_orders(
    conn: duckdb.DuckDBPyConnection, now: datetime, *, poll_all: bool = False
) -> pd.DataFrame:
    """(panel, order_id) of every unfinished order due now (all unfinished with poll_all)."""
    due = "" if poll_all else "AND (next_poll_at IS NULL OR next_poll_at <= ?)"
    return conn.execute(
        f"SELECT panel, order_id FROM orders WHERE {_OPEN} {due} ORDER BY panel, order_id",
        [] if poll_all else [now],
    ).df()


def open_summary(
    conn: duckdb.DuckDBPyConnection, panels: Collection[str] | None = None
) -> tuple[int, datetime | None]:
    """How many orders are unfinished, and when the next one is due: of `panels` only when
    given (the enabled ones: a disabled panel's orders are never polled, so counting them
    would keep the status sensor launching runs that poll nothing)."""
    where, params = _OPEN, []
    if panels is not None:
        where += " AND list_contains(?, panel)"
        params.append(sorted(panels))
    count, next_due = conn.execute(
        f"SELECT count(*), min(coalesce(next_poll_at, submitted_at)) FROM orders WHERE {where}",
        params,
    ).fetchall()[0]
    return int(count), next_due


def open_by_panel(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Unfinished orders per panel."""
    rows = conn.execute(f"SELECT panel, count(*) FROM orders WHERE {_OPEN} GROUP BY panel")
    return {panel: int(n) for panel, n in rows.fetchall()}


def apply_observations(
    conn: duckdb.DuckDBPyConnection, observations: pd.DataFrame, now: datetime, cadence: Cadence
) -> tuple[int, int]:
    """Write one poll's answers in three set-based statements: history rows for the orders
    whose observed values changed, the current values, and the next due time.
    Returns (changed orders, per-item errors)."""
    if observations.empty:
        return 0, 0
    obs = observations[OBSERVATION_COLUMNS].copy()
    conn.register("_obs_raw", obs)
    try:
        conn.execute(_EFFECTIVE_OBSERVATIONS)
    finally:
        conn.unregister("_obs_raw")
    conn.execute(
        """
        INSERT INTO order_status_history
            (panel, order_id, observed_at, status, raw_status, charge, start_count, remains)
        SELECT panel, order_id, ?, status, raw_status, charge, start_count, remains
        FROM _obs WHERE changed
        """,
        [now],
    )
    conn.execute(
        f"""
        UPDATE orders SET
            status = b.status,
            raw_status = coalesce(b.raw_status, orders.raw_status),
            charge = b.charge,
            start_count = b.start_count,
            remains = b.remains,
            currency = coalesce(b.currency, orders.currency),
            subscription_expiry = coalesce(b.subscription_expiry, orders.subscription_expiry),
            subscription_posts = coalesce(b.subscription_posts, orders.subscription_posts),
            subscription_orders = coalesce(b.subscription_orders, orders.subscription_orders),
            poll_error = b.error,
            updated_at = CASE WHEN b.changed THEN $now ELSE orders.updated_at END,
            last_change_at = CASE WHEN b.changed THEN $now ELSE orders.last_change_at END,
            finished_at = CASE
                WHEN orders.finished_at IS NULL AND b.error IS NULL
                     AND b.status IN {FINISHED_STATUSES} THEN $now
                ELSE orders.finished_at END,
            next_poll_at = $now + to_microseconds(CAST(greatest($min_us, least($max_us,
                date_diff('microsecond',
                          CASE WHEN b.changed THEN $now
                               ELSE coalesce(orders.last_change_at, orders.submitted_at, $now)
                          END, $now) / 4)) AS BIGINT))
        FROM _obs b
        WHERE orders.panel = b.panel AND orders.order_id = b.order_id
        """,
        {
            "now": now,
            "min_us": int(cadence.min_minutes * 60_000_000),
            "max_us": int(cadence.max_minutes * 60_000_000),
        },
    )
    changed, errors = conn.execute(
        "SELECT count(*) FILTER (WHERE changed), count(*) FILTER (WHERE error IS NOT NULL) "
        "FROM _obs"
    ).fetchall()[0]
    conn.execute("DROP TABLE _obs")
    return int(changed), int(errors)
