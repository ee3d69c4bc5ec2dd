"""Refill and cancel files, and refill-status polling: sensors → request_refills / cancel_orders
/ poll_refill_statuses, against the simulator over loopback, into a real DuckDB file; the
end-to-end refill and cancel flows, chunked calls and ambiguous refills on Postgres too."""

from __future__ import annotations

import csv
import io
import textwrap
from datetime import UTC, datetime

import dagster as dg
import pytest

from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.lib.resources import PanelsResource
from smm_pipeline.operations.inbox import FileRejected
from smm_pipeline.operations.order_files import finish_order_file, prepare_order_file
from smm_pipeline.operations.submission import submit_file
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.processed_files import claim_file
from smm_pipeline.warehouse.refills import IN_FLIGHT, due_refills, record_in_flight
from smm_pipeline.warehouse.status import Cadence
from smm_pipeline_tests.conftest import TEST_KEY, make_pipeline, panel_yaml
from smm_pipeline_tests.dagster_helpers import (
    event_texts,
    look_twice,
    run_requested,
    settle,
    tick,
)

ONLY_COMPLETED = {"Completed": 1}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def fast_pipeline(tmp_path, monkeypatch, sim):
    """Like `pipeline`, with a refill/order poll cadence so short that whatever was written
    is due again by the time a sensor looks (so a sensor's run request can be tested)."""
    return make_pipeline(
        tmp_path,
        monkeypatch,
        [
            panel_yaml(
                "sim",
                sim.url,
                rate_limit_per_minute=60000,
                max_concurrency=8,
                timeout_seconds=5,
                max_batch_spend='"500.00"',
            )
        ],  # fmt: skip
        textwrap.dedent(
            """
            pipeline:
              poll_min_interval_minutes: 0.0001
            """
        ),
    )


# ------------------------------------------------------------------ helpers


def query(pipeline, sql: str, params: list | None = None) -> list[tuple]:
    with connect(pipeline.db_path, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def order_ids(pipeline) -> dict[str, int]:
    return dict(query(pipeline, "SELECT ref, order_id FROM orders WHERE order_id IS NOT NULL"))


def place_orders(pipeline, name: str, rows: list[tuple[str, int, int]]) -> dict[str, int]:
    """Place orders (ref, service, quantity) through the order-file steps (the submit_orders
    job is tested in test_defs_orders; calling its steps directly keeps these tests fast).
    Returns ref -> panel order id."""
    lines = ["ref,service,link,quantity"]
    lines += [f"{ref},{service},https://x.com/{ref},{qty}" for ref, service, qty in rows]
    content = ("\n".join(lines) + "\n").encode()
    pipeline.drop("orders", name, content)
    settings, db_path = pipeline.settings, pipeline.db_path
    with PanelsResource(panels_file=str(pipeline.panels_file)).clients(settings) as clients:
        prepared = prepare_order_file(settings, db_path, name, file_hash(content), clients)
        report = submit_file(db_path, prepared.file_hash, clients)
        finish_order_file(settings, db_path, prepared, clients)
    assert report.submitted == len(rows), report
    return order_ids(pipeline)


def drop_action(pipeline, instance, kind: str, name: str, content: str):
    """Drop a refill or cancel file, tick its sensor, run what the sensor asks for."""
    sensor, job = {
        "refills": ("refill_csv_sensor", "request_refills"),
        "cancels": ("cancel_csv_sensor", "cancel_orders"),
    }[kind]
    settle(pipeline.drop(kind, name, content))
    defs = pipeline.defs()
    ticked = look_twice(defs, sensor, instance)
    assert len(ticked.run_requests) == 1, ticked.skip_message
    return run_requested(defs, ticked.run_requests[0], instance, job)


def results(pipeline, name: str) -> list[dict]:
    text = (pipeline.folders.processed / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def latest_metadata(instance, key: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def run_poll(pipeline, instance, job: str, *, poll_all: bool) -> dg.ExecuteInProcessResult:
    tags = {"smm/poll": "all"} if poll_all else {}
    result = (
        pipeline.defs()
        .resolve_job_def(job)
        .execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    )
    assert result.success, event_texts(result)
    return result


# ------------------------------------------------------------------ refills


def test_refills_end_to_end_with_per_row_refusals(engine_pipeline, sim, instance):
    pipeline = engine_pipeline
    ids = place_orders(
        pipeline,
        "orders.csv",
        [("fin", 1, 100), ("part", 3, 100), ("norefill", 2, 100), ("open", 1, 200)],
    )
    sim.set_order(ids["fin"], status="Completed")
    sim.set_order(ids["part"], status="Partial", remains=40)
    sim.set_order(ids["norefill"], status="Completed")
    sim.set_order(ids["open"], status="In progress", remains=120)
    sim.reset_stats()

    rows_text = [f"{ids['fin']},", ",part", ",norefill", ",open", ",nope", "987654321,", ",fin"]
    refill_file = "order,ref\n" + "\n".join(rows_text) + "\n"
    result = drop_action(pipeline, instance, "refills", "refills.csv", refill_file)
    assert result.success, event_texts(result)

    rows = results(pipeline, "refills.results.csv")
    assert [r["state"] for r in rows] == [
        "submitted", "submitted", "not_sent", "not_sent", "not_sent", "not_sent", "not_sent",
    ]  # fmt: skip
    assert rows[1]["order"] == str(ids["part"]) and rows[1]["ref"] == "part"
    assert "refill=false" in rows[2]["error"]
    assert "In progress" in rows[3]["error"] and "Completed or Partial" in rows[3]["error"]
    assert "no order with ref 'nope'" in rows[4]["error"]
    assert "987654321 is not in the warehouse" in rows[5]["error"]
    assert rows[6]["error"] == f"order {ids['fin']} is already listed in row 1"
    assert not list(pipeline.folders.inbox("refills").iterdir())
    assert not (pipeline.folders.rejected / "refills.csv").exists()

    panel_refills = {r["order"]: r["refill"] for r in sim.refills()}
    assert set(panel_refills) == {ids["fin"], ids["part"]}
    stored = query(
        pipeline,
        "SELECT order_id, refill_id, request_state, error, source_file FROM refills "
        "ORDER BY order_id",
    )
    assert stored == sorted(
        (oid, panel_refills[oid], "submitted", None, "refills.csv")
        for oid in (ids["fin"], ids["part"])
    )
    assert [r["refill_id"] for r in rows[:2]] == [
        str(panel_refills[ids["fin"]]),
        str(panel_refills[ids["part"]]),
    ]
    # One multi refill call for the two eligible orders; statuses refreshed first.
    stats = sim.stats()
    assert stats["calls"]["refill"] == 1
    assert stats["ids_per_call"]["refill"] == [2]
    assert stats["calls"]["status"] == 1
    meta = latest_metadata(instance, "refills")
    assert meta["open_refills"] == 2
    assert meta["submitted"] == 2
    assert meta["dagster/row_count"] == 2
    assert TEST_KEY not in event_texts(result)

    # The refills are due in minutes: the sensor says when, and launches nothing yet.
    skipped = tick(pipeline.defs(), "refill_status_sensor", instance)
    assert not skipped.run_requests
    assert "sim: 2 unfinished, next due at" in skipped.skip_message

    # The operator's "refresh everything": one run tagged smm/poll=all.
    sim.set_refill(panel_refills[ids["fin"]], "Completed")
    sim.set_refill(panel_refills[ids["part"]], "Rejected")
    sim.reset_stats()
    run_poll(pipeline, instance, "poll_refill_statuses", poll_all=True)
    assert query(pipeline, "SELECT order_id, status FROM refills ORDER BY order_id") == sorted(
        [(ids["fin"], "Completed"), (ids["part"], "Rejected")]
    )
    assert sim.stats()["calls"] == {"refill_status": 1}
    assert latest_metadata(instance, "refills")["open_refills"] == 0
    finished = tick(pipeline.defs(), "refill_status_sensor", instance)
    assert finished.skip_message == "no unfinished refills"

    # The same content dropped again, under another name: nothing is requested again.
    sim.reset_stats()
    again = drop_action(pipeline, instance, "refills", "refills-again.csv", refill_file)
    assert again.success, event_texts(again)
    rows = results(pipeline, "refills-again.results.csv")
    assert [r["state"] for r in rows] == ["skipped"] * 7
    assert "already processed as refills.csv" in rows[0]["error"]
    assert [r["refill_id"] for r in rows[:2]] == [
        str(panel_refills[ids["fin"]]),
        str(panel_refills[ids["part"]]),
    ]
    assert sim.stats()["calls"] == {}
    assert len(sim.refills()) == 2
    assert query(
        pipeline, "SELECT outcome, file_name FROM processed_files WHERE kind = 'refills'"
    ) == [("processed", "refills.csv")]


def test_refill_status_sensor_launches_due_polls_until_finished(fast_pipeline, sim, instance):
    pipeline = fast_pipeline
    assert (
        tick(pipeline.defs(), "refill_status_sensor", instance).skip_message
        == "no refills recorded yet"
    )
    sim.configure(outcome_weights=ONLY_COMPLETED, refill_rejected_percent=0)
    ids = place_orders(pipeline, "o.csv", [("a", 1, 100), ("b", 16, 100)])
    sim.advance(3600)
    result = drop_action(pipeline, instance, "refills", "r.csv", "ref\na\nb\n")
    assert result.success, event_texts(result)
    assert [r["state"] for r in results(pipeline, "r.results.csv")] == ["submitted"] * 2

    # The simulator finishes them; they are due (the cadence is tiny here): the sensor asks
    # for a poll, the poll records the final statuses, and the sensor goes quiet.
    sim.advance(3600)
    ticked = tick(pipeline.defs(), "refill_status_sensor", instance)
    assert len(ticked.run_requests) == 1, ticked.skip_message
    assert ticked.run_requests[0].run_key.startswith("refills:")
    polled = run_requested(pipeline.defs(), ticked.run_requests[0], instance,
                           "poll_refill_statuses")  # fmt: skip
    assert polled.success, event_texts(polled)
    assert query(pipeline, "SELECT order_id, status FROM refills ORDER BY order_id") == sorted(
        [(ids["a"], "Completed"), (ids["b"], "Completed")]
    )
    assert tick(pipeline.defs(), "refill_status_sensor", instance).skip_message == (
        "no unfinished refills"
    )


def test_multi_chunk_refills_statuses_and_cancels(engine_pipeline, sim, instance):
    pipeline = engine_pipeline
    """More than 100 orders in a file: calls of at most 100 ids, every id sent once."""
    done = [f"d{i}" for i in range(130)]
    still_open = [f"o{i}" for i in range(105)]
    ids = place_orders(pipeline, "many.csv", [(r, 1, 50) for r in done + still_open])
    for ref in done:
        sim.set_order(ids[ref], status="Completed")
    sim.reset_stats()

    refill_file = "ref\n" + "".join(f"d{i}\n" for i in range(130))
    result = drop_action(pipeline, instance, "refills", "many.csv", refill_file)
    assert result.success, event_texts(result)
    stats = sim.stats()
    assert stats["calls"]["refill"] == 2
    assert sorted(stats["ids_per_call"]["refill"]) == [30, 100]
    assert sorted(stats["ids_per_call"]["status"]) == [30, 100]
    assert sorted(r["order"] for r in sim.refills()) == sorted(ids[r] for r in done)
    assert query(pipeline, "SELECT request_state, count(*) FROM refills GROUP BY 1") == [
        ("submitted", 130)
    ]

    sim.reset_stats()
    run_poll(pipeline, instance, "poll_refill_statuses", poll_all=True)
    assert sorted(sim.stats()["ids_per_call"]["refill_status"]) == [30, 100]
    assert query(pipeline, "SELECT count(*) FROM refills WHERE status = 'Pending'") == [(130,)]

    sim.reset_stats()
    cancel_file = "order\n" + "".join(f"{ids[f'o{i}']}\n" for i in range(105))
    result = drop_action(pipeline, instance, "cancels", "many.csv", cancel_file)
    assert result.success, event_texts(result)
    assert sorted(sim.stats()["ids_per_call"]["cancel"]) == [5, 100]
    assert query(pipeline, "SELECT result, count(*) FROM cancels GROUP BY 1") == [("accepted", 105)]
    open_ids = {ids[f"o{i}"] for i in range(105)}
    assert {o["status"] for o in sim.orders() if o["order"] in open_ids} == {"Canceled"}


def test_ambiguous_refills_are_recorded_and_never_retried(engine_pipeline, sim, instance):
    pipeline = engine_pipeline
    sim.configure(outcome_weights=ONLY_COMPLETED)
    ids = place_orders(pipeline, "o.csv", [(r, 1, 100) for r in ("a", "b", "c", "d")])
    sim.advance(3600)
    sim.inject("drop_after", action="refill", times=1)
    content = "ref\na\nb\n"
    result = drop_action(pipeline, instance, "refills", "amb.csv", content)
    assert result.success, event_texts(result)

    rows = results(pipeline, "amb.results.csv")
    assert [r["state"] for r in rows] == ["ambiguous", "ambiguous"]
    assert "outcome unknown" in rows[0]["error"]
    assert rows[0]["refill_id"] == ""
    assert len(sim.refills()) == 2  # the panel did act on the request it never answered
    assert query(
        pipeline, "SELECT order_id, refill_id, request_state FROM refills ORDER BY 1"
    ) == sorted([(ids["a"], None, "ambiguous"), (ids["b"], None, "ambiguous")])
    assert "ambiguous" in event_texts(result)
    assert TEST_KEY not in event_texts(result)
    # Nothing is sent again: not by a poll (no refill id to ask about), not by a re-drop.
    with connect(pipeline.db_path) as conn:
        assert due_refills(conn, datetime.now(UTC), Cadence(), poll_all=True).empty
    sim.reset_stats()
    assert drop_action(pipeline, instance, "refills", "amb-again.csv", content).success
    assert sim.stats()["calls"] == {}
    assert len(sim.refills()) == 2

    # A run killed mid-request left order c in flight: the next run of the same content keeps
    # c ambiguous and requests only d.
    content = "ref\nc\nd\n"
    started = datetime.now(UTC)
    with connect(pipeline.db_path) as conn:
        claim = claim_file(conn, file_hash(content.encode()), "refills", "crashed.csv", started)
        record_in_flight(conn, "refills", "sim", [ids["c"]], claim, started)
    result = drop_action(pipeline, instance, "refills", "retry.csv", content)
    assert result.success, event_texts(result)
    rows = results(pipeline, "retry.results.csv")
    assert [r["state"] for r in rows] == ["skipped", "submitted"]
    assert sim.stats()["ids_per_call"]["refill"] == [1]
    assert [r["order"] for r in sim.refills()][2:] == [ids["d"]]
    assert query(
        pipeline,
        "SELECT order_id, request_state, error FROM refills WHERE order_id IN (?, ?) ORDER BY 1",
        [ids["c"], ids["d"]],
    ) == sorted([(ids["c"], "ambiguous", IN_FLIGHT), (ids["d"], "submitted", None)])


def test_file_sensors_skip_and_a_bad_file_is_rejected_whole(pipeline, sim, instance):
    defs = pipeline.defs()
    for sensor, kind in (("refill_csv_sensor", "refills"), ("cancel_csv_sensor", "cancels")):
        skipped = tick(defs, sensor, instance)
        assert not skipped.run_requests
        assert skipped.skip_message == f"no CSV files in {pipeline.folders.inbox(kind)}"
    pipeline.drop("cancels", "busy.csv", "order\n1\n")  # just written: not settled yet
    waiting = tick(defs, "cancel_csv_sensor", instance)
    assert waiting.skip_message == "waiting for busy.csv to finish being written"

    result = drop_action(pipeline, instance, "refills", "bad.csv", "ref,oder\na,1\n")
    assert not result.success
    assert "unknown column 'oder'" in event_texts(result)
    assert (pipeline.folders.rejected / "bad.csv").exists()
    errors = (pipeline.folders.rejected / "bad.errors.csv").read_text(encoding="utf-8")
    assert "did you mean 'order'" in errors
    assert sim.stats()["calls"] == {}
    assert query(pipeline, "SELECT outcome FROM processed_files WHERE kind = 'refills'") == [
        ("rejected",)
    ]


# ------------------------------------------------------------------ cancels


def test_cancels_end_to_end_with_per_row_refusals(engine_pipeline, sim, instance):
    pipeline = engine_pipeline
    refs = [("open", 1), ("nocancel", 3), ("done", 2), ("amb", 16), ("refuse", 18)]
    ids = place_orders(pipeline, "orders.csv", [(ref, service, 100) for ref, service in refs])
    sim.set_order(ids["done"], status="Completed")
    sim.patch_service(18, cancel=False)  # the panel changed its terms; our catalog is older
    sim.reset_stats()
    content = f"order,ref\n,open\n,nocancel\n{ids['done']},\n,ghost\n,refuse\n"
    result = drop_action(pipeline, instance, "cancels", "cancel.csv", content)
    assert result.success, event_texts(result)

    rows = results(pipeline, "cancel.results.csv")
    assert list(rows[0]) == ["row", "panel", "order", "ref", "service", "result", "error"]
    assert [r["result"] for r in rows] == [
        "accepted", "not_sent", "not_sent", "not_sent", "refused",
    ]  # fmt: skip
    assert rows[0]["error"] == ""
    assert "cancel=false" in rows[1]["error"]
    assert "already Completed" in rows[2]["error"]
    assert "no order with ref 'ghost'" in rows[3]["error"]
    assert rows[4]["error"] == "Cancel is disabled for this service"  # the panel's last word
    assert sim.stats()["ids_per_call"]["cancel"] == [2]
    assert sim.order(ids["open"])["status"] == "Canceled"
    assert query(
        pipeline, "SELECT order_id, result, error, source_file FROM cancels ORDER BY result"
    ) == [
        (ids["open"], "accepted", None, "cancel.csv"),
        (ids["refuse"], "refused", "Cancel is disabled for this service", "cancel.csv"),
    ]
    # The accepted cancel made its order due now: the status sensor asks for a poll, which
    # records the Canceled status and the refund.
    ticked = tick(pipeline.defs(), "order_status_sensor", instance)
    assert len(ticked.run_requests) == 1, ticked.skip_message
    polled = run_requested(pipeline.defs(), ticked.run_requests[0], instance,
                           "poll_order_statuses")  # fmt: skip
    assert polled.success, event_texts(polled)
    assert query(pipeline, "SELECT status, charge FROM orders WHERE ref = 'open'") == [
        ("Canceled", 0)
    ]

    # A cancel whose answer is lost is ambiguous, and a re-drop never sends it again.
    sim.inject("drop_after", action="cancel", times=1)
    result = drop_action(pipeline, instance, "cancels", "amb.csv", "ref\namb\n")
    assert result.success, event_texts(result)
    assert [r["result"] for r in results(pipeline, "amb.results.csv")] == ["ambiguous"]
    assert sim.order(ids["amb"])["status"] == "Canceled"


def reject_as_orders(pipeline, name: str, content: str) -> None:
    settings = pipeline.settings
    panels = PanelsResource(panels_file=str(pipeline.panels_file))
    with panels.clients(settings) as clients, pytest.raises(FileRejected):
        prepare_order_file(settings, pipeline.db_path, name, file_hash(content.encode()), clients)


def test_the_same_bytes_in_another_inbox_are_another_file(pipeline, sim, instance):
    """processed_files is keyed by (content, kind): `order\\n<id>\\n` rejected in the orders
    inbox does not make the refill inbox forget (or skip) the refill those bytes ask for."""
    sim.configure(outcome_weights=ONLY_COMPLETED)
    ids = place_orders(pipeline, "o.csv", [("a", 1, 100), ("b", 1, 100)])
    sim.advance(3600)
    first = f"order\n{ids['a']}\n"
    # Converse case first: the bytes were rejected as an order file, then dropped as a refill
    # file: the refill still goes out.
    pipeline.drop("orders", "wrong-inbox.csv", first)
    reject_as_orders(pipeline, "wrong-inbox.csv", first)
    assert drop_action(pipeline, instance, "refills", "r1.csv", first).success
    assert [r["order"] for r in sim.refills()] == [ids["a"]]

    # The refill was made; the same bytes dropped in the orders inbox again (rejected there)
    # and then in the refill inbox once more: the refill inbox still knows it sent them.
    pipeline.drop("orders", "wrong-again.csv", first)
    reject_as_orders(pipeline, "wrong-again.csv", first)
    sim.reset_stats()
    again = drop_action(pipeline, instance, "refills", "r1-again.csv", first)
    assert again.success, event_texts(again)
    assert [r["state"] for r in results(pipeline, "r1-again.results.csv")] == ["skipped"]
    assert "refill" not in sim.stats()["calls"]
    assert len(sim.refills()) == 1
    assert sorted(query(pipeline, "SELECT kind, outcome FROM processed_files")) == [
        ("orders", "processed"),
        ("orders", "rejected"),
        ("refills", "processed"),
    ]
