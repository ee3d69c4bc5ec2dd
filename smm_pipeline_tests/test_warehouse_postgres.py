"""The Postgres connection speaks to the warehouse modules as DuckDB's does: placeholders,
DataFrames in (register) and out (df) with the same types, exact money, UTC instants, and a
URL whose password never shows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from smm_pipeline.config import ConfigError, load_settings
from smm_pipeline.errors import WarehouseError
from smm_pipeline.warehouse.db import as_location, connect, warehouse_location
from smm_pipeline.warehouse.postgres import PostgresTarget, redact, to_psycopg

COST = Decimal("0.123456789012345678")
BIG = 2**53 + 1


def test_placeholders_become_psycopg_ones_outside_quoted_text():
    assert to_psycopg("SELECT ? WHERE a = '?' AND b LIKE '%x'") == (
        "SELECT %s WHERE a = '?' AND b LIKE '%%x'"
    )
    assert to_psycopg('SELECT "we?ird" -- what?\n, ?') == 'SELECT "we?ird" -- what?\n, %s'
    assert to_psycopg("SELECT $now, '$now', $now2", named=True) == (
        "SELECT %(now)s, '$now', %(now2)s"
    )
    assert to_psycopg("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', %s"


def test_the_url_password_never_shows():
    target = PostgresTarget("postgresql://smm:s3cr%40t@db.internal:5432/warehouse")
    assert "s3cr" not in repr(target) and "s3cr" not in str(target)
    assert target.safe == "postgresql://smm:***@db.internal:5432/warehouse"
    assert redact("postgresql://h/db?password=hunter2&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )
    with pytest.raises(ConfigError) as refused:
        PostgresTarget("mysql://smm:hunter2@db/warehouse")
    assert "hunter2" not in str(refused.value) and "SMM_WAREHOUSE_URL" in str(refused.value)


def test_the_environment_chooses_the_engine(tmp_path: Path):
    duck = tmp_path / "w.duckdb"
    assert warehouse_location({"SMM_DUCKDB_PATH": str(duck)}) == duck
    url = "postgresql://smm:pw@127.0.0.1:5432/wh"
    assert warehouse_location({"SMM_WAREHOUSE_URL": url, "SMM_DUCKDB_PATH": str(duck)}) == (
        PostgresTarget(url)
    )
    assert as_location(url) == PostgresTarget(url) and as_location(str(duck)) == duck


def test_a_bad_warehouse_url_fails_at_load_without_the_secret(tmp_path: Path):
    panels = tmp_path / "panels.yaml"
    panels.write_text("panels:\n  - name: a\n    url: http://127.0.0.1:1/api/v2\n    key_env: K\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(
            panels, environ={"SMM_WAREHOUSE_URL": "http://u:hunter2@h/db"}, check_keys=False
        )
    assert "hunter2" not in str(refused.value)


def test_an_unreachable_database_is_a_warehouse_error_without_the_password(postgres_server):
    target = PostgresTarget(
        f"postgresql://{postgres_server.username}:wrong-hunter2@{postgres_server.host}:"
        f"{postgres_server.port}/postgres"
    )
    with pytest.raises(WarehouseError) as failed, connect(target):
        pass
    assert "hunter2" not in str(failed.value) and "***" in str(failed.value)


def test_frames_go_in_and_come_out_as_on_duckdb(warehouse):
    """The same statements over a registered frame give the same Python values and the same
    DataFrame dtypes on both engines."""
    now = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    frame = pd.DataFrame(
        {
            "ref": pd.array(["a", "b", None], dtype="string"),
            "order_id": pd.array([BIG, None, 3], dtype="Int64"),
            "cost": [COST, Decimal("1"), None],
            "seen_at": pd.to_datetime([now, now + timedelta(seconds=1), None], utc=True),
            "ok": [True, False, True],
        }
    )
    with connect(warehouse) as conn:
        conn.register("_frame", frame)
        rows = conn.execute(
            "SELECT ref, order_id, CAST(cost AS DECIMAL(38,18)), seen_at, ok FROM _frame "
            "WHERE ok OR order_id IS NULL ORDER BY ref NULLS LAST"
        ).fetchall()
        typed = conn.execute(
            "SELECT order_id, seen_at, ok, ref, CAST(cost AS DECIMAL(38,18)) AS cost FROM _frame "
            "ORDER BY ref NULLS LAST"
        ).df()
        conn.unregister("_frame")
        percent = conn.execute("SELECT ? || '%', 'lit?'", ["50"]).fetchone()
        named = conn.execute("SELECT CAST($n AS BIGINT) + 1", {"n": BIG}).fetchone()
        listed = conn.execute(
            "SELECT list_contains(CAST(? AS VARCHAR[]), 'b'), 'x' = ANY(?)", [["a", "b"], []]
        ).fetchone()
    assert rows == [
        ("a", BIG, COST, now, True),
        ("b", None, Decimal("1.000000000000000000"), now + timedelta(seconds=1), False),
        (None, 3, None, None, True),
    ]
    assert str(typed["order_id"].dtype) == "Int64"
    assert str(typed["seen_at"].dtype).startswith("datetime64[us,")
    assert str(typed["ok"].dtype) == "bool"
    assert str(typed["cost"].dtype) == "float64"
    assert percent == ("50%", "lit?") and named == (BIG + 1,) and listed == (True, False)


def test_a_read_only_connection_refuses_writes(warehouse):
    with connect(warehouse) as conn:
        conn.execute("SELECT count(*) FROM orders")
    with connect(warehouse, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        with pytest.raises(Exception, match="(?i)read.only"):
            conn.execute("DELETE FROM orders")


def test_a_warehouse_with_rows_being_sent_is_not_moved(tmp_path: Path, postgres_database):
    """Rows `sending` have their answer journal in a file beside the DuckDB warehouse: moving
    them would lose it, so the move is refused and Postgres is left empty."""
    from smm_pipeline.warehouse.orders import mark_sending, record_pending
    from smm_pipeline.warehouse.transfer import main
    from smm_pipeline_tests.test_submission import outbox

    source = tmp_path / "warehouse.duckdb"
    with connect(source) as conn:
        record_pending(conn, outbox("p", 3), datetime.now(UTC))
        mark_sending(conn, "p", ["p-1"], "claim")
    target = PostgresTarget(postgres_database.url())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMM_WAREHOUSE_URL", target.url)
        assert main([str(source)]) == 1
        with connect(target, read_only=True) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        with connect(source) as conn:
            conn.execute("UPDATE orders SET submit_state = 'ambiguous' WHERE ref = 'p-1'")
        assert main([str(source)]) == 0
    with connect(target, read_only=True) as conn:
        moved = dict(conn.execute("SELECT ref, submit_state FROM orders").fetchall())
    assert moved == {"p-0": "pending", "p-1": "ambiguous", "p-2": "pending"}


def test_a_claim_locks_its_rows_in_one_pass_before_the_table_is_analysed(postgres_database):
    """A file just filed for a new panel has no statistics yet: Postgres then guesses one row
    for the panel. The claim must still choose and lock its rows once (the earlier
    `ref IN (SELECT ... FOR UPDATE SKIP LOCKED)` became a nested loop re-running the locking
    subquery for every outbox row: four workers spun for minutes in their first claim)."""
    import json

    from smm_pipeline.warehouse.orders import claim_statement, mark_sending, record_pending
    from smm_pipeline_tests.test_submission import outbox

    target = PostgresTarget(postgres_database.url())
    with connect(target) as conn:
        conn.execute("ALTER TABLE orders SET (autovacuum_enabled = false)")
        record_pending(conn, outbox("old", 500), datetime.now(UTC))
        conn.execute("ANALYZE orders")
        record_pending(conn, outbox("new", 400), datetime.now(UTC))
        refs = [f"new-{i}" for i in range(128)]
        conn.execute("BEGIN")
        (plan,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + claim_statement(conn),
            ["new", refs, "claim"],
        ).fetchone()
        conn.execute("ROLLBACK")
        claimed = mark_sending(conn, "new", refs + ["old-1", "new-999"], "claim")
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def nodes(node: dict):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    locks = [n for n in nodes(plan[0]["Plan"]) if n["Node Type"] == "LockRows"]
    assert [(n["Actual Loops"], n["Actual Rows"]) for n in locks] == [(1, 128)]
    assert claimed == set(refs)


def test_the_shared_functions_are_inlined_into_the_statements(postgres_database):
    """Postgres inlines a SQL function only when it is declared as volatile as its body (or
    more); one that is not stays a function call per row (date_diff declared IMMUTABLE cost
    17 us a row, 0.39 s of each 20,000-order status write). None may be left a call."""
    from smm_pipeline.warehouse.dialect import POSTGRES_FUNCTIONS

    names = set(re.findall(r"CREATE OR REPLACE FUNCTION (\w+)\(", POSTGRES_FUNCTIONS))
    calls = {
        "list_contains": "list_contains(ARRAY['a'], ref)",
        "string_split": "string_split(ref, ',')",
        "date_diff": "date_diff('microsecond', created_at, submitted_at)",
        "epoch": "epoch(submitted_at - created_at)",
        "to_microseconds": "to_microseconds(quantity)",
        "to_milliseconds": "to_milliseconds(CAST(quantity AS DOUBLE PRECISION))",
        "money_div": "money_div(estimated_cost, charge)",
    }
    assert set(calls) == names  # a new shared function gets a line here
    target = PostgresTarget(postgres_database.url())
    with connect(target) as conn:
        for name, call in calls.items():
            plan = "\n".join(
                r[0] for r in conn.execute(f"EXPLAIN VERBOSE SELECT {call} FROM orders").fetchall()
            )
            assert f"{name}(" not in plan, plan


def test_postgres_finds_orders_by_panel_id_and_the_open_ones_by_index(postgres_database):
    """Migration 8's indexes are what the planner uses: a status write's lookups by the
    panel's order id, and the due orders among a long history of finished ones."""
    from smm_pipeline.warehouse import migrations, status
    from smm_pipeline.warehouse.postgres import PgConnection

    assert migrations.OPEN_ORDERS_AT_8 == status.OPEN_ORDERS  # else: a new index entry
    target = PostgresTarget(postgres_database.url())
    now = datetime.now(UTC)
    with connect(target) as conn:
        conn.execute(
            "INSERT INTO orders (panel, ref, order_id, submit_state, status, submitted_at) "
            "SELECT 'p', 'r' || g, g, 'submitted', "
            "CASE WHEN g <= 5000 THEN 'Completed' ELSE 'In progress' END, ? "
            "FROM generate_series(1, 5010) g",
            [now],
        )
        conn.execute("ANALYZE orders")
        seen: list[tuple[str, object]] = []
        execute = PgConnection.execute

        def recording(self, sql, params=None):
            seen.append((sql, params))
            return execute(self, sql, params)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(PgConnection, "execute", recording)
            due = status.due_orders(conn, now)
        assert sorted(due["order_id"]) == list(range(5001, 5011))
        (due_sql, due_params) = seen[-1]
        plans = {
            "due": conn.execute("EXPLAIN " + due_sql, due_params).fetchall(),
            "by id": conn.execute(
                "EXPLAIN SELECT ref FROM orders WHERE panel = ? AND order_id = ?", ["p", 42]
            ).fetchall(),
        }
    text = {k: "\n".join(r[0] for r in rows) for k, rows in plans.items()}
    assert "orders_open_due" in text["due"], text["due"]
    assert "orders_panel_order_id" in text["by id"], text["by id"]
