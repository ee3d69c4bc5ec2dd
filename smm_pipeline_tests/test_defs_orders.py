"""Orders from CSV drops, submitted exactly once: sensor → submit_orders, against the
simulator, into a real DuckDB file."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import dagster as dg
import duckdb
import pytest

from smm_pipeline.lib.file_sensors import SENSOR_INTERVAL_SECONDS, cursor_seen_earlier
from smm_pipeline_tests.conftest import TEST_KEY
from smm_pipeline_tests.dagster_helpers import (
    drop_and_run,
    event_texts,
    look_twice,
    run_requested,
    settle,
    tick,
)

HEADER = (
    "service,link,quantity,runs,interval,keywords,comments,usernames,hashtags,hashtag,username,"
    "media,answer_number,groups,min,max,posts,delay,expiry,ref,campaign\n"
)
ALL_TYPES = (
    HEADER
    + """1,https://instagram.com/p/a,100,,,,,,,,,,,,,,,,,t-default,spring
1,https://instagram.com/p/drip,100,3,10,,,,,,,,,,,,,,,t-drip,spring
15,https://instagram.com/p/pkg,,,,,,,,,,,,,,,,,,t-package,spring
29,https://example.com,1000,,,"seo one
seo two",,,,,,,,,,,,,,t-seo,
4,https://instagram.com/p/cc,,,,,"c1
c2
c3
c4
c5
c6
c7
c8
c9
c10",,,,,,,,,,,,,t-cc,
5,https://instagram.com/p/ccp,,,,,"one
two",,,,,,,,,,,,,t-ccp,
6,https://instagram.com/p/m,100,,,,,"u1
u2",,,,,,,,,,,,t-mentions,
7,https://instagram.com/p/mh,100,,,,,"u1","#h1
#h2",,,,,,,,,,,t-mh,
8,https://instagram.com/p/mcl,,,,,,"a1
a2
a3
a4
a5
a6
a7
a8
a9
a10",,,,,,,,,,,,t-mcl,
9,https://instagram.com/p/mht,100,,,,,,,#sun,,,,,,,,,,t-mhashtag,
10,https://instagram.com/p/muf,100,,,,,,,,https://instagram.com/someone,,,,,,,,,t-muf,
11,https://instagram.com/p/mml,100,,,,,,,,,https://instagram.com/p/media,,,,,,,,t-mml,
12,https://instagram.com/p/cl,50,,,,,,,,commenter,,,,,,,,,t-cl,
13,https://instagram.com/p/cr,,,,,"r1
r2
r3
r4
r5",,,,owner,,,,,,,,,t-cr,
24,https://youtube.com/post/p,100,,,,,,,,,,2,,,,,,,t-poll,
28,https://t.me/chan,100,,,,,,,,,,,"g1
g2",,,,,,t-groups,
14,,,,,,,,,,someone,,,,50,100,5,20,2099-12-31,t-subs,
"""
)


def orders_table(pipeline) -> list[tuple]:
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        return con.execute(
            "SELECT ref, submit_state, order_id, estimated_cost, service_type FROM orders "
            "ORDER BY row_number"
        ).fetchall()


def results_csv(pipeline, name: str) -> list[dict]:
    text = (pipeline.folders.processed / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_every_service_type_end_to_end(pipeline, sim, instance):
    result = drop_and_run(pipeline, instance, "all_types.csv", ALL_TYPES)
    assert result.success, event_texts(result)
    rows = orders_table(pipeline)
    assert len(rows) == 17
    assert {r[1] for r in rows} == {"submitted"}
    assert len(sim.orders()) == 17
    by_ref = {r[0]: r for r in rows}
    assert by_ref["t-default"][3] == Decimal("0.09")
    assert by_ref["t-drip"][3] == Decimal("0.27")  # 0.90 × 100 × 3 runs / 1000
    assert by_ref["t-package"][3] == Decimal("0.45")
    assert by_ref["t-cc"][3] == Decimal("0.08")  # 10 lines × 8 / 1000
    results = results_csv(pipeline, "all_types.results.csv")
    assert [r["submit_state"] for r in results] == ["submitted"] * 17
    assert all(r["order_id"] for r in results)
    assert not list(pipeline.folders.inbox("orders").iterdir())
    sim_params = {o["params"].get("link") or o["params"]["username"]: o for o in sim.orders()}
    assert sim_params["https://instagram.com/p/cc"]["params"]["comments"].split("\n")[9] == "c10"
    assert sim_params["someone"]["params"]["expiry"] == "31/12/2099"
    materializations = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    orders_meta = [m for m in materializations if m.asset_key == dg.AssetKey("orders")][-1]
    assert orders_meta.metadata["open_orders"].value == 17
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["smm/file"] == "all_types.csv" and tags["smm/rows"] == "17"
    assert (tags["smm/submitted"], tags["smm/failed"], tags["smm/ambiguous"]) == ("17", "0", "0")
    assert Decimal(tags["smm/estimated_spend"]) == sum(r[3] for r in rows)


def test_redrop_rename_and_repeated_ref_submit_nothing_new(pipeline, sim, instance):
    first = "service,link,quantity,ref\n1,https://x.com/a,100,r-1\n2,https://x.com/b,20,\n"
    assert drop_and_run(pipeline, instance, "one.csv", first).success
    assert len(sim.orders()) == 2
    sim.reset_stats()
    again = drop_and_run(pipeline, instance, "one-renamed.csv", first)
    assert again.success
    assert len(sim.orders()) == 2
    assert sim.stats()["calls"].get("add", 0) == 0
    states = [r["submit_state"] for r in results_csv(pipeline, "one-renamed.results.csv")]
    assert states == ["skipped", "skipped"]
    same_name = drop_and_run(pipeline, instance, "one.csv", first)
    assert same_name.success and len(sim.orders()) == 2
    later = "service,link,quantity,ref\n1,https://x.com/zzz,500,r-1\n1,https://x.com/new,100,r-2\n"
    assert drop_and_run(pipeline, instance, "later.csv", later).success
    assert len(sim.orders()) == 3
    assert [r["submit_state"] for r in results_csv(pipeline, "later.results.csv")] == [
        "skipped",
        "submitted",
    ]


def test_same_drop_is_launched_once(pipeline, instance):
    settle(pipeline.drop("orders", "x.csv", "service,link,quantity\n1,https://x.com/a,100\n"))
    defs = pipeline.defs()
    first = look_twice(defs, "order_csv_sensor", instance)
    assert len(first.run_requests) == 1
    assert first.run_requests[0].tags["smm/file"] == "x.csv"
    assert first.run_requests[0].tags["smm/rows"] == "1"
    second = tick(defs, "order_csv_sensor", instance, cursor=first.cursor)
    assert not second.run_requests
    assert "already have runs" in second.skip_message


def test_sensor_waits_for_a_file_being_written(pipeline, instance):
    pipeline.drop("orders", "growing.csv", "service,link,quantity\n")
    pipeline.drop("orders", "partial.csv.part", "x")
    defs = pipeline.defs()
    first = tick(defs, "order_csv_sensor", instance)
    assert not first.run_requests
    assert "waiting for growing.csv" in first.skip_message
    second = tick(defs, "order_csv_sensor", instance, cursor=first.cursor)
    assert not second.run_requests  # unchanged, but looked at again too soon
    assert "waiting for growing.csv" in second.skip_message
    later = cursor_seen_earlier(second.cursor, SENSOR_INTERVAL_SECONDS)
    third = tick(defs, "order_csv_sensor", instance, cursor=later)
    assert len(third.run_requests) == 1  # unchanged one sensor interval later: complete


def test_empty_inbox_skip_reason(pipeline, instance):
    result = tick(pipeline.defs(), "order_csv_sensor", instance)
    assert "no CSV files" in result.skip_message


def test_invalid_file_is_rejected_and_nothing_is_sent(pipeline, sim, instance):
    bad = "service,link,quantity\n1,https://x.com/a,100\n1,ftp://x.com/b,100\n1,https://x.com/c,5\n"
    result = drop_and_run(pipeline, instance, "bad.csv", bad)
    assert not result.success
    assert sim.stats()["calls"].get("add", 0) == 0
    errors = (pipeline.folders.rejected / "bad.errors.csv").read_text()
    assert "row,column,message" in errors
    assert "2,link" in errors and "3,quantity" in errors
    assert (pipeline.folders.rejected / "bad.csv").exists()
    assert "rejected with 2 error(s)" in event_texts(result)
    assert orders_table(pipeline) == []


def test_budget_over_max_batch_spend_rejects(pipeline, sim, instance):
    rows = "".join(f"22,https://youtube.com/c{i},20000,\n" for i in range(2))  # 2 × 360.00
    result = drop_and_run(pipeline, instance, "big.csv", "service,link,quantity,ref\n" + rows)
    assert not result.success
    text = (pipeline.folders.rejected / "big.errors.csv").read_text()
    assert "max_batch_spend" in text
    assert sim.stats()["calls"].get("add", 0) == 0


@pytest.mark.parametrize(
    ("kind", "state", "panel_orders"),
    [
        # Through the sensor and the job, one of each outcome; test_fault_matrix.py runs every
        # fault against every action.
        ("drop_after", "ambiguous", 1),
        ("html_200", "ambiguous", 0),
        ("http_429", "submitted", 1),
    ],
)
def test_add_faults_end_in_the_right_state_without_duplicates(
    pipeline, sim, instance, kind, state, panel_orders
):
    sim.inject(kind, action="add", times=1, retry_after=0)
    result = drop_and_run(
        pipeline, instance, "f.csv", "service,link,quantity,ref\n1,https://x.com/f,100,f-1\n"
    )
    assert result.success
    assert orders_table(pipeline)[0][1] == state
    assert len(sim.orders()) == panel_orders
    sim.reset_stats()
    rerun = drop_and_run(
        pipeline, instance, "f-again.csv", "service,link,quantity,ref\n1,https://x.com/f,100,f-1\n"
    )
    assert rerun.success
    # Other content with the same ref: past the file-hash check, the ref itself is protected.
    other = drop_and_run(
        pipeline, instance, "f-other.csv", "service,link,quantity,ref\n1,https://x.com/g,200,f-1\n"
    )
    assert other.success, event_texts(other)
    assert len(sim.orders()) == panel_orders  # never resent
    assert sim.stats()["calls"].get("add", 0) == 0
    [row] = results_csv(pipeline, "f-other.results.csv")
    assert row["submit_state"] == "skipped"
    assert row["error"] == f"ref already {state} from f.csv; not sent again"


def test_not_enough_funds_mid_batch_stops_cleanly_and_a_redrop_sends_only_those_rows(
    pipeline, sim, instance
):
    rows = "".join(f"1,https://x.com/n{i},1000,n-{i}\n" for i in range(40))  # 0.90 each
    content = "service,link,quantity,ref\n" + rows
    sim.set_balance("1000.00")
    # The validation sees 1000.00; the panel's balance drops before the submission.
    settle(pipeline.drop("orders", "funds.csv", content))
    defs = pipeline.defs()
    request = look_twice(defs, "order_csv_sensor", instance).run_requests[0]
    job = defs.resolve_job_def("submit_orders")
    # Run only the validation step, then drain the balance, then run the rest.
    first = job.execute_in_process(
        run_config=request.run_config, instance=instance, op_selection=["validate_order_file"]
    )
    assert first.success
    sim.set_balance("9.00")  # enough for 10 orders of 0.90
    second = run_requested(defs, request, instance, "submit_orders")
    assert second.success, event_texts(second)
    states = [r[1] for r in orders_table(pipeline)]
    assert states.count("submitted") == 10
    assert states.count("failed") == 30
    assert len(sim.orders()) == 10
    results = results_csv(pipeline, "funds.results.csv")
    failed = [r for r in results if r["submit_state"] == "failed"]
    assert len(failed) == 30
    assert all("Not enough funds on balance" in r["error"] for r in failed), failed
    assert all(r["order_id"] == "" for r in failed)

    sim.set_balance("100.00")  # topped up: drop the same file again
    sim.reset_stats()
    again = drop_and_run(pipeline, instance, "funds.csv", content)
    assert again.success, event_texts(again)
    assert sim.stats()["calls"].get("add", 0) == 30
    assert len(sim.orders()) == 40
    assert len({o["link"] for o in sim.orders()}) == 40
    assert {r[1] for r in orders_table(pipeline)} == {"submitted"}
    [report] = [p for p in pipeline.folders.processed.glob("funds.*.results.csv")]
    redo = list(csv.DictReader(io.StringIO(report.read_text(encoding="utf-8"))))
    assert [r["submit_state"] for r in redo].count("submitted") == 30
    assert [r["submit_state"] for r in redo].count("skipped") == 10
    assert results_csv(pipeline, "funds.results.csv") == results  # the first report stays


def test_ambiguous_rows_resolved_by_the_operator(pipeline, sim, instance):
    sim.inject("drop_after", action="add", times=1)
    sim.inject("drop_before", action="add", times=1)
    sim.inject("http_500", action="add", times=1)
    content = (
        "service,link,quantity,ref\n1,https://x.com/r1,100,a-1\n1,https://x.com/r2,100,a-2\n"
        "1,https://x.com/r3,100,a-3\n"
    )
    pipeline_settings = pipeline.settings.panel("sim")
    assert pipeline_settings.max_concurrency == 8
    assert drop_and_run(pipeline, instance, "amb.csv", content).success
    assert [r[1] for r in orders_table(pipeline)] == ["ambiguous"] * 3
    defs = pipeline.defs()
    check = defs.resolve_job_def("check_orders").execute_in_process(
        instance=instance, raise_on_error=False
    )
    evaluations = {
        e.event_specific_data.check_name: e.event_specific_data
        for e in check.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert evaluations["ambiguous_submissions"].passed is False
    assert evaluations["ambiguous_submissions"].metadata["count"].value == 3
    [existing] = sim.orders()  # only the drop-after-commit request created an order
    existing_id = existing["order"]
    attach, resubmit, abandon = sorted(
        ["a-1", "a-2", "a-3"], key=lambda ref: ref != f"a-{existing['link'][-1]}"
    )
    resolve = defs.resolve_job_def("resolve_ambiguous_orders").execute_in_process(
        run_config={
            "ops": {
                "resolve_ambiguous_rows": {
                    "config": {
                        "resolutions": [
                            {"panel": "sim", "ref": attach, "action": "attach",
                             "order_id": existing_id},
                            {"panel": "sim", "ref": resubmit, "action": "resubmit"},
                            {"panel": "sim", "ref": abandon, "action": "abandon"},
                        ]
                    }
                }
            }
        },
        instance=instance,
    )  # fmt: skip
    assert resolve.success
    rows = {r[0]: r for r in orders_table(pipeline)}
    assert rows[attach][1:3] == ("submitted", existing_id)
    assert rows[resubmit][1] == "submitted"
    assert rows[abandon][1] == "abandoned"
    assert len(sim.orders()) == 2  # the committed one + the one resubmitted on purpose
    check = defs.resolve_job_def("check_orders").execute_in_process(instance=instance)
    passed = [
        e.event_specific_data.passed
        for e in check.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "ambiguous_submissions"
    ]
    assert passed == [True]


def test_resolution_of_a_row_that_is_not_ambiguous_is_refused(pipeline, sim, instance):
    assert drop_and_run(
        pipeline, instance, "ok.csv", "service,link,quantity,ref\n1,https://x.com/ok,100,ok-1\n"
    ).success
    result = (
        pipeline.defs()
        .resolve_job_def("resolve_ambiguous_orders")
        .execute_in_process(
            run_config={
                "ops": {
                    "resolve_ambiguous_rows": {
                        "config": {
                            "resolutions": [{"panel": "sim", "ref": "ok-1", "action": "abandon"}]
                        }
                    }
                }
            },
            instance=instance,
            raise_on_error=False,
        )
    )
    assert not result.success
    assert "is submitted, not ambiguous" in event_texts(result)
    assert orders_table(pipeline)[0][1] == "submitted"


def test_the_key_is_absent_from_the_event_log(pipeline, sim, instance):
    sim.inject("drop_after", action="add", times=1)
    result = drop_and_run(
        pipeline, instance, "k.csv", "service,link,quantity\n1,https://x.com/k,100\n"
    )
    assert result.success
    logs = instance.all_logs(result.run_id)
    text = "\n".join(repr(e) for e in logs)
    assert text and TEST_KEY not in text
    run = instance.get_run_by_id(result.run_id)
    assert TEST_KEY not in repr(run.run_config) and TEST_KEY not in repr(run.tags)
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            dump = repr(con.execute(f'SELECT * FROM "{table}"').fetchall())
            assert TEST_KEY not in dump


def test_a_send_step_that_fails_still_signals_orders_so_its_checks_run(pipeline, sim, instance):
    """The answer journal cannot be written (a file stands where its folder goes): the send
    step fails before any add, and still reports `orders`, whose checks then run at once."""
    journal = pipeline.db_path.resolve().with_name(pipeline.db_path.name + ".journal")
    journal.write_text("not a folder")
    result = drop_and_run(
        pipeline, instance, "blocked.csv", "service,link,quantity\n1,https://x.com/a,100\n"
    )
    assert not result.success
    assert sim.stats()["calls"].get("add", 0) == 0
    [record] = instance.fetch_materializations(dg.AssetKey("orders"), limit=5).records
    signal = record.asset_materialization
    assert record.run_id == result.run_id
    assert signal.description == "sending blocked.csv failed"
    assert signal.metadata["open_orders"].value == 0
