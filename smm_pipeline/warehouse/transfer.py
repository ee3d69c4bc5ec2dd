"""Carry a one-machine warehouse (a DuckDB file) into an empty Postgres warehouse: the move a
reseller makes on outgrowing one machine (README, "The warehouse on Postgres").

    export SMM_WAREHOUSE_URL=postgresql://...
    python -m smm_pipeline.warehouse.transfer data/warehouse.duckdb

The URL comes from the environment only (never the command line, where `ps` shows it). Every
table's rows travel as they are (exact money, UTC instants, the same ids) by COPY, in one
transaction: on any error nothing is left behind in Postgres. The move is refused, and
changes nothing, when the Postgres warehouse already holds rows, when the file's schema is not
this version's, or when rows are still `sending` (their answer journal is a file beside the
DuckDB warehouse; let a run settle them first, see README "Crash recovery").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb

from smm_pipeline.warehouse.db import WarehouseError, connect, warehouse_location
from smm_pipeline.warehouse.migrations import MIGRATIONS
from smm_pipeline.warehouse.postgres import PostgresTarget

LEDGER = "schema_migrations"  # each warehouse keeps its own (the same versions)


def source_tables(source: duckdb.DuckDBPyConnection) -> list[str]:
    rows = source.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY table_name"
    ).fetchall()
    return [name for (name,) in rows if name != LEDGER]


def columns_of(source: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = source.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [name for (name,) in rows]


def _refuse_unless_movable(source: duckdb.DuckDBPyConnection, path: Path) -> None:
    versions = sorted(v for (v,) in source.execute(f"SELECT version FROM {LEDGER}").fetchall())
    expected = [m.version for m in MIGRATIONS]
    if versions != expected:
        raise WarehouseError(
            f"{path} has schema versions {versions}, this version of the pipeline {expected}: "
            f"open it once with this version (a run, or `make run`) so it is upgraded, then move it"
        )
    (sending,) = source.execute(
        "SELECT count(*) FROM orders WHERE submit_state = 'sending'"
    ).fetchone()
    if sending:
        raise WarehouseError(
            f"{path} has {sending} order rows still being sent (submit_state 'sending'): their "
            f"answer journal is a file beside it. Run the pipeline once on this machine so it "
            f"settles them (README, Crash recovery), then move the warehouse"
        )


def copy_to_postgres(
    path: Path, target: PostgresTarget, *, progress: Callable[[str], None] = print
) -> dict[str, int]:
    """Copy every table of the DuckDB warehouse `path` into the empty Postgres warehouse
    `target` (migrated first); returns rows copied per table."""
    if not path.is_file():
        raise WarehouseError(f"no DuckDB warehouse at {path}")
    copied: dict[str, int] = {}
    with duckdb.connect(str(path), read_only=True) as source, connect(target) as pg:
        _refuse_unless_movable(source, path)
        tables = source_tables(source)
        held = [
            t
            for t in tables
            if pg.execute(f'SELECT EXISTS (SELECT 1 FROM "{t}")').fetchone()[0]  # noqa: S608
        ]
        if held:
            raise WarehouseError(
                f"the Postgres warehouse {target.safe} already holds rows in {', '.join(held)}: "
                f"a warehouse is moved into an empty one only (nothing was copied)"
            )
        pg.begin()
        try:
            with pg.raw.cursor() as cursor:
                for table in tables:
                    columns = ", ".join(f'"{c}"' for c in columns_of(source, table))
                    rows = source.execute(f'SELECT {columns} FROM "{table}"')  # noqa: S608
                    count = 0
                    with cursor.copy(f'COPY "{table}" ({columns}) FROM STDIN') as copy:
                        while batch := rows.fetchmany(10_000):
                            for row in batch:
                                copy.write_row(row)
                            count += len(batch)
                    copied[table] = count
                    progress(f"{table}: {count} rows")
            pg.commit()
        except BaseException:
            pg.rollback()
            raise
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smm_pipeline.warehouse.transfer",
        description="Copy a DuckDB warehouse into the empty Postgres warehouse of "
        "SMM_WAREHOUSE_URL (stop the pipeline on the old machine first).",
    )
    parser.add_argument("duckdb_file", type=Path)
    args = parser.parse_args(argv)
    target = warehouse_location()
    if not isinstance(target, PostgresTarget):
        print("SMM_WAREHOUSE_URL is not set: it names the Postgres warehouse", file=sys.stderr)
        return 2
    try:
        copied = copy_to_postgres(args.duckdb_file, target)
    except WarehouseError as exc:
        print(f"not moved: {exc}", file=sys.stderr)
        return 1
    print(f"moved {sum(copied.values())} rows of {len(copied)} tables into {target.safe}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
