"""Catalog sync: a 5,000-service catalog synced twice (first load, then 5% changed).

Reports wall time split into the HTTP fetch and the diff + write, rows written and peak memory.
The target: the second sync is dominated by the fetch, not by the diff.
Run: `python -m benchmarks.bench_catalog [--services N]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from benchmarks.common import client, peak_rss_mb, report, simulator, temp_db
from smm_pipeline.operations.catalog import refresh_catalog

TYPES = ("Default", "Package", "Custom Comments", "Mentions", "Poll", "Subscriptions")


def catalog(n: int) -> list[dict]:
    return [
        {
            "service": i,
            "name": f"Service {i}",
            "type": TYPES[i % len(TYPES)],
            "category": f"Category {i % 40}",
            "rate": str(Decimal(i % 997) / 100 + Decimal("0.01")),
            "min": "10",
            "max": str(1000 + i),
            "refill": i % 3 == 0,
            "cancel": i % 2 == 0,
        }
        for i in range(1, n + 1)
    ]


def changed(services: list[dict], share: float) -> list[dict]:
    """Change `share` of them: a price rise, a min change, a removal and an addition in turn."""
    out = [dict(s) for s in services]
    step = int(1 / share)
    removed = set()
    for k, i in enumerate(range(0, len(out), step)):
        kind = k % 4
        if kind == 0:
            out[i]["rate"] = str(Decimal(out[i]["rate"]) * Decimal("1.1"))
        elif kind == 1:
            out[i]["min"] = "20"
        elif kind == 2:
            removed.add(i)
        else:
            out.append({**out[i], "service": 100000 + i, "name": f"New {i}"})
    return [s for j, s in enumerate(out) if j not in removed]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=5000)
    args = parser.parse_args(argv)
    first = catalog(args.services)
    second = changed(first, 0.05)
    db = temp_db()
    with tempfile.TemporaryDirectory() as tmp:
        catalog_file = Path(tmp) / "catalog.json"
        catalog_file.write_text(json.dumps(first))
        with simulator(catalog_file=catalog_file) as sim, client(sim.url, "bench-cat") as c:
            started = time.perf_counter()
            load = refresh_catalog(c, db)
            first_wall = time.perf_counter() - started
            sim.replace_catalog(second)
            started = time.perf_counter()
            resync = refresh_catalog(c, db)
            second_wall = time.perf_counter() - started
    r1, r2 = load.result, resync.result
    record = {
        "services": args.services,
        "first_sync_seconds": round(first_wall, 3),
        "first_fetch_seconds": round(load.fetch_seconds, 3),
        "first_diff_seconds": round(load.diff_seconds, 3),
        "first_rows_written": r1.services + len(r1.changes),
        "second_sync_seconds": round(second_wall, 3),
        "second_fetch_seconds": round(resync.fetch_seconds, 3),
        "second_diff_seconds": round(resync.diff_seconds, 3),
        "second_change_rows": len(r2.changes),
        "second_changed_services": r2.changed,
        "second_new": r2.new,
        "second_vanished": r2.vanished,
        "peak_rss_mb": peak_rss_mb(),
        "fetch_dominates_second_sync": resync.fetch_seconds > resync.diff_seconds,
    }
    return report(
        "catalog_sync",
        record,
        [
            ("services", args.services),
            ("1st sync (fetch + diff)", f"{first_wall:.3f} s ({load.fetch_seconds:.3f} + "
             f"{load.diff_seconds:.3f})"),
            ("1st rows written", record["first_rows_written"]),
            ("2nd sync (fetch + diff)", f"{second_wall:.3f} s ({resync.fetch_seconds:.3f} + "
             f"{resync.diff_seconds:.3f})"),
            ("2nd change rows", f"{len(r2.changes)} ({r2.changed} changed, {r2.new} new, "
             f"{r2.vanished} vanished)"),
            ("fetch dominates 2nd sync", record["fetch_dominates_second_sync"]),
            ("peak RSS", f"{record['peak_rss_mb']} MB"),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
