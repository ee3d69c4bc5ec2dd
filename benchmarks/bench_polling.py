"""Status polling: 20,000 open orders on one panel, and 100,000 across five panels, each
panel a simulator process answering after 50 ms, at most 8 calls at once per panel.

Reports, per scenario: the status calls (they must equal Σ ceil(n/100) per panel, as counted
by the panels themselves), the poll's wall time against the issue's bound calls × latency /
concurrency, the stricter bound with the panels polled side by side, the DuckDB write time
(answers are written in batches by a writer thread while the calls go on), and the poll
process's peak RSS: the poll runs in a fresh process of its own, so the figure is the poll's,
not the set-up's, and 20,000 against 100,000 shows whether memory grows with the orders.
Run: `python -m benchmarks.bench_polling [--scenario one|five|both] [--latency-ms L]`.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from benchmarks.common import (
    add_engine_argument,
    client,
    peak_rss_mb,
    report,
    simulator,
    temp_warehouse,
)
from smm_pipeline.operations.polling import poll_orders
from smm_pipeline.warehouse.db import Location, as_location, connect
from smm_pipeline.warehouse.postgres import PostgresTarget
from smm_pipeline.warehouse.status import Cadence

SCENARIOS = {"one": (1, 20_000), "five": (5, 20_000)}  # panels, open orders per panel
TARGET_RATIO = 1.2


def place_orders(c, n: int) -> list[int]:
    params = [
        {"service": "2", "link": f"https://instagram.com/p/{c.panel.name}{i}", "quantity": "20"}
        for i in range(n)
    ]
    ids = [r for _, r in c.map_concurrent(c.add, params)]
    assert all(isinstance(i, int) for i in ids)
    return ids


def record_submitted(db: Location, panel: str, ids: list[int]) -> None:
    now = datetime.now(UTC)
    frame = pd.DataFrame(
        {
            "panel": panel,
            "ref": [f"{panel}-{i}" for i in ids],
            "order_id": ids,
            "service_id": 2,
            "quantity": 20,
            "estimated_cost": "0.0024",
            "submitted_at": now,
        }
    )
    with connect(db) as conn:
        conn.register("_f", frame)
        conn.execute(
            "INSERT INTO orders (panel, ref, order_id, service_id, quantity, estimated_cost, "
            "created_at, submitted_at, submit_state, next_poll_at) SELECT panel, ref, order_id, "
            "service_id, quantity, CAST(estimated_cost AS DECIMAL(18,6)), submitted_at, "
            "submitted_at, 'submitted', submitted_at FROM _f"
        )
        conn.unregister("_f")


def poll_only(spec: dict) -> dict:
    """The poll itself, in this (fresh) process: what `--poll-only` runs."""
    clients = {
        p: client(url, p, max_concurrency=spec["concurrency"]) for p, url in spec["urls"].items()
    }
    started, cpu = time.perf_counter(), time.process_time()
    result = poll_orders(as_location(spec["db"]), clients, Cadence(), progress=lambda _: None)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    for c in clients.values():
        c.close()
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "calls": result.calls,
        "polled": result.polled,
        "http_seconds": result.http_seconds,
        "write_seconds": result.write_seconds,
        "writes": result.writes,
        "deferred": sum(result.deferred.values()),
        "failed": result.failed_panels,
        "peak_rss_mb": peak_rss_mb(),
    }


def scenario(name: str, latency_ms: float, concurrency: int, engine: str = "duckdb") -> dict:
    panels, per_panel = SCENARIOS[name]
    names = [f"bench-{i}" for i in range(panels)]
    with ExitStack() as stack:
        db = stack.enter_context(temp_warehouse(engine))
        sims = {p: stack.enter_context(simulator()) for p in names}
        for p, sim in sims.items():
            with client(sim.url, p + "-setup", max_concurrency=32) as c:
                record_submitted(db, p, place_orders(c, per_panel))
            sim.configure(latency_ms=int(latency_ms))
            sim.reset_stats()
        spec = {
            # The child process gets the URL itself (str() of a PostgresTarget hides the password).
            "db": db.url if isinstance(db, PostgresTarget) else str(db),
            "urls": {p: s.url for p, s in sims.items()},
            "concurrency": concurrency,
        }
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_polling", "--poll-only", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        polled = json.loads(child.stdout.strip().splitlines()[-1])
        seen = sum(s.stats()["calls"].get("status", 0) for s in sims.values())
    per_panel_calls = math.ceil(per_panel / 100)
    expected = per_panel_calls * panels
    bound = expected * latency_ms / 1000 / concurrency  # the bound
    strict = math.ceil(per_panel_calls / concurrency) * latency_ms / 1000  # panels side by side
    return {
        "engine": engine,
        "scenario": f"{per_panel * panels:,} orders on {panels} panel(s)",
        "orders": per_panel * panels,
        "panels": panels,
        "latency_ms": latency_ms,
        "concurrency_per_panel": concurrency,
        "status_calls": polled["calls"],
        "status_calls_seen_by_panels": seen,
        "expected_calls": expected,
        "calls_match": polled["calls"] == expected == seen,
        "polled": polled["polled"],
        "seconds": round(polled["seconds"], 3),
        "cpu_seconds_poll_process": round(polled["cpu_seconds"], 3),
        "http_seconds": round(polled["http_seconds"], 3),
        "write_seconds": round(polled["write_seconds"], 3),
        "warehouse_writes": polled["writes"],
        "bound_seconds": round(bound, 3),
        "ratio_to_bound": round(polled["seconds"] / bound, 3),
        "target_met": polled["seconds"] <= TARGET_RATIO * bound,
        "strict_parallel_bound_seconds": round(strict, 3),
        "ratio_to_strict_bound": round(polled["seconds"] / strict, 3),
        "peak_rss_mb_poll_process": polled["peak_rss_mb"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=["one", "five", "both"], default="both")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--poll-only", help=argparse.SUPPRESS)
    add_engine_argument(parser)
    args = parser.parse_args(argv)
    if args.poll_only:
        print(json.dumps(poll_only(json.loads(args.poll_only))))
        return {}
    names = ["one", "five"] if args.scenario == "both" else [args.scenario]
    last: dict = {}
    for name in names:
        record = scenario(name, args.latency_ms, args.concurrency, args.engine)
        last = report(
            "status_polling",
            record,
            [
                ("scenario", f"{record['scenario']} ({record['engine']})"),
                ("status calls", f"{record['status_calls']} (expected "
                 f"{record['expected_calls']}, panels saw "
                 f"{record['status_calls_seen_by_panels']})"),
                ("poll wall", f"{record['seconds']:.2f} s (HTTP fan-out "
                 f"{record['http_seconds']:.2f} s; writes {record['write_seconds']:.2f} s "
                 f"in {record['warehouse_writes']} batches, overlapped)"),
                ("bound calls·lat/conc", f"{record['bound_seconds']:.2f} s (ratio "
                 f"{record['ratio_to_bound']}; target ≤ {TARGET_RATIO}: "
                 f"{'met' if record['target_met'] else 'MISSED'})"),
                ("strict bound, panels ∥", f"{record['strict_parallel_bound_seconds']:.2f} s "
                 f"(ratio {record['ratio_to_strict_bound']})"),
                ("CPU of the poll process", f"{record['cpu_seconds_poll_process']:.2f} s"),
                ("peak RSS (poll process)", f"{record['peak_rss_mb_poll_process']} MB"),
            ],
        )  # fmt: skip
    return last


if __name__ == "__main__":
    main()
