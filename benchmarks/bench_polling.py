"""Status polling: 20,000 active orders over two simulated panels answering after 50 ms.

Reports the status calls (they must equal the sum of ceil(n/100) per panel), wall time
against the bound calls × latency / concurrency (per panel, panels in parallel), the DuckDB
write time and peak memory, and compares the calls with one status call per order (what common
panel scripts do). Run: `python -m benchmarks.bench_polling [--orders N] [--latency-ms L]`.
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import ExitStack
from datetime import UTC, datetime

import pandas as pd

from benchmarks.common import client, peak_rss_mb, report, simulator, temp_db
from smm_pipeline.operations.polling import poll_orders
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.status import Cadence

PANELS = ("bench-a", "bench-b")


def place_orders(c, n: int) -> list[int]:
    params = [
        {"service": "2", "link": f"https://instagram.com/p/{c.panel.name}{i}", "quantity": "20"}
        for i in range(n)
    ]
    ids = [r for _, r in c.map_concurrent(c.add, params)]
    assert all(isinstance(i, int) for i in ids)
    return ids


def record_submitted(db, panel: str, ids: list[int]) -> None:
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    per_panel = args.orders // len(PANELS)
    db = temp_db()
    with ExitStack() as stack:
        sims = [stack.enter_context(simulator()) for _ in PANELS]
        clients = {}
        for panel, sim in zip(PANELS, sims, strict=True):
            c = stack.enter_context(client(sim.url, panel, max_concurrency=32))
            record_submitted(db, panel, place_orders(c, per_panel))
            sim.configure(latency_ms=int(args.latency_ms))
            sim.reset_stats()
            clients[panel] = stack.enter_context(
                client(sim.url, panel + "-poll", max_concurrency=args.concurrency)
            )
        # Clients are keyed by the panel names the warehouse knows.
        clients = {p: clients[p] for p in PANELS}
        started = time.perf_counter()
        result = poll_orders(db, clients, Cadence(), progress=lambda _: None)
        wall = time.perf_counter() - started
        calls_seen = sum(s.stats()["calls"].get("status", 0) for s in sims)
    expected_calls = sum(math.ceil(per_panel / 100) for _ in PANELS)
    per_panel_calls = math.ceil(per_panel / 100)
    # The bound: calls × latency / concurrency (concurrency = the per-panel cap).
    bound = expected_calls * args.latency_ms / 1000 / args.concurrency
    # Stricter: the panels are polled in parallel, each with its own cap.
    strict = math.ceil(per_panel_calls / args.concurrency) * args.latency_ms / 1000
    record = {
        "orders": per_panel * len(PANELS),
        "panels": len(PANELS),
        "latency_ms": args.latency_ms,
        "concurrency_per_panel": args.concurrency,
        "status_calls": result.calls,
        "status_calls_seen_by_panels": calls_seen,
        "expected_calls": expected_calls,
        "calls_match": result.calls == expected_calls == calls_seen,
        "seconds": round(wall, 3),
        "http_seconds": round(result.http_seconds, 3),
        "write_seconds": round(result.write_seconds, 3),
        "write_share": round(result.write_seconds / wall, 3),
        "bound_seconds": round(bound, 3),
        "ratio_to_bound": round(wall / bound, 3),
        "strict_parallel_bound_seconds": round(strict, 3),
        "ratio_to_strict_bound": round(wall / strict, 3),
        "one_call_per_order_calls": per_panel * len(PANELS),
        "call_ratio": round(per_panel * len(PANELS) / result.calls, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    return report(
        "status_polling",
        record,
        [
            ("orders", f"{record['orders']} over {len(PANELS)} panels"),
            ("status calls", f"{result.calls} (expected {expected_calls}, panels saw "
             f"{calls_seen})"),
            ("wall", f"{wall:.2f} s (HTTP {result.http_seconds:.2f} s, DuckDB writes "
             f"{result.write_seconds:.2f} s = {record['write_share']:.0%})"),
            ("bound calls·lat/conc", f"{bound:.2f} s (wall ratio {record['ratio_to_bound']})"),
            ("strict bound, panels ∥", f"{strict:.2f} s (wall ratio "
             f"{record['ratio_to_strict_bound']})"),
            ("one call per order", f"{record['one_call_per_order_calls']} calls "
             f"({record['call_ratio']}× more)"),
            ("peak RSS", f"{record['peak_rss_mb']} MB"),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
