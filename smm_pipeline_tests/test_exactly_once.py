"""Exactly once across files and runs, through the operations layer against the simulator and
a real warehouse on each engine (a DuckDB file, then a Postgres database): budgets held across
files, the estimate's currency, one row per panel order id, a batch that stops at an answer
that is not the API, and pending rows of a filed file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.lib.resources import PanelsResource
from smm_pipeline.operations.inbox import FileRejected
from smm_pipeline.operations.order_files import finish_order_file, prepare_order_file
from smm_pipeline.operations.resolution import Resolution, resolve_ambiguous
from smm_pipeline.operations.submission import submit_file
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.orders import resolve_rows
from smm_pipeline_tests.conftest import ENGINES, engine_location, make_pipeline, panel_yaml

HEADER = "service,link,quantity,ref\n"


def order_file(prefix: str, n: int, quantity: int = 1000) -> str:
    return HEADER + "".join(
        f"1,https://x.com/{prefix}{i},{quantity},{prefix}-{i}\n" for i in range(n)
    )


@pytest.fixture(params=ENGINES)
def one_at_a_time(request, tmp_path, monkeypatch, sim):
    """One request in flight at a time, so the order of answers is the file's; on each
    engine."""
    return make_pipeline(
        tmp_path,
        monkeypatch,
        [
            panel_yaml(
                "sim", sim.url, rate_limit_per_minute=60000, max_concurrency=1, timeout_seconds=5
            )
        ],  # fmt: skip
        warehouse=engine_location(request, request.param, tmp_path),
    )


def clients_of(pipeline):
    return PanelsResource(panels_file=str(pipeline.panels_file)).clients(pipeline.settings)


def prepare(pipeline, name: str, content: str):
    pipeline.drop("orders", name, content)
    with clients_of(pipeline) as clients:
        return prepare_order_file(
            pipeline.settings, pipeline.db_path, name, file_hash(content.encode()), clients
        )


def run_file(pipeline, name: str, content: str):
    prepared = prepare(pipeline, name, content)
    with clients_of(pipeline) as clients:
        report = submit_file(pipeline.db_path, prepared.file_hash, clients)
        finish_order_file(pipeline.settings, pipeline.db_path, prepared, clients)
    return report


def query(pipeline, sql: str) -> list[tuple]:
    with connect(pipeline.db_path, read_only=True) as con:
        return con.execute(sql).fetchall()


def test_two_files_validated_back_to_back_never_exceed_the_balance(engine_pipeline, sim):
    pipeline = engine_pipeline
    first = prepare(pipeline, "first.csv", order_file("f", 3))  # recorded, not sent yet
    cost = first.estimated_spend
    sim.set_balance(cost * 2 - Decimal("0.01"))  # room for the first file and not quite two
    with pytest.raises(FileRejected) as rejected:
        prepare(pipeline, "second.csv", order_file("s", 3))
    assert "reserved for rows of other files not sent yet" in rejected.value.summary
    assert query(pipeline, "SELECT count(*) FROM orders WHERE ref LIKE 's-%'") == [(0,)]
    sim.set_balance(cost * 2)
    assert prepare(pipeline, "second-again.csv", order_file("s", 3)).to_submit == 3


def test_a_balance_in_another_currency_than_the_prices_refuses_the_file(engine_pipeline, sim):
    pipeline = engine_pipeline
    run_file(pipeline, "usd.csv", order_file("u", 1))
    sim.set_balance("500", currency="EUR")
    with pytest.raises(FileRejected) as rejected:
        prepare(pipeline, "eur.csv", order_file("e", 1))
    assert "its balance is now in EUR, but its prices and earlier balances were in USD" in (
        rejected.value.summary
    )
    assert sim.stats()["calls"].get("add", 0) == 1


def test_an_order_id_answered_twice_is_one_submitted_row_and_spend_once(one_at_a_time, sim):
    pipeline = one_at_a_time
    sim.inject("other_id", action="add", times=1)
    run_file(pipeline, "warm.csv", order_file("w", 1))  # no earlier order: its own id
    sim.inject("other_id", action="add", times=1)
    run_file(pipeline, "twice.csv", order_file("t", 2))
    rows = dict(
        (ref, (state, oid, answered))
        for ref, state, oid, answered in query(
            pipeline, "SELECT ref, submit_state, order_id, answered_order_id FROM orders"
        )
    )
    warm_id = rows["w-0"][1]
    assert rows["w-0"][0] == "submitted"
    assert rows["t-0"] == ("ambiguous", None, warm_id)  # the panel named w-0's order
    assert rows["t-1"][0] == "submitted"
    held = query(
        pipeline,
        "SELECT order_id, count(*) FROM orders WHERE submit_state = 'submitted' "
        "GROUP BY 1 HAVING count(*) > 1",
    )
    assert held == []
    [(error,)] = query(pipeline, "SELECT submit_error FROM orders WHERE ref = 't-0'")
    assert "which ref 'w-0' already holds" in error
    reached = dict(query(pipeline, "SELECT ref, reached_panel FROM order_facts"))
    assert reached == {"w-0": True, "t-0": False, "t-1": True}
    [(spend_rows,)] = query(pipeline, "SELECT sum(orders) FROM spend_daily")
    assert spend_rows == 2


def test_an_answer_that_is_not_the_api_stops_the_batch_and_a_redrop_sends_the_rest(
    one_at_a_time, sim
):
    pipeline = one_at_a_time
    sim.inject("html_403", action="add", times=-1)  # a Cloudflare block: every add refused
    content = order_file("b", 5)
    report = run_file(pipeline, "blocked.csv", content)
    states = dict(query(pipeline, "SELECT ref, submit_state FROM orders"))
    assert states == {"b-0": "ambiguous", **{f"b-{i}": "failed" for i in range(1, 5)}}
    errors = [e for (e,) in query(pipeline, "SELECT submit_error FROM orders WHERE ref <> 'b-0'")]
    assert all(e.startswith("not sent: the panel answered an earlier row") for e in errors)
    assert report.stopped_panels == ["sim"]
    assert sim.stats()["calls"]["add"] == 1

    sim.clear_faults()
    run_file(pipeline, "blocked-again.csv", content)  # the same content once the block is gone
    states = dict(query(pipeline, "SELECT ref, submit_state FROM orders"))
    assert states == {"b-0": "ambiguous", **{f"b-{i}": "submitted" for i in range(1, 5)}}
    assert sorted(o["link"] for o in sim.orders()) == [f"https://x.com/b{i}" for i in range(1, 5)]


def test_pending_rows_of_a_filed_file_are_sent_by_its_rerun_and_by_a_resubmit(engine_pipeline, sim):
    pipeline = engine_pipeline
    sim.configure(outcome_weights={"Completed": 1})
    content = order_file("p", 3)
    run_file(pipeline, "filed.csv", content)
    sim.advance(7 * 86400)  # finished: the panel takes the same link again
    with connect(pipeline.db_path) as conn:  # two rows the operator resubmitted; then the
        conn.execute(  # resolve run died before sending them: pending, the file filed
            "UPDATE orders SET submit_state = 'ambiguous', order_id = NULL "
            "WHERE ref IN ('p-1', 'p-2')"
        )
        resolve_rows(
            conn,
            [("sim", "p-1", "resubmit", None), ("sim", "p-2", "resubmit", None)],
            datetime.now(UTC),
        )
    before = len(sim.orders())
    # Re-executing the file's run sends its pending row p-1 ...
    with connect(pipeline.db_path) as conn:
        conn.execute("UPDATE orders SET file_hash = 'elsewhere' WHERE ref = 'p-2'")
    prepared = prepare(pipeline, "filed.csv", content)
    assert prepared.resumed and prepared.to_submit == 1
    with clients_of(pipeline) as clients:
        assert submit_file(pipeline.db_path, prepared.file_hash, clients).submitted == 1
        # ... and the resolve job sends the other pending one on a resubmit.
        report = resolve_ambiguous(
            pipeline.settings, pipeline.db_path, [Resolution("sim", "p-2", "resubmit")],
            clients, progress=lambda _: None,
        )  # fmt: skip
    assert report.submitted == 1 and not report.errors
    assert len(sim.orders()) == before + 2
    states = dict(query(pipeline, "SELECT ref, submit_state FROM orders"))
    assert states == {"p-0": "submitted", "p-1": "submitted", "p-2": "submitted"}


def test_a_refusal_text_that_is_not_valid_unicode_can_be_journaled_and_recorded(warehouse):
    """A lone surrogate in the panel's JSON ("\\ud800" decodes to one) cannot be written as
    UTF-8: the outcome keeps it escaped, so the journal and DuckDB take it (a worker that
    failed there would have left the batch waiting for its answer)."""
    from smm_pipeline.operations.submission import outcome_of
    from smm_pipeline.panel.errors import APIError
    from smm_pipeline.warehouse.journal import AnswerJournal, journal_location
    from smm_pipeline.warehouse.orders import mark_sending, record_outcomes, record_pending
    from smm_pipeline_tests.test_submission import outbox

    outcome = outcome_of("p", "p-0", APIError(json.loads('"bad \\ud800 text"'), panel="p"))
    assert outcome.error == "bad \\ud800 text"
    db = warehouse
    journal = AnswerJournal(journal_location(db))
    journal.answered(outcome.to_json())
    with connect(db) as conn:
        record_pending(conn, outbox("p", 1), datetime.now(UTC))
        mark_sending(conn, "p", ["p-0"], journal.claim_id)
        record_outcomes(conn, [outcome], claim_id=journal.claim_id)
        stored = conn.execute("SELECT submit_state, submit_error FROM orders").fetchall()
    journal.close()
    assert stored == [("failed", "bad \\ud800 text")]


def test_a_journal_with_an_unreadable_line_before_its_end_proves_no_row_unsent(tmp_path):
    """Only the last line of a dead journal may be cut (its `send` never completed, so its row
    never left). A damaged line earlier could have been any row's `send`: every unanswered row
    of that claim is ambiguous, none goes back to pending."""
    from smm_pipeline.warehouse.journal import journal_location
    from smm_pipeline.warehouse.orders import mark_sending, record_pending, settle_dead_claims
    from smm_pipeline_tests.test_submission import outbox

    db = tmp_path / "w.duckdb"
    folder = journal_location(db)
    folder.mkdir()
    with connect(db) as conn:
        record_pending(conn, outbox("p", 3), datetime.now(UTC))
        mark_sending(conn, "p", ["p-0", "p-1", "p-2"], "dead")
        (folder / "dead.jsonl").write_bytes(
            b'{"k":"send","panel":"p","ref":"p-0"}\n{"k":"se\n{"k":"send","panel":"p","ref":"p-2"}\n'
        )
        settled = settle_dead_claims(conn, folder)
        states = dict(conn.execute("SELECT ref, submit_state FROM orders").fetchall())
    assert (settled.ambiguous, settled.released) == (3, 0)
    assert states == {"p-0": "ambiguous", "p-1": "ambiguous", "p-2": "ambiguous"}
    assert not (folder / "dead.jsonl").exists()
