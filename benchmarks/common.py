"""Shared pieces of the benchmarks: a simulator process, a pipeline config, reporting."""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smm_devkit.simulator.testing import SimulatorProcess, start_simulator_process
from smm_pipeline.config import PanelConfig, Secret
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.warehouse.db import Location
from smm_pipeline.warehouse.postgres import PostgresTarget

KEY = "bench-key"
RESULTS = Path(__file__).parent / "results"


@contextmanager
def simulator(**options: Any) -> Iterator[SimulatorProcess]:
    """A simulator in its own process (it must not share our GIL), stopped afterwards."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_simulator_process(
            state_file=Path(tmp) / "sim.jsonl", keys=(KEY,), balance="100000000.00", **options
        ) as sim,
    ):
        yield sim


def client(
    url: str, name: str, *, rate_limit_per_minute: int = 60000, max_concurrency: int = 8
) -> PanelClient:
    config = PanelConfig(
        name=name,
        url=url,
        key_env="BENCH_KEY",
        rate_limit_per_minute=rate_limit_per_minute,
        max_concurrency=max_concurrency,
        timeout_seconds=30,
    )
    return PanelClient(config, Secret(KEY))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def report(name: str, record: dict[str, Any], table: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON line (also saved under benchmarks/results/) and a readable table."""
    record = {"benchmark": name, **record}
    print(json.dumps(record, default=str))
    width = max(len(k) for k, _ in table)
    print(f"\n{name}")
    for key, value in table:
        print(f"  {key:<{width}}  {value}")
    print()
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
    return record


def temp_db() -> Path:
    return Path(tempfile.mkdtemp(prefix="smm-bench-")) / "warehouse.duckdb"


ENGINES = ("duckdb", "postgres")


@contextmanager
def temp_warehouse(engine: str) -> Iterator[Location]:
    """A fresh, empty warehouse on `engine`: a DuckDB file in a temporary folder, or a database
    on a throwaway local Postgres (the test suite's pgserver one, with fsync off as there: the
    figures compare the engines' work, not a disk's flush latency)."""
    if engine == "duckdb":
        yield temp_db()
        return
    from smm_pipeline_tests.postgres_server import running_postgres

    with running_postgres() as server:
        yield PostgresTarget(server.create_database("bench").url())


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="duckdb",
        help="the warehouse: the DuckDB file (default) or a throwaway Postgres",
    )


def cpu_count() -> int:
    return os.cpu_count() or 1
