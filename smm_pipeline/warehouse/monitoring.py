"""Queries behind the operator's checks: what needs a human's eye right now.

Finished means `FINISHED_STATUSES` (panel/statuses.py), the one definition the poller uses too.

`ambiguous_submissions` lists every request whose outcome is unknown and may have spent money or
changed something on a panel, one row each with its `kind` and `state`:

- order `ambiguous`: the add may have reached the panel (resolve_ambiguous_orders);
- order `sending` whose claiming process is gone (a live one's rows are in flight, not
  listed): the next submission or resolve run settles it from that process's journal;
- order `pending` for longer than `STALE_PENDING_MINUTES`: recorded but never sent, because its
  run died before sending it (re-executing the run, or a resubmit, sends it). Younger pending
  rows are a run at work;
- refill `ambiguous`, until a later refill request of the same order is recorded (dropping a
  new file naming the order settles it: the panel accepts or refuses it);
- cancel `ambiguous`, until the order finishes (its final status says whether the cancel
  happened) or a later cancel request of the order is recorded.

`stuck_orders` leaves out Subscriptions: a subscription runs until its expiry or post count by
design, so its age says nothing about being stuck.
"""

from __future__ import annotations

from collections.abc import Collection

import duckdb
import pandas as pd

from smm_pipeline.panel.statuses import FINISHED_STATUSES

STALE_PENDING_MINUTES = 30


def ambiguous_submissions(
    conn: duckdb.DuckDBPyConnection,
    pending_minutes: float = STALE_PENDING_MINUTES,
    live_claims: Collection[str] = (),
) -> pd.DataFrame:
    """`live_claims`: claim ids of processes sending right now (journal.live_claim_ids);
    their `sending` rows are in flight, not left behind."""
    return conn.execute(
        f"""
        SELECT * FROM (
            SELECT 'order' AS kind, submit_state AS state, panel, ref, order_id, source_file,
                   row_number, service_id, link, quantity,
                   CAST(estimated_cost AS VARCHAR) AS estimated_cost, created_at AS since,
                   submit_error AS error
            FROM orders
            WHERE submit_state = 'ambiguous'
               OR (submit_state = 'sending'
                   AND NOT coalesce(list_contains(?::VARCHAR[], claim_id), false))
               OR (submit_state = 'pending'
                   AND created_at < now() - to_milliseconds(CAST(? * 60000 AS BIGINT)))
            UNION ALL
            SELECT 'refill', 'ambiguous', r.panel, o.ref, r.order_id, r.source_file, NULL,
                   o.service_id, o.link, o.quantity, NULL, r.requested_at, r.error
            FROM refills r
            LEFT JOIN orders o ON o.panel = r.panel AND o.order_id = r.order_id
            WHERE r.request_state = 'ambiguous' AND NOT EXISTS (
                SELECT 1 FROM refills later WHERE later.panel = r.panel
                  AND later.order_id = r.order_id AND later.requested_at > r.requested_at)
            UNION ALL
            SELECT 'cancel', 'ambiguous', c.panel, o.ref, c.order_id, c.source_file, NULL,
                   o.service_id, o.link, o.quantity, NULL, c.requested_at, c.error
            FROM cancels c
            LEFT JOIN orders o ON o.panel = c.panel AND o.order_id = c.order_id
            WHERE c.result = 'ambiguous'
              AND coalesce(o.status, '') NOT IN {FINISHED_STATUSES}
              AND NOT EXISTS (
                SELECT 1 FROM cancels later WHERE later.panel = c.panel
                  AND later.order_id = c.order_id AND later.requested_at > c.requested_at)
        ) AS ambiguous
        ORDER BY kind = 'order' DESC, kind, panel, since, ref
        """,
        [list(live_claims), pending_minutes],
    ).df()


def stuck_orders(conn: duckdb.DuckDBPyConnection, hours: float) -> pd.DataFrame:
    return conn.execute(
        f"""
        SELECT panel, order_id, ref, service_id, status, remains, submitted_at,
               round(date_diff('minute', submitted_at, now()) / 60.0, 1) AS hours_open
        FROM orders
        WHERE submit_state = 'submitted' AND coalesce(status, 'Pending') NOT IN {FINISHED_STATUSES}
          AND coalesce(service_type, '') <> 'Subscriptions'
          AND submitted_at < now() - to_milliseconds(CAST(? * 3600000 AS BIGINT))
        ORDER BY submitted_at
        """,
        [hours],
    ).df()


def orders_on_vanished_services(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute(
        f"""
        SELECT o.panel, o.order_id, o.ref, o.service_id, s.name AS service_name, o.status,
               s.last_seen_at AS service_last_seen_at
        FROM orders o JOIN services s ON s.panel = o.panel AND s.service_id = o.service_id
        WHERE NOT s.active AND o.submit_state = 'submitted'
          AND coalesce(o.status, 'Pending') NOT IN {FINISHED_STATUSES}
        ORDER BY o.panel, o.order_id
        """
    ).df()
