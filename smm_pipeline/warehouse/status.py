"""Order status upkeep: which orders are due for a poll, and applying what the panel said.

Two kinds of order are polled: the rows of `orders` (one per CSV row that reached the panel)
and the child orders of subscriptions (`subscription_orders`): the orders a subscription
places for each post, whose ids its status answer lists. Both are orders like any other at
the panel and are polled together, 100 ids a call; an observation is routed by its id (an id
of `orders` is that row, else a known child).

Cadence: after each poll an order is due again after a quarter of the time it has gone
unchanged (or, never changed, of its age), clamped to [min, max] minutes. A fresh or just-moved
order is polled every few minutes; one stuck for a day, every few hours. Finished orders
(Completed, Partial, Canceled, Refunded; subscriptions also Expired) are never polled again.
A subscription whose post count or child list grows has changed (its cadence starts over).

A final Canceled or Refunded answer without a charge clears the stored charge: the panel gave
the money back, so an older full charge must not be kept over it (the views count it 0).

Subscriptions: their status answer carries no charge; their spend is their children's.

- A child id the subscription lists for the first time is recorded in `subscription_orders`,
  linked to the subscription's row (`subscription_ref` = orders.ref), first seen and due now.
- A child's observations go to its own row there, with the same rules as an order's; its
  history goes to `order_status_history` under the child's order id, like any order's.
- The subscription row's `charge` in `orders` is the sum of its children's known charges (a
  refunded child without a charge counts 0) as soon as one child's charge is known, updated on
  every poll that observes the subscription or one of its children; until then it is NULL and
  the views count the row's estimate. It is derived, so it is not written to the history
  (the children's charges are, under their ids).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from smm_pipeline.panel.statuses import FINISHED_STATUSES

REFUNDED_STATUSES = ("Canceled", "Refunded")
_UNFINISHED = f"coalesce(status, '') NOT IN {FINISHED_STATUSES}"
# The orders still to poll (Postgres keeps a partial index of them: migration 8, whose
# predicate this text must stay, so that the planner can use it).
OPEN_ORDERS = f"submit_state = 'submitted' AND order_id IS NOT NULL AND {_UNFINISHED}"
_OPEN_CHILD = _UNFINISHED
OBSERVATION_COLUMNS = [
    "panel", "order_id", "status", "raw_status", "charge", "start_count", "remains",
    "currency", "error", "subscription_expiry", "subscription_posts", "subscription_orders",
]  # fmt: skip

# Every unfinished order that needs polling, with the time it is due (NULL: now), and its due
# time for summaries (a row never polled yet: due since it was placed or first seen).
_OPEN_ITEMS = f"""
    SELECT panel, order_id, next_poll_at, coalesce(next_poll_at, submitted_at) AS due_at
    FROM orders WHERE {OPEN_ORDERS} {{panel_filter}}
    UNION ALL
    SELECT panel, order_id, next_poll_at, coalesce(next_poll_at, first_seen_at) AS due_at
    FROM subscription_orders WHERE {_OPEN_CHILD} {{panel_filter}}
"""

_TYPED_OBSERVATIONS = """
CREATE TEMP TABLE _obs_typed AS
SELECT panel, CAST(order_id AS BIGINT) AS order_id, status, raw_status,
       CAST(charge AS DECIMAL(38,18)) AS charge, CAST(start_count AS BIGINT) AS start_count,
       CAST(remains AS BIGINT) AS remains, currency, error, subscription_expiry,
       CAST(subscription_posts AS BIGINT) AS subscription_posts, subscription_orders
FROM _obs_raw
"""

# What each observation makes of an order: an item error keeps the stored values; a value the
# panel left out keeps the stored one, except the charge of a final Canceled/Refunded, which
# the panel refunded (NULL: the views count it 0). A subscription's charge is its children's
# (kept here, recomputed after). `changed` compares these effective values, so a panel that
# omits a field does not look like a change on every poll.
_EFFECTIVE = f"""
    CASE WHEN r.error IS NULL THEN r.status ELSE o.status END AS status,
    CASE WHEN r.error IS NOT NULL OR r.subscription_orders IS NOT NULL THEN o.charge
         WHEN r.charge IS NULL AND r.status IN {REFUNDED_STATUSES} THEN NULL
         ELSE coalesce(r.charge, o.charge) END AS charge,
    CASE WHEN r.error IS NULL THEN coalesce(r.start_count, o.start_count)
         ELSE o.start_count END AS start_count,
    CASE WHEN r.error IS NULL THEN coalesce(r.remains, o.remains)
         ELSE o.remains END AS remains,
    o.status AS old_status, o.charge AS old_charge, o.start_count AS old_start_count,
    o.remains AS old_remains
"""
_CHANGED = """
    error IS NULL AND (old_status IS DISTINCT FROM status
                       OR old_charge IS DISTINCT FROM charge
                       OR old_start_count IS DISTINCT FROM start_count
                       OR old_remains IS DISTINCT FROM remains
"""

_ORDER_OBSERVATIONS = f"""
CREATE TEMP TABLE _obs AS
WITH e AS (
    SELECT r.panel, r.order_id, o.ref, r.raw_status, r.currency, r.error, r.subscription_expiry,
           r.subscription_posts, r.subscription_orders,
           r.subscription_orders IS NOT NULL AND r.error IS NULL AS is_subscription,
           o.subscription_posts AS old_posts, o.subscription_orders AS old_children,
           {_EFFECTIVE}
    FROM _obs_typed r JOIN orders o ON o.panel = r.panel AND o.order_id = r.order_id
)
SELECT panel, order_id, ref, status, raw_status, charge, start_count, remains, currency, error,
       subscription_expiry, subscription_posts, subscription_orders, is_subscription,
       ({_CHANGED}
            OR (is_subscription
                AND (old_posts IS DISTINCT FROM coalesce(subscription_posts, old_posts)
                     OR old_children IS DISTINCT FROM subscription_orders)))) AS changed
FROM e
"""

# Observations of child orders: ids recorded in subscription_orders (and not rows of orders,
# which take precedence).
_CHILD_OBSERVATIONS = f"""
CREATE TEMP TABLE _cobs AS
WITH e AS (
    SELECT r.panel, r.order_id, o.subscription_ref, r.raw_status, r.currency, r.error,
           {_EFFECTIVE}
    FROM (SELECT panel, order_id, status, raw_status, charge, start_count, remains, currency,
                 error, CAST(NULL AS VARCHAR) AS subscription_orders
          FROM _obs_typed) r
    JOIN subscription_orders o ON o.panel = r.panel AND o.order_id = r.order_id
    WHERE NOT EXISTS (SELECT 1 FROM orders x WHERE x.panel = r.panel AND x.order_id = r.order_id)
)
SELECT panel, order_id, subscription_ref, status, raw_status, charge, start_count, remains,
       currency, error, ({_CHANGED})) AS changed
FROM e
"""

# The next due time after this poll (see the module docstring); {born}: the row's age origin.
# A quarter of the microseconds, floored: the same on both engines (a double holds it exactly).
_NEXT_POLL = """
    $now + to_microseconds(CAST(greatest($min_us, least($max_us,
        floor(CAST(date_diff('microsecond',
                             CASE WHEN b.changed THEN $now
                                  ELSE coalesce({table}.last_change_at, {table}.{born}, $now)
                             END, $now) AS DOUBLE PRECISION) / 4))) AS BIGINT))
"""
_FINISHED_AT = f"""
    CASE WHEN {{table}}.finished_at IS NULL AND b.error IS NULL
              AND b.status IN {FINISHED_STATUSES} THEN $now
         ELSE {{table}}.finished_at END
"""


def _update_observed(table: str, observed: str, born: str, more: str = "") -> str:
    """UPDATE `table` (orders, or subscription_orders) from its rows of the `observed` temp
    table; `born`: the row's age origin for the next poll; `more`: further SET lines."""
    return f"""
UPDATE {table} SET
    status = b.status,
    raw_status = coalesce(b.raw_status, {table}.raw_status),
    charge = b.charge,
    start_count = b.start_count,
    remains = b.remains,
    currency = coalesce(b.currency, {table}.currency),{more}
    poll_error = b.error,
    updated_at = CASE WHEN b.changed THEN $now ELSE {table}.updated_at END,
    last_change_at = CASE WHEN b.changed THEN $now ELSE {table}.last_change_at END,
    finished_at = {_FINISHED_AT.format(table=table)},
    next_poll_at = {_NEXT_POLL.format(table=table, born=born)}
FROM {observed} b
WHERE {table}.panel = b.panel AND {table}.order_id = b.order_id
"""


_UPDATE_ORDERS = _update_observed(
    "orders",
    "_obs",
    born="submitted_at",
    more="""
    subscription_expiry = coalesce(b.subscription_expiry, orders.subscription_expiry),
    subscription_posts = coalesce(b.subscription_posts, orders.subscription_posts),
    subscription_orders = coalesce(b.subscription_orders, orders.subscription_orders),""",
)
_UPDATE_CHILDREN = _update_observed("subscription_orders", "_cobs", born="first_seen_at")

# Child ids a subscription lists for the first time: linked to its row, due now. An id that
# is a row of `orders`, or another subscription's child already, is left as it is.
_INSERT_NEW_CHILDREN = """
INSERT INTO subscription_orders
    (panel, order_id, subscription_ref, subscription_order_id, first_seen_at, next_poll_at)
SELECT panel, child_id, any_value(ref), any_value(order_id), $now, $now
FROM (
    SELECT panel, order_id, ref,
           CASE WHEN part ~ '^-?[0-9]{1,18}$' THEN CAST(part AS BIGINT) END AS child_id
    FROM (SELECT panel, order_id, ref, trim(unnest(string_split(subscription_orders, ','))) AS part
          FROM _obs WHERE is_subscription) AS parts
) c
WHERE child_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM subscription_orders s
                  WHERE s.panel = c.panel AND s.order_id = c.child_id)
  AND NOT EXISTS (SELECT 1 FROM orders x WHERE x.panel = c.panel AND x.order_id = c.child_id)
GROUP BY panel, child_id
"""

# A subscription's charge: the sum of its children's known charges (a refunded child without
# a charge counts 0), for the subscriptions this poll observed or whose children it observed.
_SUBSCRIPTION_CHARGES = f"""
UPDATE orders SET
    charge = c.charge,
    currency = coalesce(orders.currency, c.currency),
    updated_at = $now
FROM (
    SELECT s.panel, s.subscription_ref, sum(coalesce(s.charge, 0)) AS charge,
           min(s.currency) AS currency
    FROM subscription_orders s
    JOIN (SELECT panel, ref FROM _obs WHERE is_subscription
          UNION SELECT panel, subscription_ref FROM _cobs) t
      ON t.panel = s.panel AND t.ref = s.subscription_ref
    WHERE s.charge IS NOT NULL OR s.status IN {REFUNDED_STATUSES}
    GROUP BY s.panel, s.subscription_ref
) c
WHERE orders.panel = c.panel AND orders.ref = c.subscription_ref
  AND orders.charge IS DISTINCT FROM c.charge
"""


@dataclass(frozen=True)
class Cadence:
    min_minutes: float = 2.0
    max_minutes: float = 240.0


def _panel_filter(panels: Collection[str] | None) -> tuple[str, list]:
    if panels is None:
        return "", []
    return "AND list_contains(?, panel)", [sorted(panels)]


def due_orders(
    conn: duckdb.DuckDBPyConnection, now: datetime, *, poll_all: bool = False
) -> pd.DataFrame:
    """(panel, order_id) of every unfinished order due now (all unfinished with poll_all):
    the rows of `orders` and the child orders of subscriptions alike, most overdue first
    (never polled, then by due time; then panel, order_id)."""
    due = "" if poll_all else "AND (next_poll_at IS NULL OR next_poll_at <= ?)"
    items = _OPEN_ITEMS.format(panel_filter=due)
    return conn.execute(
        f"SELECT panel, order_id FROM ({items}) AS items "
        "ORDER BY next_poll_at ASC NULLS FIRST, panel, order_id",
        [] if poll_all else [now, now],
    ).df()


def open_summary_by_panel(
    conn: duckdb.DuckDBPyConnection, panels: Collection[str] | None = None
) -> dict[str, tuple[int, datetime | None]]:
    """Per panel: how many orders are unfinished (subscriptions' child orders included) and
    when the next one is due (a never-polled one: since it was placed or first seen).

    With `panels`, exactly those panels, a panel without open orders as (0, None); without,
    the panels that have open orders."""
    panel_filter, params = _panel_filter(panels)
    items = _OPEN_ITEMS.format(panel_filter=panel_filter)
    rows = conn.execute(
        f"SELECT panel, count(*), min(due_at) FROM ({items}) AS items GROUP BY panel",
        params * 2,
    ).fetchall()
    found = {panel: (int(n), next_due) for panel, n, next_due in rows}
    if panels is None:
        return dict(sorted(found.items()))
    return {panel: found.get(panel, (0, None)) for panel in sorted(panels)}


def open_summary(
    conn: duckdb.DuckDBPyConnection, panels: Collection[str] | None = None
) -> tuple[int, datetime | None]:
    """How many orders are unfinished (subscriptions' child orders included), and when the
    next one is due: of `panels` only when given (the enabled ones: a disabled panel's orders
    are never polled, so counting them would keep the status sensor launching runs that poll
    nothing)."""
    panel_filter, params = _panel_filter(panels)
    items = _OPEN_ITEMS.format(panel_filter=panel_filter)
    count, next_due = conn.execute(
        f"SELECT count(*), min(due_at) FROM ({items}) AS items", params * 2
    ).fetchall()[0]
    return int(count), next_due


def open_by_panel(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Unfinished orders per panel (subscriptions' child orders included)."""
    return {panel: n for panel, (n, _) in open_summary_by_panel(conn).items()}


def apply_observations(
    conn: duckdb.DuckDBPyConnection, observations: pd.DataFrame, now: datetime, cadence: Cadence
) -> tuple[int, int]:
    """Write one poll's answers set-based, in one transaction: history rows for the orders
    and child orders whose observed values changed, their current values and next due time,
    the child orders subscriptions list for the first time, and the subscriptions' charges
    (the sum of their children's). Returns (changed orders and child orders, per-item errors).
    """
    if observations.empty:
        return 0, 0
    obs = observations[OBSERVATION_COLUMNS].copy()
    params = {
        "now": now,
        "min_us": int(cadence.min_minutes * 60_000_000),
        "max_us": int(cadence.max_minutes * 60_000_000),
    }
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.register("_obs_raw", obs)
        try:
            conn.execute(_TYPED_OBSERVATIONS)
        finally:
            conn.unregister("_obs_raw")
        conn.execute(_ORDER_OBSERVATIONS)
        conn.execute(_CHILD_OBSERVATIONS)
        conn.execute(
            """
            INSERT INTO order_status_history
                (panel, order_id, observed_at, status, raw_status, charge, start_count, remains)
            SELECT panel, order_id, $now, status, raw_status, charge, start_count, remains
            FROM (SELECT panel, order_id, status, raw_status, charge, start_count, remains,
                         changed FROM _obs
                  UNION ALL
                  SELECT panel, order_id, status, raw_status, charge, start_count, remains,
                         changed FROM _cobs) AS observed
            WHERE changed
            """,
            {"now": now},
        )
        conn.execute(_UPDATE_ORDERS, params)
        conn.execute(_UPDATE_CHILDREN, params)
        conn.execute(_INSERT_NEW_CHILDREN, {"now": now})
        conn.execute(_SUBSCRIPTION_CHARGES, {"now": now})
        changed, errors = conn.execute(
            """
            SELECT count(*) FILTER (WHERE changed), count(*) FILTER (WHERE error IS NOT NULL)
            FROM (SELECT changed, error FROM _obs UNION ALL SELECT changed, error FROM _cobs) AS b
            """
        ).fetchall()[0]
        for table in ("_obs_typed", "_obs", "_cobs"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(changed), int(errors)
