"""Order submission: 2,000 orders to a simulator that answers each call after 50 ms.

Compares the pipeline's concurrent, exactly-once submission (outbox writes included) with the
bound max(N × latency / concurrency, N / rate limit), and with a plain sequential loop (one
request at a time, as typical panel clients do). The sequential loop is measured on
`--sequential-sample` orders and scaled to N (it is linear: one request after another).
Targets (issue): within 1.5× of the bound, at least 4× faster than the sequential loop, and
every order on the panel exactly once; `targets_met` says which are met.
Run: `python -m benchmarks.bench_submit [--orders N] [--latency-ms L] [--concurrency C]`.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pandas as pd

from benchmarks.common import (
    KEY,
    add_engine_argument,
    client,
    peak_rss_mb,
    report,
    simulator,
    temp_warehouse,
)
from smm_pipeline.operations.submission import submit_file
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.orders import record_pending

MAX_RATIO_TO_BOUND = 1.5
MIN_SPEEDUP_VS_SEQUENTIAL = 4.0


def outbox(n: int, file_hash: str) -> pd.DataFrame:
    params = [
        {"service": "2", "link": f"https://instagram.com/p/bench{i}", "quantity": "100"}
        for i in range(n)
    ]
    return pd.DataFrame(
        {
            "panel": "bench",
            "ref": [f"bench-{i}" for i in range(n)],
            "source_file": "bench.csv",
            "file_hash": file_hash,
            "row_number": range(1, n + 1),
            "campaign": "bench",
            "service_id": 2,
            "service_type": "Default",
            "link": [p["link"] for p in params],
            "quantity": 100,
            "params": [json.dumps(p) for p in params],
            "estimated_cost": [Decimal("0.012")] * n,
        }
    )


def sequential(url: str, n: int) -> float:
    """One `add` after another on one connection: the common panel-script loop."""
    with httpx.Client(timeout=30) as http:
        started = time.perf_counter()
        for i in range(n):
            answer = http.post(
                url,
                data={"key": KEY, "action": "add", "service": "2", "quantity": "100",
                      "link": f"https://instagram.com/p/seq{i}"},
            )  # fmt: skip
            answer.raise_for_status()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate-limit-per-minute", type=int, default=12000)
    parser.add_argument("--sequential-sample", type=int, default=200)
    add_engine_argument(parser)
    args = parser.parse_args(argv)
    with temp_warehouse(args.engine) as db:
        return run(args, db)


def run(args: argparse.Namespace, db) -> dict:
    n, latency = args.orders, args.latency_ms / 1000
    with connect(db) as conn:
        record_pending(conn, outbox(n, "bench"), datetime.now(UTC))
    with simulator(latency_ms=args.latency_ms) as sim:
        with client(
            sim.url,
            "bench",
            rate_limit_per_minute=args.rate_limit_per_minute,
            max_concurrency=args.concurrency,
        ) as c:
            result = submit_file(db, "bench", {"bench": c}, progress=lambda _: None)
        placed = sim.stats()["orders_created"]
        seq_seconds = sequential(sim.url, args.sequential_sample)
    bound = max(n * latency / args.concurrency, n / (args.rate_limit_per_minute / 60))
    seq_full = seq_seconds * n / args.sequential_sample
    ratio, speedup = result.seconds / bound, seq_full / result.seconds
    targets = {
        f"ratio_to_bound <= {MAX_RATIO_TO_BOUND}": ratio <= MAX_RATIO_TO_BOUND,
        f"speedup_vs_sequential >= {MIN_SPEEDUP_VS_SEQUENTIAL}": (
            speedup >= MIN_SPEEDUP_VS_SEQUENTIAL
        ),
        "every order on the panel once": result.submitted == placed == n,
    }
    record = {
        "engine": args.engine,
        "orders": n,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "rate_limit_per_minute": args.rate_limit_per_minute,
        "submitted": result.submitted,
        "orders_on_panel": placed,
        "seconds": round(result.seconds, 3),
        "bound_seconds": round(bound, 3),
        "ratio_to_bound": round(ratio, 3),
        "sequential_seconds_scaled": round(seq_full, 3),
        "sequential_sample": args.sequential_sample,
        "speedup_vs_sequential": round(speedup, 2),
        "peak_rss_mb": peak_rss_mb(),
        "targets_met": targets,
    }
    return report(
        "order_submission",
        record,
        [
            ("warehouse", args.engine),
            ("orders", f"{n} ({result.submitted} submitted, {placed} on the panel)"),
            ("latency / concurrency / rate", f"{args.latency_ms:g} ms / {args.concurrency} / "
             f"{args.rate_limit_per_minute}/min"),
            ("pipeline", f"{result.seconds:.2f} s"),
            ("bound max(N·lat/conc, N/rate)", f"{bound:.2f} s (ratio {record['ratio_to_bound']})"),
            ("sequential loop (scaled)", f"{seq_full:.2f} s (measured on "
             f"{args.sequential_sample}: {seq_seconds:.2f} s)"),
            ("speedup vs sequential", f"{record['speedup_vs_sequential']}×"),
            ("peak RSS", f"{record['peak_rss_mb']} MB"),
            *[(f"target: {name}", "met" if ok else "MISSED") for name, ok in targets.items()],
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
