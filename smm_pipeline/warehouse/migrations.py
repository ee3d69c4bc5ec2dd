"""Numbered schema migrations, applied in order, one transaction each.

A warehouse file records what it has seen in `schema_migrations`, so an older file upgrades in
place and running the list twice is a no-op. Never edit an applied entry: append a new one.
Views are rebuilt from `views.py` by a migration; when a view changes, append a migration that
calls `create_views` again (in the same entry as any columns the new view needs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb

from smm_pipeline.warehouse.schema import INITIAL_SCHEMA, MONEY_COLUMNS, MONEY_TYPE
from smm_pipeline.warehouse.views import create_views


class MigrationError(RuntimeError):
    """A migration failed; its transaction was rolled back and the file is unchanged by it."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: str | Callable[[duckdb.DuckDBPyConnection], None]

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"

    def run(self, conn: duckdb.DuckDBPyConnection) -> None:
        if isinstance(self.apply, str):
            conn.execute(self.apply)
        else:
            self.apply(conn)


def _widen_money(conn: duckdb.DuckDBPyConnection) -> None:
    """DECIMAL(18,6) rounded amounts with more than 6 places (a rate of 0.1234567, a cost of
    rate × quantity / 1000): every money column becomes MONEY_TYPE, existing values unchanged."""
    for table, column in MONEY_COLUMNS:
        conn.execute(f"ALTER TABLE {table} ALTER {column} TYPE {MONEY_TYPE}")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", INITIAL_SCHEMA),
    Migration(2, "analytics_views", create_views),
    Migration(3, "exact_money", _widen_money),
    # Views at the stored money type; refunds, deliveries, medians and runway fixed (views.py).
    Migration(4, "analytics_views_v2", create_views),
)

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)
"""


def applied_versions(conn: duckdb.DuckDBPyConnection) -> set[int]:
    rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
    return {int(r[0]) for r in rows}


def apply_migrations(
    conn: duckdb.DuckDBPyConnection, migrations: Sequence[Migration] = MIGRATIONS
) -> list[str]:
    """Apply the entries of `migrations` the file has not seen; return their labels."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise MigrationError(f"migration versions must be unique and ascending: {versions}")
    conn.execute(_LEDGER)
    done = applied_versions(conn)
    applied: list[str] = []
    for migration in migrations:
        if migration.version in done:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            migration.run(conn)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, now())",
                [migration.version, migration.label],
            )
            conn.execute("COMMIT")
        except Exception as exc:
            conn.execute("ROLLBACK")
            raise MigrationError(f"migration {migration.label} failed: {exc}") from exc
        applied.append(migration.label)
    return applied
