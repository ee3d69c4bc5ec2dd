"""Side by side (issue 11): panel A submits 1,000 rows at 60 requests a minute, 200 ms a call,
while panel B is polled and synced on its own cadence. Reports B's worst wait and the
staleness of its statuses.

Targets (issue): B's runs start within their sensor/schedule tick plus 10 s, and B's statuses
are never staler than their due interval plus one minute. Also checked: A stays within its
budget as counted at the panel (its simulator enforces the same 60 a minute, so any excess
would show as 429s), every one of A's rows reaches the panel exactly once, and no run logs a
warehouse lock error.

What runs, all real and in separate processes, as `make run` deploys it:
- two simulator processes, A and B, 200 ms per call; A allows 60 calls a minute, B 120 (the
  pipeline's default budget), each enforced by the simulator and configured in panels.yaml;
  their clocks run at real speed, so B's orders move (Pending, then delivering) during the run;
- `dagster-daemon run` with the shipped dagster.yaml in a temporary DAGSTER_HOME and a
  workspace loading `smm_pipeline.definitions` (the daemon starts its code server, which starts
  every run as its own process); every shipped sensor and schedule is on;
- `pipeline.poll_min_interval_minutes: 1`, so B's orders come due every minute or two.

Steps: B's file (`--b-orders` rows) is dropped and submitted, and its orders are polled once.
Then A's file is dropped (written beside the inbox and renamed into it); from then until A's
submission run ends is the measured window. During it `order_status_sensor` polls B (and A),
and the benchmark plays a fast schedule for B's syncs: every `--sync-every` seconds (on the
clock, like a cron tick) it creates a `refresh_service_catalog` and a `refresh_panel_balances`
run for partition B and submits them to the instance's run queue, where the daemon launches
them as it launches schedule runs (the shipped schedules, hourly and every 15 minutes, also
fire when their time comes).

Measured from outside, as an operator would:
- every B run's wait, from the Dagster instance: start time minus its tick (the sensor or
  schedule tick that created it, or the benchmark's tick), and minus its enqueue time;
- staleness: every `--sample-every` seconds a short read-only connection (never held) reads
  B's orders (`next_poll_at`, `last_change_at`). An order is due at `next_poll_at` (its last
  observation plus its due interval, see warehouse/status.py), so "staler than its interval
  plus a minute" is "overdue by more than 60 s". A poll's observation time is recovered
  exactly from the cadence rule, and the new values are visible by the next sample or the end
  of the poll run holding it, whichever is first: that bound minus the old due time is the
  poll's "overdue by" (an upper bound); an order still waiting is overdue by sample time minus
  due time;
- the simulators' counters, lock errors in every run's event log and compute logs and in the
  daemon's log, and the peak RSS of the deployment's processes (sampled).

Run: `python -m benchmarks.bench_side_by_side [--rows 1000] [--rate 60] [--latency-ms 200]`
(about 20 minutes); a smoke run: `--rows 60` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import yaml
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from benchmarks.common import report
from smm_devkit.simulator.testing import SimulatorProcess, start_simulator_process
from smm_pipeline.config import PROJECT_ROOT
from smm_pipeline.operations.inbox import Folders
from smm_pipeline.panel.statuses import FINISHED_STATUSES
from smm_pipeline.warehouse.db import WarehouseError, connect

PANEL_A, PANEL_B = "panel_a", "panel_b"
KEYS = {PANEL_A: ("SMM_BENCH_A_KEY", "side-a-key"), PANEL_B: ("SMM_BENCH_B_KEY", "side-b-key")}
SERVICE = 2  # Instagram Likes (Default, 20..50,000) in the simulator's catalog
SYNC_JOBS = ("refresh_service_catalog", "refresh_panel_balances")
POLL_JOB = "poll_order_statuses"
SUBMIT_JOB = "submit_orders"
TICK_TAG = "smm/bench-tick"
MAX_WAIT_SECONDS = 10.0
MAX_OVERDUE_SECONDS = 60.0
LOCK_ERRORS = (
    "Could not set lock",
    "WarehouseLockedError",
    "stayed in use by another pipeline process",
    "stayed locked by another process",
)
LOCK_RETRY = "is locked by another process; retrying"
TERMINAL = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


def log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ deployment


def write_order_file(path: Path, panel: str, prefix: str, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["panel", "service", "link", "quantity", "ref", "campaign"])
        for i in range(n):
            writer.writerow([panel, SERVICE, f"https://instagram.com/p/{prefix}{i:05d}", 100,
                             f"{prefix}-{i:05d}", "side-by-side"])  # fmt: skip


def drop_complete(staged: Path, inbox: Path, name: str) -> float:
    """Move a file written elsewhere into the inbox in one atomic rename; returns the time."""
    os.replace(staged, inbox / name)
    return time.time()


def stop_group(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM a process group we started (the daemon, its code server, run workers), then
    SIGKILL what is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def kill_leftovers(pids: set[int]) -> int:
    """SIGKILL processes we saw as our descendants that outlived their group's teardown
    (e.g. a run worker that moved to its own session). Only pids recorded from our trees."""
    killed = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()
                killed += 1
    return killed


@dataclass
class Deployment:
    root: Path
    args: argparse.Namespace
    sims: dict[str, SimulatorProcess] = field(default_factory=dict)
    daemon: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)
    seen_pids: set[int] = field(default_factory=set)

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace.yaml"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    def start_simulators(self, progress_seconds: float) -> None:
        rates = {PANEL_A: self.args.rate, PANEL_B: self.args.b_rate}
        for panel, rate in rates.items():
            self.sims[panel] = start_simulator_process(
                state_file=self.root / f"{panel}.jsonl",
                keys=(KEYS[panel][1],),
                balance="100000000.00",
                latency_ms=self.args.latency_ms,
                rate_limit_per_minute=rate,
                progress_seconds=progress_seconds,
                clock_speed=1.0,
            )

    def write_config(self) -> None:
        a, b = self.args, self.sims
        panels = [
            {
                "name": name,
                "url": b[name].url,
                "key_env": KEYS[name][0],
                "rate_limit_per_minute": rate,
                "max_concurrency": 4,
                "timeout_seconds": 15,
            }
            for name, rate in ((PANEL_A, a.rate), (PANEL_B, a.b_rate))
        ]
        document = {
            "panels": panels,
            "pipeline": {"poll_min_interval_minutes": a.poll_min_minutes},
        }
        panels_file = self.root / "panels.yaml"
        panels_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        self.dagster_home.mkdir()
        shutil.copy(PROJECT_ROOT / "dagster.yaml", self.dagster_home / "dagster.yaml")
        self.workspace.write_text(
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
        Folders(self.data_dir).ensure()
        self.env = {
            "DAGSTER_HOME": str(self.dagster_home),
            "SMM_PANELS_FILE": str(panels_file),
            "SMM_DATA_DIR": str(self.data_dir),
            "SMM_DUCKDB_PATH": str(self.db_path),
            **{env: key for env, key in KEYS.values()},
            "PYTHONUNBUFFERED": "1",
        }

    def start_daemon(self) -> None:
        daemon_bin = Path(sys.executable).parent / "dagster-daemon"
        with self.daemon_log.open("wb") as out:
            self.daemon = subprocess.Popen(
                [str(daemon_bin), "run", "-w", str(self.workspace)],
                cwd=self.root,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown ends all of it
            )

    def check_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is not None:
            raise RuntimeError(
                f"dagster-daemon exited ({self.daemon.returncode}):\n{self.daemon_tail()}"
            )

    def daemon_tail(self) -> str:
        try:
            return self.daemon_log.read_text(encoding="utf-8", errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def processes(self) -> list[psutil.Process]:
        """The deployment's processes now: the daemon, its code server, run workers, the
        simulators (not this benchmark process nor its own code server)."""
        roots = [p.pid for p in self.sims.values()]
        if self.daemon is not None:
            roots.append(self.daemon.pid)
        found: list[psutil.Process] = []
        for pid in roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                found.append(root)
                found.extend(root.children(recursive=True))
        self.seen_pids.update(p.pid for p in found)
        return found

    def stop(self) -> None:
        if self.daemon is not None:
            with contextlib.suppress(Exception):
                self.processes()
            stop_group(self.daemon)
        for sim in self.sims.values():
            with contextlib.suppress(Exception):
                sim.stop()
        left = kill_leftovers(self.seen_pids)
        if left:
            log(f"killed {left} leftover process(es) of the deployment")


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set (for the code server the benchmark's workspace starts)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# ------------------------------------------------------------------------------ sync ticks


class RunSubmitter:
    """Creates runs of the code location's jobs and submits them to the instance's run queue,
    as the scheduler does for a schedule's tick (the daemon's run queue launches them)."""

    def __init__(self, instance: dg.DagsterInstance, workspace: Path) -> None:
        self.instance = instance
        self._context = WorkspaceProcessContext(instance, WorkspaceFileTarget([str(workspace)]))
        request = self._context.create_request_context()
        names = list(request.code_location_names)
        if len(names) != 1:
            raise RuntimeError(f"expected one code location, found {names}")
        self._location = request.get_code_location(names[0])
        if self._location is None or request.has_code_location_error(names[0]):
            raise RuntimeError(f"code location failed to load: {request.code_location_errors}")
        (self._repo,) = self._location.get_repositories().values()
        self._request = request
        self._plans: dict[str, Any] = {}

    def submit(self, job_name: str, tags: dict[str, str]) -> str:
        job = self._repo.get_full_job(job_name)
        if job_name not in self._plans:
            self._plans[job_name] = self._location.get_execution_plan(
                job, {}, step_keys_to_execute=None, known_state=None, instance=self.instance
            ).execution_plan_snapshot
        plan = self._plans[job_name]
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config={},
            resolved_op_selection=job.resolved_op_selection,
            step_keys_to_execute=plan.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**job.tags, **tags},
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=self._repo.asset_graph,
        )
        self.instance.submit_run(run.run_id, self._request)
        return run.run_id

    def close(self) -> None:
        self._context.__exit__(None, None, None)


class SyncTicker(threading.Thread):
    """B's catalog and balance runs every `every` seconds, on the clock like a cron tick."""

    def __init__(self, submitter: RunSubmitter, every: float) -> None:
        super().__init__(name="sync-ticker", daemon=True)
        self.submitter, self.every = submitter, every
        self.stop_event = threading.Event()
        self.ticks: dict[str, float] = {}  # run id -> tick time
        self.errors: list[str] = []

    def run(self) -> None:
        while True:
            tick = math.floor(time.time() / self.every + 1) * self.every
            if self.stop_event.wait(max(0.0, tick - time.time())):
                return
            stamp = datetime.fromtimestamp(tick, UTC).strftime("%Y%m%dT%H%M%S")
            for job in SYNC_JOBS:
                try:
                    run_id = self.submitter.submit(
                        job, {"dagster/partition": PANEL_B, TICK_TAG: stamp}
                    )
                    self.ticks[run_id] = tick
                except Exception as exc:  # reported, and the next tick tries again
                    self.errors.append(f"{job} at {stamp}: {exc!r}")
                    log(f"sync tick failed: {job}: {exc!r}")


# ------------------------------------------------------------------------------ sampling


@dataclass
class Sample:
    at: float  # when the read connection was open (the state read is of that moment)
    read_wait: float  # waiting for the warehouse (the gate) before reading
    rows: dict[int, tuple[str | None, float | None, float | None, float]]
    # order_id -> (status, next_poll_at, last_change_at, submitted_at)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class Sampler(threading.Thread):
    """B's orders every `every` seconds through a short read-only connection, and the RSS of
    the deployment's processes."""

    def __init__(self, deployment: Deployment, every: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.d, self.every = deployment, every
        self.stop_event = threading.Event()
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.peak_rss_mb = 0.0
        self.peak_process_mb = 0.0
        self.peak_processes = 0

    def sample_now(self) -> None:
        before = time.time()
        try:
            with connect(self.d.db_path, read_only=True, lock_timeout=60) as conn:
                at = time.time()
                rows = conn.execute(
                    "SELECT order_id, status, next_poll_at, last_change_at, submitted_at "
                    "FROM orders WHERE panel = ? AND submit_state = 'submitted' "
                    "AND order_id IS NOT NULL",
                    [PANEL_B],
                ).fetchall()
        except WarehouseError as exc:
            self.errors.append(f"{datetime.now(UTC).isoformat()}: {exc}")
            return
        self.samples.append(
            Sample(
                at,
                at - before,
                {
                    int(oid): (status, _ts(due), _ts(change), _ts(submitted) or at)
                    for oid, status, due, change, submitted in rows
                },
            )
        )

    def rss_now(self) -> None:
        total, count = 0.0, 0
        for proc in self.d.processes():
            with contextlib.suppress(psutil.Error):
                mb = proc.memory_info().rss / 2**20
                total += mb
                count += 1
                self.peak_process_mb = max(self.peak_process_mb, mb)
        self.peak_rss_mb = max(self.peak_rss_mb, total)
        self.peak_processes = max(self.peak_processes, count)

    def run(self) -> None:
        while True:
            self.sample_now()
            with contextlib.suppress(Exception):
                self.rss_now()
            if self.stop_event.wait(self.every):
                return


# ------------------------------------------------------------------------------ analysis


@dataclass
class RunInfo:
    run_id: str
    job: str
    panel: str | None
    status: dg.DagsterRunStatus
    created: float
    enqueued: float | None  # submitted to the run queue
    launched: float | None  # taken off the queue and handed to the code server (STARTING)
    tick: float | None
    start: float | None
    end: float | None
    origin: str  # sensor/schedule name or "benchmark tick"

    @property
    def queued_at(self) -> float:
        return self.enqueued if self.enqueued is not None else self.created

    @property
    def ticked_at(self) -> float:
        return self.tick if self.tick is not None else self.queued_at


def collect_runs(
    instance: dg.DagsterInstance, files: dict[str, str], bench_ticks: dict[str, float]
) -> list[RunInfo]:
    """Every run of the instance, with its panel, tick, enqueue, start and end times."""
    ticks: dict[str, tuple[float, str]] = {}
    for state in instance.all_instigator_state():
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id):
            for run_id in tick.run_ids:
                ticks[run_id] = (tick.timestamp, state.instigator_name)
    runs = []
    for record in instance.get_run_records():
        run = record.dagster_run
        tags = run.tags
        panel = tags.get("smm/panel") or tags.get("dagster/partition")
        if panel is None and "smm/file" in tags:
            panel = files.get(tags["smm/file"])
        first: dict[str, float] = {}
        for entry in instance.all_logs(run.run_id):
            if entry.dagster_event is not None:
                first.setdefault(entry.dagster_event.event_type_value, entry.timestamp)
        enqueued = first.get(dg.DagsterEventType.RUN_ENQUEUED.value)
        launched = first.get(dg.DagsterEventType.RUN_STARTING.value)
        tick, origin = ticks.get(run.run_id, (None, "launched"))
        if run.run_id in bench_ticks:
            tick, origin = bench_ticks[run.run_id], "benchmark tick"
        origin = tags.get("dagster/sensor_name") or tags.get("dagster/schedule_name") or origin
        runs.append(
            RunInfo(
                run.run_id, run.job_name, panel, run.status,
                record.create_timestamp.timestamp(), enqueued, launched, tick,
                record.start_time, record.end_time, origin,
            )
        )  # fmt: skip
    return sorted(runs, key=lambda r: r.created)


def lock_errors(instance: dg.DagsterInstance, d: Deployment, runs: list[RunInfo]) -> dict:
    """Lock errors (and lock retries) in every run's event log and compute logs and in the
    daemon's log."""
    events, retry_events, runs_hit = 0, 0, set()
    for run in runs:
        for entry in instance.all_logs(run.run_id):
            text = repr(entry)
            if any(s in text for s in LOCK_ERRORS):
                events += 1
                runs_hit.add(run.run_id)
            if LOCK_RETRY in text:
                retry_events += 1
    lines, retry_lines = 0, 0
    files = [p for p in (d.dagster_home / "storage").rglob("*") if p.suffix in (".err", ".out")]
    for path in [*files, d.daemon_log]:
        with contextlib.suppress(OSError):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if any(s in line for s in LOCK_ERRORS):
                    lines += 1
                    if path.parent.parent.name in {r.run_id for r in runs}:
                        runs_hit.add(path.parent.parent.name)
                if LOCK_RETRY in line:
                    retry_lines += 1
    return {
        "event_log_entries": events,
        "log_lines": lines,
        "runs_with_lock_errors": sorted(runs_hit),
        "lock_retry_event_log_entries": retry_events,
        "lock_retry_log_lines": retry_lines,
    }


def observed_at(row: tuple, previous: tuple, min_seconds: float) -> float:
    """When the poll that wrote `row` observed the order (its recorded `now`), from the cadence
    rule (warehouse/status.py): a change sets last_change_at to it and the interval to the
    minimum; otherwise next = now + clamp((now - base) / 4, min, max)."""
    _, due, change, submitted = row
    if change is not None and change != previous[2]:
        return change
    base = change if change is not None else submitted
    if due - min_seconds - base <= 4 * min_seconds:
        return due - min_seconds
    return (4 * due + base) / 5


def staleness(
    samples: list[Sample], polls: list[RunInfo], t0: float, t1: float, min_seconds: float
) -> dict:
    """How long past due B's orders went without a new observation, over [t0, t1]."""
    window = [s for s in samples if t0 <= s.at <= t1]
    after = [s for s in samples if s.at > t1][:1]
    before = [s for s in samples if s.at < t0][-1:]
    series = before + window + after
    events: list[dict] = []
    waiting_worst = (0.0, None, None)  # (overdue, order, at)
    for prev, cur in zip(series, series[1:], strict=False):
        for oid, old in prev.rows.items():
            new = cur.rows.get(oid)
            status, due, _, submitted = old
            if new is None or status in FINISHED_STATUSES:
                continue
            due_at = due if due is not None else submitted
            if new[1] != due:  # polled between the two samples
                asked = observed_at(new, old, min_seconds)
                holder = [r for r in polls if r.start and r.start - 1 <= asked <= (r.end or t1)]
                visible = min([cur.at] + [r.end for r in holder if r.end])
                if not t0 <= asked <= t1:
                    continue
                events.append(
                    {
                        "order": oid,
                        "due": due_at,
                        "asked": asked,
                        "asked_overdue": asked - due_at,
                        "overdue": max(0.0, visible - due_at),
                        "run": holder[0].run_id if holder else None,
                    }
                )
            elif t0 <= cur.at <= t1 and cur.at - due_at > waiting_worst[0]:
                waiting_worst = (cur.at - due_at, oid, cur.at)
    worst = max(events, key=lambda e: e["overdue"], default=None)
    overdue = [e["overdue"] for e in events]
    asked = [e["asked_overdue"] for e in events]
    worst_overdue = max([waiting_worst[0], *overdue], default=0.0)
    open_counts = [sum(1 for r in s.rows.values() if r[0] not in FINISHED_STATUSES) for s in window]
    return {
        "samples": len(window),
        "polls_of_b_orders": len(events),
        "open_b_orders_first_last": [open_counts[0], open_counts[-1]] if open_counts else None,
        "worst_overdue_seconds": round(worst_overdue, 1),
        "worst_overdue_poll": worst and {
            "order": worst["order"], "run": worst["run"],
            "due": datetime.fromtimestamp(worst["due"], UTC).isoformat(timespec="seconds"),
            "asked_overdue_seconds": round(worst["asked_overdue"], 1),
            "overdue_seconds": round(worst["overdue"], 1),
        },
        "worst_overdue_still_waiting_seconds": round(waiting_worst[0], 1),
        "median_overdue_seconds": round(statistics.median(overdue), 1) if overdue else None,
        "worst_asked_overdue_seconds": round(max(asked), 1) if asked else None,
        "median_asked_overdue_seconds": round(statistics.median(asked), 1) if asked else None,
        "worst_read_wait_seconds": round(max((s.read_wait for s in window), default=0.0), 3),
    }  # fmt: skip


def _phase(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def wait_stats(runs: list[RunInfo], now: float, everyone: list[RunInfo]) -> dict:
    """Waits of `runs`: tick to start, split into tick to enqueue, the run queue (enqueue to
    launch, STARTING) and the run worker's start-up (launch to RUN_START). The worst run also
    lists the runs the queue launched while it waited (`everyone`: all runs)."""
    if not runs:
        return {"runs": 0}
    waits, queue, launch, worker = [], [], [], []
    for r in runs:
        start = r.start if r.start is not None else now  # never started: waited until now
        waits.append(start - r.ticked_at)
        queue.append(start - r.queued_at)
        if r.launched is not None:
            launch.append(r.launched - r.queued_at)
            worker.append(start - r.launched)
    w = max(runs, key=lambda r: (r.start or now) - r.ticked_at)
    ahead = [
        f"{o.job}[{o.panel or '-'}]"
        for o in sorted(everyone, key=lambda o: o.launched or 0)
        if o is not w and o.launched is not None
        and w.queued_at <= o.launched <= (w.launched or now)
    ]  # fmt: skip
    return {
        "runs": len(runs),
        "worst_wait_seconds": round(max(waits), 2),
        "median_wait_seconds": round(statistics.median(waits), 2),
        "worst_queue_wait_seconds": round(max(queue), 2),
        "median_queue_wait_seconds": round(statistics.median(queue), 2),
        "enqueue_to_launch_seconds": _phase(launch) if launch else None,
        "launch_to_start_seconds": _phase(worker) if worker else None,
        "worst_run": {
            "run": w.run_id, "job": w.job, "origin": w.origin,
            "tick": datetime.fromtimestamp(w.ticked_at, UTC).isoformat(timespec="seconds"),
            "tick_to_enqueue_seconds": round(w.queued_at - w.ticked_at, 2),
            "enqueue_to_launch_seconds": round((w.launched or now) - w.queued_at, 2),
            "launch_to_start_seconds": round((w.start or now) - (w.launched or now), 2),
            "launched_while_it_waited": ahead,
        },
        "not_started": sum(1 for r in runs if r.start is None),
    }  # fmt: skip


def durations(runs: list[RunInfo]) -> dict:
    spans = [r.end - r.start for r in runs if r.start and r.end]
    if not spans:
        return {}
    return {
        "median_seconds": round(statistics.median(spans), 1),
        "max_seconds": round(max(spans), 1),
    }


def tick_gaps(instance: dg.DagsterInstance, name: str, t0: float, t1: float) -> dict:
    for state in instance.all_instigator_state():
        if state.instigator_name != name:
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=t0 - 60)
        times = sorted(t.timestamp for t in ticks if t.timestamp <= t1)
        failed = sum(1 for t in ticks if t.status == TickStatus.FAILURE and t0 <= t.timestamp)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        return {
            "ticks": sum(1 for t in times if t >= t0),
            "failed": failed,
            "max_gap_seconds": round(max(gaps), 1) if gaps else None,
        }
    return {}


# ------------------------------------------------------------------------------ the benchmark


def wait_until(what: str, d: Deployment, deadline: float, probe: Callable[[], Any]) -> Any:
    while time.time() < deadline:
        d.check_daemon()
        found = probe()
        if found:
            return found
        time.sleep(1.0)
    raise RuntimeError(f"timed out waiting for {what}; daemon log:\n{d.daemon_tail()}")


def runs_of(instance: dg.DagsterInstance, **tags: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags)))


def finished(instance: dg.DagsterInstance, **tags: str) -> dg.DagsterRun | None:
    done = [r for r in runs_of(instance, **tags) if r.status in TERMINAL]
    return done[0] if done else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows of A's file")
    parser.add_argument("--rate", type=int, default=60, help="A's requests a minute")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="both panels")
    parser.add_argument(
        "--b-orders",
        type=int,
        default=None,
        help="B's open orders (default: 300, fewer for a short --rows)",
    )
    parser.add_argument("--b-rate", type=int, default=120, help="B's requests a minute")
    parser.add_argument(
        "--poll-min-minutes", type=float, default=1.0, help="pipeline.poll_min_interval_minutes"
    )
    parser.add_argument(
        "--sync-every",
        type=float,
        default=120.0,
        help="seconds between B's catalog + balance ticks",
    )
    parser.add_argument(
        "--sample-every", type=float, default=20.0, help="seconds between warehouse samples"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=120.0,
        help="seconds to let B's runs created in the window finish",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the deployment's folder here (default: deleted)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.b_orders is None:
        args.b_orders = max(40, min(300, args.rows * 3 // 10))
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    a_bound = args.rows / args.rate * 60
    root = Path(tempfile.mkdtemp(prefix="smm-side-by-side-"))
    d = Deployment(root, args)
    previous_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    instance = submitter = ticker = sampler = None
    try:
        # B's orders must still move at the window's end: Pending a fifth of this, then
        # delivering (some slowly, some never finish within the run).
        d.start_simulators(progress_seconds=max(300.0, 1.5 * a_bound + 120))
        d.write_config()
        d.start_daemon()
        log(f"deployment in {root}; daemon pid {d.daemon.pid}")
        instance = dg.DagsterInstance.from_config(str(d.dagster_home))
        with environment(d.env):
            submitter = RunSubmitter(instance, d.workspace)
        staging = root / "staging"
        staging.mkdir()
        inbox = Folders(d.data_dir).inbox("orders")
        files = {"side_b.csv": PANEL_B, "side_a.csv": PANEL_A}

        # Setup: B's open orders, submitted and observed once.
        setup_started = time.time()
        write_order_file(staging / "side_b.csv", PANEL_B, "side-b", args.b_orders)
        drop_complete(staging / "side_b.csv", inbox, "side_b.csv")
        deadline = time.time() + args.b_orders / args.b_rate * 60 + 300
        b_submit = wait_until(
            "B's submit_orders run", d, deadline,
            lambda: finished(instance, **{"smm/file": "side_b.csv"}),
        )  # fmt: skip
        if b_submit.status != dg.DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"B's submission run {b_submit.run_id} ended {b_submit.status}")
        log(f"B: {args.b_orders} orders submitted by run {b_submit.run_id[:8]}")
        b_submit_end = instance.get_run_record_by_id(b_submit.run_id).end_time
        wait_until(
            "B's first poll run", d, time.time() + 300,
            lambda: [
                r for r in instance.get_run_records(
                    filters=dg.RunsFilter(job_name=POLL_JOB, tags={"smm/panel": PANEL_B})
                )
                if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
                and r.create_timestamp.timestamp() >= b_submit_end - 1
            ],
        )  # fmt: skip
        log("B: orders polled once; the window starts")

        # The window: A's file submitted while B is polled and synced.
        write_order_file(staging / "side_a.csv", PANEL_A, "side-a", args.rows)
        for sim in d.sims.values():
            sim.reset_stats()
        sampler = Sampler(d, args.sample_every)
        sampler.sample_now()  # the state just before the window
        t0 = drop_complete(staging / "side_a.csv", inbox, "side_a.csv")
        sampler.start()
        ticker = SyncTicker(submitter, args.sync_every)
        ticker.start()
        log(f"A: {args.rows} rows dropped; bound {a_bound:.0f} s at {args.rate}/min")
        a_run = wait_until(
            "A's submit_orders run", d, t0 + 1.5 * a_bound + 600,
            lambda: finished(instance, **{"smm/file": "side_a.csv"}),
        )  # fmt: skip
        a_record = instance.get_run_record_by_id(a_run.run_id)
        t1 = a_record.end_time
        stats_a = d.sims[PANEL_A].stats()
        stats_b = d.sims[PANEL_B].stats()
        log(f"A: run {a_run.run_id[:8]} {a_run.status.value}; the window ends")
        ticker.stop_event.set()
        ticker.join(30)
        sampler.sample_now()  # closes the last polls of the window
        settle_deadline = time.time() + args.settle

        def b_runs_done() -> bool:
            pending = [
                r for r in instance.get_runs()
                if r.status not in TERMINAL and r.tags.get("smm/panel", r.tags.get(
                    "dagster/partition")) == PANEL_B
            ]  # fmt: skip
            return not pending

        with contextlib.suppress(RuntimeError):
            wait_until("B's last runs", d, settle_deadline, b_runs_done)
        sampler.stop_event.set()
        sampler.join(90)
        now = time.time()

        runs = collect_runs(instance, files, dict(ticker.ticks))
        in_window = [r for r in runs if t0 <= r.ticked_at <= t1]
        b_runs = [r for r in in_window if r.panel == PANEL_B]
        b_polls = [r for r in runs if r.panel == PANEL_B and r.job == POLL_JOB]
        by_job = Counter(f"{r.job} ({r.origin})" for r in b_runs)
        b_failed = [f"{r.job} {r.run_id[:8]} {r.status.value}" for r in b_runs
                    if r.status != dg.DagsterRunStatus.SUCCESS]  # fmt: skip
        waits = wait_stats(b_runs, now, runs)
        waits_by_kind = {
            "polls": wait_stats([r for r in b_runs if r.job == POLL_JOB], now, runs),
            "syncs": wait_stats([r for r in b_runs if r.job in SYNC_JOBS], now, runs),
        }
        stale = staleness(sampler.samples, b_polls, t0, t1, args.poll_min_minutes * 60)
        locks = lock_errors(instance, d, [r for r in runs if r.created >= setup_started - 5])
        a_info = next(r for r in runs if r.run_id == a_run.run_id)
        a_seconds = (a_info.end or now) - (a_info.start or now)
        a_polls = [r for r in in_window if r.panel == PANEL_A and r.job == POLL_JOB]
        a_calls = stats_a["calls"]
        a_excess = max(0, stats_a["max_calls_per_minute"] - args.rate)
        other = Counter(r.job for r in in_window if r.panel not in (PANEL_A, PANEL_B))
        status_sensor = tick_gaps(instance, "order_status_sensor", t0, t1)
        targets = {
            f"B's worst wait <= tick + {MAX_WAIT_SECONDS:g} s": (
                waits.get("worst_wait_seconds", 0) <= MAX_WAIT_SECONDS
                and not waits.get("not_started")
            ),
            f"B's worst overdue <= {MAX_OVERDUE_SECONDS:g} s": (
                stale["worst_overdue_seconds"] <= MAX_OVERDUE_SECONDS
                and stale["polls_of_b_orders"] > 0
            ),
            f"A within {args.rate}/min at the panel, no 429": (
                a_excess == 0 and stats_a["rate_limited"] == 0
            ),
            f"A's {args.rows} rows on the panel exactly once": (
                stats_a["orders_created"] == args.rows
                and a_run.status == dg.DagsterRunStatus.SUCCESS
            ),
            "B within its budget, no 429": (
                stats_b["max_calls_per_minute"] <= args.b_rate and stats_b["rate_limited"] == 0
            ),
            "every B run succeeded": not b_failed and bool(b_runs),
            "no lock error": not (locks["event_log_entries"] or locks["log_lines"]),
        }
        shipped = yaml.safe_load((d.dagster_home / "dagster.yaml").read_text("utf-8")) or {}
        record = {
            "date": datetime.now(UTC).date().isoformat(),
            "cpus": os.cpu_count(),
            "rows": args.rows,
            "rate_per_minute": args.rate,
            "latency_ms": args.latency_ms,
            "b_orders": args.b_orders,
            "b_rate_per_minute": args.b_rate,
            "poll_min_interval_minutes": args.poll_min_minutes,
            "sync_every_seconds": args.sync_every,
            "dagster_yaml_run_queue": shipped.get("run_queue"),  # which queue was measured
            "window_seconds": round(t1 - t0, 1),
            "a_run": {
                "status": a_run.status.value,
                "seconds": round(a_seconds, 1),
                "drop_to_end_seconds": round(t1 - t0, 1),
                "bound_seconds": round(a_bound, 1),
                "ratio_to_bound": round(a_seconds / a_bound, 3),
                "polls_of_a_in_window": len(a_polls),
            },
            "a_panel": {
                "orders_created": stats_a["orders_created"],
                "calls": a_calls,
                "max_calls_per_minute": stats_a["max_calls_per_minute"],
                "max_calls_per_second": stats_a["max_calls_per_second"],
                "rate_limited": stats_a["rate_limited"],
            },
            "b_panel": {
                "calls": stats_b["calls"],
                "max_calls_per_minute": stats_b["max_calls_per_minute"],
                "rate_limited": stats_b["rate_limited"],
            },
            "b_runs_by_job": dict(sorted(by_job.items())),
            "b_runs_failed": b_failed,
            "b_waits": waits,
            "b_waits_by_kind": waits_by_kind,
            "b_durations": {
                "polls": durations([r for r in b_runs if r.job == POLL_JOB]),
                "syncs": durations([r for r in b_runs if r.job in SYNC_JOBS]),
            },
            "b_staleness": stale,
            "order_status_sensor": status_sensor,
            "other_runs_in_window": dict(other),
            "lock_errors": locks,
            "sync_tick_errors": ticker.errors,
            "sample_errors": sampler.errors,
            "peak_rss_mb_total": round(sampler.peak_rss_mb, 1),
            "peak_rss_mb_one_process": round(sampler.peak_process_mb, 1),
            "peak_processes": sampler.peak_processes,
            "targets_met": targets,
        }
        bw, st = waits, stale
        table = [
            ("A", f"{args.rows} rows at {args.rate}/min, {args.latency_ms:g} ms: run "
             f"{a_seconds:.0f} s vs bound {a_bound:.0f} s ({record['a_run']['ratio_to_bound']}×), "
             f"{a_run.status.value}"),
            ("A at the panel", f"{stats_a['orders_created']} created, max "
             f"{stats_a['max_calls_per_minute']}/min, {stats_a['rate_limited']} × 429, "
             f"calls {a_calls}"),
            ("B", f"{args.b_orders} orders, {args.b_rate}/min, polls every ≥ "
             f"{args.poll_min_minutes:g} min, syncs every {args.sync_every:g} s"),
            ("B at the panel", f"max {stats_b['max_calls_per_minute']}/min, "
             f"{stats_b['rate_limited']} × 429, calls {stats_b['calls']}"),
            ("B runs in the window", ", ".join(f"{n} {k}" for k, n in sorted(by_job.items()))),
            ("B worst / median wait", f"{bw.get('worst_wait_seconds')} / "
             f"{bw.get('median_wait_seconds')} s after the tick"),
            ("  of which run queue", f"{bw.get('enqueue_to_launch_seconds')} s (enqueue to "
             f"launch), worker start-up {bw.get('launch_to_start_seconds')} s"),
            ("B worst wait run", str(bw.get("worst_run"))),
            ("B polls: worst overdue", f"{st['worst_overdue_seconds']} s (median "
             f"{st['median_overdue_seconds']} s; asked the panel at most "
             f"{st['worst_asked_overdue_seconds']} s late) over {st['polls_of_b_orders']} "
             f"order polls, {st['samples']} samples"),
            ("order_status_sensor", str(status_sensor)),
            ("lock errors", f"{locks['event_log_entries']} event-log entries, "
             f"{locks['log_lines']} log lines ({locks['lock_retry_log_lines']} lock retries)"),
            ("peak RSS", f"{record['peak_rss_mb_total']} MB in {sampler.peak_processes} "
             f"processes (largest {record['peak_rss_mb_one_process']} MB)"),
            *[(f"target: {name}", "met" if ok else "MISSED") for name, ok in targets.items()],
        ]  # fmt: skip
        return report("side_by_side", record, table)
    finally:
        for thread in (ticker, sampler):
            if thread is not None:
                thread.stop_event.set()
        if submitter is not None:
            with contextlib.suppress(Exception):
                submitter.close()
        d.stop()
        if instance is not None:
            with contextlib.suppress(Exception):
                instance.dispose()
        signal.signal(signal.SIGTERM, previous_term)
        if args.keep is not None:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
