"""The tables of migration 001 (README, The warehouse (DuckDB), plus the columns the pipeline
needs), and the tables later migrations add (`SUBSCRIPTION_ORDERS`, migration 006).

Money was DECIMAL(18,6) here; migration 003 widens every money column of `MONEY_COLUMNS` to
`MONEY_TYPE` (that list is migration 003's and stays as it is: later tables are created at
`MONEY_TYPE` directly). Every timestamp is TIMESTAMPTZ stored in UTC. The CHECK constraints pin
the state words the README lists, so a typo in a writer fails loudly instead of producing a row
no view counts.
"""

from __future__ import annotations

# 20 integer digits and 18 decimal places: a panel amount with up to 15 places (the parser's
# limit) times a quantity / 1000 is stored exactly, and sums of such amounts stay exact.
MONEY_TYPE = "DECIMAL(38,18)"
MONEY_COLUMNS = (
    ("services", "rate"),
    ("balances", "balance"),
    ("orders", "estimated_cost"),
    ("orders", "charge"),
    ("order_status_history", "charge"),
)

INITIAL_SCHEMA = """
CREATE TABLE services (
    panel VARCHAR NOT NULL,
    service_id BIGINT NOT NULL,
    name VARCHAR,
    type VARCHAR,
    category VARCHAR,
    rate DECIMAL(18,6),
    min BIGINT,
    max BIGINT,
    refill BOOLEAN,
    cancel BOOLEAN,
    active BOOLEAN NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (panel, service_id)
);

CREATE TABLE service_changes (
    panel VARCHAR NOT NULL,
    service_id BIGINT NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    field VARCHAR NOT NULL CHECK (field IN ('name', 'type', 'category', 'rate', 'min', 'max',
        'refill', 'cancel', 'appeared', 'disappeared', 'reappeared')),
    old_value VARCHAR,
    new_value VARCHAR
);

CREATE TABLE catalog_syncs (
    panel VARCHAR NOT NULL,
    synced_at TIMESTAMPTZ NOT NULL,
    services BIGINT NOT NULL,
    new BIGINT NOT NULL,
    changed BIGINT NOT NULL,
    vanished BIGINT NOT NULL,
    reappeared BIGINT NOT NULL
);

CREATE TABLE balances (
    panel VARCHAR NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL,
    balance DECIMAL(18,6) NOT NULL,
    currency VARCHAR
);

CREATE TABLE orders (
    panel VARCHAR NOT NULL,
    ref VARCHAR NOT NULL,
    order_id BIGINT,
    source_file VARCHAR,
    file_hash VARCHAR,
    row_number INTEGER,
    campaign VARCHAR,
    service_id BIGINT,
    service_type VARCHAR,
    link VARCHAR,
    quantity BIGINT,
    params VARCHAR,
    estimated_cost DECIMAL(18,6),
    created_at TIMESTAMPTZ,
    submitted_at TIMESTAMPTZ,
    submit_state VARCHAR NOT NULL CHECK (submit_state IN ('pending', 'sending', 'submitted',
        'ambiguous', 'failed', 'abandoned')),
    submit_error VARCHAR,
    status VARCHAR,
    raw_status VARCHAR,
    charge DECIMAL(18,6),
    start_count BIGINT,
    remains BIGINT,
    currency VARCHAR,
    updated_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    last_change_at TIMESTAMPTZ,
    next_poll_at TIMESTAMPTZ,
    poll_error VARCHAR,
    subscription_expiry VARCHAR,
    subscription_posts BIGINT,
    subscription_orders VARCHAR,
    PRIMARY KEY (panel, ref)
);

CREATE TABLE order_status_history (
    panel VARCHAR NOT NULL,
    order_id BIGINT NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL,
    status VARCHAR,
    raw_status VARCHAR,
    charge DECIMAL(18,6),
    start_count BIGINT,
    remains BIGINT
);

CREATE TABLE refills (
    panel VARCHAR NOT NULL,
    refill_id BIGINT,
    order_id BIGINT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    request_state VARCHAR NOT NULL CHECK (request_state IN ('submitted', 'failed', 'ambiguous')),
    error VARCHAR,
    source_file VARCHAR,
    status VARCHAR,
    raw_status VARCHAR,
    updated_at TIMESTAMPTZ
);

CREATE TABLE cancels (
    panel VARCHAR NOT NULL,
    order_id BIGINT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    result VARCHAR NOT NULL CHECK (result IN ('accepted', 'refused', 'ambiguous')),
    error VARCHAR,
    source_file VARCHAR
);

CREATE TABLE processed_files (
    file_hash VARCHAR PRIMARY KEY,
    kind VARCHAR,
    file_name VARCHAR,
    first_seen_at TIMESTAMPTZ,
    outcome VARCHAR,
    rows BIGINT
);
"""

# Migration 006: the child orders a subscription places, one per post (old posts too), as its
# status answer lists them (`orders`: the ids). They are orders like any other at the panel
# (status, charge, start_count, remains, currency) and are polled with the others; the views
# count their charges as the subscription's spend (views.py).
#
# - (panel, order_id) is the child's own order id at the panel: unique per panel, and never
#   the id of a CSV row in `orders` (an id that is one is not recorded here);
# - subscription_ref is the key of the subscription's row, orders(panel, ref);
#   subscription_order_id that row's order id (the subscription's id at the panel);
# - first_seen_at: when a poll first saw the id in the subscription's answer (the panel does
#   not say when it placed the child; this is the day its charge is counted on);
# - status ... currency, updated_at, finished_at, last_change_at, next_poll_at, poll_error:
#   as in `orders`; a new child is due at once (next_poll_at = first_seen_at; NULL, due now
#   too, for those migration 006 found in orders.subscription_orders), a finished one is never
#   polled again. Its history is in order_status_history under its own order id.
SUBSCRIPTION_ORDERS = f"""
CREATE TABLE subscription_orders (
    panel VARCHAR NOT NULL,
    order_id BIGINT NOT NULL,
    subscription_ref VARCHAR NOT NULL,
    subscription_order_id BIGINT NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    status VARCHAR,
    raw_status VARCHAR,
    charge {MONEY_TYPE},
    start_count BIGINT,
    remains BIGINT,
    currency VARCHAR,
    updated_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    last_change_at TIMESTAMPTZ,
    next_poll_at TIMESTAMPTZ,
    poll_error VARCHAR,
    PRIMARY KEY (panel, order_id)
)
"""
