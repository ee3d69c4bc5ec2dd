"""Migrations: a fresh file gets the whole schema, a second run is a no-op, an old file upgrades,
on each engine (`warehouse`: a DuckDB file, then a Postgres database)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pytest

from smm_pipeline.warehouse import WarehouseError, connect
from smm_pipeline.warehouse.db import Location
from smm_pipeline.warehouse.dialect import ensure_functions
from smm_pipeline.warehouse.migrations import (
    MIGRATIONS,
    Migration,
    MigrationError,
    apply_migrations,
)
from smm_pipeline.warehouse.postgres import PostgresTarget, pg_connect
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


# Each engine's information_schema names for the warehouse's column types.
TYPE_NAMES = {
    "duckdb": {"money": "DECIMAL(38,18)", "instant": "TIMESTAMP WITH TIME ZONE",
               "text": "VARCHAR", "integer": "BIGINT"},
    "postgres": {"money": "numeric", "instant": "timestamp with time zone",
                 "text": "character varying", "integer": "bigint"},
}  # fmt: skip
VIOLATION = (duckdb.ConstraintException, psycopg.errors.IntegrityError)


def _engine(location: Location) -> str:
    return "postgres" if isinstance(location, PostgresTarget) else "duckdb"


def _column_types(conn, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? AND table_schema = current_schema()",
        [table],
    ).fetchall()
    return dict(rows)


def _money_precision(conn, table: str, column: str) -> tuple[int, int]:
    return conn.execute(
        "SELECT numeric_precision, numeric_scale FROM information_schema.columns "
        "WHERE table_name = ? AND column_name = ? AND table_schema = current_schema()",
        [table, column],
    ).fetchone()


def _relations(conn, kind: str) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_type = ? AND table_schema = current_schema()",
        [kind],
    ).fetchall()
    return {r[0] for r in rows}


def test_fresh_warehouse_gets_schema_views_and_utc(warehouse: Location, tmp_path: Path) -> None:
    location = (
        tmp_path / "nested" / "dir" / "warehouse.duckdb"
        if _engine(warehouse) == "duckdb"
        else warehouse
    )
    names = TYPE_NAMES[_engine(location)]
    with connect(location) as conn:
        tables = _relations(conn, "BASE TABLE")
        views = _relations(conn, "VIEW")
        ledger = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
        zone = conn.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]
        orders = _column_types(conn, "orders")
        services = _column_types(conn, "services")
        precisions = {_money_precision(conn, t, c) for t, c in MONEY_COLUMNS}
    if isinstance(location, Path):
        assert location.exists()
    assert tables == TABLES
    assert views == set(VIEW_NAMES)
    assert ledger == LEDGER
    assert ledger[:3] == [(1, "001_initial"), (2, "002_analytics_views"), (3, "003_exact_money")]
    assert zone == "UTC"
    assert MONEY_TYPE == "DECIMAL(38,18)"
    assert precisions == {(38, 18)}
    assert services["rate"] == names["money"]
    assert services["first_seen_at"] == names["instant"]
    assert orders["estimated_cost"] == orders["charge"] == names["money"]
    assert orders["next_poll_at"] == names["instant"]
    assert len(orders) == 33
    assert orders["claim_id"] == names["text"] and orders["answered_order_id"] == names["integer"]


def test_running_migrations_twice_is_a_no_op(warehouse: Location) -> None:
    with connect(warehouse):
        pass
    with connect(warehouse) as conn:
        assert apply_migrations(conn) == []
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchall() == [
            (len(MIGRATIONS),)
        ]


def _first_migration_only(location: Location) -> None:
    """A warehouse as the first release left it, with a balance and an order in it."""
    if isinstance(location, PostgresTarget):
        with pg_connect(location) as raw:
            ensure_functions(raw)
            _initial_rows(raw)
    else:
        raw = duckdb.connect(str(location))
        try:
            _initial_rows(raw)
        finally:
            raw.close()


def _initial_rows(raw) -> None:
    assert apply_migrations(raw, MIGRATIONS[:1]) == ["001_initial"]
    raw.execute(
        "INSERT INTO balances VALUES ('p', TIMESTAMPTZ '2025-01-01 00:00:00+00', 12.5, 'USD')"
    )
    raw.execute(
        "INSERT INTO orders (panel, ref, submit_state, estimated_cost) "
        "VALUES ('p', 'a', 'submitted', 0.123456)"
    )


def test_an_older_warehouse_upgrades_in_place(warehouse: Location) -> None:
    _first_migration_only(warehouse)
    with connect(warehouse) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        runway = conn.execute("SELECT panel, balance FROM balance_runway").fetchall()
        cost = conn.execute("SELECT estimated_cost FROM orders").fetchone()[0]
        precisions = {_money_precision(conn, t, c) for t, c in MONEY_COLUMNS}
        conn.execute("UPDATE orders SET charge = 0.000000123456789012345")
        charge = conn.execute("SELECT charge FROM orders").fetchone()[0]
    assert versions == [(m.version,) for m in MIGRATIONS]
    assert runway == [("p", Decimal("12.5"))]
    assert cost == Decimal("0.123456")
    assert precisions == {(38, 18)}
    assert charge == Decimal("0.000000123456789012")


def test_a_failing_migration_rolls_back_and_names_itself(warehouse: Location) -> None:
    broken = Migration(
        LATEST + 1, "broken", "CREATE TABLE half_done (a INTEGER); SELECT * FROM nowhere"
    )
    with connect(warehouse) as conn:
        with pytest.raises(MigrationError, match=f"{LATEST + 1:03d}_broken"):
            apply_migrations(conn, [*MIGRATIONS, broken])
        tables = _relations(conn, "BASE TABLE")
        versions = conn.execute("SELECT max(version) FROM schema_migrations").fetchall()
    assert "half_done" not in tables
    assert versions == [(LATEST,)]


def test_migration_versions_must_ascend(tmp_path: Path) -> None:
    with connect(tmp_path / "w.duckdb") as conn, pytest.raises(MigrationError, match="ascending"):
        apply_migrations(conn, [MIGRATIONS[1], MIGRATIONS[0]])


def test_state_words_are_constrained(warehouse: Location) -> None:
    with connect(warehouse) as conn:
        conn.execute("INSERT INTO orders (panel, ref, submit_state) VALUES ('p', 'a', 'sending')")
        with pytest.raises(VIOLATION):
            conn.execute("INSERT INTO orders (panel, ref, submit_state) VALUES ('p', 'b', 'sent')")
        with pytest.raises(VIOLATION):
            conn.execute(
                "INSERT INTO orders (panel, ref, submit_state) VALUES ('p', 'a', 'failed')"
            )
        with pytest.raises(VIOLATION):
            conn.execute("INSERT INTO cancels VALUES ('p', 1, now(), 'maybe', NULL, NULL, NULL)")


def test_read_only_needs_an_existing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.duckdb"
    with pytest.raises(WarehouseError, match="missing.duckdb"), connect(missing, read_only=True):
        pass
    assert not missing.exists()


def test_read_only_connection_reads_a_migrated_warehouse(warehouse: Location) -> None:
    path = warehouse
    with connect(path) as conn:
        conn.execute("INSERT INTO processed_files (file_hash, kind) VALUES ('h', 'orders')")
    with connect(path, read_only=True) as conn:
        assert conn.execute("SELECT kind FROM processed_files").fetchall() == [("orders",)]
        with pytest.raises((duckdb.Error, psycopg.Error)):
            conn.execute("DELETE FROM processed_files")
