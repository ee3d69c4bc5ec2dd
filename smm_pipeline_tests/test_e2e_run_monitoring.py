"""A run worker SIGKILLed mid-batch, with the real `dagster-daemon` and the shipped run
monitoring: the dead run is marked FAILURE (by the code server that started it, which sees its
process exit: the default run launcher gives monitoring no health check), nothing waits for it
(a poll launched right after the kill runs at once: what the dead run held were flock locks),
re-execution from failure (the UI's "Re-execute → From failure": the same GraphQL mutation)
finishes the file without sending any row twice, and the ambiguous rows (those in flight at the
kill, and one request the panel dropped on purpose) are resolved with `resolve_ambiguous_orders`
as the README says: attach what the panel has, resubmit what it does not.

Everything runs as in production: the daemon (sensors, queued run coordinator, monitoring) in
its own process group, its code server starting each run in its own process, the simulator as
a process. The test's DAGSTER_HOME holds the shipped dagster.yaml with shorter monitoring
intervals only. The warehouse is read with a read-only DuckDB connection at moments no run
has it open, and the panel through the simulator's admin API.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import duckdb
import pytest
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster_graphql.test.utils import execute_dagster_graphql

from smm_devkit.simulator.testing import SimulatorProcess, start_simulator_process
from smm_pipeline.config import PROJECT_ROOT
from smm_pipeline.operations.inbox import Folders
from smm_pipeline_tests.test_e2e_daemon import _drop_complete, _stop

KEY = "e2e-monitoring-key-81c2"
KEY_ENV = "SMM_E2E_MONITORING_KEY"
PANEL = "simulator"
LOCATION = "smm_pipeline.definitions"
ROWS = 120
MAX_CONCURRENCY = 4
LATENCY_MS = 400  # per request: about 10 adds a second while the first run submits
KILL_AFTER_ADDS = 12  # mid-batch: a dozen requests in, far from the end
# The test's copy of the shipped run_monitoring, with intervals short enough for a test.
POLL_INTERVAL_SECONDS = 1
FREE_SLOTS_AFTER_SECONDS = 3
DEADLINE_SECONDS = 150.0
MARKED_FAILED_WITHIN = 15.0
T = TypeVar("T")

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
# What the UI sends for Re-execute → From failure.
REEXECUTE = """
mutation Reexecute($parent: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parent, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}
"""


@dataclass
class Deployment:
    sim: SimulatorProcess
    daemon: subprocess.Popen
    instance: dg.DagsterInstance
    workspace: Path
    db_path: Path
    folders: Folders
    log_path: Path
    started: float

    def log_tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def wait_for(self, what: str, probe: Callable[[], T | None], within: float | None = None) -> T:
        """Poll `probe` until it returns something truthy, within `within` seconds (default:
        the test's overall deadline)."""
        start = time.monotonic()
        while True:
            if self.daemon.poll() is not None:
                pytest.fail(f"dagster-daemon exited ({self.daemon.returncode}):\n{self.log_tail()}")
            found = probe()
            if found:
                return found
            now = time.monotonic()
            if now - self.started > DEADLINE_SECONDS or (within and now - start > within):
                pytest.fail(f"timed out waiting for {what}; daemon log:\n{self.log_tail()}")
            time.sleep(0.2)

    def run(self, run_id: str) -> dg.DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None, run_id
        return run

    def finished(self, run_id: str) -> dg.DagsterRun:
        run = self.wait_for(
            f"run {run_id} to finish", lambda: (r := self.run(run_id)).is_finished and r
        )
        return run

    def orders(self) -> list[tuple[str, str, int | None, str]]:
        """(ref, submit_state, order_id, link) of every order, read when no run writes."""
        for _ in range(50):  # a run the status sensor launched may have it for a moment
            try:
                with duckdb.connect(str(self.db_path), read_only=True) as con:
                    sql = "SELECT ref, submit_state, order_id, link FROM orders"
                    return con.execute(sql).fetchall()
            except duckdb.IOException:
                time.sleep(0.2)
        pytest.fail("the warehouse stayed locked")


def _graphql(context: WorkspaceProcessContext, query: str, variables: dict[str, Any]) -> str:
    """Run a launch mutation as the webserver would; returns the new run's id."""
    result = execute_dagster_graphql(context.create_request_context(), query, variables)
    assert not result.errors, result.errors
    [answer] = result.data.values()
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def _execution_params(job: str, run_config: dict | None = None, tags: dict | None = None) -> dict:
    return {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": job,
        },
        "runConfigData": run_config or {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }


def _dagster_home(tmp_path: Path) -> Path:
    """The shipped dagster.yaml, run monitoring on, with a test's short intervals."""
    shipped = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    monitoring = shipped["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["free_slots_after_run_end_seconds"] > 0
    assert monitoring.get("max_resume_run_attempts", 0) == 0  # the default launcher can't resume
    assert "pools" not in shipped["concurrency"]  # no step waits for another run's slot
    monitoring["poll_interval_seconds"] = POLL_INTERVAL_SECONDS
    monitoring["free_slots_after_run_end_seconds"] = FREE_SLOTS_AFTER_SECONDS
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(shipped), encoding="utf-8")
    return home


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    sim = start_simulator_process(
        keys=(KEY,),
        state_file=tmp_path / "simulator_state.jsonl",
        latency_ms=LATENCY_MS,
        faults=["drop_before:add:1"],  # one row the panel never saw: ambiguous, to resubmit
    )
    try:
        panels_file = tmp_path / "panels.yaml"
        panel = {
            "name": PANEL,
            "url": sim.url,
            "key_env": KEY_ENV,
            "rate_limit_per_minute": 6000,
            "max_concurrency": MAX_CONCURRENCY,
            "timeout_seconds": 10,
            "max_batch_spend": "500.00",
        }
        panels_file.write_text(yaml.safe_dump({"panels": [panel]}), encoding="utf-8")
        dagster_home = _dagster_home(tmp_path)
        workspace = tmp_path / "workspace.yaml"
        location = {"module_name": LOCATION, "working_directory": str(PROJECT_ROOT)}
        workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
        data_dir = tmp_path / "data"
        folders = Folders(data_dir)
        folders.ensure()
        rows = "".join(f"2,https://x.com/monitored{i},20,mon-{i:03d}\n" for i in range(ROWS))
        source = tmp_path / "monitored.csv"
        source.write_text("service,link,quantity,ref\n" + rows, encoding="utf-8")
        _drop_complete(folders.inbox("orders"), source)
        env = {
            "DAGSTER_HOME": str(dagster_home),
            "SMM_PANELS_FILE": str(panels_file),
            "SMM_DATA_DIR": str(data_dir),
            "SMM_DUCKDB_PATH": str(data_dir / "warehouse.duckdb"),
            KEY_ENV: KEY,
        }
        for name, value in env.items():  # the test's own GraphQL workspace loads the code too
            monkeypatch.setenv(name, value)
        log_path = tmp_path / "daemon.log"
        with log_path.open("wb") as log:
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                cwd=tmp_path,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown ends all of it
            )
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        try:
            yield Deployment(
                sim,
                daemon,
                instance,
                workspace,
                data_dir / "warehouse.duckdb",
                folders,
                log_path,
                time.monotonic(),
            )
        finally:
            instance.dispose()
            _stop(daemon)
    finally:
        sim.stop()


def _run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, from the event it logs as it starts."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        found = re.match(r"Started process for run \(pid: (\d+)\)", entry.message or "")
        if found:
            return int(found.group(1))
    return None


def _adds(sim: SimulatorProcess) -> int:
    return sim.stats()["calls"].get("add", 0)


def test_killed_run_worker_is_failed_frees_the_pool_and_reexecutes_from_failure(deployment):
    d = deployment
    timings: dict[str, float] = {}
    # The workspace for the launches below (as the webserver has it) loads its own code
    # server while the first run gets going.
    loading = concurrent.futures.ThreadPoolExecutor(1)
    workspace = loading.submit(
        WorkspaceProcessContext, d.instance, WorkspaceFileTarget(paths=[str(d.workspace)])
    )
    loading.shutdown(wait=False)

    try:
        # The sensor launches the file's run; kill its worker once it is into the batch.
        run = d.wait_for(
            "order_csv_sensor's submit_orders run",
            lambda: d.instance.get_runs(dg.RunsFilter(tags={"smm/file": "monitored.csv"})),
        )[0]
        pid = d.wait_for("the run worker's pid", lambda: _run_worker_pid(d.instance, run.run_id))
        assert "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        d.wait_for("the batch to be under way", lambda: _adds(d.sim) >= KILL_AFTER_ADDS)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        timings["killed_after_start"] = killed_at - d.started
        d.sim.configure(latency_ms=0)  # the rest of the test at full speed

        # The dead run is marked FAILURE (by the code server that started it, which sees
        # its process exit), and says why.
        failed = d.wait_for(
            "the killed run to be marked FAILURE",
            lambda: (r := d.run(run.run_id)).is_finished and r,
            within=MARKED_FAILED_WITHIN,
        )
        timings["marked_failed"] = time.monotonic() - killed_at
        assert failed.status == dg.DagsterRunStatus.FAILURE
        messages = [e.message for e in d.instance.all_logs(run.run_id)]
        assert any("terminated by signal 9 (SIGKILL)" in (m or "") for m in messages), messages

        at_kill = d.orders()
        states_at_kill = collections.Counter(state for _, state, _, _ in at_kill)
        sending_at_kill = {ref for ref, state, _, _ in at_kill if state == "sending"}
        ambiguous_at_kill = {ref for ref, state, _, _ in at_kill if state == "ambiguous"}
        sent_at_kill = len(d.sim.orders())
        assert len(at_kill) == ROWS
        assert states_at_kill["pending"] > 0, states_at_kill
        assert 0 < sent_at_kill < ROWS
        assert (d.folders.inbox("orders") / "monitored.csv").is_file()  # not filed: unfinished

        # Another writer: a "refresh everything" poll, launched as from the Launchpad, and the
        # file's Re-execute → From failure. Neither waits for anything of the dead run's.
        graphql = workspace.result(timeout=60)
        poll_id = _graphql(
            graphql,
            LAUNCH_RUN,
            {"params": _execution_params("poll_order_statuses", tags={"smm/poll": "all"})},
        )
        rerun_id = _graphql(graphql, REEXECUTE, {"parent": run.run_id})
        poll = d.finished(poll_id)
        assert poll.status == dg.DagsterRunStatus.SUCCESS, d.log_tail()
        timings["poll_succeeded"] = time.monotonic() - killed_at

        # The re-execution reused the validation step's output; its submit step sent the
        # pending rows and settled the ones the dead worker had in flight.
        rerun = d.finished(rerun_id)
        assert rerun.status == dg.DagsterRunStatus.SUCCESS, d.log_tail()
        assert rerun.parent_run_id == run.run_id
        steps = {s.step_key for s in d.instance.get_run_step_stats(rerun_id)}
        assert steps == {"submit_order_rows", "report_order_file"}
        timings["reexecuted"] = time.monotonic() - killed_at
        assert (d.folders.processed / "monitored.results.csv").is_file()

        final = d.orders()
        by_state = collections.Counter(state for _, state, _, _ in final)
        assert set(by_state) <= {"submitted", "ambiguous"}, by_state  # none pending or sending
        assert sum(by_state.values()) == ROWS
        panel_orders = d.sim.orders()
        per_link = collections.Counter(o["link"] for o in panel_orders)
        assert max(per_link.values()) == 1  # no row reached the panel twice
        submitted = {oid for _, state, oid, _ in final if state == "submitted"}
        assert len(submitted) == by_state["submitted"]
        assert submitted <= {o["order"] for o in panel_orders}
        ambiguous = {ref: link for ref, state, _, link in final if state == "ambiguous"}
        assert rerun.tags["smm/ambiguous"] == str(len(ambiguous))
        # The dropped request, and the requests the dead worker had in flight: rows of its
        # claim, at most max_concurrency of them.
        assert set(ambiguous) <= sending_at_kill | ambiguous_at_kill, (ambiguous, sending_at_kill)
        assert len(ambiguous) <= MAX_CONCURRENCY + 1, ambiguous
        assert by_state["submitted"] <= len(panel_orders) <= ROWS

        # The operator's procedure: look each ambiguous row up on the panel, attach the
        # order that exists, resubmit the one that does not.
        order_by_link = {o["link"]: o["order"] for o in panel_orders}
        resolutions = [
            {"panel": PANEL, "ref": ref, "action": "attach", "order_id": order_by_link[link]}
            if link in order_by_link
            else {"panel": PANEL, "ref": ref, "action": "resubmit"}
            for ref, link in sorted(ambiguous.items())
        ]
        assert any(r["action"] == "resubmit" for r in resolutions)  # the dropped one at least
        if resolutions:
            config = {"ops": {"resolve_ambiguous_rows": {"config": {"resolutions": resolutions}}}}
            resolve_id = _graphql(
                graphql,
                LAUNCH_RUN,
                {"params": _execution_params("resolve_ambiguous_orders", run_config=config)},
            )
            assert d.finished(resolve_id).status == dg.DagsterRunStatus.SUCCESS
    finally:
        workspace.result(timeout=60).__exit__(None, None, None)

    resolved = d.orders()
    assert {state for _, state, _, _ in resolved} == {"submitted"}
    panel_orders = d.sim.orders()
    assert len(panel_orders) == ROWS
    assert sorted(o["link"] for o in panel_orders) == sorted(link for *_, link in resolved)
    assert {oid for _, _, oid, _ in resolved} == {o["order"] for o in panel_orders}
    # The sensor never launched the file again: its run and the re-execution only.
    file_runs = d.instance.get_runs(dg.RunsFilter(tags={"smm/file": "monitored.csv"}))
    assert sorted(r.run_id for r in file_runs) == sorted([run.run_id, rerun_id])
    timings["total"] = time.monotonic() - d.started
    print(
        f"states at the kill {dict(states_at_kill)}, {sent_at_kill} orders at the panel; "
        f"ambiguous after re-execution: "
        f"{len(ambiguous)} ({sum(r['action'] == 'attach' for r in resolutions)} attached); "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    )
