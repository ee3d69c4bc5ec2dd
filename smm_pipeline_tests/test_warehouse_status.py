"""Status upkeep in the warehouse: what one poll's answers make of the stored orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from smm_pipeline.operations.polling import observations_frame
from smm_pipeline.panel.models import OrderStatus
from smm_pipeline.warehouse import connect
from smm_pipeline.warehouse.db import Location
from smm_pipeline.warehouse.status import Cadence, apply_observations, due_orders, open_summary

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CADENCE = Cadence(min_minutes=2, max_minutes=240)


def _order(conn, order_id: int, submitted: timedelta, **fields) -> None:
    row = {
        "panel": "p",
        "ref": f"r{order_id}",
        "order_id": order_id,
        "submit_state": "submitted",
        "created_at": NOW - submitted,
        "submitted_at": NOW - submitted,
        **fields,
    }
    conn.execute(
        f"INSERT INTO orders ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
        list(row.values()),
    )


def _apply(conn, *statuses: OrderStatus) -> tuple[int, int]:
    frame = observations_frame("p", {s.order_id: s for s in statuses})
    return apply_observations(conn, frame, NOW, CADENCE)


@pytest.fixture()
def conn(warehouse: Location):
    """Each test on both engines: a DuckDB file, then a Postgres database."""
    with connect(warehouse) as c:
        yield c


def _row(conn, order_id: int, columns: str) -> tuple:
    return conn.execute(f"SELECT {columns} FROM orders WHERE order_id = ?", [order_id]).fetchone()


def test_a_final_cancel_without_a_charge_clears_the_old_charge(conn) -> None:
    for oid in (1, 2, 3):
        _order(conn, oid, timedelta(hours=1), status="In progress", charge=Decimal("1.8"))
    changed, _ = _apply(
        conn,
        OrderStatus(1, status="Canceled", raw_status="Canceled"),
        OrderStatus(2, status="Refunded", raw_status="Refunded"),
        OrderStatus(3, status="Partial", raw_status="Partial", remains=50),
    )
    assert changed == 3
    assert _row(conn, 1, "charge, finished_at") == (None, NOW)
    assert _row(conn, 2, "charge") == (None,)
    assert _row(conn, 3, "charge") == (Decimal("1.8"),)  # Partial keeps what was charged
    spend = conn.execute("SELECT order_id, spend FROM order_facts ORDER BY 1").fetchall()
    assert spend == [(1, Decimal("0")), (2, Decimal("0")), (3, Decimal("1.8"))]


def test_a_field_the_panel_leaves_out_is_kept_and_is_not_a_change(conn) -> None:
    _order(
        conn, 1, timedelta(hours=8), status="In progress", charge=Decimal("0.5"), remains=10,
        start_count=7, last_change_at=NOW - timedelta(hours=8),
    )  # fmt: skip
    changed, _ = _apply(conn, OrderStatus(1, status="In progress", raw_status="In progress"))
    assert changed == 0
    assert _row(conn, 1, "charge, remains, start_count") == (Decimal("0.5"), 10, 7)
    assert conn.execute("SELECT count(*) FROM order_status_history").fetchone() == (0,)
    assert _row(conn, 1, "next_poll_at") == (NOW + timedelta(hours=2),)  # 8 h unchanged / 4


def test_the_poll_interval_grows_with_age_and_time_unchanged(conn) -> None:
    pending = {"status": "Pending", "charge": Decimal("1")}
    _order(conn, 1, timedelta(minutes=4), **pending)  # young: the minimum
    _order(conn, 2, timedelta(hours=4), **pending)  # never changed: a quarter of its age
    _order(conn, 3, timedelta(days=2), **pending)  # old: clamped to the maximum
    # old, but it moved 2 hours ago: a quarter of the time unchanged, not of its age
    _order(conn, 4, timedelta(days=2), last_change_at=NOW - timedelta(hours=2), **pending)
    _order(conn, 5, timedelta(days=2), **pending)  # changes now: back to the minimum
    same = [OrderStatus(i, status="Pending", raw_status="Pending", charge=Decimal("1"))
            for i in (1, 2, 3, 4)]  # fmt: skip
    moved = OrderStatus(5, status="In progress", raw_status="In progress", charge=Decimal("1"))
    assert _apply(conn, *same, moved) == (1, 0)
    due_in = {
        oid: next_poll - NOW
        for oid, next_poll in conn.execute("SELECT order_id, next_poll_at FROM orders").fetchall()
    }
    assert due_in == {
        1: timedelta(minutes=2),
        2: timedelta(hours=1),
        3: timedelta(hours=4),
        4: timedelta(minutes=30),
        5: timedelta(minutes=2),
    }


def test_a_subscriptions_status_expiry_posts_and_child_orders_are_stored(conn) -> None:
    _order(conn, 9, timedelta(hours=1), service_type="Subscriptions")
    active = OrderStatus(
        9, status="Active", raw_status="Active", is_subscription=True, expiry="01/04/2026",
        posts=3, orders=(101, 102),
    )  # fmt: skip
    assert _apply(conn, active) == (1, 0)
    assert _row(
        conn, 9, "status, subscription_expiry, subscription_posts, subscription_orders, finished_at"
    ) == ("Active", "01/04/2026", 3, "101,102", None)
    # the subscription (due in 2 minutes) and its two child orders, due now
    assert open_summary(conn) == (3, NOW)
    expired = OrderStatus(
        9, status="Expired", raw_status="Expired", is_subscription=True, expiry="01/04/2026",
        posts=5, orders=(101, 102, 103),
    )  # fmt: skip
    _apply(conn, expired)
    assert _row(conn, 9, "status, subscription_posts, subscription_orders, finished_at") == (
        "Expired",
        5,
        "101,102,103",
        NOW,
    )
    # the Expired subscription is never polled again; its children are, until they finish
    due = due_orders(conn, NOW + timedelta(days=1), poll_all=True)
    assert list(due["order_id"]) == [101, 102, 103]
    assert open_summary(conn) == (3, NOW)


def test_open_summary_counts_only_the_panels_asked_for(conn) -> None:
    _order(conn, 1, timedelta(hours=1), next_poll_at=NOW - timedelta(hours=1))
    conn.execute(
        "INSERT INTO orders (panel, ref, order_id, submit_state, submitted_at, next_poll_at) "
        "VALUES ('gone', 'g1', 2, 'submitted', ?, ?)",
        [NOW - timedelta(days=3), NOW - timedelta(days=2)],
    )
    assert open_summary(conn) == (2, NOW - timedelta(days=2))
    assert open_summary(conn, ["p"]) == (1, NOW - timedelta(hours=1))
    assert open_summary(conn, []) == (0, None)
