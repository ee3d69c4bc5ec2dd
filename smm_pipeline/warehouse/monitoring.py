"""Queries behind the operator's checks: what needs a human's eye right now."""

from __future__ import annotations

import duckdb
import pandas as pd

FINISHED = ("Completed", "Partial", "Canceled", "Refunded")


def ambiguous_submissions(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute(
        """
        SELECT panel, ref, source_file, row_number, service_id, link, quantity,
               CAST(estimated_cost AS VARCHAR) AS estimated_cost, submit_error
        FROM orders WHERE submit_state = 'ambiguous' ORDER BY panel, created_at, ref
        """
    ).df()


def stuck_orders(conn: duckdb.DuckDBPyConnection, hours: float) -> pd.DataFrame:
    return conn.execute(
        f"""
        SELECT panel, order_id, ref, service_id, status, remains, submitted_at,
               round(date_diff('minute', submitted_at, now()) / 60.0, 1) AS hours_open
        FROM orders
        WHERE submit_state = 'submitted' AND coalesce(status, 'Pending') NOT IN {FINISHED}
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
          AND coalesce(o.status, 'Pending') NOT IN {FINISHED}
        ORDER BY o.panel, o.order_id
        """
    ).df()
