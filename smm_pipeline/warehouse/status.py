"""Order status upkeep: which orders are due for a poll, and applying what the panel said.

Cadence: after each poll an order is due again after a quarter of the time it has gone
unchanged (or, never changed, of its age), clamped to [min, max] minutes. A fresh or just-moved
order is polled every few minutes; one stuck for a day, every few hours. Finished orders
(Completed, Partial, Canceled, Refunded; subscriptions also Expired) are never polled again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

FINISHED_STATUSES = ("Completed", "Partial", "Canceled", "Refunded", "Expired")
_OPEN = f"""
    submit_state = 'submitted' AND order_id IS NOT NULL
    AND coalesce(status, '') NOT IN {FINISHED_STATUSES}
"""
OBSERVATION_COLUMNS = [
    "panel", "order_id", "status", "raw_status", "charge", "start_count", "remains",
    "currency", "error", "subscription_expiry", "subscription_posts", "subscription_orders",
]  # fmt: skip


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


def open_summary(conn: duckdb.DuckDBPyConnection) -> tuple[int, datetime | None]:
    """How many orders are unfinished, and when the next one is due."""
    count, next_due = conn.execute(
        f"SELECT count(*), min(coalesce(next_poll_at, submitted_at)) FROM orders WHERE {_OPEN}"
    ).fetchall()[0]
    return int(count), next_due


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
        conn.execute(
            """
            CREATE OR REPLACE TEMP TABLE _obs AS
            SELECT r.panel, CAST(r.order_id AS BIGINT) AS order_id, r.status, r.raw_status,
                   CAST(r.charge AS DECIMAL(38,18)) AS charge,
                   CAST(r.start_count AS BIGINT) AS start_count,
                   CAST(r.remains AS BIGINT) AS remains, r.currency, r.error,
                   r.subscription_expiry, CAST(r.subscription_posts AS BIGINT)
                       AS subscription_posts, r.subscription_orders,
                   (r.error IS NULL AND (
                       o.status IS DISTINCT FROM r.status
                       OR o.charge IS DISTINCT FROM CAST(r.charge AS DECIMAL(38,18))
                       OR o.start_count IS DISTINCT FROM CAST(r.start_count AS BIGINT)
                       OR o.remains IS DISTINCT FROM CAST(r.remains AS BIGINT))) AS changed
            FROM _obs_raw r JOIN orders o ON o.panel = r.panel AND o.order_id = r.order_id
            """
        )
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
            status = CASE WHEN b.error IS NULL THEN b.status ELSE orders.status END,
            raw_status = coalesce(b.raw_status, orders.raw_status),
            charge = CASE WHEN b.error IS NULL THEN coalesce(b.charge, orders.charge)
                          ELSE orders.charge END,
            start_count = CASE WHEN b.error IS NULL THEN coalesce(b.start_count,
                                orders.start_count) ELSE orders.start_count END,
            remains = CASE WHEN b.error IS NULL THEN coalesce(b.remains, orders.remains)
                           ELSE orders.remains END,
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
