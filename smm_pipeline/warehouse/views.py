"""Analytics views (SPEC §5): what was spent, what was delivered, which panel to use next.

Views rather than tables so that they are always as fresh as the tables and survive the copy
into the read-only replica. Money stays DECIMAL end to end and sums of money stay at the stored
`MONEY_TYPE` (DECIMAL(38,18)), so a spend total is exact. DuckDB turns `DECIMAL / DECIMAL` into
a DOUBLE, so ratios are divided with `money_div`: exact long division on 18-place integers,
rounded half away from zero to 6 places (exact for any DECIMAL(38,18) numerator and a divisor
below 8.5·10^13; beyond that DuckDB raises an overflow error, never a wrong number). Derived
ratios are therefore rounded: cost and price per 1000 and spend per day to 6 places, change_pct
and days_left to 2, rates to 4. Amounts in different currencies are never added up: currency is
a grouping column.

`order_facts` holds the per-order derivations (effective spend, delivered quantity, minutes to
start and finish) that the reporting views share, so each rule lives in one place:

- reached_panel: submit_state sending, submitted or ambiguous (the add did or may have reached
  the panel); only these rows are orders in spend_daily and balance_runway. An ambiguous row
  whose add was answered with the order id another row holds (`answered_order_id`) is that
  same order as far as money goes: it is not counted a second time.
- spend: the panel's charge when known; 0 for pending, failed and abandoned rows; 0 for a
  Canceled/Refunded order whose panel reported no charge (it was refunded); otherwise the
  estimated cost for a sent order whose charge the panel has not reported yet (marked by
  `spend_is_estimate`, summed separately as `estimated_charge`).
- currency: the order's own, else the panel's latest balance currency.
- finished: a status of `FINISHED_STATUSES` (Completed, Partial, Canceled, Refunded, and
  Expired for subscriptions); "canceled" counts Refunded too. An Expired subscription ran its
  course, so completion rates count it with Completed.
- started: the first status observed In progress, Processing, Completed or Partial.
- delivered: quantity − remains for finished orders (a Completed order without remains
  delivered everything, another without remains delivered nothing), never below 0; NULL when
  the order has no quantity (Package, Subscriptions), so cost per 1000 delivered counts only
  the charge of orders with a delivered quantity.
- minutes to finish: only Completed and Partial orders (a cancel says nothing of speed, and a
  subscription runs for its duration by design).

balance_runway divides the last 7 days' spend by the days of order history they cover (days
since the panel's first order, a started day counting as one: 1 to 7), so a panel used since
yesterday is not shown a week of runway it has not earned. price_changes reads rates with
TRY_CAST: a change value that is not a number gives NULL rates on its row instead of an error.
"""

from __future__ import annotations

import duckdb

from smm_pipeline.panel.statuses import FINISHED_REFILL_STATUSES, FINISHED_STATUSES
from smm_pipeline.warehouse.schema import MONEY_TYPE

RUNWAY_DAYS = 7  # balance_runway's spend window
FINISHED_REFILLS = tuple(sorted(FINISHED_REFILL_STATUSES))

VIEW_NAMES = (
    "order_facts",
    "spend_daily",
    "delivery_by_service",
    "provider_scorecard",
    "price_changes",
    "balance_runway",
)

# The exact integer of x at 18 places (x * 10^18), split so that no DECIMAL step overflows.
MONEY_UNITS = """
CREATE OR REPLACE MACRO money_units(x) AS (
    CAST(trunc(CAST(x AS DECIMAL(38,18))) AS HUGEINT) * CAST(1000000000000000000 AS HUGEINT)
    + CAST((CAST(x AS DECIMAL(38,18)) - trunc(CAST(x AS DECIMAL(38,18))))
           * 1000000000000000000 AS HUGEINT)
)
"""

# num / den rounded half away from zero to 6 places, exactly; NULL when den is 0 or NULL.
# Long division on 18-place integers: the whole part, then the remainder's 6 places.
MONEY_DIV = """
CREATE OR REPLACE MACRO money_div(num, den) AS (
    CASE
        WHEN num IS NULL OR den IS NULL OR den = 0 THEN NULL
        ELSE CAST(
            sign(money_units(num)) * sign(money_units(den))
            * (abs(money_units(num)) // abs(money_units(den)) * 1000000
               + (2 * (abs(money_units(num)) % abs(money_units(den))) * 1000000
                  + abs(money_units(den)))
                 // (2 * abs(money_units(den))))
            AS DECIMAL(38,0)) * CAST(0.000001 AS DECIMAL(7,6))
    END
)
"""

ORDER_FACTS = f"""
CREATE OR REPLACE VIEW order_facts AS
WITH panel_currency AS (
    SELECT panel, arg_max(currency, fetched_at) AS currency FROM balances GROUP BY panel
),
first_start AS (
    SELECT panel, order_id, min(observed_at) AS started_at
    FROM order_status_history
    WHERE status IN ('In progress', 'Processing', 'Completed', 'Partial')
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
        o.submit_state IN ('sending', 'submitted', 'ambiguous')
            AND o.answered_order_id IS NULL AS reached_panel,
        COALESCE(o.status IN {FINISHED_STATUSES}, false) AS finished,
        COALESCE(o.status IN ('Canceled', 'Refunded'), false) AS refunded,
        COALESCE(o.status IN ('Completed', 'Partial'), false) AS delivered,
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
    reached_panel,
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
        WHEN NOT reached_panel THEN 0
        WHEN charge IS NOT NULL THEN charge
        WHEN refunded THEN 0
        ELSE COALESCE(estimated_cost, 0)
    END AS {MONEY_TYPE}) AS spend,
    reached_panel AND charge IS NULL AND NOT refunded AS spend_is_estimate,
    CASE WHEN finished AND quantity IS NOT NULL THEN greatest(
        quantity - COALESCE(remains, CASE WHEN status = 'Completed' THEN 0 ELSE quantity END),
        0)
    END AS delivered_quantity,
    epoch(started_at - submitted_at) / 60.0 AS minutes_to_start,
    CASE WHEN delivered THEN epoch(finished_at - submitted_at) / 60.0 END AS minutes_to_finish
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
WHERE reached_panel
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
        count(*) FILTER (WHERE status = 'Expired') AS expired,
        count(*) FILTER (WHERE finished) AS finished,
        count(quantity) AS with_quantity,
        sum(delivered_quantity) AS delivered_quantity,
        median(minutes_to_start) AS median_minutes_to_start,
        median(minutes_to_finish) AS median_minutes_to_finish,
        sum(spend) FILTER (WHERE delivered_quantity IS NOT NULL) AS measured_charge
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
    expired,
    finished,
    CASE WHEN with_quantity > 0 THEN COALESCE(delivered_quantity, 0) END AS delivered_quantity,
    round((completed + expired) / nullif(finished, 0), 4) AS completion_rate,
    round(median_minutes_to_start, 1) AS median_minutes_to_start,
    round(median_minutes_to_finish, 1) AS median_minutes_to_finish,
    money_div(measured_charge * 1000, delivered_quantity) AS cost_per_1000_delivered
FROM per_service
"""

PROVIDER_SCORECARD = f"""
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
        count(*) FILTER (WHERE status IN ('Completed', 'Expired')) AS completed,
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
        count(*) FILTER (WHERE r.status IN {FINISHED_REFILLS}) AS refills_finished,
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
    p.price_per_1000,
    COALESCE(p.active_services, 0) AS active_services,
    COALESCE(o.orders, 0) AS orders,
    COALESCE(o.finished, 0) AS finished,
    round(o.completed / nullif(o.finished, 0), 4) AS completion_rate,
    round(o.partial / nullif(o.finished, 0), 4) AS partial_rate,
    round(COALESCE(r.orders_refilled, 0) / nullif(o.finished, 0), 4) AS refill_rate,
    round(r.refills_completed / nullif(r.refills_finished, 0), 4) AS refill_success,
    round(o.median_minutes_to_finish, 1) AS median_minutes_to_finish
FROM prices AS p
FULL JOIN order_stats AS o USING (panel, category)
LEFT JOIN refill_stats AS r USING (panel, category)
LEFT JOIN panel_currency AS pc USING (panel)
"""

PRICE_CHANGES = f"""
CREATE OR REPLACE VIEW price_changes AS
WITH rates AS (
    SELECT
        panel,
        service_id,
        changed_at,
        TRY_CAST(old_value AS {MONEY_TYPE}) AS old_rate,
        TRY_CAST(new_value AS {MONEY_TYPE}) AS new_rate
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

BALANCE_RUNWAY = f"""
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
history AS (
    SELECT
        panel,
        least({RUNWAY_DAYS},
              CAST(floor(epoch(now() - min(placed_at)) / 86400) AS BIGINT) + 1) AS days_covered
    FROM order_facts
    WHERE reached_panel
    GROUP BY panel
),
recent_spend AS (
    SELECT panel, currency, sum(spend) AS spend_7d
    FROM order_facts
    WHERE reached_panel AND placed_at >= now() - INTERVAL {RUNWAY_DAYS} DAY
    GROUP BY panel, currency
)
SELECT
    l.panel,
    l.fetched_at,
    l.balance,
    l.currency,
    CAST(COALESCE(s.spend_7d, 0) AS {MONEY_TYPE}) AS spend_7d,
    h.days_covered,
    COALESCE(money_div(s.spend_7d, h.days_covered), 0) AS spend_per_day,
    CASE WHEN s.spend_7d > 0
        THEN CAST(round(money_div(greatest(l.balance, 0) * h.days_covered, s.spend_7d), 2)
                  AS DECIMAL(18,2))
    END AS days_left
FROM latest AS l
LEFT JOIN history AS h ON h.panel = l.panel
LEFT JOIN recent_spend AS s
    ON s.panel = l.panel AND s.currency IS NOT DISTINCT FROM l.currency
"""

_STATEMENTS = (
    MONEY_UNITS,
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
