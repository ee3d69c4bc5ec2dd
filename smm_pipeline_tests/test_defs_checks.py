"""The order checks (check_orders) on a warehouse holding every kind of row they look for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from smm_pipeline.warehouse import connect
from smm_pipeline.warehouse.monitoring import (
    STALE_PENDING_MINUTES,
    ambiguous_submissions,
    orders_on_vanished_services,
    stuck_orders,
)

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=10)


def _insert(conn, table: str, **row) -> None:
    cols = ", ".join(row)
    conn.execute(
        f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' for _ in row)})", list(row.values())
    )


def _order(conn, ref: str, state: str, created: datetime, order_id=None, **fields) -> None:
    _insert(
        conn, "orders", panel="sim", ref=ref, order_id=order_id, submit_state=state,
        created_at=created, submitted_at=created if order_id else None, service_id=1,
        link=f"https://x.com/{ref}", quantity=100, **fields,
    )  # fmt: skip


@pytest.fixture
def checked(engine_pipeline):
    """A pipeline (on each engine) whose warehouse holds a row of every kind the checks list."""
    pipeline = engine_pipeline
    stale = NOW - timedelta(minutes=STALE_PENDING_MINUTES + 5)
    with connect(pipeline.db_path) as conn:
        _insert(
            conn, "services", panel="sim", service_id=1, name="Gone", type="Default",
            category="x", active=False, first_seen_at=OLD, last_seen_at=OLD,
        )  # fmt: skip
        _order(conn, "amb", "ambiguous", NOW, submit_error="timeout")
        _order(conn, "killed", "sending", NOW)
        _order(conn, "stale", "pending", stale)
        _order(conn, "fresh", "pending", NOW)  # a run at work
        _order(conn, "old", "submitted", OLD, order_id=1, status="In progress")
        _order(conn, "sub", "submitted", OLD, order_id=2, status="Active",
               service_type="Subscriptions")  # fmt: skip
        _order(conn, "expired", "submitted", OLD, order_id=3, status="Expired",
               service_type="Subscriptions")  # fmt: skip
        _order(conn, "canceled", "submitted", OLD, order_id=4, status="Canceled")
        for order_id, at in ((1, OLD), (3, OLD), (3, NOW)):  # 3: re-requested since
            state = "ambiguous" if at == OLD else "failed"
            _insert(conn, "refills", panel="sim", order_id=order_id, requested_at=at,
                    request_state=state, error="no answer")  # fmt: skip
        for order_id in (1, 4):  # 4 finished since: its status says what happened
            _insert(conn, "cancels", panel="sim", order_id=order_id, requested_at=OLD,
                    result="ambiguous", error="no answer")  # fmt: skip
    return pipeline


def test_every_request_with_an_unknown_outcome_is_listed(checked) -> None:
    with connect(checked.db_path) as conn:
        listed = ambiguous_submissions(conn)
    assert list(zip(listed["kind"], listed["state"], listed["ref"], strict=True)) == [
        ("order", "pending", "stale"),
        ("order", "ambiguous", "amb"),
        ("order", "sending", "killed"),
        ("cancel", "ambiguous", "old"),
        ("refill", "ambiguous", "old"),
    ]


def test_subscriptions_are_not_stuck_and_expired_ones_are_finished(checked) -> None:
    with connect(checked.db_path) as conn:
        assert list(stuck_orders(conn, 72)["ref"]) == ["old"]
        assert list(orders_on_vanished_services(conn)["ref"]) == ["old", "sub"]


def test_the_check_fails_with_the_listing(checked) -> None:
    with dg.instance_for_test() as instance:
        result = (
            checked.defs()
            .resolve_job_def("check_orders")
            .execute_in_process(instance=instance, raise_on_error=False)
        )
    evaluations = {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    ambiguous = evaluations["ambiguous_submissions"]
    assert not ambiguous.passed
    assert ambiguous.metadata["count"].value == 5
    preview = ambiguous.metadata["rows"].value
    assert preview.startswith("| kind | state | panel | ref |")
    assert "| refill | ambiguous | sim | old |" in preview
    assert evaluations["stuck_orders"].metadata["count"].value == 1


def test_every_write_to_orders_runs_the_order_checks(pipeline) -> None:
    """The checks' automation condition requests them once after each `orders` materialization
    (what order_checks_automation evaluates), and not again until the next write."""
    defs = pipeline.defs()
    checks = dg.AssetSelection.checks_for_assets("orders")
    names = {"ambiguous_submissions", "stuck_orders", "orders_on_vanished_services"}

    def requested(instance, cursor):
        result = dg.evaluate_automation_conditions(
            defs, instance, asset_selection=checks, cursor=cursor
        )
        keys = {r.key.name for r in result.results if r.true_subset.size}
        return keys, result.cursor

    with dg.instance_for_test() as instance:
        keys, cursor = requested(instance, None)
        assert keys == set()  # nothing written yet
        instance.report_runless_asset_event(dg.AssetMaterialization("orders"))
        keys, cursor = requested(instance, cursor)
        assert keys == names
        keys, cursor = requested(instance, cursor)
        assert keys == set()  # handled: no second request for the same write
        instance.report_runless_asset_event(dg.AssetMaterialization("orders"))
        keys, cursor = requested(instance, cursor)
        assert keys == names
