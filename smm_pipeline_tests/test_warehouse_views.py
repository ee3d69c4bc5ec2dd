"""The analytics views on a small hand-built dataset whose every number is worked out below,
on each engine (`warehouse`: a DuckDB file, then a Postgres database), and the same rows in
both engines giving the same answer in every view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smm_pipeline.warehouse import connect
from smm_pipeline.warehouse.db import Location
from smm_pipeline.warehouse.postgres import PostgresTarget
from smm_pipeline.warehouse.views import VIEW_NAMES
from smm_pipeline_tests.conftest import ENGINES

D = Decimal
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=1)
T_OLD = NOW - timedelta(days=10)
DAY0 = T0.date()
DAY_OLD = T_OLD.date()


def _insert(conn, table: str, rows: list[dict]) -> None:
    for row in rows:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(row.values()))


def _service(panel, sid, name, type_, category, rate, active=True):
    return {
        "panel": panel,
        "service_id": sid,
        "name": name,
        "type": type_,
        "category": category,
        "rate": D(rate),
        "min": 10,
        "max": 100000,
        "refill": True,
        "cancel": True,
        "active": active,
        "first_seen_at": T_OLD,
        "last_seen_at": NOW,
    }


def _order(panel, ref, **fields):
    return {"panel": panel, "ref": ref, **fields}


def _minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


IL = "Instagram Likes"

SERVICES = [
    _service("alpha", 1, "Likes A", "Default", IL, "0.90"),
    _service("alpha", 2, "Likes B", "Default", IL, "1.10"),
    _service("alpha", 3, "Likes pack", "Package", IL, "5.00"),
    _service("alpha", 4, "Old likes", "Default", IL, "9.99", active=False),
    _service("alpha", 5, "Views", "Default", "YouTube Views", "2.50"),
    _service("beta", 10, "Likes", "Default", IL, "0.80"),
]

BALANCES = [
    {"panel": "alpha", "fetched_at": T_OLD, "balance": D("100"), "currency": "USD"},
    {"panel": "alpha", "fetched_at": NOW - _minutes(60), "balance": D("50"), "currency": "USD"},
    {"panel": "beta", "fetched_at": NOW - _minutes(60), "balance": D("20"), "currency": "EUR"},
    {"panel": "gamma", "fetched_at": NOW - _minutes(60), "balance": D("7.5"), "currency": "USD"},
]

_SENT = {"submit_state": "submitted", "submitted_at": T0, "created_at": T0}
ORDERS = [
    # alpha, service 1, campaign spring: completed, partial, running, failed to submit
    _order("alpha", "r1", order_id=101, service_id=1, campaign="spring", quantity=1000,
           status="Completed", charge=D("0.9"), remains=0, currency="USD",
           finished_at=T0 + _minutes(120), **_SENT),
    _order("alpha", "r2", order_id=102, service_id=1, campaign="spring", quantity=1000,
           status="Partial", charge=D("0.45"), remains=300, currency="USD",
           finished_at=T0 + _minutes(60), **_SENT),
    _order("alpha", "r3", order_id=103, service_id=1, campaign="spring", quantity=2000,
           status="In progress", charge=D("1.8"), remains=1500, currency="USD", **_SENT),
    _order("alpha", "r4", service_id=1, campaign="spring", quantity=500,
           estimated_cost=D("0.45"), submit_state="failed", created_at=T0),
    # alpha, service 2: sent but not polled yet (estimate), pending, and one billed in EUR
    _order("alpha", "r5", order_id=105, service_id=2, quantity=1000,
           estimated_cost=D("1.1"), **_SENT),
    _order("alpha", "r6", service_id=2, quantity=1000, estimated_cost=D("1.1"),
           submit_state="pending", created_at=T0),
    _order("alpha", "r8", order_id=108, service_id=2, quantity=100, status="Completed",
           charge=D("0.2"), remains=0, currency="EUR", finished_at=T0 + _minutes(15), **_SENT),
    # alpha, ten days ago: canceled
    _order("alpha", "r7", order_id=107, service_id=1, campaign="old", quantity=1000,
           status="Canceled", charge=D("0"), remains=1000, currency="USD",
           submit_state="submitted", submitted_at=T_OLD, created_at=T_OLD,
           finished_at=T_OLD + _minutes(30)),
    # beta: completed without remains reported (delivered everything)
    _order("beta", "r1", order_id=201, service_id=10, campaign="spring", quantity=1000,
           status="Completed", charge=D("0.8"), currency="EUR",
           finished_at=T0 + _minutes(30), **_SENT),
]  # fmt: skip

HISTORY = [
    ("alpha", 101, T0 + _minutes(2), "Pending"),
    ("alpha", 101, T0 + _minutes(10), "In progress"),
    ("alpha", 101, T0 + _minutes(120), "Completed"),
    ("alpha", 102, T0 + _minutes(30), "Processing"),
    ("alpha", 102, T0 + _minutes(60), "Partial"),
    ("alpha", 103, T0 + _minutes(20), "In progress"),
    ("beta", 201, T0 + _minutes(5), "Completed"),
]

REFILLS = [
    {"panel": "alpha", "refill_id": 1, "order_id": 101, "requested_at": NOW,
     "request_state": "submitted", "status": "Completed"},
    {"panel": "alpha", "refill_id": 2, "order_id": 101, "requested_at": NOW,
     "request_state": "submitted", "status": "Pending"},
    {"panel": "alpha", "refill_id": None, "order_id": 102, "requested_at": NOW,
     "request_state": "failed", "error": "Refill not available"},
]  # fmt: skip

CHANGES = [
    ("alpha", 1, T_OLD, "rate", "0.8", "0.9"),
    ("alpha", 2, T0, "rate", "1.2", "1.1"),
    ("alpha", 2, T0, "min", "100", "10"),
]


@pytest.fixture()
def db(warehouse: Location) -> Location:
    return _full_dataset(warehouse)


def _full_dataset(location: Location) -> Location:
    path = _db_with(location, SERVICES, ORDERS, HISTORY)
    with connect(path) as conn:
        _insert(conn, "balances", BALANCES)
        _insert(conn, "refills", REFILLS)
        _insert(
            conn,
            "service_changes",
            [
                dict(
                    zip(
                        ("panel", "service_id", "changed_at", "field", "old_value", "new_value"),
                        c,
                        strict=True,
                    )
                )
                for c in CHANGES
            ],
        )
    return path


def _rows(path: Location, sql: str) -> list[tuple]:
    with connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_spend_daily_groups_by_currency_and_prices_each_outcome(db: Location) -> None:
    rows = _rows(
        db,
        "SELECT day, panel, currency, category, service_id, service_name, campaign, orders, "
        "charge, estimated_charge FROM spend_daily ORDER BY panel, day, service_id, currency",
    )
    assert rows == [
        (DAY_OLD, "alpha", "USD", IL, 1, "Likes A", "old", 1, D("0"), D("0")),
        # r1 0.9 + r2 0.45 + r3 1.8 (running, panel charge); r4 failed never reached the
        # panel, so it is not one of the orders (3, not 4)
        (DAY0, "alpha", "USD", IL, 1, "Likes A", "spring", 3, D("3.15"), D("0")),
        (DAY0, "alpha", "EUR", IL, 2, "Likes B", None, 1, D("0.2"), D("0")),
        # r5 not polled yet: its estimate; r6 pending is not spend
        (DAY0, "alpha", "USD", IL, 2, "Likes B", None, 1, D("1.1"), D("1.1")),
        (DAY0, "beta", "EUR", IL, 10, "Likes", "spring", 1, D("0.8"), D("0")),
    ]
    assert all(isinstance(r[8], Decimal) for r in rows)


def test_delivery_by_service(db: Location) -> None:
    rows = _rows(
        db,
        "SELECT panel, service_id, service_name, category, currency, orders, completed, partial, "
        "canceled, expired, delivered_quantity, completion_rate, median_minutes_to_start, "
        "median_minutes_to_finish, cost_per_1000_delivered FROM delivery_by_service "
        "ORDER BY panel, service_id, currency",
    )
    assert rows == [
        # r1 1000 + r2 700 + r7 0 delivered; finished charge 1.35 -> 1350 / 1700 = 0.794117647..
        # median to finish: r1 120 and r2 60 (the canceled r7 says nothing of speed)
        ("alpha", 1, "Likes A", IL, "USD", 4, 1, 1, 1, 0, 1700, 0.3333, 20.0, 90.0, D("0.794118")),
        ("alpha", 2, "Likes B", IL, "EUR", 1, 1, 0, 0, 0, 100, 1.0, None, 15.0, D("2")),
        ("alpha", 2, "Likes B", IL, "USD", 1, 0, 0, 0, 0, 0, None, None, None, None),
        ("beta", 10, "Likes", IL, "EUR", 1, 1, 0, 0, 0, 1000, 1.0, 5.0, 30.0, D("0.8")),
    ]


def test_provider_scorecard_compares_panels_per_category(db: Location) -> None:
    rows = _rows(
        db,
        "SELECT panel, category, currency, price_per_1000, active_services, orders, finished, "
        "completion_rate, partial_rate, refill_rate, refill_success, median_minutes_to_finish "
        "FROM provider_scorecard ORDER BY category, panel",
    )
    assert rows == [
        # price: mean of 0.90 and 1.10 (the package and the inactive service do not count);
        # finished r1 r2 r7 r8: 2 completed, 1 partial, 1 refilled (two refills: one done, one
        # still Pending, which is not a failure yet: success is 1 of 1 finished refill);
        # median to finish of the delivered r1 120, r2 60, r8 15 (not the canceled r7)
        ("alpha", IL, "USD", D("1"), 3, 6, 4, 0.5, 0.25, 0.25, 1.0, 60.0),
        ("beta", IL, "EUR", D("0.8"), 1, 1, 1, 1.0, 0.0, 0.0, None, 30.0),
        ("alpha", "YouTube Views", "USD", D("2.5"), 1, 0, 0, None, None, None, None, None),
    ]


def test_price_changes(db: Location) -> None:
    rows = _rows(
        db,
        "SELECT panel, service_id, name, changed_at, old_rate, new_rate, change_pct "
        "FROM price_changes ORDER BY service_id",
    )
    assert rows == [
        ("alpha", 1, "Likes A", T_OLD, D("0.8"), D("0.9"), D("12.50")),
        ("alpha", 2, "Likes B", T0, D("1.2"), D("1.1"), D("-8.33")),
    ]


def test_balance_runway(db: Location) -> None:
    rows = _rows(
        db,
        "SELECT panel, balance, currency, spend_7d, days_covered, spend_per_day, days_left "
        "FROM balance_runway ORDER BY panel",
    )
    assert rows == [
        # last 7 days in USD: 0.9 + 0.45 + 1.8 + 0 + 1.1 = 4.25 (EUR r8 and 10-day-old r7 not);
        # alpha has ordered for 10 days: the whole week counts
        ("alpha", D("50"), "USD", D("4.25"), 7, D("0.607143"), D("82.35")),
        # beta's first order was a day ago: 2 days (yesterday and today), not 7
        ("beta", D("20"), "EUR", D("0.8"), 2, D("0.4"), D("50.00")),
        ("gamma", D("7.5"), "USD", D("0"), None, D("0"), None),
    ]


def test_views_exist_on_an_empty_warehouse(warehouse: Location) -> None:
    with connect(warehouse) as conn:
        for view in ("spend_daily", "delivery_by_service", "provider_scorecard", "price_changes"):
            assert conn.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM balance_runway").fetchone() == (0,)


_money = st.decimals(
    min_value=Decimal("-1000000000"),
    max_value=Decimal("1000000000"),
    places=6,
    allow_nan=False,
    allow_infinity=False,
)


@pytest.fixture(scope="module", params=ENGINES)
def money_conn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """money_div on each engine: DuckDB's macro, then Postgres's function."""
    if request.param == "duckdb":
        location: Location = tmp_path_factory.mktemp("money") / "w.duckdb"
    else:
        server = request.getfixturevalue("postgres_server")
        location = PostgresTarget(server.create_database("money_div").url())
    with connect(location) as conn:
        yield conn


@settings(max_examples=150, deadline=None)
@given(num=_money, den=_money.filter(lambda d: d != 0))
def test_money_div_is_exact_and_rounds_half_away_from_zero(money_conn, num, den) -> None:
    got = money_conn.execute(
        "SELECT money_div(CAST(? AS DECIMAL(18,6)), CAST(? AS DECIMAL(18,6)))",
        [str(num), str(den)],
    ).fetchone()[0]
    with localcontext() as ctx:
        ctx.prec = 80  # exact enough that quantize is the only rounding
        expected = (num / den).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    assert got == expected


def test_money_div_by_zero_or_null_is_null(money_conn) -> None:
    answer = money_conn.execute("SELECT money_div(1, 0), money_div(NULL, 2), money_div(1, NULL)")
    assert answer.fetchone() == (None, None, None)


def _db_with(path: Location, services: list[dict], orders: list[dict], history=()) -> Location:
    with connect(path) as conn:
        _insert(conn, "services", services)
        _insert(conn, "orders", orders)
        _insert(
            conn,
            "order_status_history",
            [
                dict(zip(("panel", "order_id", "observed_at", "status"), h, strict=True))
                for h in history
            ],
        )
    return path


_D = {"currency": "USD", **_SENT}
REFUND_PACKAGE_SUBSCRIPTION_ORDERS = [
    # Likes: canceled and refunded without a charge from the panel, completed, first seen Partial
    _order("delta", "c1", order_id=1, service_id=22, quantity=1000, status="Canceled",
           remains=1000, estimated_cost=D("0.5"), finished_at=T0 + _minutes(5), **_D),
    _order("delta", "c2", order_id=2, service_id=22, quantity=1000, status="Refunded",
           estimated_cost=D("0.5"), finished_at=T0 + _minutes(5), **_D),
    _order("delta", "c3", order_id=3, service_id=22, quantity=1000, status="Completed",
           charge=D("1.0"), remains=0, finished_at=T0 + _minutes(20), **_D),
    _order("delta", "c4", order_id=4, service_id=22, quantity=1000, status="Partial",
           charge=D("0.5"), remains=500, finished_at=T0 + _minutes(40), **_D),
    # Packages: no quantity
    _order("delta", "p1", order_id=5, service_id=20, status="Completed", charge=D("5"),
           finished_at=T0 + _minutes(10), **_D),
    _order("delta", "p2", order_id=6, service_id=20, status="Completed", charge=D("5"),
           finished_at=T0 + _minutes(10), **_D),
    # Subscriptions: one Expired (ran its course), one still Active and not charged yet
    _order("delta", "s1", order_id=7, service_id=21, service_type="Subscriptions",
           status="Expired", charge=D("2.5"), finished_at=T0 + _minutes(600), **_D),
    _order("delta", "s2", order_id=8, service_id=21, service_type="Subscriptions",
           status="Active", estimated_cost=D("3"), **_D),
]  # fmt: skip


DELTA_SERVICES = [
    _service("delta", 20, "Pack", "Package", "Packs", "5"),
    _service("delta", 21, "Subs", "Subscriptions", "Subs", "3"),
    _service("delta", 22, "Likes", "Default", IL, "1"),
]


@pytest.fixture()
def delta(warehouse: Location) -> Location:
    return _db_with(
        warehouse,
        DELTA_SERVICES,
        REFUND_PACKAGE_SUBSCRIPTION_ORDERS,
        [("delta", 3, T0 + _minutes(20), "Completed"), ("delta", 4, T0 + _minutes(40), "Partial")],
    )


def test_a_cancel_or_refund_without_a_charge_is_spend_zero_not_its_estimate(
    delta: Location,
) -> None:
    rows = _rows(
        delta,
        "SELECT service_id, orders, charge, estimated_charge FROM spend_daily ORDER BY service_id",
    )
    assert rows == [
        (20, 2, D("10"), D("0")),
        (21, 2, D("5.5"), D("3")),  # the Active subscription's estimate, marked as one
        (22, 4, D("1.5"), D("0")),  # c1 and c2 were refunded: 0, not 0.5 each
    ]


def test_packages_and_subscriptions_have_no_delivered_quantity(delta: Location) -> None:
    rows = _rows(
        delta,
        "SELECT service_id, orders, completed, partial, canceled, expired, finished, "
        "delivered_quantity, completion_rate, median_minutes_to_start, "
        "median_minutes_to_finish, cost_per_1000_delivered FROM delivery_by_service "
        "ORDER BY service_id",
    )
    assert rows == [
        # no quantity: nothing delivered to count, no cost per 1000
        (20, 2, 2, 0, 0, 0, 2, None, 1.0, None, 10.0, None),
        # the Expired subscription finished and ran its course; its 600 minutes are no speed
        (21, 2, 0, 0, 0, 1, 1, None, 1.0, None, None, None),
        # c3 1000 + c4 500 delivered for 1.5: 1 per 1000. Started: c3 at 20, c4 first seen
        # Partial at 40. To finish: c3 20, c4 40 (not the canceled c1 c2 at 5)
        (22, 4, 1, 1, 2, 0, 4, 1500, 0.25, 30.0, 30.0, D("1")),
    ]


def test_an_expired_subscription_is_finished_in_the_scorecard(delta: Location) -> None:
    rows = _rows(
        delta,
        "SELECT category, orders, finished, completion_rate, median_minutes_to_finish "
        "FROM provider_scorecard WHERE category = 'Subs'",
    )
    assert rows == [("Subs", 2, 1, 1.0, None)]


def test_sums_of_money_stay_exact_at_18_places(warehouse: Location) -> None:
    tiny = D("0.000000000000000001")
    path = _db_with(
        warehouse,
        [_service("e", 1, "S", "Default", IL, "0.1234567")],
        [
            _order(
                "e",
                f"x{i}",
                order_id=i,
                service_id=1,
                quantity=10,
                status="Completed",
                charge=D("0.123456789012345678") + i * tiny,
                remains=0,
                **_D,
            )
            for i in range(3)
        ],  # fmt: skip
    )
    type_of = "pg_typeof" if isinstance(path, PostgresTarget) else "typeof"
    [(charge, spend_type)] = _rows(
        path,
        f"SELECT charge, CAST({type_of}(charge) AS VARCHAR) FROM spend_daily WHERE panel = 'e'",
    )
    assert charge == D("0.370370367037037037")
    assert spend_type == ("numeric" if isinstance(path, PostgresTarget) else "DECIMAL(38,18)")


def test_price_changes_survive_a_value_that_is_not_a_number(warehouse: Location) -> None:
    path = warehouse
    with connect(path) as conn:
        _insert(conn, "services", [_service("o", 1, "S", "Default", IL, "1")])
        conn.execute(
            "INSERT INTO service_changes VALUES ('o', 1, ?, 'rate', 'n/a', '1'), "
            "('o', 1, ?, 'rate', '1', '1.000000000000000001')",
            [T_OLD, T0],
        )
    rows = _rows(path, "SELECT old_rate, new_rate, change_pct FROM price_changes ORDER BY 1")
    assert rows == [(D("1"), D("1.000000000000000001"), D("0.00")), (None, D("1"), None)]


_money18 = st.decimals(
    min_value=Decimal("-1000000000"),
    max_value=Decimal("1000000000"),
    places=18,
    allow_nan=False,
    allow_infinity=False,
)


@settings(max_examples=150, deadline=None)
@given(num=_money18, den=_money18.filter(lambda d: d != 0))
def test_money_div_is_exact_for_18_place_inputs(money_conn, num, den) -> None:
    got = money_conn.execute(
        "SELECT money_div(CAST(? AS DECIMAL(38,18)), CAST(? AS DECIMAL(38,18)))",
        [str(num), str(den)],
    ).fetchone()[0]
    with localcontext() as ctx:
        ctx.prec = 80
        expected = (num / den).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    assert got == expected


def _comparable(value: object) -> str:
    """A value as both engines' answers compare: numbers by their exact value (DuckDB's HUGEINT
    sum and Postgres's NUMERIC sum of the same counts, DECIMAL(38,6) and NUMERIC), instants in
    UTC, the rest as they are (floats exactly)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | Decimal):
        return f"number {Decimal(value).normalize()}"
    if isinstance(value, datetime):  # the same instant, whichever tzinfo object says UTC
        return f"instant {value.astimezone(UTC).isoformat()}"
    return repr(value)


def test_every_view_answers_the_same_on_both_engines(tmp_path: Path, postgres_database) -> None:
    """The same rows in a DuckDB file and in Postgres (every dataset of this module, and a
    subscription's charged child): every row of every view is the same, to the last decimal
    (money exact, rates and medians rounded alike)."""
    answers = []
    for location in (tmp_path / "w.duckdb", PostgresTarget(postgres_database.url())):
        _full_dataset(location)
        _db_with(location, DELTA_SERVICES, REFUND_PACKAGE_SUBSCRIPTION_ORDERS)
        with connect(location) as conn:
            conn.execute(
                "INSERT INTO subscription_orders (panel, order_id, subscription_ref, "
                "subscription_order_id, first_seen_at, status, charge, currency) "
                "VALUES ('delta', 70, 's1', 7, ?, 'Completed', 1.25, 'USD')",
                [T0 + _minutes(30)],
            )
            answers.append(
                {
                    view: sorted(
                        tuple(_comparable(v) for v in row)
                        for row in conn.execute(f"SELECT * FROM {view}").fetchall()
                    )
                    for view in VIEW_NAMES
                }
            )
    duck, pg = answers
    for view in VIEW_NAMES:
        assert duck[view], f"{view} is empty: the comparison would prove nothing"
        assert pg[view] == duck[view], view
