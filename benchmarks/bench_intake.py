"""CSV intake speed and memory: a 100,000-row Default-type order file (issue 11).

Rows carry no ref, so every ref is derived (the slower path). Three measurements:

1. **read + validate**: read the file's bytes and `validate_order_file` them (parse, check
   every row against the catalog, derive refs, price the batch). Target: >= 200,000 rows/s.
2. **whole run**: the file is dropped in a temporary SMM_DATA_DIR inbox, the real
   `order_csv_sensor` looks twice and makes the run request (run config and tags), and the real
   `submit_orders` job is executed in this process (`execute_in_process`) against the bundled
   simulator (its own process) holding a balance too low for the batch: the file is refused on
   its budget. Checked after each run: nothing was sent (the simulator created no order), the
   file is in rejected/ beside its errors.csv (the two panels' `batch` errors), the inbox is
   empty. Timed: the job's execution, all of it (the step's catalog check, fresh balances from
   the panel, validation, the warehouse lookups, the refusal, errors.csv, the failed run's
   events). Not timed: imports, the simulator's start, the sensor's looks and one warm-up run
   (it syncs the catalog, as a running deployment has it). `fixed_seconds` is the same path for
   a 100-row file: the cost of any run. The instance is the ephemeral one `execute_in_process`
   makes by default (`--instance sqlite`: a temporary DAGSTER_HOME with the project's
   dagster.yaml, as under `make run`). Target: >= 100,000 rows/s.
3. **memory**: for 20,000, 100,000 and 200,000 rows (default: rows / 5, rows, 2 x rows): peak
   RSS (VmHWM) of a fresh process that reads + validates the file once, and of another that
   executes the whole run (the file dropped, the catalog synced and the sensor's request made
   by this process beforehand); `memory_note` says what grows and why.

Run: `python -m benchmarks.bench_intake [--rows N] [--repeat R] [--instance ephemeral|sqlite]
[--memory-sizes A,B,C | --no-memory] [--no-run]`. Prints one JSON line and one summary line on
stdout (the best of R runs is reported, all of them are in the JSON), the details on stderr.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from smm_pipeline.config import PanelConfig, Settings
from smm_pipeline.intake.orders import CatalogEntry, validate_order_file
from smm_pipeline.panel.models import Service

PANELS = ("persiansmm", "privatesmm")
SERVICE_IDS = (1, 2, 3, 4, 5)
READ_VALIDATE_TARGET = 200_000  # rows/s
WHOLE_RUN_TARGET = 100_000  # rows/s
FIXED_ROWS = 100  # the file timed for a run's fixed cost
KEY = "bench-intake-key"
KEY_ENV = "SMM_BENCH_INTAKE_KEY"
PROJECT = Path(__file__).resolve().parent.parent
MEMORY_NOTE = (
    "What grows with the rows, and why: the file's bytes, held once by the run (it hashes "
    "them and validates them as read: about 68 bytes a row here); per valid row, its columns "
    "in ValidatedRows until the batch is recorded or refused: row number, slot, billed units, "
    "12 ref bytes, where its link starts, a reference to its campaign label, and its link's "
    "characters in its batch's text (about 80 bytes a row here; no Python object per row); "
    "and at the end of the check, one sort of 16-byte ref keys for duplicates (freed "
    "after). Records are read 1,024 at a time, refs are looked up and outbox rows written "
    "20,000 at a time. Rows of the types left to the general check (lists, subscriptions, "
    "unknown types) are kept as objects, about 1 KB a row. Not part of the run: the sensor "
    "tick that launches it reads the file too (lib/file_sensors.py counts its rows on a StringIO "
    "copy of its text, about 4 bytes a character)."
)


def build_inputs() -> tuple[dict[tuple[str, int], CatalogEntry], Settings, dict[str, Decimal]]:
    """Two panels with five Default services each, ample balances, no spend limit."""
    catalog = {
        (panel, sid): CatalogEntry(
            Service(
                sid,
                f"Followers {sid}",
                "Default",
                "Bench",
                Decimal(f"0.{sid}5"),
                10,
                10**7,
                True,
                True,
            )  # fmt: skip
        )
        for panel in PANELS
        for sid in SERVICE_IDS
    }
    settings = Settings(
        panels=tuple(
            PanelConfig(name=p, url=f"https://{p}.example/api/v2", key_env="K") for p in PANELS
        )
    )
    balances = {p: Decimal("1000000000") for p in PANELS}
    return catalog, settings, balances


def catalog_services() -> list[dict[str, Any]]:
    """`build_inputs`' services in the panel's `services` answer shape (for the simulator)."""
    return [
        {"service": sid, "name": f"Followers {sid}", "type": "Default", "category": "Bench",
         "rate": f"0.{sid}5", "min": "10", "max": str(10**7), "refill": True, "cancel": True}
        for sid in SERVICE_IDS
    ]  # fmt: skip


def write_file(path: Path, rows: int) -> None:
    """A realistic Default-type file: distinct links, varied quantities and campaigns.
    Written in pieces, so that writing it costs no memory in proportion to it."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("panel,service,link,quantity,campaign\r\n")
        for start in range(0, rows, 10_000):
            handle.write(
                "".join(
                    f"{PANELS[i % 2]},{SERVICE_IDS[i % 5]},https://www.instagram.com/p/"
                    f"C{i:09d}/,{100 + i % 9900},spring-{i % 7}\r\n"
                    for i in range(start, min(start + 10_000, rows))
                )
            )


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, since ru_maxrss carries a forked
    parent's peak across exec (a child process would report the parent's)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def read_validate(path: Path, rows: int, repeat: int) -> list[float]:
    """Seconds of each read + validate of the file at `path` (`rows` valid rows)."""
    catalog, settings, balances = build_inputs()
    timings: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        content = path.read_bytes()
        result = validate_order_file(content, path.name, catalog, settings, balances)
        timings.append(time.perf_counter() - start)
        if result.errors or len(result.rows) != rows:
            raise SystemExit(f"benchmark file did not validate: {result.errors[:3]}")
        del result, content
    return timings


# -- the whole run -------------------------------------------------------------------------


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
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


_SCRATCH: list[Path] = []


def _scratch() -> Path:
    """A temporary folder removed when this process exits, not before: the shared panel
    budgets keep a background thread on their folder under SMM_DATA_DIR for the life of the
    process (removing the folder earlier makes that thread fail loudly)."""
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="smm-bench-intake-")))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return Path(tempfile.mkdtemp(dir=_SCRATCH[0]))


class SimulatorStats:
    """A simulator started elsewhere (the parent process), seen through its admin API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def stats(self) -> dict[str, Any]:
        from smm_devkit.simulator.testing import SimulatorHandle

        handle = SimulatorHandle(self.url.removesuffix("/api/v2"), (KEY,))
        try:
            return handle.stats()
        finally:
            handle.close()


@contextlib.contextmanager
def simulator() -> Iterator[Any]:
    """The bundled simulator in its own process with the bench's catalog and 1.00 of balance:
    too little for any of the bench's files."""
    from smm_devkit.simulator.testing import start_simulator_process

    with tempfile.TemporaryDirectory(prefix="smm-bench-sim-") as tmp:
        catalog = Path(tmp) / "catalog.json"
        catalog.write_text(json.dumps(catalog_services()))
        with start_simulator_process(
            state_file=Path(tmp) / "sim.jsonl", keys=(KEY,), catalog_file=catalog, balance="1.00"
        ) as sim:
            yield sim


class Deployment:
    """A pipeline in `root` (panels.yaml with both panels on the simulator, data folders, a
    warehouse) and the code location's real definitions; a second process may open the
    same `root` again."""

    def __init__(self, root: Path, sim_url: str, instance_kind: str) -> None:
        import dagster as dg

        from smm_pipeline.definitions import load_definitions
        from smm_pipeline.operations.inbox import Folders

        self.root = root
        self.folders = Folders(root / "data")
        self.folders.ensure()
        panels = root / "panels.yaml"
        panels.write_text(
            "panels:\n"
            + "".join(
                f"  - name: {p}\n    url: {sim_url}\n    key_env: {KEY_ENV}\n"
                "    rate_limit_per_minute: 60000\n    max_concurrency: 8\n"
                for p in PANELS
            )
        )
        self.env = {
            "SMM_PANELS_FILE": str(panels),
            "SMM_DATA_DIR": str(self.folders.data_dir),
            "SMM_DUCKDB_PATH": str(root / "warehouse.duckdb"),
            KEY_ENV: KEY,
        }
        with _environment(self.env), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.defs = load_definitions()
            self.job = self.defs.resolve_job_def("submit_orders")
            self.sensor = self.defs.get_sensor_def("order_csv_sensor")
        if instance_kind == "sqlite":
            home = root / "dagster_home"
            home.mkdir(exist_ok=True)
            shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
            self.instance = dg.DagsterInstance.from_config(str(home))
        else:
            self.instance = dg.DagsterInstance.ephemeral()

    def request(self, name: str, rows: int) -> dict[str, Any]:
        """Drop a `rows`-row file and let order_csv_sensor look twice, one interval apart:
        the run config and tags of the run it requests."""
        import dagster as dg

        from smm_pipeline.lib.file_sensors import SENSOR_INTERVAL_SECONDS, cursor_seen_earlier

        write_file(self.folders.inbox("orders") / name, rows)
        cursor = None
        with _environment(self.env), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _look in range(2):
                context = dg.build_sensor_context(
                    instance=self.instance, definitions=self.defs, cursor=cursor
                )
                tick = self.sensor.evaluate_tick(context)
                cursor = cursor_seen_earlier(tick.cursor, SENSOR_INTERVAL_SECONDS)
        if len(tick.run_requests) != 1:
            raise SystemExit(f"order_csv_sensor did not launch {name}: {tick.skip_message}")
        request = tick.run_requests[0]
        return {"name": name, "run_config": request.run_config, "tags": request.tags}

    def execute(self, request: dict[str, Any], sim: Any) -> float:
        """Execute the requested run (it must be refused); the seconds of its execution."""
        created = sim.stats()["orders_created"]
        # The run's console log (a failed run: its traceback) goes nowhere, as a run worker's
        # does unless someone reads it; the event log keeps everything.
        with (
            _environment(self.env),
            open(os.devnull, "w") as quiet,
            contextlib.redirect_stderr(quiet),
        ):
            started = time.perf_counter()
            result = self.job.execute_in_process(
                run_config=request["run_config"],
                instance=self.instance,
                tags=request["tags"],
                raise_on_error=False,
            )
            seconds = time.perf_counter() - started
        self._check_refused(request["name"], result, sim.stats()["orders_created"] - created)
        return seconds

    def run(self, name: str, rows: int, sim: Any) -> float:
        """Drop, request, and execute one refused run; the seconds of its execution."""
        return self.execute(self.request(name, rows), sim)

    def _check_refused(self, name: str, result: Any, sent: int) -> None:
        from smm_pipeline.intake.reports import errors_report_path

        errors = errors_report_path(self.folders.rejected, name)
        problems = []
        if result.success:
            problems.append("the run succeeded")
        if sent:
            problems.append(f"{sent} orders were sent")
        if not (self.folders.rejected / name).is_file() or not errors.is_file():
            problems.append("the file is not in rejected/ beside its errors.csv")
        elif errors.read_text().count("is more than the balance") != len(PANELS):
            problems.append(f"errors.csv is not the budget refusal: {errors.read_text()[:300]}")
        if any(self.folders.inbox("orders").iterdir()):
            problems.append("the inbox is not empty")
        if problems:
            raise SystemExit(f"whole run of {name}: " + "; ".join(problems))


def whole_run(deployment: Deployment, rows: int, repeat: int, sim: Any) -> dict[str, Any]:
    """The whole run's timings (see the module docstring) for a `rows`-row file."""
    fixed = [deployment.run(f"fixed_{i}.csv", FIXED_ROWS, sim) for i in range(repeat)]
    timings = [deployment.run(f"orders_{i}.csv", rows, sim) for i in range(repeat)]
    best = min(timings)
    return {
        "seconds": round(best, 4),
        "rows_per_s": round(rows / best),
        "all_seconds": [round(t, 4) for t in timings],
        "fixed_seconds": round(min(fixed), 4),
    }


# -- memory, fresh processes ----------------------------------------------------------------


def _child_validate(rows: int, path: Path) -> dict[str, Any]:
    """In a fresh process: peak RSS before and after one read + validate."""
    baseline = _peak_rss_mb()
    read_validate(path, rows, 1)
    return {"baseline_rss_mb": baseline, "validate_peak_rss_mb": _peak_rss_mb()}


def _child_run(root: Path, request: Path, sim_url: str, instance_kind: str) -> dict[str, Any]:
    """In a fresh process: the requested run in the pipeline at `root` (its catalog synced,
    the file in its inbox), peak RSS before the run (imports and definitions) and after."""
    deployment = Deployment(root, sim_url, instance_kind)
    before = _peak_rss_mb()
    seconds = deployment.execute(json.loads(request.read_text()), SimulatorStats(sim_url))
    return {"run_seconds": round(seconds, 4), "run_start_rss_mb": before,
            "run_peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def _in_child(*args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_intake", *args]
    out = subprocess.run(
        command, cwd=PROJECT, capture_output=True, text=True, check=False, timeout=600
    )
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def memory(
    sizes: list[int], deployment: Deployment | None, sim: Any, instance_kind: str
) -> list[dict[str, Any]]:
    """Per size: read + validate in one fresh process, and the whole run in another on
    `deployment` (the file dropped and the sensor's request made here, beforehand)."""
    records = []
    folder = _scratch()
    for rows in sizes:
        path = folder / f"orders_{rows}.csv"
        write_file(path, rows)
        record: dict[str, Any] = {"rows": rows, **_in_child("--child-validate", str(rows),
                                                            "--file", str(path))}  # fmt: skip
        path.unlink()
        if deployment is not None:
            request = folder / f"request_{rows}.json"
            request.write_text(json.dumps(deployment.request(f"memory_{rows}.csv", rows)))
            record.update(_in_child("--child-run", str(deployment.root), "--file", str(request),
                                    "--sim-url", sim.url, "--instance", instance_kind))  # fmt: skip
        records.append(record)
    return records


def _growth_per_100k(records: list[dict[str, Any]], key: str) -> float | None:
    points = [(r["rows"], r[key]) for r in records if key in r]
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None
    (r0, m0), (r1, m1) = points[0], points[-1]
    return round((m1 - m0) / (r1 - r0) * 100_000, 1)


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--instance", choices=("ephemeral", "sqlite"), default="ephemeral")
    parser.add_argument("--memory-sizes", help="rows per fresh process, e.g. 20000,100000")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory processes")
    parser.add_argument("--no-run", action="store_true", help="read + validate only")
    parser.add_argument("--child-validate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sim-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_validate is not None:
        print(json.dumps(_child_validate(args.child_validate, args.file)))
        return 0
    if args.child_run is not None:
        print(json.dumps(_child_run(args.child_run, args.file, args.sim_url, args.instance)))
        return 0
    rows, repeat = args.rows, max(args.repeat, 1)
    if args.memory_sizes:
        sizes = [int(s) for s in args.memory_sizes.split(",")]
    else:
        sizes = [max(rows // 5, 1), rows, 2 * rows]

    with tempfile.TemporaryDirectory(prefix="smm-bench-intake-") as tmp:
        path = Path(tmp) / "bench_orders.csv"
        write_file(path, rows)
        timings = read_validate(path, rows, repeat)
    seconds = min(timings)
    record: dict[str, Any] = {
        "benchmark": "csv_intake",
        "rows": rows,
        "seconds": round(seconds, 4),
        "rows_per_s": round(rows / seconds),
        "repeat": repeat,
        "all_seconds": [round(t, 4) for t in timings],
    }
    targets = {f"read + validate >= {READ_VALIDATE_TARGET} rows/s": rows / seconds
               >= READ_VALIDATE_TARGET}  # fmt: skip
    if not (args.no_run and args.no_memory):
        with simulator() as sim:
            deployment = None
            if not args.no_run:
                deployment = Deployment(_scratch(), sim.url, args.instance)
                deployment.run("warm_up.csv", 200, sim)  # syncs the catalog, warms imports
                record["whole_run"] = whole_run(deployment, rows, repeat, sim)
                record["whole_run"]["instance"] = args.instance
                targets[f"whole run >= {WHOLE_RUN_TARGET} rows/s"] = (
                    record["whole_run"]["rows_per_s"] >= WHOLE_RUN_TARGET
                )
                record["whole_run"]["sent"] = sim.stats()["orders_created"]
            if not args.no_memory:
                record["memory"] = memory(sizes, deployment, sim, args.instance)
                record["memory_growth_mb_per_100k_rows"] = {
                    "read_validate": _growth_per_100k(record["memory"], "validate_peak_rss_mb"),
                    "whole_run": _growth_per_100k(record["memory"], "run_peak_rss_mb"),
                }
                record["memory_note"] = MEMORY_NOTE
    record["peak_rss_mb"] = _peak_rss_mb()
    record["targets_met"] = targets
    print(json.dumps(record))
    summary = (f"{'csv_intake':<16}{rows:>10} rows{seconds:>10.3f} s"
               f"{record['rows_per_s']:>12} rows/s  (best of {repeat})")  # fmt: skip
    if "whole_run" in record:
        run = record["whole_run"]
        summary += f"; whole run {run['seconds']:.3f} s = {run['rows_per_s']} rows/s"
    print(summary)
    _details(record)
    return 0


def _details(record: dict[str, Any]) -> None:
    lines = [
        "",
        f"csv_intake ({record['rows']} Default-type rows, refs derived)",
        f"  read + validate    {record['seconds']:.3f} s = {record['rows_per_s']} rows/s "
        f"(all: {record['all_seconds']})",
    ]
    if "whole_run" in record:
        run = record["whole_run"]
        lines += [
            f"  whole run          {run['seconds']:.3f} s = {run['rows_per_s']} rows/s (all: "
            f"{run['all_seconds']}; {run['instance']} instance; refused on its budget, "
            f"{run['sent']} orders sent)",
            f"  fixed cost of a run  {run['fixed_seconds']:.3f} s ({FIXED_ROWS}-row file)",
        ]
    for entry in record.get("memory", []):
        line = (f"  peak RSS {entry['rows']:>7} rows  read + validate "
                f"{entry['validate_peak_rss_mb']:.1f} MB "
                f"(from {entry['baseline_rss_mb']:.1f})")  # fmt: skip
        if "run_peak_rss_mb" in entry:
            line += (f", whole run {entry['run_peak_rss_mb']:.1f} MB "
                     f"(from {entry['run_start_rss_mb']:.1f})")  # fmt: skip
        lines.append(line)
    if "memory_growth_mb_per_100k_rows" in record:
        growth = record["memory_growth_mb_per_100k_rows"]
        lines.append(f"  growth per 100,000 rows: read + validate {growth['read_validate']} MB, "
                     f"whole run {growth['whole_run']} MB")  # fmt: skip
        lines.append(f"  {record['memory_note']}")
    for name, met in record["targets_met"].items():
        lines.append(f"  target: {name}: {'met' if met else 'MISSED'}")
    print("\n".join(lines) + "\n", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
