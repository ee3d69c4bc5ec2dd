"""`orders`: the outbox and every order's status, as an asset.

It is written by op jobs (submission, polls, cancel files, resolution), which report each write
as a materialization carrying what the status sensors read. It depends on the catalog and the
balances: every row is validated against the one and budgeted against the other.
"""

import dagster as dg

from smm_pipeline.lib.poll_requests import ORDERS_KEY

orders_asset = dg.AssetSpec(
    ORDERS_KEY,
    deps=["service_catalog", "panel_balances"],
    group_name="orders",
    kinds={"duckdb"},
    description="One row per CSV order row: the outbox (submit_state) and the panel's status, "
    "written by submit_orders, poll_order_statuses, cancel_orders and "
    "resolve_ambiguous_orders.",
)
