"""Status polling: poll_order_statuses and order_status_sensor against the simulator; the
polls themselves (changes, history, 100 ids a call, spelling variants, cadence, a disabled
panel) on both engines, a DuckDB file and a Postgres database."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg
import duckdb
import pytest

from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.snapshot import replica_path
from smm_pipeline_tests.conftest import panel_yaml
from smm_pipeline_tests.dagster_helpers import drop_and_run, event_texts, tick


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def submit(pipeline, instance, n: int, service: int = 1, quantity: int = 100) -> list[int]:
    rows = "".join(f"{service},https://x.com/o{i},{quantity},o-{i}\n" for i in range(n))
    result = drop_and_run(pipeline, instance, f"o{n}.csv", "service,link,quantity,ref\n" + rows)
    assert result.success, event_texts(result)
    with connect(pipeline.db_path, read_only=True) as con:
        return [
            r[0] for r in con.execute("SELECT order_id FROM orders ORDER BY row_number").fetchall()
        ]


def poll(pipeline, instance, *, all_orders: bool = False) -> dg.ExecuteInProcessResult:
    tags = {"smm/poll": "all"} if all_orders else {}
    result = (
        pipeline.defs()
        .resolve_job_def("poll_order_statuses")
        .execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    )
    return result


def output_metadata(result: dg.ExecuteInProcessResult, step: str = "poll_due_orders") -> dict:
    for event in result.all_events:
        if event.event_type_value == "STEP_OUTPUT" and event.step_key == step:
            return {k: v.value for k, v in event.event_specific_data.metadata.items()}
    raise AssertionError("no output metadata")


def run_logs(instance, result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(r.user_message for r in instance.all_logs(result.run_id))


def order_rows(pipeline):
    with connect(pipeline.db_path, read_only=True) as con:
        return {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT order_id, status, raw_status, charge, remains, finished_at, poll_error "
                "FROM orders"
            ).fetchall()
        }


def history(pipeline, order_id: int) -> list[tuple]:
    with connect(pipeline.db_path, read_only=True) as con:
        return con.execute(
            "SELECT status, charge, remains FROM order_status_history WHERE order_id = ? "
            "ORDER BY observed_at",
            [order_id],
        ).fetchall()


def test_orders_progress_and_the_warehouse_follows_with_history_on_change_only(
    engine_pipeline, sim, instance
):
    pipeline = engine_pipeline
    done, partial, canceled = submit(pipeline, instance, 3)
    first = poll(pipeline, instance)
    assert first.success
    assert {r[0] for r in order_rows(pipeline).values()} == {"Pending"}
    sim.set_order(done, status="In progress", remains=40, start_count=1000)
    sim.set_order(partial, status="Partial", remains=25)
    sim.set_order(canceled, status="Canceled")
    second = poll(pipeline, instance, all_orders=True)
    assert second.success
    rows = order_rows(pipeline)
    assert rows[done][0] == "In progress" and rows[done][3] == 40
    assert rows[partial][0] == "Partial"
    assert rows[partial][2] == Decimal("0.0675")  # 0.09 refunded by 25/100
    assert rows[partial][4] is not None  # finished_at
    assert rows[canceled][0] == "Canceled" and rows[canceled][2] == Decimal("0")
    unchanged = poll(pipeline, instance, all_orders=True)
    assert output_metadata(unchanged)["changed"] == 0
    assert len(history(pipeline, done)) == 2  # Pending, In progress
    sim.set_order(done, status="Completed", remains=0)
    assert poll(pipeline, instance, all_orders=True).success
    assert [h[0] for h in history(pipeline, done)] == ["Pending", "In progress", "Completed"]
    assert len(history(pipeline, partial)) == 2


def test_finished_orders_are_never_polled_again(pipeline, sim, instance):
    ids = submit(pipeline, instance, 2)
    sim.set_order(ids[0], status="Completed", remains=0)
    assert poll(pipeline, instance).success
    sim.reset_stats()
    result = poll(pipeline, instance, all_orders=True)
    assert output_metadata(result)["polled"] == 1
    assert sim.stats()["ids_per_call"]["status"] == [1]  # one call, for the one open order


def test_250_active_orders_take_exactly_3_status_calls(engine_pipeline, sim, instance):
    pipeline = engine_pipeline
    submit(pipeline, instance, 250, service=2, quantity=20)
    sim.reset_stats()
    result = poll(pipeline, instance)
    meta = output_metadata(result)
    assert meta["polled"] == 250
    assert meta["status_calls"] == 3
    assert sim.stats()["calls"]["status"] == 3


def test_cadence_skips_orders_not_yet_due(engine_pipeline, sim, instance):
    pipeline = engine_pipeline
    submit(pipeline, instance, 5)
    assert output_metadata(poll(pipeline, instance))["polled"] == 5
    sim.reset_stats()
    again = poll(pipeline, instance)
    meta = output_metadata(again)
    assert meta["polled"] == 0 and meta["due"] == 0
    assert meta["calls_saved"] == 1  # polling every open order would have cost one call
    assert sim.stats()["calls"].get("status", 0) == 0


def test_spelling_variants_and_bare_string_item_errors(engine_pipeline, sim, instance):
    pipeline = engine_pipeline
    ids = submit(pipeline, instance, 2)
    sim.set_order(ids[0], status="Canceled")
    sim.configure(status_variants=True, bare_item_errors=True)
    # An id the panel does not know, recorded as if submitted (e.g. attached by mistake).
    with connect(pipeline.db_path) as con:
        con.execute("UPDATE orders SET order_id = 999999 WHERE order_id = ?", [ids[1]])
    result = poll(pipeline, instance, all_orders=True)
    assert result.success
    rows = order_rows(pipeline)
    assert rows[ids[0]][0] == "Canceled"
    assert rows[ids[0]][1] != "Canceled"  # the raw variant word is kept
    assert rows[999999][5] == "Incorrect order ID"
    assert output_metadata(result)["unknown_to_panel"] == 1


def test_bad_answers_mid_poll_are_retried_and_lose_nothing(pipeline, sim, instance):
    """A bad answer to a status call (an HTML page, then truncated JSON) in the middle of a
    poll is retried and the poll loses nothing (test_panel_client retries each kind)."""
    ids = submit(pipeline, instance, 150, service=2, quantity=20)
    kinds = ["html_200", "truncated_json"]
    for kind in kinds:
        sim.inject(kind, action="status", times=1)
    result = poll(pipeline, instance)
    assert result.success
    assert sim.faults() == []  # every one was answered, and retried
    assert output_metadata(result)["polled"] == 150
    assert all(order_rows(pipeline)[i][0] == "Pending" for i in ids)


def test_a_panel_that_stays_down_fails_the_run_visibly(pipeline, sim, instance):
    submit(pipeline, instance, 2)
    sim.inject("html_502", action="status", times=50)
    result = poll(pipeline, instance)
    assert not result.success
    assert "status poll failed for sim" in event_texts(result)


def test_status_sensor_requests_and_skip_reasons(engine_pipeline, sim, instance):
    pipeline = engine_pipeline
    defs = pipeline.defs()
    assert "no orders recorded yet" in tick(defs, "order_status_sensor", instance).skip_message
    submit(pipeline, instance, 2)
    due = tick(defs, "order_status_sensor", instance)
    assert len(due.run_requests) == 1
    assert poll(pipeline, instance).success
    later = tick(defs, "order_status_sensor", instance)
    assert not later.run_requests
    assert "sim: 2 unfinished, next due at" in later.skip_message
    for oid in order_rows(pipeline):
        sim.set_order(oid, status="Completed", remains=0)
    assert poll(pipeline, instance, all_orders=True).success
    assert "no unfinished orders" in tick(defs, "order_status_sensor", instance).skip_message


def test_orders_of_a_disabled_panel_do_not_keep_the_sensor_launching_runs(
    engine_pipeline, sim, instance
):
    pipeline = engine_pipeline
    submit(pipeline, instance, 2)
    assert poll(pipeline, instance).success
    # The panel is switched off in panels.yaml (another one takes over) while its two orders
    # are still open, and time passes: they are due again.
    pipeline.panels_file.write_text(
        "panels:\n"
        + panel_yaml("sim", sim.url, enabled="false")
        + "\n"
        + panel_yaml("live", sim.url, rate_limit_per_minute=60000)
        + "\n"
    )
    with connect(pipeline.db_path) as con:
        con.execute("UPDATE orders SET next_poll_at = now() - INTERVAL '1 hour'")
    sim.reset_stats()
    result = poll(pipeline, instance)
    assert result.success
    assert "not enabled (not counted as open): sim (2)" in run_logs(instance, result)
    assert sim.stats()["calls"].get("status", 0) == 0
    skip = tick(pipeline.defs(), "order_status_sensor", instance)
    assert not skip.run_requests
    assert "no unfinished orders" in skip.skip_message


def test_a_replica_that_cannot_be_published_is_a_warning_after_the_signal(pipeline, sim, instance):
    submit(pipeline, instance, 1)
    replica_path(pipeline.db_path).unlink()
    replica_path(pipeline.db_path).mkdir()  # the rename over it fails
    result = poll(pipeline, instance)
    assert result.success
    assert "read-only replica was not refreshed" in run_logs(instance, result)
    materialized = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert [e.asset_key for e in materialized] == [dg.AssetKey("orders")]
    later = tick(pipeline.defs(), "order_status_sensor", instance)
    assert "sim: 1 unfinished, next due at" in later.skip_message


def test_an_order_file_whose_replica_cannot_be_published_still_signals_its_orders(
    pipeline, sim, instance
):
    """The order file's run records the sensor's signal (the orders materialization) before
    the replica publish, which may fail: the new orders are polled all the same."""
    submit(pipeline, instance, 1)
    replica_path(pipeline.db_path).unlink()
    replica_path(pipeline.db_path).mkdir()  # every publish from now on fails
    rows = "1,https://x.com/late,100,late\n"
    result = drop_and_run(pipeline, instance, "late.csv", "service,link,quantity,ref\n" + rows)
    assert result.success, event_texts(result)
    assert "read-only replica was not refreshed" in run_logs(instance, result)
    event = instance.get_latest_materialization_event(dg.AssetKey("orders"))
    assert event.run_id == result.run_id
    assert event.asset_materialization.metadata["open_orders"].value == 2


def test_status_sensors_never_open_duckdb(pipeline, sim, instance, monkeypatch):
    submit(pipeline, instance, 1)
    instance.report_runless_asset_event(
        dg.AssetMaterialization("refills", metadata={"open_orders": 1, "next_poll_due_at": 0.0})
    )

    def refuse(*args, **kwargs):
        raise AssertionError("a sensor opened DuckDB")

    defs = pipeline.defs()
    monkeypatch.setattr(duckdb, "connect", refuse)
    orders = tick(defs, "order_status_sensor", instance)
    refills = tick(defs, "refill_status_sensor", instance)
    assert len(orders.run_requests) == 1 and len(refills.run_requests) == 1
