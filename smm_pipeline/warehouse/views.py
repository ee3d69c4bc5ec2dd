"""Analytics views (SPEC §5): what was spent, what was delivered, which panel to use next.

Views rather than tables so that they are always as fresh as the tables and survive the copy
into the read-only replica. Money stays DECIMAL end to end: DuckDB turns `DECIMAL / DECIMAL`
into a DOUBLE, so money is divided with `money_div`, an exact, half-away-from-zero division on
micro-units. Amounts in different currencies are never added up: currency is a grouping column.

`order_facts` holds the per-order derivations (effective spend, delivered quantity, minutes to
start and finish) that the reporting views share, so each rule lives in one place:

- spend: the panel's charge when known; 0 for pending, failed and abandoned rows; the
  estimated cost for a sent order whose charge the panel has not reported yet (marked by
  `spend_is_estimate`, summed separately as `estimated_charge`).
- currency: the order's own, else the panel's latest balance currency.
- finished: status Completed, Partial, Canceled or Refunded; "canceled" counts Refunded too.
- delivered: quantity − remains for finished orders (a Completed order without remains
  delivered everything, another without remains delivered nothing), never below 0.
"""

from __future__ import annotations

import duckdb

VIEW_NAMES = (
    "order_facts",
    "spend_daily",
    "delivery_by_service",
    "provider_scorecard",
    "price_changes",
    "balance_runway",
)

# num / den rounded half away from zero to 6 places, exactly; NULL when den is 0 or NULL.
MONEY_DIV = """
CREATE OR REPLACE MACRO money_div(num, den) AS (
    CASE
        WHEN num IS NULL OR den IS NULL OR den = 0 THEN NULL
        ELSE CAST(
            sign(CAST(num AS DECIMAL(38,6))) * sign(CAST(den AS DECIMAL(38,6)))
            * ((2 * abs(CAST(CAST(num AS DECIMAL(38,6)) * 1000000 AS HUGEINT)) * 1000000
                + abs(CAST(CAST(den AS DECIMAL(38,6)) * 1000000 AS HUGEINT)))
               // (2 * abs(CAST(CAST(den AS DECIMAL(38,6)) * 1000000 AS HUGEINT))))
            AS DECIMAL(38,0)) * CAST(0.000001 AS DECIMAL(7,6))
    END
)
"""

ORDER_FACTS = """
CREATE OR REPLACE VIEW order_facts AS
WITH panel_currency AS (
    SELECT panel, arg_max(currency, fetched_at) AS currency FROM balances GROUP BY panel
),
first_start AS (
    SELECT panel, order_id, min(observed_at) AS started_at
    FROM order_status_history
    WHERE status IN ('In progress', 'Processing', 'Completed')
    GROUP BY panel, order_id
),
base AS (
    SELECT
        o.*,
        s.name AS service_name,
        s.category,
        s.type AS catalog_type,
        COALESCE(o.currency, pc.currency) AS effective_currency,
        COALESCE(o.submitted_at, o.created_at) AS placed_at,
        o.status IN ('Completed', 'Partial', 'Canceled', 'Refunded') AS finished,
        fs.started_at
    FROM orders AS o
    LEFT JOIN services AS s ON s.panel = o.panel AND s.service_id = o.service_id
    LEFT JOIN panel_currency AS pc ON pc.panel = o.panel
    LEFT JOIN first_start AS fs ON fs.panel = o.panel AND fs.order_id = o.order_id
)
SELECT
    panel,
    ref,
    order_id,
    campaign,
    service_id,
    service_name,
    category,
    COALESCE(service_type, catalog_type) AS service_type,
    submit_state,
    status,
    quantity,
    remains,
    effective_currency AS currency,
    placed_at,
    CAST(timezone('UTC', placed_at) AS DATE) AS day,
    submitted_at,
    started_at,
    finished_at,
    finished,
    CAST(CASE
        WHEN submit_state IN ('pending', 'failed', 'abandoned') THEN 0
        WHEN charge IS NOT NULL THEN charge
        ELSE COALESCE(estimated_cost, 0)
    END AS DECIMAL(18,6)) AS spend,
    submit_state IN ('sending', 'submitted', 'ambiguous') AND charge IS NULL AS spend_is_estimate,
    CASE WHEN finished THEN greatest(
        quantity - COALESCE(remains, CASE WHEN status = 'Completed' THEN 0 ELSE quantity END),
        0)
    END AS delivered_quantity,
    epoch(started_at - submitted_at) / 60.0 AS minutes_to_start,
    CASE WHEN finished THEN epoch(finished_at - submitted_at) / 60.0 END AS minutes_to_finish
FROM base
"""

SPEND_DAILY = """
CREATE OR REPLACE VIEW spend_daily AS
SELECT
    day,
    panel,
    currency,
    category,
    service_id,
    service_name,
    campaign,
    count(*) AS orders,
    sum(spend) AS charge,
    sum(CASE WHEN spend_is_estimate THEN spend ELSE 0 END) AS estimated_charge
FROM order_facts
WHERE submit_state <> 'pending'
GROUP BY day, panel, currency, category, service_id, service_name, campaign
"""

DELIVERY_BY_SERVICE = """
CREATE OR REPLACE VIEW delivery_by_service AS
WITH per_service AS (
    SELECT
        panel,
        service_id,
        any_value(service_name) AS service_name,
        any_value(category) AS category,
        currency,
        count(*) AS orders,
        count(*) FILTER (WHERE status = 'Completed') AS completed,
        count(*) FILTER (WHERE status = 'Partial') AS partial,
        count(*) FILTER (WHERE status IN ('Canceled', 'Refunded')) AS canceled,
        count(*) FILTER (WHERE finished) AS finished,
        COALESCE(sum(delivered_quantity), 0) AS delivered_quantity,
        median(minutes_to_start) AS median_minutes_to_start,
        median(minutes_to_finish) AS median_minutes_to_finish,
        sum(spend) FILTER (WHERE finished) AS finished_charge
    FROM order_facts
    WHERE submit_state = 'submitted'
    GROUP BY panel, service_id, currency
)
SELECT
    panel,
    service_id,
    service_name,
    category,
    currency,
    orders,
    completed,
    partial,
    canceled,
    finished,
    delivered_quantity,
    round(completed / nullif(finished, 0), 4) AS completion_rate,
    round(median_minutes_to_start, 1) AS median_minutes_to_start,
    round(median_minutes_to_finish, 1) AS median_minutes_to_finish,
    CAST(money_div(finished_charge * 1000, delivered_quantity) AS DECIMAL(18,6))
        AS cost_per_1000_delivered
FROM per_service
"""

PROVIDER_SCORECARD = """
CREATE OR REPLACE VIEW provider_scorecard AS
WITH panel_currency AS (
    SELECT panel, arg_max(currency, fetched_at) AS currency FROM balances GROUP BY panel
),
prices AS (
    SELECT
        panel,
        category,
        count(*) AS active_services,
        money_div(
            sum(rate) FILTER (WHERE type NOT ILIKE '%package%'),
            count(*) FILTER (WHERE type NOT ILIKE '%package%')
        ) AS price_per_1000
    FROM services
    WHERE active
    GROUP BY panel, category
),
order_stats AS (
    SELECT
        panel,
        category,
        count(*) AS orders,
        count(*) FILTER (WHERE finished) AS finished,
        count(*) FILTER (WHERE status = 'Completed') AS completed,
        count(*) FILTER (WHERE status = 'Partial') AS partial,
        median(minutes_to_finish) AS median_minutes_to_finish
    FROM order_facts
    WHERE submit_state = 'submitted'
    GROUP BY panel, category
),
refill_stats AS (
    SELECT
        r.panel,
        f.category,
        count(DISTINCT r.order_id) AS orders_refilled,
        count(*) AS refills,
        count(*) FILTER (WHERE r.status = 'Completed') AS refills_completed
    FROM refills AS r
    JOIN order_facts AS f ON f.panel = r.panel AND f.order_id = r.order_id
    WHERE r.request_state = 'submitted'
    GROUP BY r.panel, f.category
)
SELECT
    panel,
    category,
    pc.currency,
    CAST(p.price_per_1000 AS DECIMAL(18,6)) AS price_per_1000,
    COALESCE(p.active_services, 0) AS active_services,
    COALESCE(o.orders, 0) AS orders,
    COALESCE(o.finished, 0) AS finished,
    round(o.completed / nullif(o.finished, 0), 4) AS completion_rate,
    round(o.partial / nullif(o.finished, 0), 4) AS partial_rate,
    round(COALESCE(r.orders_refilled, 0) / nullif(o.finished, 0), 4) AS refill_rate,
    round(r.refills_completed / nullif(r.refills, 0), 4) AS refill_success,
    round(o.median_minutes_to_finish, 1) AS median_minutes_to_finish
FROM prices AS p
FULL JOIN order_stats AS o USING (panel, category)
LEFT JOIN refill_stats AS r USING (panel, category)
LEFT JOIN panel_currency AS pc USING (panel)
"""

PRICE_CHANGES = """
CREATE OR REPLACE VIEW price_changes AS
WITH rates AS (
    SELECT
        panel,
        service_id,
        changed_at,
        CAST(old_value AS DECIMAL(18,6)) AS old_rate,
        CAST(new_value AS DECIMAL(18,6)) AS new_rate
    FROM service_changes
    WHERE field = 'rate'
)
SELECT
    r.panel,
    r.service_id,
    s.name,
    s.category,
    r.changed_at,
    r.old_rate,
    r.new_rate,
    CAST(round(money_div((r.new_rate - r.old_rate) * 100, r.old_rate), 2) AS DECIMAL(18,2))
        AS change_pct
FROM rates AS r
LEFT JOIN services AS s ON s.panel = r.panel AND s.service_id = r.service_id
"""

BALANCE_RUNWAY = """
CREATE OR REPLACE VIEW balance_runway AS
WITH latest AS (
    SELECT
        panel,
        max(fetched_at) AS fetched_at,
        arg_max(balance, fetched_at) AS balance,
        arg_max(currency, fetched_at) AS currency
    FROM balances
    GROUP BY panel
),
recent_spend AS (
    SELECT panel, currency, sum(spend) AS spend_7d
    FROM order_facts
    WHERE submit_state <> 'pending' AND placed_at >= now() - INTERVAL 7 DAY
    GROUP BY panel, currency
)
SELECT
    l.panel,
    l.fetched_at,
    l.balance,
    l.currency,
    CAST(COALESCE(s.spend_7d, 0) AS DECIMAL(18,6)) AS spend_7d,
    CAST(money_div(COALESCE(s.spend_7d, 0), 7) AS DECIMAL(18,6)) AS spend_per_day,
    CASE WHEN s.spend_7d > 0
        THEN CAST(round(money_div(greatest(l.balance, 0) * 7, s.spend_7d), 2) AS DECIMAL(18,2))
    END AS days_left
FROM latest AS l
LEFT JOIN recent_spend AS s
    ON s.panel = l.panel AND s.currency IS NOT DISTINCT FROM l.currency
"""

_STATEMENTS = (
    MONEY_DIV,
    ORDER_FACTS,
    SPEND_DAILY,
    DELIVERY_BY_SERVICE,
    PROVIDER_SCORECARD,
    PRICE_CHANGES,
    BALANCE_RUNWAY,
)


def create_views(conn: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the `money_div` macro and every analytics view, in dependency order."""
    for statement in _STATEMENTS:
        conn.execute(statement)
