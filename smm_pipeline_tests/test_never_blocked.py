"""Runs side by side: a long rate-limited submission on one panel never holds up another
panel's polls, syncs or submissions; every process shares each panel's request budget; polls
take only what submissions leave, and never pile up behind each other."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from smm_devkit.simulator.testing import running_simulator
from smm_pipeline.config import PanelConfig, Secret, parse_settings
from smm_pipeline.lib.poll_requests import PANEL_TAG, POLL_ALL_TAG, due_metadata
from smm_pipeline.operations.polling import poll_orders
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.errors import BudgetExhausted
from smm_pipeline.panel.ratelimit import PanelBudget, Priority, close_postgres_budgets
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.postgres import PostgresTarget
from smm_pipeline.warehouse.refills import record_in_flight
from smm_pipeline.warehouse.status import Cadence
from smm_pipeline_tests.conftest import KEY_ENV, TEST_KEY, make_pipeline, panel_yaml
from smm_pipeline_tests.dagster_helpers import look_twice, settle, tick

ROOT = Path(__file__).resolve().parents[1]

BUDGETS = ("folder", "postgres")


@pytest.fixture(params=BUDGETS)
def budget_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | PostgresTarget]:
    """Where a panel's budget lives: a folder on this machine, or the suite's Postgres (a
    fresh database), as for a warehouse on Postgres."""
    if request.param == "folder":
        yield tmp_path / "panel_budget"
        return
    target = PostgresTarget(request.getfixturevalue("postgres_database").url())
    yield target
    close_postgres_budgets(target)


def _where(location: Path | PostgresTarget) -> str:
    return location.url if isinstance(location, PostgresTarget) else str(location)


# Worker processes of the budget tests: argv is the budget location (a folder or a URL), the
# mode and its arguments; each says "ready" once its budget is open, then waits for a line.
_BUDGET_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from smm_pipeline.config import PanelConfig, Secret
    from smm_pipeline.panel.client import PanelClient
    from smm_pipeline.panel.ratelimit import PanelBudget, Priority, close_postgres_budgets
    from smm_pipeline.warehouse.db import as_location

    where, mode, args = as_location(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if mode == "balances":  # n balance calls through a client, two at once
        url, n, key = args[0], int(args[1]), args[2]
        config = PanelConfig(name="shared", url=url, key_env="K", rate_limit_per_minute=600,
                             max_concurrency=2, timeout_seconds=10)
        client = PanelClient(config, Secret(key), budget_dir=where)
        print("ready", flush=True)
        sys.stdin.readline()  # both start together
        results = [r for _, r in client.map_concurrent(lambda _: client.balance(), range(n))]
        assert all(not isinstance(r, BaseException) for r in results), results
    elif mode == "submit":  # submissions back to back until told to stop: how many
        budget = PanelBudget("p", 120, 4, where)
        budget.spent_last_minute()
        print("ready", flush=True)
        sys.stdin.readline()
        import threading
        stop, sent = threading.Event(), [0]
        def submit():
            while not stop.is_set():
                with budget.slot(Priority.SUBMIT):
                    sent[0] += 1
        thread = threading.Thread(target=submit)
        thread.start()
        print("started", flush=True)
        sys.stdin.readline()
        stop.set()
        thread.join()
        print(sent[0], flush=True)
    elif mode == "hold":  # hold the panel's one slot until killed
        budget = PanelBudget("p", 6000, 1, where)
        with budget.slot(Priority.SUBMIT):
            print("ready", flush=True)
            time.sleep(120)
    """
)


def _worker(where: Path | PostgresTarget, mode: str, *args: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", _BUDGET_WORKER, _where(where), mode, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def _say(process: subprocess.Popen, line: str = "go") -> None:
    process.stdin.write(line + "\n")
    process.stdin.flush()


def test_the_budget_lives_in_the_warehouses_postgres_else_in_the_data_folder(tmp_path) -> None:
    document = {"panels": [{"name": "a", "url": "http://127.0.0.1:9/api/v2", "key_env": "K"}]}
    url = "postgresql://u:secret@db.example:5432/smm"
    env = {"SMM_DATA_DIR": str(tmp_path)}
    on_duckdb = parse_settings(document, environ=env, check_keys=False)
    on_postgres = parse_settings(
        document, environ={**env, "SMM_WAREHOUSE_URL": url}, check_keys=False
    )
    assert on_duckdb.budget_dir == tmp_path / "panel_budget"
    assert on_postgres.budget_dir == PostgresTarget(url)
    assert "secret" not in repr(on_postgres)


def test_two_processes_share_one_panels_budget_as_counted_at_the_panel(budget_at) -> None:
    """600 a minute is one request every 100 ms and two at once: two processes together
    stay within both, not twice them."""
    with running_simulator(keys=(TEST_KEY,), latency_ms=250) as sim:
        workers = [_worker(budget_at, "balances", sim.url, "15", TEST_KEY) for _ in range(2)]
        sim.reset_stats()
        for w in workers:
            _say(w)
        for w in workers:
            assert w.wait(60) == 0
        stats = sim.stats()
    assert stats["calls"]["balance"] == 30
    assert stats["max_in_flight"] <= 2  # the shared concurrency cap (each process alone: 2)
    # One every 100 ms: at most 10 (11 across a window's edge) in any second; unshared, the
    # two processes would send about 2 × 8 a second here.
    assert stats["max_calls_per_second"] <= 11


def test_polls_wait_while_another_process_submits_and_take_what_it_leaves(budget_at) -> None:
    submitter = _worker(budget_at, "submit")  # 120 a minute: two a second
    budget = PanelBudget("p", 120, 4, budget_at)
    try:
        _say(submitter)
        assert submitter.stdout.readline().strip() == "started"
        time.sleep(0.2)
        with (
            pytest.raises(BudgetExhausted, match="no request budget left for polls"),
            budget.slot(Priority.POLL, wait=1.5),
        ):
            pass
    finally:
        _say(submitter, "stop")
        submitted = int(submitter.stdout.readline())
        assert submitter.wait(10) == 0
    assert submitted >= 3  # the submission went on at its pace meanwhile
    with budget.slot(Priority.POLL, wait=2.0):  # once it stops, the poll gets its request
        pass
    assert budget.spent_last_minute() == submitted + 1


def test_a_429_holds_back_every_holder_of_the_budget(budget_at) -> None:
    """Two handles of one budget (as two processes have): the back-off one of them heard
    holds the other's requests, and a poll that cannot wait that long gives up at once."""
    heard, other = PanelBudget("p", 6000, 2, budget_at), PanelBudget("p", 6000, 2, budget_at)
    assert str(budget_at) in repr(heard)  # on Postgres: the URL with its password starred out
    assert not isinstance(budget_at, PostgresTarget) or budget_at.url not in repr(heard)
    heard.back_off(1.0)
    started = time.monotonic()
    with pytest.raises(BudgetExhausted), other.slot(Priority.POLL, wait=0.3):
        pass
    assert time.monotonic() - started < 0.25  # not waited out: it could not be met
    with other.slot():
        waited = time.monotonic() - started
    assert 0.9 <= waited < 1.6, waited


def test_a_poll_waits_at_most_its_bound_then_gives_up_having_sent_nothing(budget_at) -> None:
    budget = PanelBudget("p", 1, 1, budget_at)  # one request a minute
    with budget.slot():
        pass
    started = time.monotonic()
    with pytest.raises(BudgetExhausted), budget.slot(Priority.POLL, wait=0.3):
        pytest.fail("a poll ran with no budget left")
    assert 0.3 <= time.monotonic() - started < 0.8
    assert budget.spent_last_minute() == 1


def test_a_killed_process_gives_its_slot_back(budget_at) -> None:
    """SIGKILL runs no cleanup: the slot is freed by the kernel (a folder's flock) or by the
    database server, which ends the session and its advisory locks (Postgres)."""
    holder = _worker(budget_at, "hold")  # holds the one slot
    budget = PanelBudget("p", 6000, 1, budget_at)
    try:
        with pytest.raises(BudgetExhausted), budget.slot(wait=0.3):
            pytest.fail("two requests in flight with a cap of one")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    started = time.monotonic()
    with budget.slot(wait=5.0):
        freed = time.monotonic() - started
    assert freed < 1.0, freed


def _orders_on_panel(db: Path, client: PanelClient, n: int) -> list[int]:
    params = [{"service": "1", "link": f"https://x.com/p{i}", "quantity": "100"} for i in range(n)]
    ids = [client.add(p) for p in params]
    now = datetime.now(UTC)
    with connect(db) as conn:
        for i, oid in enumerate(ids):
            conn.execute(
                "INSERT INTO orders (panel, ref, order_id, service_id, quantity, estimated_cost, "
                "created_at, submitted_at, submit_state, next_poll_at) "
                "VALUES ('sim', ?, ?, 1, 100, 0.09, ?, ?, 'submitted', ?)",
                # Later rows were due earlier: the most overdue are the last ones placed.
                [f"r{i}", oid, now, now, now - timedelta(minutes=i + 1)],
            )
    return ids


def test_a_poll_short_of_budget_polls_the_most_overdue_and_defers_the_rest(tmp_path: Path):
    db = tmp_path / "w.duckdb"
    with running_simulator(keys=(TEST_KEY,)) as sim:
        url = sim.url
        setup = PanelConfig(name="setup", url=url, key_env="K", rate_limit_per_minute=60000)
        with PanelClient(setup, Secret(TEST_KEY)) as placer:
            placed = _orders_on_panel(db, placer, 250)
        # 30 a minute: one request every 2 s, and a poll waits 0.5 s at most.
        config = PanelConfig(name="sim", url=url, key_env="K", rate_limit_per_minute=30)
        poller = PanelClient(
            config, Secret(TEST_KEY), budget_dir=tmp_path, priority=Priority.POLL, budget_wait=0.5
        )
        sim.reset_stats()
        report = poll_orders(db, {"sim": poller}, Cadence(), progress=lambda _: None)
        assert sim.stats()["calls"]["status"] == 1
    assert report.polled == 100 and report.deferred == {"sim": 150}
    assert not report.failed_panels
    with duckdb.connect(str(db), read_only=True) as con:
        polled = {
            r[0]
            for r in con.execute("SELECT order_id FROM orders WHERE status IS NOT NULL").fetchall()
        }
    assert polled == set(placed[-100:])  # the 100 most overdue
    assert report.next_due_at is not None and report.next_due_at <= datetime.now(UTC)


def test_status_sensor_launches_one_poll_per_due_panel_and_never_a_second(tmp_path, monkeypatch):
    pipeline = make_pipeline(
        tmp_path,
        monkeypatch,
        [
            panel_yaml("a", "http://127.0.0.1:9/api/v2"),
            panel_yaml("b", "http://127.0.0.1:9/api/v2"),
        ],
    )
    defs = pipeline.defs()
    instance = dg.DagsterInstance.ephemeral()
    past = datetime.now(UTC) - timedelta(minutes=1)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "orders", metadata=due_metadata({"a": (3, past), "b": (2, past), "c": (0, None)})
        )
    )
    first = tick(defs, "order_status_sensor", instance)
    assert sorted(r.tags[PANEL_TAG] for r in first.run_requests) == ["a", "b"]

    job = defs.resolve_job_def("poll_order_statuses")
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED, tags={PANEL_TAG: "a"})
    second = tick(defs, "order_status_sensor", instance)
    assert [r.tags[PANEL_TAG] for r in second.run_requests] == ["b"]

    run = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags={})
    everything = tick(defs, "order_status_sensor", instance)  # an untagged run polls all
    assert not everything.run_requests
    assert "a: a poll is already queued or running" in everything.skip_message
    instance.report_run_failed(run)
    for waiting in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.NOT_STARTED])):
        instance.report_run_canceled(waiting)
    again = tick(defs, "order_status_sensor", instance)
    assert sorted(r.tags[PANEL_TAG] for r in again.run_requests) == ["a", "b"]


def test_two_runs_of_one_refill_content_never_claim_an_order_twice(tmp_path: Path) -> None:
    from smm_pipeline.warehouse.processed_files import claim_file

    db = tmp_path / "w.duckdb"
    now = datetime.now(UTC)
    with connect(db) as conn:
        claim = claim_file(conn, "h" * 64, "refills", "r.csv", now)
        first = record_in_flight(conn, "refills", "sim", [1, 2, 3], claim, now)
        second = record_in_flight(conn, "refills", "sim", [2, 3, 4], claim, now)
    assert first == [1, 2, 3] and second == [4]


# ------------------------------------------------------------------ runs in separate processes

_RUN = textwrap.dedent(
    """
    import json, sys, time
    import dagster as dg
    from smm_pipeline.definitions import load_definitions

    job, config, tags = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    partition = sys.argv[4] or None
    defs = load_definitions()
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def(job).execute_in_process(
        run_config=config, tags=tags, partition_key=partition,
        instance=instance, raise_on_error=False,
    )
    text = "\\n".join((e.message or "") + repr(e.event_specific_data) for e in result.all_events)
    print(json.dumps({"success": result.success, "ended": time.time(), "log": text}))
    """
)


def _start(job: str, config: dict | None = None, tags: dict | None = None, partition: str = ""):
    return subprocess.Popen(
        [sys.executable, "-c", _RUN, job, json.dumps(config or {}), json.dumps(tags or {}),
         partition],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )  # fmt: skip


def _finish(process: subprocess.Popen, timeout: float = 180) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    result["stderr"] = err
    return result


def _file_request(pipeline, instance, name: str, content: str) -> dg.RunRequest:
    settle(pipeline.drop("orders", name, content))
    result = look_twice(pipeline.defs(), "order_csv_sensor", instance)
    (request,) = [r for r in result.run_requests if name in json.dumps(r.run_config)]
    return request


ROWS_A = 18
LOCK_TROUBLE = ("Could not set lock", "WarehouseLockedError", "stayed locked", "stayed in use",
                "is locked by another process")  # fmt: skip


def test_a_long_submission_on_one_panel_never_holds_up_the_other_panels_runs(tmp_path, monkeypatch):
    """Panel a submits 18 rows at 30 a minute (one every 2 s: over half a minute) in its own
    process. Meanwhile, each in a process of its own, panel b submits a file, is polled, and
    syncs its catalog and balance: all of them finish while a is still sending, with no DuckDB
    lock error anywhere, and every order reaches its panel once."""
    with (
        running_simulator(keys=(TEST_KEY,)) as sim_a,
        running_simulator(keys=(TEST_KEY,)) as sim_b,
    ):
        pipeline = make_pipeline(
            tmp_path,
            monkeypatch,
            [
                panel_yaml("a", sim_a.url, rate_limit_per_minute=30, max_concurrency=2),
                panel_yaml("b", sim_b.url, rate_limit_per_minute=6000),
            ],
            "pipeline:\n  replica_max_lag_seconds: 0\n",
        )
        monkeypatch.setenv(KEY_ENV, TEST_KEY)
        instance = dg.DagsterInstance.ephemeral()
        rows_a = "".join(f"a,1,https://x.com/a{i},100,a-{i}\n" for i in range(ROWS_A))
        rows_b = "".join(f"b,1,https://x.com/b{i},100,b-{i}\n" for i in range(3))
        header = "panel,service,link,quantity,ref\n"
        request_a = _file_request(pipeline, instance, "a.csv", header + rows_a)
        long_run = _start("submit_orders", request_a.run_config, request_a.tags)
        deadline = time.monotonic() + 60
        while sim_a.stats()["orders_created"] < 1:  # a is sending
            assert time.monotonic() < deadline and long_run.poll() is None
            time.sleep(0.2)
        request_b = _file_request(pipeline, instance, "b.csv", header + rows_b)
        short_runs = [
            _start("submit_orders", request_b.run_config, request_b.tags),
            _start("refresh_service_catalog", partition="b"),
            _start("refresh_panel_balances", partition="b"),
        ]
        results = [_finish(p) for p in short_runs]
        sent_by_a_meanwhile = sim_a.stats()["orders_created"]
        poll_b = _finish(_start("poll_order_statuses", tags={PANEL_TAG: "b", POLL_ALL_TAG: "all"}))
        a_still_sending = long_run.poll() is None
        sent_by_a_then = sim_a.stats()["orders_created"]
        long_result = _finish(long_run)
        created = (sim_a.stats()["orders_created"], sim_b.stats()["orders_created"])
    for result in [*results, poll_b, long_result]:
        assert result["success"], result["log"][-3000:]
        text = result["log"] + result["stderr"]
        for sign in LOCK_TROUBLE:
            assert sign not in text, text[-3000:]
    assert a_still_sending and sent_by_a_then < ROWS_A, (sent_by_a_meanwhile, sent_by_a_then)
    assert "'polled': IntMetadataValue(value=3)" in poll_b["log"]
    assert "'status_calls': IntMetadataValue(value=1)" in poll_b["log"]
    assert "'open_on_disabled_panels': IntMetadataValue(value=0)" in poll_b["log"]
    assert created == (ROWS_A, 3)  # every order reached its panel once
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        states = con.execute(
            "SELECT panel, submit_state, count(*) FROM orders GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        polled = con.execute("SELECT count(*) FROM orders WHERE status IS NOT NULL").fetchall()
    assert states == [("a", "submitted", ROWS_A), ("b", "submitted", 3)]
    assert polled == [(3,)]


def test_the_replica_follows_the_warehouse_within_its_stated_lag(tmp_path, monkeypatch):
    """Runs publish at most every replica_max_lag_seconds; replica_sensor publishes what the
    last runs wrote once the replica is that old (from the files' times: no connection)."""
    import os

    from smm_pipeline.warehouse.snapshot import replica_path

    pipeline = make_pipeline(
        tmp_path,
        monkeypatch,
        [panel_yaml("a", "http://127.0.0.1:9/api/v2")],
        "pipeline:\n  replica_max_lag_seconds: 60\n",
    )
    defs = pipeline.defs()
    instance = dg.DagsterInstance.ephemeral()
    with connect(pipeline.db_path) as conn:
        conn.execute("INSERT INTO balances VALUES ('a', now(), 10, 'USD')")
    first = tick(defs, "replica_sensor", instance)  # a warehouse and no replica yet
    (request,) = first.run_requests
    result = defs.resolve_job_def("publish_replica").execute_in_process(
        instance=instance, tags=request.tags
    )
    assert result.success
    [published] = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    assert published.asset_key == dg.AssetKey("warehouse_replica")
    assert published.metadata["publish_seconds"].value >= 0
    assert "current" in tick(defs, "replica_sensor", instance).skip_message

    time.sleep(0.05)
    with connect(pipeline.db_path) as conn:  # a run writes again, soon after the publish
        conn.execute("INSERT INTO balances VALUES ('a', now(), 11, 'USD')")
    assert not tick(defs, "replica_sensor", instance).run_requests  # younger than 60 s
    replica = replica_path(pipeline.db_path)
    old = time.time() - 61
    os.utime(replica, (old, old))
    os.utime(pipeline.db_path, None)
    later = tick(defs, "replica_sensor", instance)
    assert len(later.run_requests) == 1
    with duckdb.connect(str(replica), read_only=True) as con:  # still the first copy
        assert con.execute("SELECT count(*) FROM balances").fetchall() == [(1,)]


def test_the_status_sensor_trusts_the_freshest_reading_of_each_panel(tmp_path, monkeypatch):
    """Runs overlap, so an older reading of the warehouse can be logged after a newer one:
    the sensor takes each panel's freshest reading, not the last one logged."""
    pipeline = make_pipeline(tmp_path, monkeypatch, [panel_yaml("a", "http://127.0.0.1:9/api/v2")])
    defs = pipeline.defs()
    instance = dg.DagsterInstance.ephemeral()
    now = time.time()

    def reading(open_orders: int, due_at: float, as_of: float) -> dg.AssetMaterialization:
        entry = {"open": open_orders, "next_due_at": due_at, "as_of": as_of}
        return dg.AssetMaterialization(
            "orders",
            metadata={
                "open_orders": open_orders,
                "due_by_panel": dg.MetadataValue.json({"a": entry}),
            },
        )

    instance.report_runless_asset_event(reading(5, now - 10, as_of=now))  # read last
    instance.report_runless_asset_event(reading(0, 0.0, as_of=now - 5))  # read first, logged last
    (request,) = tick(defs, "order_status_sensor", instance).run_requests
    assert request.tags[PANEL_TAG] == "a"


def test_a_poll_whose_answers_cannot_be_written_stops_sending(tmp_path: Path) -> None:
    from smm_pipeline.operations.polling import PollWriteError, fan_out, observation_rows

    with running_simulator(keys=(TEST_KEY,), latency_ms=100) as sim:
        setup = PanelConfig(name="setup", url=sim.url, key_env="K", rate_limit_per_minute=60000)
        with PanelClient(setup, Secret(TEST_KEY)) as placer:
            ids = [placer.add({"service": "1", "link": f"https://x.com/w{i}", "quantity": "100"})
                   for i in range(5)]  # fmt: skip
        config = PanelConfig(name="w", url=sim.url, key_env="K", rate_limit_per_minute=60000,
                             max_concurrency=2)  # fmt: skip
        sim.reset_stats()

        def write(rows: list[tuple]) -> tuple[int, int]:
            raise OSError("disk full")

        with (
            PanelClient(config, Secret(TEST_KEY)) as client,
            pytest.raises(PollWriteError, match="disk full"),
        ):
            # 60 calls of the same ids at 2 at once and 100 ms: about 3 s if all were sent;
            # the writer fails at its first write, after 2 s.
            fan_out({"w": client}, {"w": ids * 1200}, PanelClient.status_chunk,
                    observation_rows, write, status_at=2, what="status",
                    progress=lambda _: None)  # fmt: skip
        calls = sim.stats()["calls"].get("status", 0)
    assert calls < 60, calls
