"""Numbered schema migrations, applied in order, one transaction each.

A warehouse file records what it has seen in `schema_migrations`, so an older file upgrades in
place and running the list twice is a no-op. Never edit an applied entry: append a new one.
Views are rebuilt from `views.py` by a migration; when a view changes, append a migration that
calls `create_views` again (in the same entry as any columns the new view needs), and make the
previous views entry `_views_built_later`: today's views.py may need columns an older entry
did not have yet. `create_views` drops the views before it builds them, so a view's columns
may change. On Postgres a column a view reads cannot change type while the view exists: a
later entry that alters such a column drops the views first (`DROP VIEW` in reverse `VIEWS`
order) and calls `create_views` after. The same entries run on both engines (dialect.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb

from smm_pipeline.errors import MigrationError
from smm_pipeline.warehouse.postgres import is_postgres
from smm_pipeline.warehouse.schema import (
    INITIAL_SCHEMA,
    MONEY_COLUMNS,
    MONEY_TYPE,
    SUBSCRIPTION_ORDERS,
)
from smm_pipeline.warehouse.views import create_views


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


def _views_built_later(conn: duckdb.DuckDBPyConnection) -> None:
    """A views entry superseded by a later one (see MIGRATIONS)."""


def _exactly_once_v2(conn: duckdb.DuckDBPyConnection) -> None:
    """Columns and keys of the exactly-once rules (README "Exactly once"):

    - orders.claim_id: the submission process that flagged a row `sending` (its answer journal
      says whether the request left); orders.answered_order_id: the id a panel answered for a
      row that another row already holds (that row is ambiguous, and no spend of its own);
    - refills/cancels.file_hash: requests are found again by the content that made them;
    - processed_files keyed by (file_hash, kind): the same bytes are one file per inbox.
    """
    conn.execute("ALTER TABLE orders ADD COLUMN claim_id VARCHAR")
    conn.execute("ALTER TABLE orders ADD COLUMN answered_order_id BIGINT")
    conn.execute("ALTER TABLE refills ADD COLUMN file_hash VARCHAR")
    conn.execute("ALTER TABLE cancels ADD COLUMN file_hash VARCHAR")
    conn.execute(
        """
        CREATE TABLE processed_files_by_kind (
            file_hash VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            file_name VARCHAR,
            first_seen_at TIMESTAMPTZ,
            outcome VARCHAR,
            rows BIGINT,
            PRIMARY KEY (file_hash, kind)
        )
        """
    )
    conn.execute(
        """
        INSERT INTO processed_files_by_kind
        SELECT file_hash, coalesce(kind, 'orders'), file_name, first_seen_at, outcome, rows
        FROM processed_files
        """
    )
    conn.execute("DROP TABLE processed_files")
    conn.execute("ALTER TABLE processed_files_by_kind RENAME TO processed_files")
    # Its views were built here until 006, whose views need 006's table: built there now.


def _subscription_orders(conn: duckdb.DuckDBPyConnection) -> None:
    """The child orders of subscriptions (schema.SUBSCRIPTION_ORDERS), and the views that
    count their charges as the subscriptions' spend.

    A file that already polled subscriptions knows their children's ids (the comma-separated
    orders.subscription_orders of each status answer): they are recorded as due now, so the
    next poll learns their charges. When they were first seen is not known any more: the
    subscription's last change (else its submission) stands in for it, which is when its
    latest child was seen at the latest.
    """
    conn.execute(SUBSCRIPTION_ORDERS)
    conn.execute(
        """
        INSERT INTO subscription_orders
            (panel, order_id, subscription_ref, subscription_order_id, first_seen_at)
        SELECT panel, child_id, any_value(ref), any_value(order_id),
               any_value(coalesce(last_change_at, updated_at, submitted_at, now()))
        FROM (
            SELECT panel, ref, order_id, last_change_at, updated_at, submitted_at,
                   CASE WHEN part ~ '^-?[0-9]{1,18}$' THEN CAST(part AS BIGINT) END AS child_id
            FROM (
                SELECT *, trim(unnest(string_split(subscription_orders, ','))) AS part
                FROM orders
                WHERE submit_state = 'submitted' AND order_id IS NOT NULL
                  AND coalesce(subscription_orders, '') <> ''
            ) parts
        ) c
        WHERE child_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM orders x
                          WHERE x.panel = c.panel AND x.order_id = c.child_id)
        GROUP BY panel, child_id
        """
    )
    create_views(conn)


# status.OPEN_ORDERS as it was at migration 8: the partial index's predicate (a later change
# of that text needs a new entry that rebuilds the index; a test compares the two).
OPEN_ORDERS_AT_8 = (
    "submit_state = 'submitted' AND order_id IS NOT NULL AND coalesce(status, '') "
    "NOT IN ('Completed', 'Partial', 'Canceled', 'Refunded', 'Expired')"
)


def _postgres_lookup_indexes(conn: duckdb.DuckDBPyConnection) -> None:
    """Postgres only: the indexes its planner needs where DuckDB scans.

    - `orders (panel, order_id)`: every status write, refill and cancel finds its orders by
      the panel's id; without it each 20,000-order status write read and hashed the whole
      table, so it slowed with the warehouse's history.
    - `orders (panel, next_poll_at) WHERE <open>`: the orders still to poll, a small part of a
      warehouse's history, found without reading the finished ones; with statistics on
      `coalesce(status, '')`, without which the planner guesses that most orders are open and
      reads them all.

    DuckDB gets neither: it joins by hashing whatever it scans and uses an index only for a
    constant lookup, and an index would cost every update of `order_id` and `next_poll_at`."""
    if not is_postgres(conn):
        return
    conn.execute("CREATE INDEX IF NOT EXISTS orders_panel_order_id ON orders (panel, order_id)")
    conn.execute(f"CREATE INDEX IF NOT EXISTS orders_open_due ON orders (panel, next_poll_at) "
                 f"WHERE {OPEN_ORDERS_AT_8}")  # fmt: skip
    conn.execute(
        "CREATE STATISTICS IF NOT EXISTS orders_status_stats ON (coalesce(status, '')) FROM orders"
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", INITIAL_SCHEMA),
    # The views are built from today's views.py, which may read columns of later entries:
    # the last views entry builds them, the earlier ones stay in the ledger as no-ops.
    Migration(2, "analytics_views", _views_built_later),
    Migration(3, "exact_money", _widen_money),
    # Views at the stored money type; refunds, deliveries, medians and runway fixed (views.py).
    Migration(4, "analytics_views_v2", _views_built_later),
    Migration(5, "exactly_once_v2", _exactly_once_v2),
    # Subscriptions' child orders; views: a subscription's spend is its children's charges.
    Migration(6, "subscription_orders", _subscription_orders),
    # Views: delivered quantities are BIGINT counts on both engines (Postgres sums BIGINT as
    # NUMERIC), so a warehouse moved to Postgres answers with the same types.
    Migration(7, "analytics_views_v3", create_views),
    Migration(8, "postgres_lookup_indexes", _postgres_lookup_indexes),
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
