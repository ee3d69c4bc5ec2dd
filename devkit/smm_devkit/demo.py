"""`make demo`: five weeks of a reseller's history in about a minute, headless, then the analytics.

A newcomer should see every part work before configuring anything, and the notebook needs data
to tell its story, so this module builds a complete warehouse from scratch in a directory of
its own (never the user's `data/`): two simulated providers (see `demo_data`) and a month of
their use, day by day (`demo_data.month_plan`): on day 0 the catalogs, balances and the sample
files (every order type, a cancel); then order files three days a week for different
campaigns, a cancel file weekly, refills of finished orders weekly, status polls as the orders
move, prices changing four times with a catalog sync after each, balances fetched with every
order file and weekly, running down with the spend, and one top-up when a low-balance check
warns. Finally every analytics view is printed from the read-only replica (published by the
first write, when there is none, and again at the end: the demo's panels.yaml keeps the runs
from copying the warehouse after each one).

Everything goes through the real code location: the sensors are evaluated and the runs they
ask for executed in process on an in-memory Dagster instance, against the simulators over
loopback HTTP. Time is simulated (`demo_clock`): the simulators' clocks are
frozen and moved forward to each step's simulated hour, and the pipeline's own `datetime.now()`
follows them, so `submitted_at`, `observed_at`, `fetched_at`, `changed_at` and `requested_at`
land on those days. The history ends at the real present (the views' "last 7 days" are
DuckDB's `now()`). `python -m smm_devkit.demo --keep DIR` keeps the directory (a data dir:
`SMM_DATA_DIR=DIR`, warehouse `DIR/warehouse.duckdb`) for the notebook; `--days N` plays a
shorter history.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import random
import secrets
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import dagster as dg
import duckdb
import pandas as pd

from smm_devkit.demo_clock import SimulatedNow, pipeline_clock
from smm_devkit.demo_data import (
    BALANCE_WEEKDAYS,
    DEFAULT_DAYS,
    MAX_DAYS,
    CatalogChange,
    DayPlan,
    DemoPanel,
    action_csv,
    demo_panels,
    for_panels,
    month_plan,
    orders_csv,
    panels_yaml,
    sample_text,
)
from smm_devkit.simulator.testing import ThreadedSimulator, running_simulator
from smm_pipeline.definitions import load_definitions
from smm_pipeline.intake.reports import results_report_path
from smm_pipeline.lib.file_sensors import SENSOR_INTERVAL_SECONDS, cursor_seen_earlier
from smm_pipeline.lib.panels import low_balance_check_name
from smm_pipeline.operations.inbox import Folders
from smm_pipeline.warehouse.snapshot import connect_readonly, replica_path

ANALYTICS_VIEWS = (
    "spend_daily",
    "delivery_by_service",
    "provider_scorecard",
    "price_changes",
    "balance_runway",
)
DAY = 86400
PRINTED_ROWS = 20  # a view with more rows is printed as its first and last 10
_QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
_VIEW_ORDER = {
    "spend_daily": "day, panel, campaign, service_id",
    "delivery_by_service": "panel, service_id",
    "provider_scorecard": "category, panel",
    "price_changes": "changed_at, panel, service_id",
    "balance_runway": "panel",
}


class DemoError(RuntimeError):
    """The demo could not run (a step failed, or the directory is not usable)."""


@dataclass(frozen=True)
class DemoWarehouse:
    """Where a demo run left its data: `data_dir` is a complete SMM_DATA_DIR."""

    data_dir: Path
    db_path: Path
    panels_file: Path

    @property
    def replica(self) -> Path:
        return replica_path(self.db_path)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set variables for the demo's duration (sensors and resources read them), then restore."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Driver:
    """Plays the daemon's part: evaluates sensors and executes the runs they request."""

    def __init__(
        self,
        defs: dg.Definitions,
        instance: dg.DagsterInstance,
        folders: Folders,
        say: Callable[[str], None],
    ) -> None:
        self.defs = defs
        self.instance = instance
        self.folders = folders
        self.say = say
        self.verbose = True  # say why a sensor skipped
        self.cursors: dict[str, str | None] = {}

    def execute(
        self,
        job: str,
        *,
        run_config: Mapping | None = None,
        tags: Mapping[str, str] | None = None,
        partition_key: str | None = None,
    ) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def(job).execute_in_process(
            run_config={**(run_config or {}), **_QUIET_LOGGERS},
            instance=self.instance,
            tags=dict(tags or {}),
            partition_key=partition_key,
            raise_on_error=False,
        )
        if not result.success:
            failures = [
                e.message or ""
                for e in result.all_events
                if e.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")
            ]
            raise DemoError(f"run of {job} failed: {' | '.join(failures)[:2000]}")
        return result

    def tick(self, sensor: str) -> list[dg.RunRequest]:
        """One sensor evaluation, as the daemon does it (cursor kept between ticks)."""
        context = dg.build_sensor_context(
            instance=self.instance, definitions=self.defs, cursor=self.cursors.get(sensor)
        )
        result = self.defs.resolve_sensor_def(sensor).evaluate_tick(context)
        self.cursors[sensor] = result.cursor
        if not result.run_requests and self.verbose:
            self.say(f"      {sensor}: skipped ({result.skip_message})")
        return list(result.run_requests or [])

    def run_sensor(self, sensor: str, job: str) -> list[dg.ExecuteInProcessResult]:
        return [
            self.execute(job, run_config=request.run_config, tags=request.tags)
            for request in self.tick(sensor)
        ]

    def drop(self, kind: str, name: str, content: str, sensor: str, job: str) -> dict[str, int]:
        """Drop a file in the inbox and let its sensor launch the run; count the outcomes.

        The first look sees a file that was just written and waits; the second look, one
        sensor interval later (the demo moves the cursor's first look back instead of
        waiting), finds it unchanged and launches the run, as the daemon does."""
        (self.folders.inbox(kind) / name).write_text(content, encoding="utf-8")
        if self.tick(sensor):
            raise DemoError(f"{sensor} launched a run for a file still being written")
        self.cursors[sensor] = cursor_seen_earlier(self.cursors[sensor], SENSOR_INTERVAL_SECONDS)
        if not self.run_sensor(sensor, job):
            raise DemoError(f"{sensor} launched no run for {name}")
        results = results_report_path(self.folders.processed, name)
        with results.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        # orders report `submit_state`, refills `state`, cancels `result`
        column = next(c for c in ("submit_state", "state", "result") if not rows or c in rows[0])
        return dict(Counter(row[column] for row in rows))


def _start_simulators(
    stack: contextlib.ExitStack,
    panels: tuple[DemoPanel, ...],
    keys: Mapping[str, str],
    clock_start: float,
) -> dict[str, ThreadedSimulator]:
    """The simulated panels, their clocks frozen at `clock_start` (the demo moves them)."""
    sims = {}
    for panel in panels:
        sim = stack.enter_context(
            running_simulator(
                keys=(keys[panel.name],),
                catalog=panel.catalog,
                balance=panel.balance,
                progress_seconds=panel.progress_seconds,
                clock_speed=0.0,
                clock_start=clock_start,
            )
        )
        sim.configure(
            outcome_weights=dict(panel.outcome_weights),
            refill_rejected_percent=panel.refill_rejected_percent,
        )
        sims[panel.name] = sim
    return sims


def _outcome(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing"


def _day_label(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).strftime("%a %Y-%m-%d")


class _Month:
    """The demo's weeks of history: each day of the plan at its simulated hours, through the
    sensors and jobs, with the panels' clocks and the pipeline's own "now" moved together.

    Day 0 is told step by step (catalogs, balances, the sample files, polls); every later
    day is one line: what was dropped and what came of it, the poll runs, price changes,
    balances. The last day is yesterday; the final polls, balances and checks are now."""

    def __init__(
        self,
        driver: _Driver,
        panels: tuple[DemoPanel, ...],
        sims: Mapping[str, ThreadedSimulator],
        clock: SimulatedNow,
        first_midnight: float,
        start: float,
        end: float,
        plan: list[DayPlan],
    ) -> None:
        self.driver = driver
        self.panels = panels
        self.sims = sims
        self.clock = clock
        self.first_midnight = first_midnight
        self.end = end
        self.plan = plan
        self.names = tuple(p.name for p in panels)
        self.say = driver.say
        self.sim_now = start  # the panels' clocks (frozen between the demo's moves)
        self.notes: list[str] = []
        self.polls: Counter[str] = Counter()
        # (panel, ref) → (day, service, link) of every order row dropped, for the refills
        self.placed: dict[tuple[str, str], tuple[int, int, str]] = {}
        self.refilled: set[tuple[str, str]] = set()
        self.topped_up: set[str] = set()
        self.top_up_due: set[str] = set()
        self.catalogs = {p.name: {s["service"]: s for s in p.catalog} for p in panels}

    # -- time -----------------------------------------------------------------------------

    def at(self, day: int, hour: int, minute: int = 0) -> None:
        self.jump(self.first_midnight + day * DAY + hour * 3600 + minute * 60)

    def jump(self, instant: float) -> None:
        """Move the panels' clocks and the pipeline's "now" to `instant` (simulated)."""
        instant = max(instant, self.sim_now)
        for sim in self.sims.values():
            sim.advance(instant - self.sim_now)
        self.sim_now = instant
        self.clock.jump_to(instant)

    # -- the month ---------------------------------------------------------------------------

    def run(self) -> None:
        for day_plan in self.plan:
            self.day(day_plan)
        self.jump(self.end)
        self.driver.verbose = True
        self.say(f"now ({_day_label(self.end)}, the end of the simulated history):")
        self.poll_orders()
        self.poll_refills()
        self.refresh_balances()
        self.check_orders()
        self.driver.execute("publish_replica")

    def day(self, plan: DayPlan) -> None:
        self.notes = []
        self.polls = Counter()
        self.driver.verbose = plan.day == 0
        self.at(plan.day, 8)
        if plan.day == 0:
            self.say(f"day 0 ({_day_label(self.sim_now)}), told step by step:")
            self.sync_catalogs("first sync")
            self.refresh_balances()
        elif not plan.order_file:  # on an order day, the polls after the drop do it
            self.poll_orders()
            self.poll_refills()
        changes = [(p, c) for p in self.panels for c in p.catalog_changes if c.day == plan.day]
        if changes:
            self.at(plan.day, 8, 30)
            self.change_catalogs(changes)
            self.at(plan.day, 8, 35)
            self.sync_catalogs("re-sync after the catalog changes")
        if self.top_up_due:
            self.at(plan.day, 8, 50)
            self.top_up()
        if plan.order_file:
            self.at(plan.day, 0, plan.order_minute)
            self.drop_orders(plan)
            if plan.day == 0:
                self.at(plan.day, 0, plan.order_minute + 5)
                content = for_panels(sample_text("cancels.csv"), self.names)
                self.drop("cancels", "cancels.csv", content)
            elif plan.cancel_file:
                self.at(plan.day, 0, plan.order_minute + 5)
                self.drop("cancels", plan.cancel_file, action_csv(plan.cancels))
            for minutes in plan.polls_after:
                self.at(plan.day, 0, plan.order_minute + minutes)
                self.poll_orders()
        if plan.refills:
            self.at(plan.day, 15)
            self.drop_refills(plan.day)
            self.at(plan.day, 17)
            self.poll_refills()
        if plan.day % 7 in BALANCE_WEEKDAYS or plan.day in (0, len(self.plan) - 1):
            self.at(plan.day, 20)
            self.refresh_balances()
        if plan.day:
            polls = [f"{n} {what} poll run{'s' * (n > 1)}" for what, n in self.polls.items() if n]
            notes = self.notes + polls or ["nothing dropped, nothing open to poll"]
            self.say(f"day {plan.day:2d} {_day_label(self.sim_now)}: " + "; ".join(notes))

    def note(self, text: str, short: str | None = None) -> None:
        """One event of the day: its own line on day 0 (`text`), a part of the day's line
        afterwards (`short`, else `text`)."""
        if self.driver.verbose:
            self.say(text)
        else:
            self.notes.append(short or text)

    # -- the steps -----------------------------------------------------------------------------

    def sync_catalogs(self, why: str) -> None:
        for name in self.names:
            self.driver.execute("refresh_service_catalog", partition_key=name)
        self.note(f"service_catalog materialized for {', '.join(self.names)} ({why})",
                  "catalogs synced")  # fmt: skip

    def refresh_balances(self) -> None:
        warned = []
        for name in self.names:
            result = self.driver.execute("refresh_panel_balances", partition_key=name)
            for check in result.get_asset_check_evaluations():
                if check.check_name == low_balance_check_name(name) and not check.passed:
                    warned.append(name)
        shown = ", ".join(f"{n} {self.sims[n].balance()}" for n in self.names)
        low = f" (low_balance warns: {', '.join(warned)})" if warned else ""
        self.note(f"panel_balances materialized: {shown}{low}", f"balances {shown}{low}")
        for panel in self.panels:
            if panel.name in warned and panel.top_up and panel.name not in self.topped_up:
                self.top_up_due.add(panel.name)

    def top_up(self) -> None:
        for panel in self.panels:
            if panel.name in self.top_up_due and panel.top_up:
                sim = self.sims[panel.name]
                sim.set_balance(sim.balance() + Decimal(panel.top_up))
                self.topped_up.add(panel.name)
                self.note(f"{panel.name} topped up by {panel.top_up}")
        self.top_up_due.clear()

    def change_catalogs(self, changes: list[tuple[DemoPanel, CatalogChange]]) -> None:
        for panel, change in changes:
            sim = self.sims[panel.name]
            for service_id, rate in change.rates.items():
                sim.patch_service(service_id, rate=rate)
            for service_id in change.removals:
                sim.remove_service(service_id)
            removed = f" and removed services {list(change.removals)}" if change.removals else ""
            moves = ", ".join(f"{sid} → {rate}" for sid, rate in change.rates.items())
            self.note(f"{panel.name} changed prices ({moves}){removed}")

    def drop(self, kind: str, name: str, content: str) -> dict[str, int]:
        sensor, job = _DROPS[kind]
        counts = self.driver.drop(kind, name, content, sensor, job)
        self.note(f"{name} → {sensor} → {job}: {_outcome(counts)}", f"{name}: {_outcome(counts)}")
        return counts

    def drop_orders(self, plan: DayPlan) -> None:
        if plan.day == 0:
            content = for_panels(sample_text(plan.order_file), self.names)
        else:
            content = orders_csv(plan.orders)
        for row in csv.DictReader(io.StringIO(content, newline="")):
            if row.get("link"):
                key = (row["panel"], row["ref"])
                self.placed[key] = (plan.day, int(row["service"]), row["link"])
        self.drop("orders", plan.order_file, content)

    def drop_refills(self, day: int) -> None:
        """Refill up to three finished orders per panel, placed two days ago or earlier, on
        services that offer refills (the reseller saw their counts drop)."""
        rng = random.Random(f"demo-refills-{day}")
        pairs = []
        for name in self.names:
            status = {(o["service"], o["link"]): o["status"] for o in self.sims[name].orders()
                      if o.get("link")}  # fmt: skip
            candidates = sorted(
                key
                for key, (placed, service, link) in self.placed.items()
                if key[0] == name
                and key not in self.refilled
                and placed <= day - 2
                and self.catalogs[name].get(service, {}).get("refill")
                and status.get((service, link)) in ("Completed", "Partial")
            )
            pairs += rng.sample(candidates, min(3, len(candidates)))
        if not pairs:
            self.note("no finished orders to refill")
            return
        self.refilled.update(pairs)
        self.drop("refills", f"refills_day{day:02d}.csv", action_csv(pairs))

    def poll_orders(self) -> None:
        runs = self.driver.run_sensor("order_status_sensor", "poll_order_statuses")
        if self.driver.verbose:
            on_panels = Counter(o["status"] for s in self.sims.values() for o in s.orders())
            self.say(f"order_status_sensor → {len(runs)} poll run(s); panels now report "
                     f"{_outcome(on_panels)}")  # fmt: skip
        self.polls["status"] += len(runs)

    def poll_refills(self) -> None:
        runs = self.driver.run_sensor("refill_status_sensor", "poll_refill_statuses")
        if self.driver.verbose:
            self.say(f"refill_status_sensor → {len(runs)} refill poll run(s)")
        self.polls["refill status"] += len(runs)

    def check_orders(self) -> None:
        result = self.driver.execute("check_orders")
        checks = ", ".join(
            f"{e.check_name} {'passed' if e.passed else 'FAILED'}"
            for e in result.get_asset_check_evaluations()
        )
        self.note(f"check_orders: {checks}")


_DROPS = {
    "orders": ("order_csv_sensor", "submit_orders"),
    "cancels": ("cancel_csv_sensor", "cancel_orders"),
    "refills": ("refill_csv_sensor", "request_refills"),
}


def _prepare_directory(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        raise DemoError(
            f"{directory} is not empty: the demo builds a fresh warehouse; "
            "give it a new or empty directory"
        )
    directory.mkdir(parents=True, exist_ok=True)


def build_demo_warehouse(
    directory: Path | str, *, days: int = DEFAULT_DAYS, say: Callable[[str], None] = print
) -> DemoWarehouse:
    """Run the demo into `directory` (new or empty): `days` days of simulated history that
    end now; returns where its warehouse is."""
    if not 1 <= days <= MAX_DAYS:
        raise DemoError(f"--days must be 1 to {MAX_DAYS} (the demo's money is planned for that)")
    directory = Path(directory).resolve()
    _prepare_directory(directory)
    started = time.monotonic()
    panels = demo_panels()
    keys = {p.name: secrets.token_urlsafe(18) for p in panels}
    warehouse = DemoWarehouse(
        data_dir=directory,
        db_path=directory / "warehouse.duckdb",
        panels_file=directory / "panels.yaml",
    )
    folders = Folders(directory)
    folders.ensure()
    # The history's last day is yesterday; day 0 starts `days` midnights (UTC) ago, at 08:00.
    end = time.time() // 60 * 60
    first_midnight = end // DAY * DAY - days * DAY
    start = first_midnight + 8 * 3600
    clock = SimulatedNow(start)

    def step(text: str) -> None:
        say(f"[{time.monotonic() - started:5.1f}s] {text}")

    with contextlib.ExitStack() as stack:
        sims = _start_simulators(stack, panels, keys, start)
        warehouse.panels_file.write_text(
            panels_yaml({name: sim.url for name, sim in sims.items()}, panels), encoding="utf-8"
        )
        stack.enter_context(
            _environment(
                {
                    "SMM_PANELS_FILE": str(warehouse.panels_file),
                    "SMM_DATA_DIR": str(directory),
                    "SMM_DUCKDB_PATH": str(warehouse.db_path),
                    **{p.key_env: keys[p.name] for p in panels},
                }
            )
        )
        step(f"two simulated panels: {', '.join(f'{n} at {s.url}' for n, s in sims.items())}")
        # Dagster's runs and events in memory: the demo's product is the warehouse, and a
        # SQLite event log (one database per run) would cost more than the runs themselves.
        instance = stack.enter_context(dg.DagsterInstance.ephemeral())
        defs = load_definitions()
        stack.enter_context(pipeline_clock(clock))
        step(
            f"{days} days of simulated history, {_day_label(start)} to now: the panels' "
            "clocks and the pipeline's datetime.now() move together"
        )
        plan = month_plan(days, panels)
        driver = _Driver(defs, instance, folders, step)
        _Month(driver, panels, sims, clock, first_midnight, start, end, plan).run()
    step(f"done; read-only replica at {warehouse.replica}")
    return warehouse


def ensure_demo_warehouse(
    directory: Path | str, *, say: Callable[[str], None] = print
) -> DemoWarehouse:
    """The demo warehouse in `directory`, built only when its replica does not exist yet
    (the notebook calls this when there is no pipeline data to read)."""
    directory = Path(directory).resolve()
    existing = DemoWarehouse(directory, directory / "warehouse.duckdb", directory / "panels.yaml")
    if existing.replica.exists():
        return existing
    return build_demo_warehouse(directory, say=say)


def query_frame(
    conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None
) -> pd.DataFrame:
    """A query's rows as a DataFrame that keeps money exact.

    DuckDB's own `.df()` turns DECIMAL into float64; built from `fetchall()` instead, money
    columns hold `Decimal` values (convert to float only to draw a chart). The warehouse keeps
    18 decimal places; the values are shown without the trailing zeros (same value)."""
    cursor = conn.execute(sql, params or [])
    columns = [d[0] for d in cursor.description]
    rows = [tuple(_tidy(v) if isinstance(v, Decimal) else v for v in r) for r in cursor.fetchall()]
    return pd.DataFrame(rows, columns=columns)


def _tidy(amount: Decimal) -> Decimal:
    """The same amount without trailing zeros (`1.050000` → `1.05`, `1E+2` → `100`)."""
    if amount.is_zero():
        return Decimal(0)
    tidy = amount.normalize()
    return tidy if tidy.as_tuple().exponent <= 0 else tidy.quantize(Decimal(1))


def read_views(db_path: Path | str) -> dict[str, pd.DataFrame]:
    """Every analytics view, read from the read-only replica (never the live file)."""
    with connect_readonly(db_path) as conn:
        return {
            view: query_frame(conn, f"SELECT * FROM {view} ORDER BY {_VIEW_ORDER[view]}")
            for view in ANALYTICS_VIEWS
        }


def print_views(db_path: Path | str, out: TextIO | None = None) -> dict[str, int]:
    """Print each analytics view as a table (a long one as its first and last rows); returns
    the row count of each."""
    out = out or sys.stdout
    counts = {}
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        for view, frame in read_views(db_path).items():
            counts[view] = len(frame)
            print(f"\n== {view} ({len(frame)} rows) ==", file=out)
            if not len(frame):
                print("(empty)", file=out)
                continue
            print(frame.to_string(index=False, max_colwidth=40, max_rows=PRINTED_ROWS,
                                  min_rows=PRINTED_ROWS), file=out)  # fmt: skip
            if len(frame) > PRINTED_ROWS:
                print(f"({len(frame) - PRINTED_ROWS} rows not shown: SELECT * FROM {view} "
                      "on the replica)", file=out)  # fmt: skip
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smm_devkit.demo",
        description="Run the pipeline end to end against two simulated panels over weeks of "
        "simulated history, in a temporary directory, and print every analytics view.",
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="build in DIR (new or empty) and keep it: a data dir for the notebook "
        "(SMM_DATA_DIR=DIR, or SMM_DUCKDB_PATH=DIR/warehouse.duckdb)",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        metavar="N",
        help=f"days of simulated history, ending now: 1 to {MAX_DAYS} (default {DEFAULT_DAYS})",
    )
    args = parser.parse_args(argv)
    # Dagster's notices about its own beta parameters say nothing to a demo's reader.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    try:
        if args.keep:
            warehouse = build_demo_warehouse(args.keep, days=args.days)
            print_views(warehouse.db_path)
            print(
                f"\nKept in {warehouse.data_dir}. Open the notebook on it with:\n"
                f"  SMM_DUCKDB_PATH={warehouse.db_path} .venv/bin/jupyter lab "
                "notebooks/analytics.ipynb\n"
                f"or query it: duckdb -readonly {warehouse.replica}"
            )
        else:
            with tempfile.TemporaryDirectory(prefix="smm_demo_") as tmp:
                warehouse = build_demo_warehouse(Path(tmp) / "demo", days=args.days)
                print_views(warehouse.db_path)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
