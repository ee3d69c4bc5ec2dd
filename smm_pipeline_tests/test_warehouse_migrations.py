"""Migrations: a fresh file gets the whole schema, a second run is a no-op, an old file upgrades."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from smm_pipeline.warehouse import WarehouseError, connect
from smm_pipeline.warehouse.migrations import (
    MIGRATIONS,
    Migration,
    MigrationError,
    apply_migrations,
)
from smm_pipeline.warehouse.schema import MONEY_COLUMNS, MONEY_TYPE
from smm_pipeline.warehouse.views import VIEW_NAMES

LEDGER = [(m.version, m.label) for m in MIGRATIONS]
LATEST = MIGRATIONS[-1].version

TABLES = {
    "schema_migrations",
    "services",
    "service_changes",
    "catalog_syncs",
    "balances",
    "orders",
    "order_status_history",
    "refills",
    "cancels",
    "processed_files",
    "subscription_orders",
}


def _column_types(conn, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
        [table],
    ).fetchall()
    return dict(rows)


def test_fresh_file_gets_folder_schema_views_and_utc(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "warehouse.duckdb"
    with connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = {
            r[0]
            for r in conn.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
        ledger = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
        zone = conn.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]
        orders = _column_types(conn, "orders")
        services = _column_types(conn, "services")
    assert path.exists()
    assert tables == TABLES
    assert views == set(VIEW_NAMES)
    assert ledger == LEDGER
    assert ledger[:3] == [(1, "001_initial"), (2, "002_analytics_views"), (3, "003_exact_money")]
    assert zone == "UTC"
    assert MONEY_TYPE == "DECIMAL(38,18)"
    assert services["rate"] == MONEY_TYPE
    assert services["first_seen_at"] == "TIMESTAMP WITH TIME ZONE"
    assert orders["estimated_cost"] == orders["charge"] == MONEY_TYPE
    assert orders["next_poll_at"] == "TIMESTAMP WITH TIME ZONE"
    assert len(orders) == 33
    assert orders["claim_id"] == "VARCHAR" and orders["answered_order_id"] == "BIGINT"


def test_running_migrations_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with connect(path):
        pass
    with connect(path) as conn:
        assert apply_migrations(conn) == []
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchall() == [
            (len(MIGRATIONS),)
        ]


def test_an_older_file_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    raw = duckdb.connect(str(path))
    assert apply_migrations(raw, MIGRATIONS[:1]) == ["001_initial"]
    raw.execute(
        "INSERT INTO balances VALUES ('p', TIMESTAMPTZ '2025-01-01 00:00:00+00', 12.5, 'USD')"
    )
    raw.execute(
        "INSERT INTO orders (panel, ref, submit_state, estimated_cost) "
        "VALUES ('p', 'a', 'submitted', 0.123456)"
    )
    raw.close()

    with connect(path) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        runway = conn.execute("SELECT panel, balance FROM balance_runway").fetchall()
        cost = conn.execute("SELECT estimated_cost FROM orders").fetchone()[0]
        types = {
            (table, column): _column_types(conn, table)[column] for table, column in MONEY_COLUMNS
        }
        conn.execute("UPDATE orders SET charge = 0.000000123456789012345")
        charge = conn.execute("SELECT charge FROM orders").fetchone()[0]
    assert versions == [(m.version,) for m in MIGRATIONS]
    assert runway == [("p", Decimal("12.5"))]
    assert cost == Decimal("0.123456")
    assert set(types.values()) == {MONEY_TYPE}
    assert charge == Decimal("0.000000123456789012")


def test_a_failing_migration_rolls_back_and_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    broken = Migration(
        LATEST + 1, "broken", "CREATE TABLE half_done (a INTEGER); SELECT * FROM nowhere"
    )
    with connect(path) as conn:
        with pytest.raises(MigrationError, match=f"{LATEST + 1:03d}_broken"):
            apply_migrations(conn, [*MIGRATIONS, broken])
        tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        versions = conn.execute("SELECT max(version) FROM schema_migrations").fetchall()
    assert "half_done" not in tables
    assert versions == [(LATEST,)]


def test_migration_versions_must_ascend(tmp_path: Path) -> None:
    with connect(tmp_path / "w.duckdb") as conn, pytest.raises(MigrationError, match="ascending"):
        apply_migrations(conn, [MIGRATIONS[1], MIGRATIONS[0]])


def test_state_words_are_constrained(tmp_path: Path) -> None:
    with connect(tmp_path / "w.duckdb") as conn:
        conn.execute("INSERT INTO orders (panel, ref, submit_state) VALUES ('p', 'a', 'sending')")
        with pytest.raises(duckdb.ConstraintException):
            conn.execute("INSERT INTO orders (panel, ref, submit_state) VALUES ('p', 'b', 'sent')")
        with pytest.raises(duckdb.ConstraintException):
            conn.execute(
                "INSERT INTO orders (panel, ref, submit_state) VALUES ('p', 'a', 'failed')"
            )
        with pytest.raises(duckdb.ConstraintException):
            conn.execute("INSERT INTO cancels VALUES ('p', 1, now(), 'maybe', NULL, NULL, NULL)")


def test_read_only_needs_an_existing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.duckdb"
    with pytest.raises(WarehouseError, match="missing.duckdb"), connect(missing, read_only=True):
        pass
    assert not missing.exists()


def test_read_only_connection_reads_a_migrated_file(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with connect(path) as conn:
        conn.execute("INSERT INTO processed_files (file_hash, kind) VALUES ('h', 'orders')")
    with connect(path, read_only=True) as conn:
        assert conn.execute("SELECT kind FROM processed_files").fetchall() == [("orders",)]
        with pytest.raises(duckdb.Error):
            conn.execute("DELETE FROM processed_files")
