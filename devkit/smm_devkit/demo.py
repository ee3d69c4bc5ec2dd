"""`make demo`: the whole pipeline end to end in about a minute, headless, then the analytics.

A newcomer should see every part work before configuring anything, and the notebook needs data
to tell its story, so this module builds a complete warehouse from scratch in a directory of
its own (never the user's `data/`): two simulated providers (see `demo_data`), catalogs and
balances, two sample order files through `order_csv_sensor` → `submit_orders`, status polls
as the simulators' clock runs, a price change and a catalog re-sync, a cancel and a refill
file, and finally every analytics view printed from the read-only replica.

Everything goes through the real code location: the sensors are evaluated and the runs they
ask for executed in process on a Dagster instance in the demo directory, against the
simulators over loopback HTTP. `python -m smm_devkit.demo --keep DIR` keeps the directory
(a data dir: `SMM_DATA_DIR=DIR`, warehouse `DIR/warehouse.duckdb`) for the notebook.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import secrets
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import dagster as dg
import duckdb
import pandas as pd

from smm_devkit.demo_data import DemoPanel, demo_panels, for_panels, panels_yaml, sample_text
from smm_devkit.simulator.testing import ThreadedSimulator, running_simulator
from smm_pipeline.definitions import load_definitions
from smm_pipeline.intake.reports import results_report_path
from smm_pipeline.lib.file_sensors import SENSOR_INTERVAL_SECONDS, cursor_seen_earlier
from smm_pipeline.operations.inbox import Folders
from smm_pipeline.warehouse.snapshot import connect_readonly, replica_path

ANALYTICS_VIEWS = (
    "spend_daily",
    "delivery_by_service",
    "provider_scorecard",
    "price_changes",
    "balance_runway",
)
# Simulated seconds per real second, and how long an order takes to deliver (simulated).
CLOCK_SPEED = 60.0
PROGRESS_SECONDS = 1800.0
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
        if not result.run_requests:
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
    stack: contextlib.ExitStack, panels: tuple[DemoPanel, ...], keys: Mapping[str, str]
) -> dict[str, ThreadedSimulator]:
    sims = {}
    for panel in panels:
        sim = stack.enter_context(
            running_simulator(
                keys=(keys[panel.name],),
                catalog=panel.catalog,
                balance=panel.balance,
                progress_seconds=PROGRESS_SECONDS,
                clock_speed=CLOCK_SPEED,
            )
        )
        sim.configure(
            outcome_weights=dict(panel.outcome_weights),
            refill_rejected_percent=panel.refill_rejected_percent,
        )
        sims[panel.name] = sim
    return sims


class _Tour:
    """The demo's steps, each one line of output: what ran and what came of it."""

    def __init__(
        self,
        driver: _Driver,
        panels: tuple[DemoPanel, ...],
        sims: Mapping[str, ThreadedSimulator],
    ) -> None:
        self.driver = driver
        self.panels = panels
        self.sims = sims
        self.names = [p.name for p in panels]
        self.step = driver.say

    def run(self) -> None:
        self.sync_catalogs("first sync")
        self.refresh_balances()
        self.drop("orders", "orders_all_types.csv", "order_csv_sensor", "submit_orders")
        self.drop("cancels", "cancels.csv", "cancel_csv_sensor", "cancel_orders")
        self.poll(rounds=3, minutes=10)
        self.change_catalogs()
        self.sync_catalogs("re-sync after the catalog changes")
        self.drop("orders", "orders_default.csv", "order_csv_sensor", "submit_orders")
        self.poll(rounds=3, minutes=30)
        self.drop("refills", "refills.csv", "refill_csv_sensor", "request_refills")
        self.advance(4 * 60)
        refill_polls = self.driver.run_sensor("refill_status_sensor", "poll_refill_statuses")
        self.step(f"refill_status_sensor → {len(refill_polls)} refill poll run(s)")
        self.poll(rounds=2, minutes=240)
        self.refresh_balances()
        self.check_orders()

    def advance(self, minutes: int) -> None:
        for sim in self.sims.values():
            sim.advance(minutes * 60)

    def sync_catalogs(self, why: str) -> None:
        for name in self.names:
            self.driver.execute("refresh_service_catalog", partition_key=name)
        self.step(f"service_catalog materialized for {', '.join(self.names)} ({why})")

    def refresh_balances(self) -> None:
        for name in self.names:
            self.driver.execute("refresh_panel_balances", partition_key=name)
        balances = ", ".join(f"{n} {self.sims[n].balance()}" for n in self.names)
        self.step(f"panel_balances materialized: {balances}")

    def drop(self, kind: str, sample: str, sensor: str, job: str) -> None:
        content = for_panels(sample_text(sample), self.names)
        counts = self.driver.drop(kind, sample, content, sensor, job)
        outcome = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        self.step(f"{sample} (rows for both panels) → {sensor} → {job}: {outcome}")

    def poll(self, rounds: int, minutes: int) -> None:
        for _ in range(rounds):
            self.advance(minutes)
            polled = self.driver.run_sensor("order_status_sensor", "poll_order_statuses")
            on_panels = Counter(o["status"] for sim in self.sims.values() for o in sim.orders())
            self.step(
                f"simulated clock +{minutes} min, order_status_sensor → {len(polled)} poll "
                "run(s); panels now report "
                + ", ".join(f"{n} {s}" for s, n in sorted(on_panels.items()))
            )

    def change_catalogs(self) -> None:
        for panel in self.panels:
            sim = self.sims[panel.name]
            for service_id, rate in panel.price_moves.items():
                sim.patch_service(service_id, rate=rate)
            for service_id in panel.removals:
                sim.remove_service(service_id)
            removed = f" and removed services {list(panel.removals)}" if panel.removals else ""
            self.step(f"{panel.name} changed {len(panel.price_moves)} prices{removed}")

    def check_orders(self) -> None:
        result = self.driver.execute("check_orders")
        checks = ", ".join(
            f"{e.check_name} {'passed' if e.passed else 'FAILED'}"
            for e in result.get_asset_check_evaluations()
        )
        self.step(f"check_orders: {checks}")


def _prepare_directory(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        raise DemoError(
            f"{directory} is not empty: the demo builds a fresh warehouse; "
            "give it a new or empty directory"
        )
    directory.mkdir(parents=True, exist_ok=True)


def build_demo_warehouse(
    directory: Path | str, *, say: Callable[[str], None] = print
) -> DemoWarehouse:
    """Run the demo into `directory` (new or empty) and return where its warehouse is."""
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

    def step(text: str) -> None:
        say(f"[{time.monotonic() - started:5.1f}s] {text}")

    with contextlib.ExitStack() as stack:
        sims = _start_simulators(stack, panels, keys)
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
        dagster_home = directory / ".dagster_home"
        dagster_home.mkdir()
        instance = stack.enter_context(
            dg.DagsterInstance.local_temp(str(dagster_home), {"telemetry": {"enabled": False}})
        )
        defs = load_definitions()
        _Tour(_Driver(defs, instance, folders, step), panels, sims).run()
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
    """Print each analytics view as a table; returns the row count of each."""
    out = out or sys.stdout
    counts = {}
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        for view, frame in read_views(db_path).items():
            counts[view] = len(frame)
            print(f"\n== {view} ({len(frame)} rows) ==", file=out)
            print(frame.to_string(index=False, max_colwidth=40) if len(frame) else "(empty)",
                  file=out)  # fmt: skip
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smm_devkit.demo",
        description="Run the pipeline end to end against two simulated panels, in a "
        "temporary directory, and print every analytics view.",
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="build in DIR (new or empty) and keep it: a data dir for the notebook "
        "(SMM_DATA_DIR=DIR, or SMM_DUCKDB_PATH=DIR/warehouse.duckdb)",
    )
    args = parser.parse_args(argv)
    # Dagster's notices about its own beta parameters say nothing to a demo's reader.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    try:
        if args.keep:
            warehouse = build_demo_warehouse(args.keep)
            print_views(warehouse.db_path)
            print(
                f"\nKept in {warehouse.data_dir}. Open the notebook on it with:\n"
                f"  SMM_DUCKDB_PATH={warehouse.db_path} .venv/bin/jupyter lab "
                "notebooks/analytics.ipynb\n"
                f"or query it: duckdb -readonly {warehouse.replica}"
            )
        else:
            with tempfile.TemporaryDirectory(prefix="smm_demo_") as tmp:
                warehouse = build_demo_warehouse(Path(tmp) / "demo")
                print_views(warehouse.db_path)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
