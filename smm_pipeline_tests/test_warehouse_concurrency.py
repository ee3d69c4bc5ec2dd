"""Lock waiting and the read-only replica, with a real second process holding DuckDB locks.

DuckDB shares one database per file within a process, so only another process can hold a lock
against us; `_Holder` is that process, driven line by line over its stdin.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from smm_pipeline.panel.models import Service
from smm_pipeline.warehouse import (
    WarehouseError,
    WarehouseLockedError,
    connect,
    connect_readonly,
    publish_snapshot,
    replica_path,
    sync_catalog,
)
from smm_pipeline.warehouse.migrations import MIGRATIONS

_HOLDER_SCRIPT = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
print("ready", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "quit":
        break
    print(repr(conn.execute(command).fetchall()), flush=True)
conn.close()
"""


class _Holder:
    """A separate process keeping `path` open (read-only or for writing) until told to quit."""

    def __init__(self, path: Path, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER_SCRIPT, str(path), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def query(self, sql: str) -> str:
        self.proc.stdin.write(sql + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def quit(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=30)

    def __enter__(self) -> _Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.quit()


class _ReleaseOnFirstRetry(logging.Handler):
    """Lets the holder go as soon as `connect` reports that it is waiting for the lock."""

    def __init__(self, holder: _Holder) -> None:
        super().__init__(level=logging.INFO)
        self.holder = holder
        self.waits = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "locked" in record.getMessage():
            self.waits += 1
            if self.waits == 1:
                self.holder.quit()


def _services(n: int) -> list[Service]:
    return [
        Service(i, f"Service {i}", "Default", "Likes", Decimal("0.5"), 10, 1000, True, True)
        for i in range(1, n + 1)
    ]


def _seed(path: Path, n: int) -> None:
    with connect(path) as conn:
        sync_catalog(conn, "p", _services(n), datetime.now(UTC))


def test_connect_waits_for_another_process_to_release_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    _seed(path, 2)
    logger = logging.getLogger("smm_pipeline.warehouse.db")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    with _Holder(path, "rw") as holder:
        handler = _ReleaseOnFirstRetry(holder)
        logger.addHandler(handler)
        try:
            with connect(path, lock_timeout=60) as conn:
                count = conn.execute("SELECT count(*) FROM services").fetchall()
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
    assert handler.waits >= 1
    assert count == [(2,)]


@pytest.mark.parametrize("read_only", [False, True])
def test_a_lock_held_too_long_raises_a_clear_error_naming_the_file(
    tmp_path: Path, read_only: bool
) -> None:
    path = tmp_path / "busy.duckdb"
    _seed(path, 1)
    with (
        _Holder(path, "rw"),
        pytest.raises(WarehouseLockedError, match=r"busy\.duckdb.*locked") as err,
        connect(path, read_only=read_only, lock_timeout=0.3),
    ):
        pass
    assert "retry" in str(err.value)


def test_publishing_does_not_wait_for_a_reader_holding_the_replica(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    _seed(path, 3)
    replica = publish_snapshot(path)
    assert replica == replica_path(path) == tmp_path / "w.read.duckdb"
    with _Holder(replica, "ro") as reader:
        assert reader.query("SELECT count(*) FROM services") == "[(3,)]"
        _seed(path, 5)
        publish_snapshot(path, lock_timeout=0.5)
        with connect_readonly(path, lock_timeout=0.5) as fresh:
            assert fresh.execute("SELECT count(*) FROM services").fetchall() == [(5,)]
            assert fresh.execute("SELECT count(*) FROM provider_scorecard").fetchall() == [(1,)]
            assert fresh.execute("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
        # the reader keeps its consistent old copy until it reconnects
        assert reader.query("SELECT count(*) FROM services") == "[(3,)]"
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["w.duckdb", "w.duckdb.gate", "w.read.duckdb"]


def test_readers_are_not_blocked_by_a_writer_holding_the_warehouse(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    _seed(path, 4)
    publish_snapshot(path)
    with _Holder(path, "rw") as writer:
        writer.query("INSERT INTO balances VALUES ('p', now(), 1, 'USD')")
        with (
            pytest.raises(WarehouseLockedError),
            connect(path, read_only=True, lock_timeout=0.2),
        ):
            pass
        with connect_readonly(path, lock_timeout=0.2) as reader:
            assert reader.execute("SELECT count(*) FROM services").fetchall() == [(4,)]
            assert reader.execute("SELECT count(*) FROM spend_daily").fetchall() == [(0,)]
            with pytest.raises(duckdb.Error):
                reader.execute("DELETE FROM services")


def test_connect_readonly_finds_the_replica_by_either_path_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data" / "warehouse.duckdb"
    monkeypatch.setenv("SMM_DUCKDB_PATH", str(path))
    with pytest.raises(WarehouseError, match="warehouse.read.duckdb"):
        connect_readonly()
    _seed(path, 2)
    publish_snapshot(path)
    for target in (None, path, replica_path(path)):
        with connect_readonly(target) as conn:
            assert conn.execute("SELECT count(*) FROM services").fetchall() == [(2,)]


def test_publish_replaces_the_replica_atomically_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    _seed(path, 1)
    publish_snapshot(path)
    first_inode = os.stat(replica_path(path)).st_ino
    _seed(path, 6)
    publish_snapshot(path)
    assert os.stat(replica_path(path)).st_ino != first_inode
    with connect_readonly(path) as conn:
        assert conn.execute("SELECT count(*) FROM services").fetchall() == [(6,)]
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert versions == [(m.version,) for m in MIGRATIONS]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".wal"))]


_TRY_WRITE = """
import sys, duckdb
try:
    duckdb.connect(sys.argv[1]).close()
except duckdb.IOException as exc:
    print("locked" if "lock" in str(exc).lower() else exc)
else:
    print("free")
"""


def test_the_replica_is_renamed_while_the_write_lock_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishers are serialised up to the rename, so an older copy never lands last."""
    path = tmp_path / "w.duckdb"
    _seed(path, 2)
    seen: list[str] = []
    real_replace = os.replace

    def replace_and_probe(src, dst):
        probe = [sys.executable, "-c", _TRY_WRITE, str(path)]
        seen.append(subprocess.run(probe, capture_output=True, text=True).stdout.strip())
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_and_probe)
    publish_snapshot(path)
    assert seen == ["locked"]
    with connect_readonly(path) as conn:
        assert conn.execute("SELECT count(*) FROM services").fetchall() == [(2,)]
