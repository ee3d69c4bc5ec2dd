"""The shipped automation really fires: the real `dagster-daemon` (as `make run` starts it, with
the shipped dagster.yaml in a temporary DAGSTER_HOME and a workspace loading
`smm_pipeline.definitions`) picks up a dropped sample file through `order_csv_sensor`, its
`submit_orders` run submits it to a simulator process, and `order_status_sensor` then launches
a `poll_order_statuses` run that records the orders' progress once the simulator's clock moved.
Every shipped sensor has ticked and the scheduler has taken up every shipped schedule.

Everything is observed from outside, as an operator would: the warehouse through its read-only
replica, the runs through the Dagster instance. Waits are bounded (the sensors tick every 15 and
30 seconds, and each run is a subprocess that imports Dagster).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
import yaml
from dagster._core.scheduler.instigation import InstigatorStatus

from smm_devkit.simulator.testing import SimulatorProcess, start_simulator_process
from smm_pipeline.config import PROJECT_ROOT
from smm_pipeline.operations.inbox import Folders
from smm_pipeline.warehouse.db import WarehouseError
from smm_pipeline.warehouse.snapshot import connect_readonly

KEY = "e2e-daemon-key-5d1c"
KEY_ENV = "SMM_E2E_SIMULATOR_KEY"
SAMPLE = PROJECT_ROOT / "data" / "samples" / "orders_default.csv"
SAMPLE_ROWS = 6
DEADLINE_SECONDS = 180.0
SENSORS = {
    "order_csv_sensor",
    "refill_csv_sensor",
    "cancel_csv_sensor",
    "order_status_sensor",
    "refill_status_sensor",
    "replica_sensor",
    "order_checks_automation",
}
SCHEDULES = {
    "service_catalog_hourly",
    "panel_balances_every_15_minutes",
    "order_checks_every_15_minutes",
}
T = TypeVar("T")


@dataclass
class Deployment:
    """A running daemon against a simulator, all of it under tmp_path."""

    sim: SimulatorProcess
    daemon: subprocess.Popen
    dagster_home: Path
    data_dir: Path
    db_path: Path
    log_path: Path
    started: float

    def log_tail(self) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text[-4000:]

    def wait_for(self, what: str, probe: Callable[[], T | None]) -> T:
        """Poll `probe` until it returns something, within the test's overall deadline."""
        while time.monotonic() - self.started < DEADLINE_SECONDS:
            if self.daemon.poll() is not None:
                pytest.fail(f"dagster-daemon exited ({self.daemon.returncode}):\n{self.log_tail()}")
            found = probe()
            if found:
                return found
            time.sleep(0.5)
        pytest.fail(f"timed out waiting for {what}; daemon log:\n{self.log_tail()}")

    def query(self, sql: str) -> list[tuple] | None:
        """Rows from the read-only replica, or None while it does not exist yet."""
        try:
            with connect_readonly(self.db_path) as con:
                return con.execute(sql).fetchall()
        except WarehouseError:
            return None


def _write_config(tmp_path: Path, sim_url: str) -> tuple[Path, Path, Path]:
    panels_file = tmp_path / "panels.yaml"
    panels_file.write_text(
        yaml.safe_dump(
            {
                "panels": [
                    {
                        "name": "simulator",
                        "url": sim_url,
                        "key_env": KEY_ENV,
                        "rate_limit_per_minute": 6000,
                        "max_concurrency": 8,
                        "timeout_seconds": 10,
                        "max_batch_spend": "500.00",
                    }
                ],
                # Polled again right away: the status sensor's next tick finds them due.
                # The replica follows every write: the test reads it.
                "pipeline": {"poll_min_interval_minutes": 0.01, "replica_max_lag_seconds": 0},
            }
        ),
        encoding="utf-8",
    )
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {
                        "python_module": {
                            "module_name": "smm_pipeline.definitions",
                            "working_directory": str(PROJECT_ROOT),
                        }
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    return panels_file, dagster_home, workspace


def _drop_complete(folder: Path, source: Path) -> None:
    """Copy a file in the way a user should: written beside the inbox, then moved in."""
    staged = folder.parent / f".{source.name}.part"
    shutil.copyfile(source, staged)
    old = time.time() - 120  # written two minutes ago (still two looks: see lib/file_sensors.py)
    os.utime(staged, (old, old))
    os.replace(staged, folder / source.name)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the daemon's process group (it, its code server and any run workers), then
    SIGKILL whatever is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    sim = start_simulator_process(keys=(KEY,), state_file=tmp_path / "simulator_state.jsonl")
    try:
        panels_file, dagster_home, workspace = _write_config(tmp_path, sim.url)
        data_dir = tmp_path / "data"
        folders = Folders(data_dir)
        folders.ensure()
        _drop_complete(folders.inbox("orders"), SAMPLE)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(dagster_home),
            "SMM_PANELS_FILE": str(panels_file),
            "SMM_DATA_DIR": str(data_dir),
            "SMM_DUCKDB_PATH": str(data_dir / "warehouse.duckdb"),
            KEY_ENV: KEY,
            "PYTHONUNBUFFERED": "1",
        }
        log_path = tmp_path / "daemon.log"
        daemon_bin = Path(sys.executable).parent / "dagster-daemon"
        with log_path.open("wb") as log:
            daemon = subprocess.Popen(
                [str(daemon_bin), "run", "-w", str(workspace)],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown ends all of it
            )
        try:
            yield Deployment(
                sim,
                daemon,
                dagster_home,
                data_dir,
                data_dir / "warehouse.duckdb",
                log_path,
                time.monotonic(),
            )
        finally:
            _stop(daemon)
    finally:
        sim.stop()


def _sensor_runs(instance: dg.DagsterInstance, sensor: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor})))


def test_daemon_sensors_submit_a_dropped_file_and_poll_its_progress(deployment):
    d = deployment
    submitted = d.wait_for(
        "order_csv_sensor's submit_orders run to submit the file",
        lambda: (rows := d.query(
            "SELECT order_id FROM orders WHERE submit_state = 'submitted'"
        )) is not None and len(rows) == SAMPLE_ROWS and rows,
    )  # fmt: skip
    assert len(d.sim.orders()) == SAMPLE_ROWS
    assert sorted(o["order"] for o in d.sim.orders()) == sorted(r[0] for r in submitted)
    assert (d.data_dir / "processed" / "orders_default.results.csv").is_file()

    # An hour passes on the panel: the orders deliver. Only a poll run can notice.
    d.sim.advance(3600)
    progressed = d.wait_for(
        "order_status_sensor's poll run to record progress",
        lambda: d.query(
            "SELECT order_id, status FROM order_status_history WHERE status <> 'Pending'"
        ),
    )
    assert {status for _, status in progressed} <= {
        "In progress", "Processing", "Completed", "Partial", "Canceled",
    }  # fmt: skip

    instance = dg.DagsterInstance.from_config(str(d.dagster_home))
    try:
        submit_runs = _sensor_runs(instance, "order_csv_sensor")
        assert [r.job_name for r in submit_runs] == ["submit_orders"]
        assert submit_runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert submit_runs[0].tags["smm/file"] == "orders_default.csv"
        polls = d.wait_for(
            "the poll run to finish",
            lambda: [
                r
                for r in _sensor_runs(instance, "order_status_sensor")
                if r.status == dg.DagsterRunStatus.SUCCESS
            ],
        )
        assert {r.job_name for r in polls} == {"poll_order_statuses"}

        # The order checks ran right after the writes to `orders`, launched by their automation
        # condition (order_checks_automation), not by their 15-minute schedule.
        ambiguous = dg.AssetCheckKey(dg.AssetKey("orders"), "ambiguous_submissions")
        executions = d.wait_for(
            "order_checks_automation to run the order checks",
            lambda: instance.event_log_storage.get_asset_check_execution_history(
                ambiguous, limit=5
            ),
        )
        check_runs = [instance.get_run_by_id(e.run_id) for e in executions]
        assert all(r.tags.get("dagster/sensor_name") == "order_checks_automation"
                   for r in check_runs), [r.tags for r in check_runs]  # fmt: skip

        # Every shipped sensor and schedule runs by default: the sensor daemon has ticked each
        # sensor, and the scheduler has taken up each schedule (their next tick is at their
        # cron time, minutes away: too long to wait for here).
        states = {s.name: s for s in instance.all_instigator_state()}
        assert set(states) == SENSORS | SCHEDULES
        assert {s.status for s in states.values()} <= {
            InstigatorStatus.DECLARED_IN_CODE,
            InstigatorStatus.RUNNING,
        }
        for name in SENSORS:
            assert states[name].instigator_data.last_tick_timestamp, name
        for name in SCHEDULES:
            assert states[name].instigator_data.last_iteration_timestamp, name
    finally:
        instance.dispose()
