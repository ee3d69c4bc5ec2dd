"""The warehouse on Postgres: the same scenarios as on DuckDB side by side, and several workers
sharing one panel's outbox.

1. **Engines side by side**: order submission (2,000 orders, a simulator answering after 50 ms,
   8 calls at once) and status polling (20,000 open orders on one panel; 100,000 on five), each
   run once on a DuckDB file and once on a throwaway local Postgres (`bench_submit`'s and
   `bench_polling`'s own scenarios, called with `--engine`).
2. **Workers sharing one panel's outbox**: W = 1, 2 and 4 worker processes start at the same
   instant and submit the same file (N pending rows for one panel) into one Postgres warehouse,
   each with the panel's budget shared through that Postgres, as runs on several machines
   would. Three panels: one whose concurrency cap binds (8 at once), one whose cap is high (32
   at once), so that one worker's own speed binds first, and one whose rate limit binds
   (3,000 a minute). For each: the wall time from the common start to the last worker's end,
   orders per second, how many orders the panel created (must be N: 0 duplicates), the most
   calls in flight the panel saw (must be ≤ the cap) and its busiest minute (≤ the rate).

Run: `python -m benchmarks.bench_postgres [--part engines|workers|both]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import bench_polling, bench_submit
from benchmarks.common import KEY, report, simulator, temp_warehouse
from smm_pipeline.config import PanelConfig, Secret
from smm_pipeline.operations.submission import submit_file
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.orders import record_pending
from smm_pipeline.warehouse.postgres import PostgresTarget

ROOT = Path(__file__).resolve().parents[1]
WORKERS = (1, 2, 4)
# name: (max_concurrency, rate_limit_per_minute, orders)
PANELS = {
    "cap binds": (8, 60_000, 2_000),
    "workers bind": (32, 60_000, 3_000),
    "rate binds": (32, 3_000, 600),
}
LATENCY_MS = 50.0
START_DELAY_SECONDS = 4.0  # the workers import and connect before the common start


def engines() -> dict:
    """bench_submit and bench_polling on each engine, and a side-by-side table."""
    rows: dict[str, dict[str, dict]] = {}
    for engine in ("duckdb", "postgres"):
        rows.setdefault("submission: 2,000 orders", {})[engine] = bench_submit.main(
            ["--engine", engine]
        )
        for scenario in ("one", "five"):
            panels, per_panel = bench_polling.SCENARIOS[scenario]
            label = f"polling: {panels * per_panel:,} orders on {panels} panel(s)"
            rows.setdefault(label, {})[engine] = bench_polling.main(
                ["--engine", engine, "--scenario", scenario]
            )
    table = [
        (
            name,
            f"DuckDB {by['duckdb']['seconds']:.2f} s (ratio {by['duckdb']['ratio_to_bound']}) | "
            f"Postgres {by['postgres']['seconds']:.2f} s "
            f"(ratio {by['postgres']['ratio_to_bound']})",
        )
        for name, by in rows.items()
    ]
    record = {
        name: {
            engine: {"seconds": r["seconds"], "ratio_to_bound": r["ratio_to_bound"]}
            for engine, r in by.items()
        }
        for name, by in rows.items()
    }
    return report("engines_side_by_side", record, table)


def worker(spec: dict) -> dict:
    """One worker process: wait for the common start, then submit the file."""
    config = PanelConfig(
        name=spec["panel"],
        url=spec["url"],
        key_env="BENCH_KEY",
        rate_limit_per_minute=spec["rate"],
        max_concurrency=spec["cap"],
        timeout_seconds=30,
    )
    target = PostgresTarget(os.environ["SMM_WAREHOUSE_URL"])
    client = PanelClient(config, Secret(KEY), budget_dir=target)
    time.sleep(max(0.0, spec["start_at"] - time.time()))
    started = time.time()
    clients = {spec["panel"]: client}
    result = submit_file(target, spec["file_hash"], clients, progress=lambda _: None)
    ended = time.time()
    client.close()
    return {"submitted": result.submitted, "started": started, "ended": ended}


def workers_run(db: PostgresTarget, sim, panel: str, n_workers: int) -> dict:
    cap, rate, n = PANELS[panel]
    file_hash = f"{panel.replace(' ', '-')}-{n_workers}"
    frame = bench_submit.outbox(n, file_hash)
    frame["ref"] = [f"{file_hash}-{i}" for i in range(n)]
    # A panel of its own per run: its budget starts empty (the last run's minute of requests
    # would otherwise still count against the next one).
    frame["panel"] = file_hash
    # Links of their own: the panel refuses a link while an earlier run's order on it is active.
    links = [f"https://instagram.com/p/{file_hash}-{i}" for i in range(n)]
    frame["link"] = links
    frame["params"] = [
        json.dumps({"service": "2", "link": link, "quantity": "100"}) for link in links
    ]
    with connect(db) as conn:
        record_pending(conn, frame, datetime.now(UTC))
    sim.set_balance("100000000")  # money never runs out: what binds is the panel's budget
    sim.reset_stats()
    start_at = time.time() + START_DELAY_SECONDS
    spec = {"panel": file_hash, "url": sim.url, "cap": cap, "rate": rate, "file_hash": file_hash,
            "start_at": start_at}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_postgres", "--worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "SMM_WAREHOUSE_URL": db.url},  # never on the command line
        )
        for _ in range(n_workers)
    ]
    answers = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"a worker failed ({proc.returncode})")
        answers.append(json.loads(out.strip().splitlines()[-1]))
    stats = sim.stats()
    with connect(db) as conn:
        states = dict(
            conn.execute(
                "SELECT submit_state, count(*) FROM orders WHERE file_hash = ? GROUP BY 1",
                [file_hash],
            ).fetchall()
        )
    wall = max(a["ended"] for a in answers) - start_at
    created = stats["orders_created"]
    return {
        "panel": panel,
        "max_concurrency": cap,
        "rate_limit_per_minute": rate,
        "orders": n,
        "workers": n_workers,
        "seconds": round(wall, 3),
        "orders_per_second": round(n / wall, 1),
        "bound_orders_per_second": round(min(cap / (LATENCY_MS / 1000), rate / 60), 1),
        "submitted_by_worker": [a["submitted"] for a in answers],
        "orders_on_panel": created,
        "duplicates": created - n,
        "states": states,
        "max_in_flight_seen_by_panel": stats["max_in_flight"],
        "max_calls_per_minute_seen_by_panel": stats["max_calls_per_minute"],
        "held": created == n == states.get("submitted", 0)
        and stats["max_in_flight"] <= cap
        and stats["max_calls_per_minute"] <= rate,
    }


def workers() -> dict:
    runs = []
    with temp_warehouse("postgres") as db, simulator(latency_ms=LATENCY_MS) as sim:
        for panel in PANELS:
            for n_workers in WORKERS:
                runs.append(workers_run(db, sim, panel, n_workers))
    table = [
        (
            f"{r['panel']} ({r['max_concurrency']} at once, {r['rate_limit_per_minute']}/min), "
            f"{r['workers']} worker(s)",
            f"{r['orders']} in {r['seconds']:.2f} s = {r['orders_per_second']}/s "
            f"(bound {r['bound_orders_per_second']}/s); split {r['submitted_by_worker']}; "
            f"on the panel {r['orders_on_panel']} (duplicates {r['duplicates']}); "
            f"in flight ≤ {r['max_in_flight_seen_by_panel']}; "
            f"busiest minute {r['max_calls_per_minute_seen_by_panel']}"
            f"{'' if r['held'] else '  NOT HELD'}",
        )
        for r in runs
    ]
    return report("postgres_workers", {"runs": runs}, table)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["engines", "workers", "both"], default="both")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return {}
    last: dict = {}
    if args.part in ("engines", "both"):
        last = engines()
    if args.part in ("workers", "both"):
        last = workers()
    return last


if __name__ == "__main__":
    main()
