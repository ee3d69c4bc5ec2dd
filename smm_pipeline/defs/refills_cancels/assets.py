"""`refills` and `cancels`: the requests sent for existing orders, as assets (written by the
refill and cancel file jobs and the refill-status poll)."""

import dagster as dg

from smm_pipeline.lib.poll_requests import CANCELS_KEY, ORDERS_KEY, REFILLS_KEY

refills_asset = dg.AssetSpec(
    REFILLS_KEY,
    deps=[ORDERS_KEY],
    group_name="orders",
    kinds={"duckdb"},
    description="One row per refill request sent to a panel (request_state submitted, failed "
    "or ambiguous) and the refill's status, written by request_refills and "
    "poll_refill_statuses.",
)
cancels_asset = dg.AssetSpec(
    CANCELS_KEY,
    deps=[ORDERS_KEY],
    group_name="orders",
    kinds={"duckdb"},
    description="One row per cancel request sent to a panel (result accepted, refused or "
    "ambiguous), written by cancel_orders.",
)
