"""An order file's identity across runs: rewritten or moved back files, re-executed runs,
resumed runs and re-drops report what really happened, and nothing is sent twice."""

from __future__ import annotations

import csv
import io
import os

import dagster as dg
import duckdb
import pytest

from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.warehouse.db import connect
from smm_pipeline_tests.dagster_helpers import (
    drop_and_run,
    event_texts,
    look_twice,
    run_requested,
    settle,
)

A = "service,link,quantity,ref\n1,https://x.com/a1,100,a-1\n1,https://x.com/a2,100,a-2\n"
B = "service,link,quantity,ref\n1,https://x.com/b1,100,b-1\n"


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def results(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def refs_sent(sim) -> list[str]:
    return sorted(o["link"] for o in sim.orders())


def validate_only(defs, request, instance):
    """Run the validation step alone: the rows are recorded, nothing is sent yet."""
    result = defs.resolve_job_def("submit_orders").execute_in_process(
        run_config=request.run_config, instance=instance, op_selection=["validate_order_file"]
    )
    assert result.success, event_texts(result)


def test_a_file_rewritten_after_the_sensor_saw_it_is_left_for_its_own_run(pipeline, sim, instance):
    path = pipeline.drop("orders", "x.csv", A)
    settle(path)
    defs = pipeline.defs()
    seen_a = look_twice(defs, "order_csv_sensor", instance)
    path.write_text(B)  # overwritten before the run reads it
    settle(path)
    failed = run_requested(defs, seen_a.run_requests[0], instance, "submit_orders")
    assert not failed.success
    assert "x.csv changed after the sensor saw it" in event_texts(failed)
    assert path.read_text() == B  # left in the inbox, nothing recorded or sent
    assert sim.stats()["calls"].get("add", 0) == 0
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM orders").fetchall() == [(0,)]
    seen_b = look_twice(defs, "order_csv_sensor", instance, cursor=seen_a.cursor)
    [request_b] = seen_b.run_requests
    assert request_b.run_config["ops"]["validate_order_file"]["config"]["file_hash"] == (
        file_hash(B.encode())
    )
    assert run_requested(defs, request_b, instance, "submit_orders").success
    assert refs_sent(sim) == ["https://x.com/b1"]
    assert drop_and_run(pipeline, instance, "x.csv", A).success  # A was never handled
    assert refs_sent(sim) == ["https://x.com/a1", "https://x.com/a2", "https://x.com/b1"]


def test_a_file_moved_back_into_the_inbox_is_launched_again(pipeline, sim, instance):
    settle(pipeline.drop("orders", "x.csv", A))
    defs = pipeline.defs()
    first = look_twice(defs, "order_csv_sensor", instance)
    assert run_requested(defs, first.run_requests[0], instance, "submit_orders").success
    inbox = pipeline.folders.inbox("orders") / "x.csv"
    os.rename(pipeline.folders.processed / "x.csv", inbox)  # mv keeps the mtime
    # A new drop (new ctime) under a launched name: it waits for its own two looks.
    again = look_twice(defs, "order_csv_sensor", instance, cursor=first.cursor)
    [request] = again.run_requests
    assert request.run_key != first.run_requests[0].run_key
    assert request.run_key.startswith(f"orders:{file_hash(A.encode())}:x.csv:")
    assert run_requested(defs, request, instance, "submit_orders").success
    assert not inbox.exists()
    assert len(sim.orders()) == 2


def test_reexecuting_a_finished_run_never_rewrites_its_results(pipeline, sim, instance):
    assert drop_and_run(pipeline, instance, "x.csv", A).success
    defs = pipeline.defs()
    settle(pipeline.drop("orders", "x.csv", B))  # the same name again: a name clash
    request_b = look_twice(defs, "order_csv_sensor", instance).run_requests[0]
    assert run_requested(defs, request_b, instance, "submit_orders").success
    [b_report] = pipeline.folders.processed.glob("x.*.results.csv")
    a_report = pipeline.folders.processed / "x.results.csv"
    a_before, b_before = a_report.read_bytes(), b_report.read_bytes()
    assert [r["submit_state"] for r in results(a_report)] == ["submitted"] * 2
    rerun = run_requested(defs, request_b, instance, "submit_orders")  # re-execute the B run
    assert rerun.success, event_texts(rerun)
    report_meta = [
        e.event_specific_data.metadata
        for e in rerun.all_events
        if e.event_type_value == "STEP_OUTPUT" and e.step_key == "report_order_file"
    ][0]
    assert report_meta["results_written"].value is False
    assert report_meta["results_file"].value == str(b_report)
    assert (a_report.read_bytes(), b_report.read_bytes()) == (a_before, b_before)
    assert len(list(pipeline.folders.processed.glob("*.results.csv"))) == 2
    assert len(sim.orders()) == 3


def test_a_resumed_run_reports_skipped_rows_spend_and_balance(pipeline, sim, instance):
    assert drop_and_run(pipeline, instance, "early.csv", A.splitlines()[0] + "\n"
                        + A.splitlines()[1] + "\n").success  # fmt: skip
    content = A + "1,https://x.com/a3,1000,a-3\n"
    settle(pipeline.drop("orders", "x.csv", content))
    defs = pipeline.defs()
    request = look_twice(defs, "order_csv_sensor", instance).run_requests[0]
    validate_only(defs, request, instance)  # then the run dies: the job is run again
    resumed = run_requested(defs, request, instance, "submit_orders")
    assert resumed.success, event_texts(resumed)
    meta = {
        e.step_key: e.event_specific_data.metadata
        for e in resumed.all_events
        if e.event_type_value == "STEP_OUTPUT"
    }
    assert meta["validate_order_file"]["resumed"].value is True
    assert meta["validate_order_file"]["estimated_spend"].value == "0.99"  # 0.09 + 0.90
    assert "n/a" not in meta["report_order_file"]["actual_spend"].value
    rows = results(pipeline.folders.processed / "x.results.csv")
    assert [(r["ref"], r["submit_state"]) for r in rows] == [
        ("a-1", "skipped"), ("a-2", "submitted"), ("a-3", "submitted"),
    ]  # fmt: skip
    assert rows[0]["error"] == "ref already submitted from early.csv; not sent again"
    assert len(sim.orders()) == 3


def test_the_same_content_under_another_name_during_a_run_is_not_reported_as_sent(
    pipeline, sim, instance
):
    settle(pipeline.drop("orders", "one.csv", A))
    defs = pipeline.defs()
    one = look_twice(defs, "order_csv_sensor", instance)
    validate_only(defs, one.run_requests[0], instance)  # one.csv's run is still going
    settle(pipeline.drop("orders", "two.csv", A))
    two = look_twice(defs, "order_csv_sensor", instance, cursor=one.cursor)
    [request_two] = [r for r in two.run_requests if r.tags["smm/file"] == "two.csv"]
    assert run_requested(defs, request_two, instance, "submit_orders").success
    assert sim.stats()["calls"].get("add", 0) == 0
    rows = results(pipeline.folders.processed / "two.results.csv")
    assert [r["submit_state"] for r in rows] == ["skipped", "skipped"]
    assert rows[0]["error"] == (
        "this content was being handled by the run of one.csv (pending); not sent again"
    )
    assert run_requested(defs, one.run_requests[0], instance, "submit_orders").success
    assert [r["submit_state"] for r in results(pipeline.folders.processed / "one.results.csv")] == [
        "submitted",
        "submitted",
    ]
    assert len(sim.orders()) == 2


@pytest.mark.parametrize("name", ["../processed/x.csv", "/tmp/x.csv", "sub/x.csv", ".."])
def test_a_run_config_names_bare_files_only(pipeline, sim, instance, name):
    settle(pipeline.drop("orders", "x.csv", A))
    result = (
        pipeline.defs()
        .resolve_job_def("submit_orders")
        .execute_in_process(
            run_config={
                "ops": {
                    "validate_order_file": {
                        "config": {"file_name": name, "file_hash": file_hash(A.encode())}
                    }
                }
            },
            instance=instance,
            raise_on_error=False,
        )
    )
    assert not result.success
    assert "file_name must be a bare file name inside the inbox folder" in event_texts(result)
    assert (pipeline.folders.inbox("orders") / "x.csv").exists()
    assert sim.stats()["calls"].get("add", 0) == 0


def resolve(pipeline, instance, resolutions):
    return (
        pipeline.defs()
        .resolve_job_def("resolve_ambiguous_orders")
        .execute_in_process(
            run_config={
                "ops": {"resolve_ambiguous_rows": {"config": {"resolutions": resolutions}}}
            },
            instance=instance,
            raise_on_error=False,
        )
    )


def states(pipeline) -> dict[str, tuple]:
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        rows = con.execute("SELECT ref, submit_state, order_id FROM orders").fetchall()
    return {ref: (state, order_id) for ref, state, order_id in rows}


def make_ambiguous(pipeline, refs: list[str]) -> None:
    """As if these rows' adds had timed out: ambiguous, without an order id."""
    with connect(pipeline.db_path) as conn:
        conn.execute(
            "UPDATE orders SET submit_state = 'ambiguous', order_id = NULL, "
            "submit_error = 'timeout' WHERE ref IN (SELECT unnest(?))",
            [refs],
        )


def test_resubmit_sends_only_the_listed_refs_once(pipeline, sim, instance):
    content = A + "1,https://x.com/a3,100,a-3\n"
    settle(pipeline.drop("orders", "x.csv", content))
    defs = pipeline.defs()
    validate_only(defs, look_twice(defs, "order_csv_sensor", instance).run_requests[0], instance)
    make_ambiguous(pipeline, ["a-1", "a-2"])  # a-3 is still pending: its own run sends it
    result = resolve(pipeline, instance, [{"panel": "sim", "ref": "a-1", "action": "resubmit"}])
    assert result.success, event_texts(result)
    assert sim.stats()["calls"].get("add", 0) == 1
    assert refs_sent(sim) == ["https://x.com/a1"]
    now = states(pipeline)
    assert now["a-1"][0] == "submitted"
    assert (now["a-2"][0], now["a-3"][0]) == ("ambiguous", "pending")


def test_resolutions_that_cannot_apply_change_nothing(pipeline, sim, instance):
    assert drop_and_run(pipeline, instance, "x.csv", A).success
    make_ambiguous(pipeline, ["a-2"])
    held = states(pipeline)["a-1"][1]
    sim.reset_stats()
    twice = resolve(pipeline, instance, [
        {"panel": "sim", "ref": "a-2", "action": "resubmit"},
        {"panel": "sim", "ref": "a-2", "action": "abandon"},
    ])  # fmt: skip
    assert not twice.success
    assert "sim/a-2 listed more than once" in event_texts(twice)
    clash = resolve(
        pipeline, instance, [{"panel": "sim", "ref": "a-2", "action": "attach", "order_id": held}]
    )
    assert not clash.success
    assert f"order {held} is already attached to ref 'a-1' on panel 'sim'" in event_texts(clash)
    typo = resolve(
        pipeline, instance, [{"panel": "sim", "ref": "a-2", "action": "attach", "order_id": 99999}]
    )
    assert not typo.success
    assert (
        "the panel does not know order 99999 (Incorrect order ID): check the id on the "
        "panel's website" in event_texts(typo)
    )
    sim.set_balance("0.05")  # a-2 costs 0.09
    poor = resolve(pipeline, instance, [{"panel": "sim", "ref": "a-2", "action": "resubmit"}])
    assert not poor.success
    assert "more than the balance 0.05" in event_texts(poor)
    assert states(pipeline)["a-2"] == ("ambiguous", None)
    assert sim.stats()["calls"].get("add", 0) == 0
