"""Subscriptions' child orders (issue 11, "spend is what the panel charged"): the orders a
subscription places per post are polled with the others, recorded linked to the subscription's
row, and their charges are its spend in `orders`, spend_daily and balance_runway.

The simulator runs on a frozen clock: `advance(POST_INTERVAL)` makes the subscribed account
publish a post, and the subscription orders it at once (delay 0).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from smm_devkit.simulator.orders import POST_INTERVAL
from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.lib.resources import PanelsResource
from smm_pipeline.operations.order_files import finish_order_file, prepare_order_file
from smm_pipeline.operations.polling import observations_frame, poll_orders
from smm_pipeline.operations.submission import submit_file
from smm_pipeline.panel.models import OrderStatus
from smm_pipeline.warehouse import connect
from smm_pipeline.warehouse.db import Location
from smm_pipeline.warehouse.migrations import MIGRATIONS, apply_migrations
from smm_pipeline.warehouse.schema import MONEY_TYPE
from smm_pipeline.warehouse.status import (
    Cadence,
    apply_observations,
    due_orders,
    open_by_panel,
    open_summary,
    open_summary_by_panel,
)

SUBSCRIPTION_SERVICE = 14  # Instagram Auto Likes [Subscription], 0.15 per 1000, 50..5000
LIKES_SERVICE = 1
D = Decimal


def _place(pipeline, content: str) -> dict[str, int]:
    """Place a CSV's rows through the order-file steps; ref -> panel order id."""
    data = content.encode()
    pipeline.drop("orders", "orders.csv", data)
    settings, db_path = pipeline.settings, pipeline.db_path
    with PanelsResource(panels_file=str(pipeline.panels_file)).clients(settings) as clients:
        prepared = prepare_order_file(settings, db_path, "orders.csv", file_hash(data), clients)
        submit_file(db_path, prepared.file_hash, clients)
        finish_order_file(settings, db_path, prepared, clients)
    return dict(_query(pipeline, "SELECT ref, order_id FROM orders"))


def _query(pipeline, sql: str, params: list | None = None) -> list[tuple]:
    with connect(pipeline.db_path, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _poll(pipeline, *, poll_all: bool = False):
    settings = pipeline.settings
    with PanelsResource(panels_file=str(pipeline.panels_file)).clients(settings) as clients:
        return poll_orders(
            pipeline.db_path, clients, Cadence(), poll_all=poll_all, progress=lambda _: None
        )


def _children(pipeline) -> dict[int, tuple]:
    rows = _query(
        pipeline,
        "SELECT order_id, subscription_ref, subscription_order_id, status, charge, currency, "
        "finished_at IS NOT NULL FROM subscription_orders ORDER BY order_id",
    )
    return {r[0]: r[1:] for r in rows}


def test_a_subscription_with_two_posted_children_shows_their_charges_as_its_spend(
    pipeline, sim
) -> None:
    sim.configure(outcome_weights={"Completed": 1})
    ids = _place(
        pipeline,
        "ref,service,username,min,max,posts,delay,link,quantity\n"
        f"sub,{SUBSCRIPTION_SERVICE},natgeo,100,200,2,0,,\n"
        f"likes,{LIKES_SERVICE},,,,,,https://x.com/p/1,100\n",
    )
    sub, likes = ids["sub"], ids["likes"]
    sim.set_order(likes, status="In progress", remains=50)  # stays open: polled every time
    [(estimate,)] = _query(pipeline, "SELECT estimated_cost FROM orders WHERE ref = 'sub'")
    assert estimate == D("0.06")  # 0.15 x 200 / 1000 x 2 posts: the upper bound

    # The account posts: the subscription orders the first child.
    sim.advance(POST_INTERVAL + 60)
    sim.reset_stats()
    first = _poll(pipeline)
    assert first.polled == 2 and sim.stats()["ids_per_call"]["status"] == [2]
    [child1] = sim.order(sub)["orders"]
    assert _children(pipeline) == {child1: ("sub", sub, None, None, None, False)}
    # Its charge is not known yet: the subscription's spend is still its estimate.
    assert _query(
        pipeline,
        "SELECT spend, spend_is_estimate, spend_from_children FROM order_facts WHERE ref = 'sub'",
    ) == [(estimate, True, False)]

    # The second post; this poll sees the subscription (now Completed: 2 posts of 2), the
    # open order and the first child, in one multi-status call.
    sim.advance(POST_INTERVAL)
    sim.reset_stats()
    second = _poll(pipeline, poll_all=True)
    assert second.polled == 3 and sim.stats()["ids_per_call"]["status"] == [3]
    child1, child2 = sim.order(sub)["orders"]
    assert set(_children(pipeline)) == {child1, child2}

    # Only the open order and the new child are polled: the finished subscription and the
    # finished first child never again.
    sim.reset_stats()
    third = _poll(pipeline, poll_all=True)
    assert third.polled == 2 and sim.stats()["ids_per_call"]["status"] == [2]
    with connect(pipeline.db_path) as conn:
        assert set(due_orders(conn, datetime.now(UTC), poll_all=True)["order_id"]) == {likes}
        assert open_summary(conn)[0] == 1

    charges = {c: D(sim.order(c)["charge"]) for c in (child1, child2)}
    assert all(c > 0 for c in charges.values())
    total = charges[child1] + charges[child2]
    assert _children(pipeline) == {
        child1: ("sub", sub, "Completed", charges[child1], "USD", True),
        child2: ("sub", sub, "Completed", charges[child2], "USD", True),
    }
    # orders: the subscription's charge is its children's, exactly
    [(status, charge, currency)] = _query(
        pipeline, "SELECT status, charge, currency FROM orders WHERE ref = 'sub'"
    )
    assert (status, charge, currency) == ("Completed", total, "USD")
    assert _query(
        pipeline,
        "SELECT spend, spend_is_estimate, spend_from_children, child_orders "
        "FROM order_facts WHERE ref = 'sub'",
    ) == [(total, False, True, 2)]
    # spend_daily: the children's charges, no estimate left
    rows = _query(
        pipeline,
        "SELECT sum(orders), sum(subscription_orders), sum(charge), sum(estimated_charge), "
        "typeof(sum(charge)) FROM spend_daily WHERE service_id = ?",
        [SUBSCRIPTION_SERVICE],
    )
    assert rows == [(1, 2, total, D(0), MONEY_TYPE)]
    # No delivered quantity for a subscription (its quantity is the per-post max, and the
    # children's status gives none), so its money is not priced per 1000 delivered.
    assert _query(
        pipeline,
        "SELECT orders, finished, delivered_quantity, cost_per_1000_delivered "
        "FROM delivery_by_service WHERE service_id = ?",
        [SUBSCRIPTION_SERVICE],
    ) == [(1, 1, None, None)]
    # Children's history is kept under their own ids.
    assert _query(
        pipeline,
        "SELECT order_id, status, charge FROM order_status_history "
        "WHERE list_contains(?, order_id) ORDER BY order_id",
        [[child1, child2]],
    ) == [(child1, "Completed", charges[child1]), (child2, "Completed", charges[child2])]
    # balance_runway counts them with the open order's charge
    [(spend_7d,)] = _query(pipeline, "SELECT spend_7d FROM balance_runway WHERE panel = 'sim'")
    [(likes_charge,)] = _query(pipeline, "SELECT charge FROM orders WHERE ref = 'likes'")
    assert spend_7d == total + likes_charge


def test_100_ids_a_call_with_children_among_the_orders(pipeline, sim) -> None:
    """Children are chunked with the others: 3 old posts and 98 orders are 101 ids, 2 calls."""
    sim.configure(outcome_weights={"Completed": 1})
    rows = "".join(f"o{i},{LIKES_SERVICE},,,,,,https://x.com/p/{i},100\n" for i in range(98))
    ids = _place(
        pipeline,
        "ref,service,username,min,max,old_posts,delay,link,quantity\n"
        f"sub,{SUBSCRIPTION_SERVICE},natgeo,100,200,3,0,,\n" + rows,
    )
    assert _poll(pipeline).polled == 99  # the children are not known yet
    assert len(_children(pipeline)) == 3
    sim.reset_stats()
    report = _poll(pipeline, poll_all=True)
    assert report.polled == 102  # 98 orders, the subscription, its 3 children
    assert sorted(sim.stats()["ids_per_call"]["status"]) == [2, 100]
    children = sim.order(ids["sub"])["orders"]
    total = sum((D(sim.order(c)["charge"]) for c in children), D(0))
    assert _query(pipeline, "SELECT charge FROM orders WHERE ref = 'sub'") == [(total,)]


# ------------------------------------------------------------------ warehouse rules

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture()
def conn(warehouse: Location):
    """The warehouse rules on both engines: a DuckDB file, then a Postgres database."""
    with connect(warehouse) as c:
        yield c


def _subscription(conn, ref: str, order_id: int, submitted: datetime, **fields) -> None:
    row = {
        "panel": "p", "ref": ref, "order_id": order_id, "submit_state": "submitted",
        "service_id": 14, "service_type": "Subscriptions", "quantity": 200,
        "estimated_cost": D("0.06"), "created_at": submitted, "submitted_at": submitted,
        **fields,
    }  # fmt: skip
    conn.execute(
        f"INSERT INTO orders ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
        list(row.values()),
    )


def _apply(conn, now: datetime, *statuses: OrderStatus, panel: str = "p") -> tuple[int, int]:
    frame = observations_frame(panel, {s.order_id: s for s in statuses})
    return apply_observations(conn, frame, now, Cadence())


def _sub_status(order_id: int, status: str, *children: int) -> OrderStatus:
    return OrderStatus(
        order_id, status=status, raw_status=status, is_subscription=True,
        posts=len(children), orders=children,
    )  # fmt: skip


def _child(order_id: int, status: str, charge: str | None, **fields) -> OrderStatus:
    return OrderStatus(
        order_id, status=status, raw_status=status,
        charge=None if charge is None else D(charge), currency="USD", **fields,
    )  # fmt: skip


def test_children_are_routed_and_a_refunded_child_counts_zero(conn) -> None:
    _subscription(conn, "s", 9, NOW - timedelta(hours=1))
    assert _apply(conn, NOW, _sub_status(9, "Active", 101, 102, 103)) == (1, 0)
    assert open_summary(conn) == (4, NOW)
    assert open_by_panel(conn) == {"p": 4}
    assert list(due_orders(conn, NOW)["order_id"]) == [101, 102, 103]  # due now; 9 in 2 min
    later = NOW + timedelta(minutes=5)
    # the most overdue first: the children (due at NOW) before the subscription (NOW + 2 min)
    assert list(due_orders(conn, later)["order_id"]) == [101, 102, 103, 9]
    changed, errors = _apply(
        conn,
        later,
        _child(101, "Completed", "0.015", remains=0),
        _child(102, "Canceled", None),  # refunded without a charge: 0
        OrderStatus(103, error="Incorrect order ID"),
    )
    assert (changed, errors) == (2, 1)
    rows = conn.execute(
        "SELECT order_id, status, charge, finished_at, poll_error FROM subscription_orders "
        "ORDER BY 1"
    ).fetchall()
    assert rows == [
        (101, "Completed", D("0.015"), later, None),
        (102, "Canceled", None, later, None),
        (103, None, None, None, "Incorrect order ID"),
    ]
    assert conn.execute("SELECT charge FROM orders WHERE ref = 's'").fetchall() == [(D("0.015"),)]
    assert conn.execute(
        "SELECT spend, spend_is_estimate FROM order_facts WHERE ref = 's'"
    ).fetchall() == [(D("0.015"), False)]
    # open: the subscription (due at NOW + 2 min) and the child answered with an error
    assert open_summary_by_panel(conn) == {"p": (2, NOW + timedelta(minutes=2))}
    assert open_summary_by_panel(conn, ["p", "q"]) == {
        "p": (2, NOW + timedelta(minutes=2)),
        "q": (0, None),
    }
    assert open_summary(conn, ["p"]) == (2, NOW + timedelta(minutes=2))
    # A child id the subscription lists again is not a second row; a new one is added.
    _apply(conn, later, _sub_status(9, "Active", 101, 102, 103, 104))
    assert conn.execute("SELECT count(*) FROM subscription_orders").fetchone() == (4,)


def test_a_canceled_subscription_keeps_what_its_children_were_charged(conn) -> None:
    _subscription(conn, "s", 9, NOW - timedelta(hours=1))
    _apply(conn, NOW, _sub_status(9, "Active", 101))
    _apply(conn, NOW, _child(101, "Completed", "0.02", remains=0))
    _apply(conn, NOW + timedelta(hours=1), _sub_status(9, "Canceled", 101))
    assert conn.execute(
        "SELECT status, charge, finished_at IS NOT NULL FROM orders WHERE ref = 's'"
    ).fetchall() == [("Canceled", D("0.02"), True)]
    assert conn.execute("SELECT spend FROM order_facts WHERE ref = 's'").fetchall() == [
        (D("0.02"),)
    ]


def test_spend_counts_on_the_day_each_child_was_charged(conn) -> None:
    """A subscription submitted 20 days ago whose children were charged over those days: its
    money is on their days in spend_daily, and the last week's children in the runway."""
    now = datetime.now(UTC).replace(microsecond=0)
    submitted = now - timedelta(days=20)
    _subscription(conn, "s", 9, submitted, campaign="c")
    conn.execute("INSERT INTO balances VALUES ('p', ?, 10, 'USD')", [now])
    charged = {101: (now - timedelta(days=15), "0.03"), 102: (now - timedelta(days=2), "0.01")}
    for child, (seen, _) in charged.items():
        _apply(conn, seen, _sub_status(9, "Active", *[c for c in charged if c <= child]))
    for child, (seen, charge) in charged.items():
        _apply(conn, seen, _child(child, "Completed", charge, remains=0))
    days = conn.execute(
        "SELECT day, orders, subscription_orders, charge, estimated_charge FROM spend_daily "
        "ORDER BY day"
    ).fetchall()
    assert days == [
        (submitted.date(), 1, 0, D(0), D(0)),
        ((now - timedelta(days=15)).date(), 0, 1, D("0.03"), D(0)),
        ((now - timedelta(days=2)).date(), 0, 1, D("0.01"), D(0)),
    ]
    assert conn.execute("SELECT spend FROM order_facts").fetchall() == [(D("0.04"),)]
    # the runway's week holds only the child charged 2 days ago
    assert conn.execute("SELECT spend_7d, days_covered FROM balance_runway").fetchall() == [
        (D("0.01"), 7)
    ]


def test_a_subscription_without_a_known_child_charge_is_its_estimate(conn) -> None:
    _subscription(conn, "s", 9, NOW - timedelta(hours=1))
    _apply(conn, NOW, _sub_status(9, "Active", 101))
    _apply(conn, NOW, OrderStatus(101, error="Incorrect order ID"))
    assert conn.execute(
        "SELECT charge, estimated_charge, subscription_orders FROM spend_daily"
    ).fetchall() == [(D("0.06"), D("0.06"), 0)]


def test_migration_006_records_the_children_an_older_file_already_saw(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    raw = duckdb.connect(str(path))
    raw.execute("SET TimeZone = 'UTC'")
    apply_migrations(raw, [m for m in MIGRATIONS if m.version < 6])
    raw.execute(
        "INSERT INTO orders (panel, ref, order_id, submit_state, submitted_at, last_change_at, "
        "service_type, status, subscription_orders) VALUES "
        "('p', 's', 9, 'submitted', ?, ?, 'Subscriptions', 'Active', '101,102'), "
        "('p', 'e', 8, 'submitted', ?, NULL, 'Subscriptions', 'Active', '')",
        [NOW - timedelta(days=1), NOW - timedelta(hours=1), NOW],
    )
    raw.close()
    with connect(path) as conn:
        rows = conn.execute(
            "SELECT order_id, subscription_ref, subscription_order_id, first_seen_at, "
            "next_poll_at FROM subscription_orders ORDER BY 1"
        ).fetchall()
        due = list(due_orders(conn, NOW)["order_id"])
        charge_type = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'subscription_orders' AND column_name = 'charge'"
        ).fetchone()
    assert rows == [
        (101, "s", 9, NOW - timedelta(hours=1), None),
        (102, "s", 9, NOW - timedelta(hours=1), None),
    ]
    assert due == [8, 9, 101, 102]  # none polled yet (subscriptions too): all due now
    assert charge_type == (MONEY_TYPE,)
