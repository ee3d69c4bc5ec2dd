"""Analytics views (README, The warehouse): what was spent and delivered, which panel next.

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
  `spend_is_estimate`, summed separately as `estimated_charge`). Once a charge is known the
  row's estimate counts nowhere any more: its estimated_charge is 0.
- subscriptions: the panel charges a subscription nothing itself; it charges each child order
  the subscription places for a post (table `subscription_orders`). A subscription's spend is
  the sum of its children's charges as soon as one child's charge is known (a child refunded
  without a charge counts 0; a child not polled yet counts nothing until it is), marked by
  `spend_from_children`; before that, its estimate as for any order (`spend_is_estimate`).
  `child_orders` is the number of children recorded. The warehouse also keeps that sum as the
  row's `orders.charge` (status.py); the views read the children themselves.
- currency: the order's own, else the panel's latest balance currency.
- finished: a status of `FINISHED_STATUSES` (Completed, Partial, Canceled, Refunded, and
  Expired for subscriptions); "canceled" counts Refunded too. An Expired subscription ran its
  course, so completion rates count it with Completed.
- started: the first status observed In progress, Processing, Completed or Partial.
- delivered: quantity − remains for finished orders (a Completed order without remains
  delivered everything, another without remains delivered nothing), never below 0; NULL when
  the order has no quantity (Package) and for Subscriptions (their row's quantity is the
  per-post `max`, and the children's status gives no quantity), so cost per 1000 delivered
  counts only the charge of orders with a delivered quantity.
- minutes to finish: only Completed and Partial orders (a cancel says nothing of speed, and a
  subscription runs for its duration by design).

`spend_facts` holds every amount of money once, with the moment it counts at: each order row
that reached the panel at its `placed_at` (submitted_at, else created_at) with its spend,
except that a subscription whose spend comes from its children has 0 there and each charged
child is a row of its own at its `first_seen_at` (when a poll first saw the panel list it:
the panel does not say when it placed it; at most one subscription poll interval after).
So spend_daily puts a subscription's money on the days its posts were ordered and charged,
not all on the day it was submitted (a month-long subscription spends over the month), and a
day's total does not change later except by the charges of that day's orders. spend_daily's
`orders` counts the order rows placed that day (a subscription once, on its day) and
`subscription_orders` the child orders charged that day.

balance_runway divides the last 7 days' spend (spend_facts: a subscription's children by the
time they were seen) by the days of order history they cover (days since the panel's first
order, a started day counting as one: 1 to 7), so a panel used since yesterday is not shown a
week of runway it has not earned. price_changes reads a change's rates only when they are
plain decimal numbers: another value gives NULL rates on its row instead of an error.

The statements are the same on DuckDB and Postgres (warehouse/dialect.py): the median is
`percentile_cont(0.5) WITHIN GROUP`, a panel's latest reading a `row_number()` subquery, and
counts are divided as DOUBLE PRECISION. `money_div` is the macro below on DuckDB and a
function with the same results on Postgres (dialect.py: exact NUMERIC `div` and `mod`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import duckdb

from smm_pipeline.panel.statuses import FINISHED_REFILL_STATUSES, FINISHED_STATUSES
from smm_pipeline.warehouse.postgres import is_postgres
from smm_pipeline.warehouse.schema import MONEY_TYPE

SUBSCRIPTION_TYPE = "Subscriptions"

RUNWAY_DAYS = 7  # balance_runway's spend window
FINISHED_REFILLS = tuple(sorted(FINISHED_REFILL_STATUSES))

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

# Each panel's currency: that of its latest balance reading that has one.
PANEL_CURRENCY = """
    SELECT panel, currency FROM (
        SELECT panel, currency,
               row_number() OVER (PARTITION BY panel ORDER BY fetched_at DESC) AS newest
        FROM balances
        WHERE currency IS NOT NULL
    ) AS c
    WHERE newest = 1
"""


def _money_or_null(column: str) -> str:
    """The text `column` as money when it is a plain decimal number, else NULL (what DuckDB's
    TRY_CAST did, in SQL Postgres accepts too)."""
    return (
        f"CASE WHEN trim({column}) ~ '^[+-]?([0-9]{{1,20}}([.][0-9]*)?|[.][0-9]+)$' "
        f"THEN CAST(trim({column}) AS {MONEY_TYPE}) END"
    )


def _rounded(expr: str, places: int) -> str:
    """The DOUBLE `expr` rounded half away from zero to `places`, in IEEE operations both
    engines compute alike (their own round() of a double differs on halves: DuckDB rounds
    0.15 to 0.1, Postgres to 0.2; this gives 0.2 on both)."""
    scale = 10**places
    return f"sign({expr}) * floor(abs({expr}) * {scale} + 0.5) / {scale}"


def _ratio(num: str, den: str) -> str:
    """A rate of two counts, 4 places (NULL when `den` is 0); counts divide as doubles."""
    return _rounded(f"CAST({num} AS DOUBLE PRECISION) / nullif({den}, 0)", 4)


ORDER_FACTS = f"""
CREATE VIEW order_facts AS
WITH panel_currency AS ({PANEL_CURRENCY}),
first_start AS (
    SELECT panel, order_id, min(observed_at) AS started_at
    FROM order_status_history
    WHERE status IN ('In progress', 'Processing', 'Completed', 'Partial')
    GROUP BY panel, order_id
),
children AS (
    SELECT
        panel,
        subscription_ref,
        count(*) AS child_orders,
        sum(CASE WHEN charge IS NOT NULL THEN charge
                 WHEN status IN ('Canceled', 'Refunded') THEN 0 END) AS child_charge
    FROM subscription_orders
    GROUP BY panel, subscription_ref
),
base AS (
    SELECT
        o.*,
        s.name AS service_name,
        s.category,
        COALESCE(o.service_type, s.type) AS effective_type,
        COALESCE(o.currency, pc.currency) AS effective_currency,
        COALESCE(o.submitted_at, o.created_at) AS placed_at,
        o.submit_state IN ('sending', 'submitted', 'ambiguous')
            AND o.answered_order_id IS NULL AS reached_panel,
        COALESCE(o.status IN {FINISHED_STATUSES}, false) AS finished,
        COALESCE(o.status IN ('Canceled', 'Refunded'), false) AS refunded,
        COALESCE(o.status IN ('Completed', 'Partial'), false) AS delivered,
        fs.started_at,
        COALESCE(ch.child_orders, 0) AS child_orders,
        ch.child_charge IS NOT NULL AS spend_from_children,
        COALESCE(ch.child_charge, o.charge) AS known_charge
    FROM orders AS o
    LEFT JOIN services AS s ON s.panel = o.panel AND s.service_id = o.service_id
    LEFT JOIN panel_currency AS pc ON pc.panel = o.panel
    LEFT JOIN first_start AS fs ON fs.panel = o.panel AND fs.order_id = o.order_id
    LEFT JOIN children AS ch ON ch.panel = o.panel AND ch.subscription_ref = o.ref
)
SELECT
    panel,
    ref,
    order_id,
    campaign,
    service_id,
    service_name,
    category,
    effective_type AS service_type,
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
        WHEN known_charge IS NOT NULL THEN known_charge
        WHEN refunded THEN 0
        ELSE COALESCE(estimated_cost, 0)
    END AS {MONEY_TYPE}) AS spend,
    reached_panel AND known_charge IS NULL AND NOT refunded AS spend_is_estimate,
    reached_panel AND spend_from_children AS spend_from_children,
    child_orders,
    CASE WHEN finished AND quantity IS NOT NULL
              AND effective_type IS DISTINCT FROM '{SUBSCRIPTION_TYPE}' THEN greatest(
        quantity - COALESCE(remains, CASE WHEN status = 'Completed' THEN 0 ELSE quantity END),
        0)
    END AS delivered_quantity,
    epoch(started_at - submitted_at) / 60.0 AS minutes_to_start,
    CASE WHEN delivered THEN epoch(finished_at - submitted_at) / 60.0 END AS minutes_to_finish
FROM base
"""

# One row per amount of money, at the moment it counts (see the module docstring).
SPEND_FACTS = f"""
CREATE VIEW spend_facts AS
SELECT
    panel,
    ref,
    order_id,
    false AS is_subscription_order,
    campaign,
    service_id,
    service_name,
    category,
    currency,
    placed_at AS spent_at,
    day,
    CAST(CASE WHEN spend_from_children THEN 0 ELSE spend END AS {MONEY_TYPE}) AS spend,
    spend_is_estimate
FROM order_facts
WHERE reached_panel
UNION ALL
SELECT
    c.panel,
    f.ref,
    c.order_id,
    true AS is_subscription_order,
    f.campaign,
    f.service_id,
    f.service_name,
    f.category,
    COALESCE(c.currency, f.currency) AS currency,
    c.first_seen_at AS spent_at,
    CAST(timezone('UTC', c.first_seen_at) AS DATE) AS day,
    CAST(COALESCE(c.charge, 0) AS {MONEY_TYPE}) AS spend,
    false AS spend_is_estimate
FROM subscription_orders AS c
JOIN order_facts AS f ON f.panel = c.panel AND f.ref = c.subscription_ref
WHERE f.reached_panel AND (c.charge IS NOT NULL OR c.status IN ('Canceled', 'Refunded'))
"""

SPEND_DAILY = """
CREATE VIEW spend_daily AS
SELECT
    day,
    panel,
    currency,
    category,
    service_id,
    service_name,
    campaign,
    count(*) FILTER (WHERE NOT is_subscription_order) AS orders,
    count(*) FILTER (WHERE is_subscription_order) AS subscription_orders,
    sum(spend) AS charge,
    sum(CASE WHEN spend_is_estimate THEN spend ELSE 0 END) AS estimated_charge
FROM spend_facts
GROUP BY day, panel, currency, category, service_id, service_name, campaign
"""

DELIVERY_BY_SERVICE = f"""
CREATE VIEW delivery_by_service AS
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
        count(quantity) FILTER (WHERE service_type IS DISTINCT FROM '{SUBSCRIPTION_TYPE}')
            AS with_quantity,
        sum(delivered_quantity) AS delivered_quantity,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY minutes_to_start) AS median_minutes_to_start,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY minutes_to_finish) AS median_minutes_to_finish,
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
    CASE WHEN with_quantity > 0 THEN CAST(COALESCE(delivered_quantity, 0) AS BIGINT) END
        AS delivered_quantity,  -- a count on both engines (Postgres sums BIGINT as NUMERIC)
    {_ratio("completed + expired", "finished")} AS completion_rate,
    {_rounded("median_minutes_to_start", 1)} AS median_minutes_to_start,
    {_rounded("median_minutes_to_finish", 1)} AS median_minutes_to_finish,
    money_div(measured_charge * 1000, delivered_quantity) AS cost_per_1000_delivered
FROM per_service
"""

PROVIDER_SCORECARD = f"""
CREATE VIEW provider_scorecard AS
WITH panel_currency AS ({PANEL_CURRENCY}),
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
        percentile_cont(0.5) WITHIN GROUP (ORDER BY minutes_to_finish) AS median_minutes_to_finish
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
    {_ratio("o.completed", "o.finished")} AS completion_rate,
    {_ratio("o.partial", "o.finished")} AS partial_rate,
    {_ratio("COALESCE(r.orders_refilled, 0)", "o.finished")} AS refill_rate,
    {_ratio("r.refills_completed", "r.refills_finished")} AS refill_success,
    {_rounded("o.median_minutes_to_finish", 1)} AS median_minutes_to_finish
FROM prices AS p
FULL JOIN order_stats AS o USING (panel, category)
LEFT JOIN refill_stats AS r USING (panel, category)
LEFT JOIN panel_currency AS pc USING (panel)
"""

PRICE_CHANGES = f"""
CREATE VIEW price_changes AS
WITH rates AS (
    SELECT
        panel,
        service_id,
        changed_at,
        {_money_or_null("old_value")} AS old_rate,
        {_money_or_null("new_value")} AS new_rate
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
CREATE VIEW balance_runway AS
WITH latest_balance AS (
    SELECT panel, fetched_at, balance FROM (
        SELECT panel, fetched_at, balance,
               row_number() OVER (PARTITION BY panel ORDER BY fetched_at DESC) AS newest
        FROM balances
    ) AS b
    WHERE newest = 1
),
panel_currency AS ({PANEL_CURRENCY}),
latest AS (
    SELECT b.panel, b.fetched_at, b.balance, c.currency
    FROM latest_balance AS b LEFT JOIN panel_currency AS c ON c.panel = b.panel
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
    FROM spend_facts
    WHERE spent_at >= now() - INTERVAL '{RUNWAY_DAYS} days'
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


@dataclass(frozen=True)
class View:
    """One view of the warehouse: its statement, what it tells, and what it reads."""

    name: str
    statement: str
    description: str
    reads: tuple[str, ...]


# Every view, in dependency order: the one list (create_views, the Dagster assets, tests).
VIEWS = (
    View(
        "order_facts",
        ORDER_FACTS,
        "Per order row: effective spend, delivered quantity, minutes to start and finish.",
        ("orders", "services", "balances", "order_status_history", "subscription_orders"),
    ),
    View(
        "spend_facts",
        SPEND_FACTS,
        "Every amount of money once, at the moment it counts (a subscription's child orders "
        "on the day they were charged).",
        ("order_facts", "subscription_orders"),
    ),
    View(
        "spend_daily",
        SPEND_DAILY,
        "Spend per day, panel, currency, category, service and campaign (charged and still "
        "estimated).",
        ("spend_facts",),
    ),
    View(
        "delivery_by_service",
        DELIVERY_BY_SERVICE,
        "Per service: orders, completion rate, delivered quantity, median minutes to start "
        "and finish, cost per 1000 delivered.",
        ("order_facts",),
    ),
    View(
        "provider_scorecard",
        PROVIDER_SCORECARD,
        "Per panel and category: price per 1000, completion, partial and refill rates, "
        "speed: which panel to use next.",
        ("order_facts", "services", "refills"),
    ),
    View(
        "price_changes",
        PRICE_CHANGES,
        "Every rate change of a service, with old and new rate and the change in percent.",
        ("service_changes", "services"),
    ),
    View(
        "balance_runway",
        BALANCE_RUNWAY,
        f"Per panel: the latest balance, the last {RUNWAY_DAYS} days' spend per day and the "
        "days it lasts at that pace.",
        ("balances", "spend_facts"),
    ),
)
VIEW_NAMES = tuple(view.name for view in VIEWS)


def create_views(conn: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every analytics view, in dependency order (on DuckDB first the money macros;
    Postgres has them as functions from dialect.py). Existing views are dropped first, the
    dependants before what they read, so a view whose columns changed is rebuilt on both
    engines (Postgres's CREATE OR REPLACE VIEW cannot change columns)."""
    if not is_postgres(conn):
        conn.execute(MONEY_UNITS)
        conn.execute(MONEY_DIV)
    for view in reversed(VIEWS):
        conn.execute(f"DROP VIEW IF EXISTS {view.name}")
    for view in VIEWS:
        conn.execute(view.statement)


@functools.cache
def view_columns() -> dict[str, tuple[tuple[str, str], ...]]:
    """Each view's columns and types, as DuckDB describes them on an empty warehouse in
    memory (built once per process, about 0.1 s): the views' schemas, never a second list."""
    from smm_pipeline.warehouse.migrations import apply_migrations

    conn = duckdb.connect(":memory:")
    try:
        apply_migrations(conn)
        return {
            view.name: tuple(
                (str(row[0]), str(row[1]))
                for row in conn.execute(f"DESCRIBE {view.name}").fetchall()
            )
            for view in VIEWS
        }
    finally:
        conn.close()
