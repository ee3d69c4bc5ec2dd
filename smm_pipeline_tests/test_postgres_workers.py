"""Several run workers on one Postgres warehouse, as Dagster's Docker or Kubernetes run launcher
starts them: separate processes that share nothing but the database and the panel.

- Two worker processes submit the same two files for one panel at once (one takes A then B,
  the other B then A): their claims split the outbox (FOR UPDATE SKIP LOCKED under the
  (panel, ref) key), and the simulator receives every row exactly once.
- A worker killed with SIGKILL mid-send: while it lives, another process's settling leaves its
  claim alone (the journal's advisory lock is held); once it is dead, its claim is settled from
  the table submission_journal: rows it had sent without an answer become ambiguous (never
  resent), rows it never sent go back to pending, answers it had journaled are recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smm_pipeline.config import PanelConfig, Secret
from smm_pipeline.operations.submission import settle_interrupted
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.journal import JOURNAL_TABLE
from smm_pipeline.warehouse.orders import record_pending
from smm_pipeline.warehouse.postgres import PostgresTarget
from smm_pipeline_tests.conftest import TEST_KEY
from smm_pipeline_tests.test_submission import outbox

ROWS_PER_FILE = 60
WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from smm_pipeline.operations.submission import submit_file
    from smm_pipeline.warehouse.postgres import PostgresTarget
    from smm_pipeline_tests.test_postgres_workers import worker_clients
    location = PostgresTarget(os.environ["SMM_WAREHOUSE_URL"])
    start = Path(sys.argv[2])
    while not start.exists():  # every worker loaded and ready: they start together
        time.sleep(0.005)
    with worker_clients(sys.argv[1], location) as clients:
        for file_hash in sys.argv[3:]:
            report = submit_file(location, file_hash, clients, progress=lambda _: None)
            print(report.submitted, flush=True)
    """
)


@contextmanager
def worker_clients(url: str, location: PostgresTarget) -> Iterator[dict[str, PanelClient]]:
    """The panel `sim` as each worker sees it: its request budget (rate and the concurrency
    cap of 4) in the shared Postgres, as in production."""
    config = PanelConfig(
        name="sim",
        url=url,
        key_env="UNUSED",
        rate_limit_per_minute=60000,
        max_concurrency=4,
        timeout_seconds=10,
    )
    with ExitStack() as stack:
        yield {
            "sim": stack.enter_context(PanelClient(config, Secret(TEST_KEY), budget_dir=location))
        }


def order_file(prefix: str, n: int, file_hash: str):
    frame = outbox("sim", n)
    frame["ref"] = [f"{prefix}-{i}" for i in range(n)]
    frame["link"] = [f"https://instagram.com/p/{prefix}{i}" for i in range(n)]
    frame["params"] = [
        f'{{"service": "2", "link": "https://instagram.com/p/{prefix}{i}", "quantity": "100"}}'
        for i in range(n)
    ]
    frame["file_hash"] = file_hash
    frame["source_file"] = f"{prefix}.csv"
    return frame


def start_worker(
    location: PostgresTarget, sim_url: str, start: Path, *file_hashes: str
) -> subprocess.Popen:
    """A worker process that submits `file_hashes` in turn once the file `start` exists."""
    env = {**os.environ, "SMM_WAREHOUSE_URL": location.url}  # the URL in the environment only
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, sim_url, str(start), *file_hashes],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(worker: subprocess.Popen) -> list[int]:
    """The rows the worker submitted, file by file."""
    out, err = worker.communicate(timeout=240)
    assert worker.returncode == 0, err[-2000:]
    return [int(line) for line in out.split()]


def states(location: PostgresTarget) -> dict[str, str]:
    with connect(location, read_only=True) as conn:
        return dict(conn.execute("SELECT ref, submit_state FROM orders").fetchall())


@pytest.fixture
def location(postgres_database) -> PostgresTarget:
    return PostgresTarget(postgres_database.url())


def test_two_workers_on_one_panel_send_every_row_once(location, sim, tmp_path):
    sim.configure(latency_ms=20)  # requests overlap: both workers are mid-batch together
    with connect(location) as conn:
        now = datetime.now(UTC)
        record_pending(conn, order_file("a", ROWS_PER_FILE, "ha"), now)
        record_pending(conn, order_file("b", ROWS_PER_FILE, "hb"), now)
    start = tmp_path / "start"
    workers = [
        start_worker(location, sim.url, start, "ha", "hb"),
        start_worker(location, sim.url, start, "hb", "ha"),
    ]
    start.touch()
    sent = [finish(worker) for worker in workers]
    assert sum(map(sum, sent)) == 2 * ROWS_PER_FILE
    assert all(sum(by_file) > 0 for by_file in sent), sent  # both took part of the outbox

    links = [o["link"] for o in sim.orders()]
    assert len(links) == 2 * ROWS_PER_FILE
    assert len(set(links)) == len(links)  # 0 duplicates at the panel
    assert set(states(location).values()) == {"submitted"}
    with connect(location, read_only=True) as conn:
        ids = conn.execute("SELECT count(DISTINCT order_id), count(*) FROM orders").fetchall()
        journal = conn.execute(f"SELECT count(*) FROM {JOURNAL_TABLE}").fetchall()
    assert ids == [(2 * ROWS_PER_FILE, 2 * ROWS_PER_FILE)]
    assert journal == [(0,)]  # every claim closed its journal


def test_a_killed_worker_is_settled_from_the_journal_table_and_only_once_dead(
    location, sim, tmp_path
):
    sim.configure(latency_ms=300)  # four sends in flight at once for a while
    with connect(location) as conn:
        record_pending(conn, order_file("k", 40, "hk"), datetime.now(UTC))
    start = tmp_path / "start"
    start.touch()
    worker = start_worker(location, sim.url, start, "hk")
    deadline = time.monotonic() + 120
    while sim.stats()["calls"].get("add", 0) < 6:
        assert worker.poll() is None, "the worker finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)

    alive = settle_interrupted(location, progress=lambda _: None)  # the worker is alive
    assert alive.rows == 0
    assert "sending" in states(location).values()

    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    answered_at_panel = {o["link"] for o in sim.orders()}
    settled = settle_interrupted(location, progress=lambda _: None)
    after = states(location)
    assert settled.rows > 0 and "sending" not in after.values()
    with connect(location, read_only=True) as conn:
        rows = conn.execute("SELECT ref, link, submit_state FROM orders").fetchall()
        journal = conn.execute(f"SELECT count(*) FROM {JOURNAL_TABLE}").fetchall()
    assert journal == [(0,)]
    for ref, link, state in rows:
        if state == "pending":  # released: it never left the worker
            assert link not in answered_at_panel, ref
        if link in answered_at_panel:  # it reached the panel: never pending, never resent
            assert state in ("submitted", "ambiguous"), (ref, state)
    assert settled.ambiguous >= 1  # the kill caught sends in flight

    # The rows put back are sent by the next run, and nothing is sent twice.
    pending = list(after.values()).count("pending")  # released, or never claimed
    assert pending >= settled.released > 0
    assert finish(start_worker(location, sim.url, start, "hk")) == [pending]
    links = [o["link"] for o in sim.orders()]
    assert len(links) == len(set(links))
    assert set(states(location).values()) <= {"submitted", "ambiguous"}
