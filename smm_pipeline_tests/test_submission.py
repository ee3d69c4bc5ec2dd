"""Order submission against the simulator over loopback and a real DuckDB file: the batch
stops on "Not enough funds" within the requests already in flight, rows caught mid-send by an
earlier run are never resent, and faults never make a row go out twice."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from smm_devkit.simulator.testing import ThreadedSimulator, running_simulator
from smm_pipeline.config import PanelConfig, Secret
from smm_pipeline.operations.submission import NOT_ENOUGH_FUNDS_STOP, submit_file
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.orders import mark_sending, record_pending
from smm_pipeline_tests.conftest import TEST_KEY

FUNDS = "Not enough funds on balance"
LIKES = Decimal("0.012")  # service 2: 0.12 per 1000, 100 a row


def outbox(panel: str, n: int, *, quantity: int = 100) -> pd.DataFrame:
    links = [f"https://instagram.com/p/{panel}{i}" for i in range(n)]
    params = [{"service": "2", "link": link, "quantity": str(quantity)} for link in links]
    return pd.DataFrame(
        {
            "panel": panel,
            "ref": [f"{panel}-{i}" for i in range(n)],
            "source_file": "t.csv",
            "file_hash": "h",
            "row_number": range(1, n + 1),
            "campaign": "t",
            "service_id": 2,
            "service_type": "Default",
            "link": links,
            "quantity": quantity,
            "params": [json.dumps(p) for p in params],
            "estimated_cost": [LIKES * quantity / 100] * n,
        }
    )


def record(db: Path, *frames: pd.DataFrame) -> None:
    with connect(db) as conn:
        for frame in frames:
            record_pending(conn, frame, datetime.now(UTC))


def rows(db: Path) -> dict[str, tuple[str, int | None, str | None]]:
    with connect(db) as conn:
        found = conn.execute("SELECT ref, submit_state, order_id, submit_error FROM orders")
        return {ref: (state, oid, error) for ref, state, oid, error in found.fetchall()}


@contextmanager
def clients(**panels: tuple[ThreadedSimulator, int]) -> Iterator[dict[str, PanelClient]]:
    """One client per panel name: (simulator, max_concurrency)."""
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(
                PanelClient(
                    PanelConfig(
                        name=name,
                        url=sim.url,
                        key_env="UNUSED",
                        rate_limit_per_minute=60000,
                        max_concurrency=concurrency,
                        timeout_seconds=5,
                    ),
                    Secret(TEST_KEY),
                )
            )
            for name, (sim, concurrency) in panels.items()
        }


def add_calls(sim: ThreadedSimulator) -> int:
    return sim.stats()["calls"].get("add", 0)


@pytest.fixture
def slow_sim() -> Iterator[ThreadedSimulator]:
    """20 ms per answer, so that several requests are in flight at once."""
    with running_simulator(keys=(TEST_KEY,), latency_ms=20) as handle:
        yield handle


@pytest.mark.parametrize("concurrency", [2, 8])
def test_not_enough_funds_stops_within_the_requests_already_in_flight(
    tmp_path, slow_sim, concurrency
):
    """A balance for exactly K orders. When the first refusal comes back, the other workers
    may each have one `add` in flight (sent before the refusal was known): those cannot be
    recalled. A worker checks the stop flag before every `add` and sets it on its own refusal,
    so each of the C workers sends at most one refused `add`: at most K + C calls, the
    minimum for C requests in flight. The old windows of 4 × C sent up to 4 × C past K."""
    n, k = 60, 10
    db = tmp_path / "w.duckdb"
    record(db, outbox("p", n))
    slow_sim.set_balance(LIKES * k)
    lines: list[str] = []
    with clients(p=(slow_sim, concurrency)) as cs:
        report = submit_file(db, "h", cs, progress=lines.append)

    calls = add_calls(slow_sim)
    assert k + 1 <= calls <= k + concurrency
    assert len(slow_sim.orders()) == k
    states = rows(db)
    submitted = {ref: oid for ref, (state, oid, _) in states.items() if state == "submitted"}
    assert len(submitted) == k
    assert set(submitted.values()) == {o["order"] for o in slow_sim.orders()}
    errors = collections.Counter(error for state, _, error in states.values() if state == "failed")
    assert errors == {FUNDS: calls - k, NOT_ENOUGH_FUNDS_STOP: n - calls}
    assert (report.submitted, report.failed, report.ambiguous) == (k, n - k, 0)
    assert report.estimated_spend == LIKES * k
    assert report.stopped_panels == ["p"]
    assert any("batch stopped" in line for line in lines)
    assert lines[-1].startswith(f"{n}/{n} rows done, {k} submitted, estimated spend 0.12")


def test_a_stopped_panel_does_not_stop_the_others(tmp_path, slow_sim):
    with running_simulator(keys=(TEST_KEY,), latency_ms=5) as rich:
        db = tmp_path / "w.duckdb"
        record(db, outbox("poor", 30), outbox("rich", 30))
        slow_sim.set_balance(LIKES * 3)
        with clients(poor=(slow_sim, 4), rich=(rich, 4)) as cs:
            report = submit_file(db, "h", cs)
        assert len(rich.orders()) == 30
    assert len(slow_sim.orders()) == 3
    assert report.stopped_panels == ["poor"]
    states = rows(db)
    assert all(states[f"rich-{i}"][0] == "submitted" for i in range(30))
    assert [s for s, _, _ in states.values()].count("submitted") == 33


def test_rows_left_sending_by_a_dead_run_become_ambiguous_and_are_not_resent(tmp_path, sim):
    db = tmp_path / "w.duckdb"
    record(db, outbox("p", 10))
    with connect(db) as conn:  # a run claimed these three, then died: they may have left
        mark_sending(conn, "p", ["p-0", "p-4", "p-9"], "a-run-without-journal")
    with clients(p=(sim, 4)) as cs:
        report = submit_file(db, "h", cs)
        assert report.recovered_ambiguous == 3
        assert (report.total, report.submitted) == (7, 7)
        assert add_calls(sim) == 7
        sent_links = {o["link"] for o in sim.orders()}
        assert sent_links == {f"https://instagram.com/p/p{i}" for i in (1, 2, 3, 5, 6, 7, 8)}
        states = rows(db)
        for ref in ("p-0", "p-4", "p-9"):
            state, oid, error = states[ref]
            assert (state, oid) == ("ambiguous", None)
            assert error.startswith("interrupted while sending")

        again = submit_file(db, "h", cs)
    assert (again.total, again.recovered_ambiguous, again.calls) == (0, 0, 0)
    assert add_calls(sim) == 7


def test_every_row_goes_out_at_most_once_under_faults(tmp_path, sim):
    n, concurrency = 120, 8
    db = tmp_path / "w.duckdb"
    frame = outbox("p", n)
    refused = frame.index[57]  # below the service's minimum of 20: the panel refuses it
    frame.loc[refused, "params"] = json.dumps(
        {"service": "2", "link": frame.loc[refused, "link"], "quantity": "5"}
    )
    record(db, frame)
    # Faults a batch goes on after (html_200 and other not-the-API answers stop it: below).
    ambiguous_kinds = ["drop_before", "drop_after", "http_500", "html_502"]
    for kind in [*ambiguous_kinds, "truncated_json"]:
        sim.inject(kind, action="add")
    sim.inject("http_429", action="add", times=2, retry_after=0)
    sim.inject("slow", action="add", seconds="0.3")
    with clients(p=(sim, concurrency)) as cs:
        report = submit_file(db, "h", cs)
        again = submit_file(db, "h", cs)

    assert add_calls(sim) == n + 2  # only the two 429s were sent again
    assert again.calls == 0
    stats = sim.stats()
    assert stats["max_in_flight"] <= concurrency
    assert sum(stats["faults_fired"].values()) == 8
    states = rows(db)
    by_state = collections.Counter(state for state, _, _ in states.values())
    assert by_state == {"submitted": n - 6, "ambiguous": 5, "failed": 1}
    assert states["p-57"][2] == "Quantity less than minimal 20"
    assert (report.submitted, report.ambiguous, report.failed) == (n - 6, 5, 1)

    panel = sim.orders()
    assert max(collections.Counter(o["link"] for o in panel).values()) == 1
    assert len(panel) == n - 6 + 2  # drop_after and truncated_json placed theirs
    by_id = {o["order"]: o["link"] for o in panel}
    links = dict(zip(frame["ref"], frame["link"], strict=True))
    for ref, (state, oid, _) in states.items():
        if state == "submitted":
            assert by_id[oid] == links[ref]


def test_a_panel_without_a_client_is_refused_before_anything_changes(tmp_path, sim):
    db = tmp_path / "w.duckdb"
    record(db, outbox("p", 3), outbox("ghost", 2))
    with connect(db) as conn:
        mark_sending(conn, "p", ["p-0"], "a-run-without-journal")
    with clients(p=(sim, 2)) as cs, pytest.raises(ValueError, match="no panel client for ghost"):
        submit_file(db, "h", cs)
    assert add_calls(sim) == 0
    assert sorted(s for s, _, _ in rows(db).values()) == ["pending"] * 4 + ["sending"]
