"""Progress lines a person can read (issue 12), against the simulator over loopback and a real
DuckDB file: a long submission logs a first line, lines at the progress interval (done/total,
the spend so far as money, the calls made, an ETA) and a last line, never more than one per
interval; polls and resubmits log the same way; and no line shows the warehouse's 18 places.

The interval is 0.2 s here (10 s shipped) and the panel's budget 1,200 requests a minute (20
a second), so 60 rows take about 3 s: a few intervals. Nothing is timed: the line counts are
bounded by the run's own duration."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.lib.resources import PanelsResource
from smm_pipeline.money import money_text
from smm_pipeline.operations import polling, submission
from smm_pipeline.operations.order_files import prepare_order_file
from smm_pipeline.operations.polling import poll_orders
from smm_pipeline.operations.resolution import Resolution, resolve_ambiguous
from smm_pipeline.operations.submission import submit_file
from smm_pipeline.panel.ratelimit import Priority
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.status import Cadence
from smm_pipeline_tests.conftest import make_pipeline, panel_yaml

INTERVAL = 0.2
ROWS = 60
# A money amount with more than 6 trailing zeros (the warehouse's DECIMAL(38, 18) as is).
TOO_MANY_ZEROS = re.compile(r"\d\.\d*0{7,}(?!\d)")
SUBMIT_LINE = re.compile(
    r"^(\d+)/(\d+) rows done, (\d+) submitted, estimated spend (\d+\.\d{2,})(?: USD)?"
)


@pytest.fixture
def paced(tmp_path, monkeypatch, sim):
    """One panel with a budget of 20 requests a second, and progress lines every 0.2 s."""
    monkeypatch.setattr(submission, "PROGRESS_SECONDS", INTERVAL)
    monkeypatch.setattr(polling, "PROGRESS_EVERY_SECONDS", INTERVAL)
    sim.set_balance("1000.00")
    return make_pipeline(
        tmp_path,
        monkeypatch,
        [
            panel_yaml(
                "sim", sim.url, rate_limit_per_minute=1200, max_concurrency=4, timeout_seconds=5
            )
        ],  # fmt: skip
    )


def order_file(prefix: str, n: int) -> str:
    rows = "".join(f"2,https://instagram.com/p/{prefix}{i},100,{prefix}-{i}\n" for i in range(n))
    return "service,link,quantity,ref\n" + rows


def clients_of(pipeline, priority: Priority = Priority.SUBMIT):
    resource = PanelsResource(panels_file=str(pipeline.panels_file))
    return resource.clients(pipeline.settings, priority=priority)


def prepare(pipeline, name: str, content: str, lines: list[str]):
    pipeline.drop("orders", name, content)
    with clients_of(pipeline) as clients:
        return prepare_order_file(
            pipeline.settings, pipeline.db_path, name, file_hash(content.encode()), clients,
            log=lines.append,
        )  # fmt: skip


def progress_lines(lines: list[str], pattern: re.Pattern[str]) -> list[str]:
    return [line for line in lines if pattern.search(line)]


def assert_readable_money(lines: list[str]) -> None:
    bad = [line for line in lines if TOO_MANY_ZEROS.search(line)]
    assert not bad, bad


def test_a_long_submission_logs_first_periodic_and_last_lines_at_most_one_an_interval(paced):
    lines: list[str] = []
    prepared = prepare(paced, "long.csv", order_file("l", ROWS), lines)
    spend = prepared.estimated_spend  # 60 × 0.012, summed from DECIMAL(38, 18) amounts
    assert prepared.to_submit == ROWS
    # The validation line gives the spend as money, with the panel's currency.
    assert f"estimated spend {money_text(spend, 'USD')}" in lines[-1], lines[-1]

    with clients_of(paced) as clients:
        report = submit_file(paced.db_path, prepared.file_hash, clients, progress=lines.append)
    assert (report.submitted, report.failed, report.ambiguous) == (ROWS, 0, 0)

    shown = progress_lines(lines, SUBMIT_LINE)
    first, *periodic, last = shown
    # First: nothing done yet, the ETA from the budget alone (1,200 a minute over 61 s).
    assert first.startswith(f"0/{ROWS} rows done, 0 submitted, estimated spend 0.00, ")
    assert "ETA " in first and "(budget 19.7 rows/s)" in first, first
    # Periodic: done/total, the spend as money, the calls made, an ETA.
    assert periodic, shown
    for line in periodic:
        done, total, submitted, amount = SUBMIT_LINE.match(line).groups()
        assert int(total) == ROWS and int(done) <= ROWS and int(submitted) <= int(done)
        assert Decimal(amount) <= spend
        assert re.search(r", \d+ calls, \d+(\.\d)?s elapsed, ETA \S+ \((budget|observed) ", line)
    # Last: everything, the spend as the money formatter writes it, calls and time taken.
    assert last.startswith(f"{ROWS}/{ROWS} rows done, {ROWS} submitted, estimated spend 0.72, ")
    assert last == shown[-1] == lines[-1]
    assert re.search(rf", {report.calls} calls in \d+(\.\d)?s$", last), last
    assert "ETA" not in last
    # At most one line an interval, besides the first and the last.
    assert len(shown) <= report.seconds / INTERVAL + 2, (len(shown), report.seconds)
    # Rows done never go back, and the ETA never shows the warehouse's places.
    done = [int(SUBMIT_LINE.match(line).group(1)) for line in shown]
    assert done == sorted(done)
    assert_readable_money(lines)


def test_a_poll_and_a_resubmit_log_the_same_way_and_no_line_has_18_places(paced, sim):
    lines: list[str] = []
    prepared = prepare(paced, "polled.csv", order_file("p", ROWS), lines)
    with clients_of(paced) as clients:
        submit_file(paced.db_path, prepared.file_hash, clients, progress=lines.append)

    # The poll: 5 ids a call, 12 calls, one panel's progress lines.
    with clients_of(paced, Priority.POLL) as clients:
        clients["sim"].max_ids_per_call = 5
        started = len(lines)
        report = poll_orders(
            paced.db_path, clients, Cadence(), poll_all=True, progress=lines.append
        )
    assert report.polled == ROWS
    poll_line = re.compile(r"^sim: (\d+)/12 status calls answered \((\d+) statuses")
    shown = progress_lines(lines[started:], poll_line)
    assert shown[0].startswith("sim: 0/12 status calls answered (0 statuses so far), 0 calls, ")
    assert "ETA " in shown[0] and "(budget " in shown[0]
    assert re.search(r"^sim: 12/12 status calls answered \(60 statuses\), \d+ calls in ", shown[-1])
    assert len(shown) <= report.http_seconds / INTERVAL + 2, (len(shown), report.http_seconds)

    # A resubmit of rows never sent (made ambiguous by hand): the submission's lines, then a
    # summary with the spend as money.
    more = prepare(paced, "resent.csv", order_file("r", 30), lines)
    with connect(paced.db_path) as conn:
        conn.execute(
            "UPDATE orders SET submit_state = 'ambiguous' WHERE file_hash = ?", [more.file_hash]
        )
    started = len(lines)
    with clients_of(paced) as clients:
        resolved = resolve_ambiguous(
            paced.settings, paced.db_path,
            [Resolution("sim", f"r-{i}", "resubmit") for i in range(30)],
            clients, progress=lines.append,
        )  # fmt: skip
    assert resolved.submitted == 30 and not resolved.errors
    shown = progress_lines(lines[started:], SUBMIT_LINE)
    assert shown[0].startswith("0/30 rows done, 0 submitted, estimated spend 0.00, ")
    assert shown[-1].startswith("30/30 rows done, 30 submitted, estimated spend 0.36, ")
    assert re.search(
        r"^resubmitted 30 rows: 30 submitted, 0 failed, 0 ambiguous, estimated spend 0\.36, "
        r"30 calls in \d+(\.\d)?s$",
        lines[-1],
    ), lines[-1]

    # Every line logged: money with its meaningful places only.
    assert_readable_money(lines)
