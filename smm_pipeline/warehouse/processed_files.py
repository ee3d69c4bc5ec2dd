"""The `processed_files` table: what became of each dropped file's content, per inbox.

The one module that reads or writes the table. A file is identified by its content (sha256)
*and* its kind (orders, refills, cancels): the same bytes dropped in the wrong inbox are a
different file there, so rejecting them in one inbox never makes another inbox forget (or
believe) that it handled them. The time of the content's first sighting is kept; the outcome
is the latest run's:

- orders: `rejected`, `accepted` (its rows are in the outbox), `processed` (reported);
- refills and cancels: `requesting` (a run is on it), `processed`, `rejected`.

Three verbs: `file_state` looks a content up, `claim_file` looks it up and, when its inbox has
not seen it, records it as `requesting` (refills and cancels, which then keep the first
sighting's name), and `record_file` writes an outcome (and the name it is known by: for an
order file once processed, its name in processed/).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from smm_pipeline.warehouse.timestamps import require_aware


@dataclass(frozen=True)
class FileClaim:
    """A dropped file's content as the warehouse knows it: the name and time it was first
    seen under, and the outcome of the previous run on it (None when this run is the first)."""

    file_hash: str
    file_name: str
    first_seen_at: datetime
    previous_outcome: str | None


def file_state(
    conn: duckdb.DuckDBPyConnection, file_hash: str, kind: str
) -> tuple[str, str] | None:
    """(file_name, outcome) of this content in this inbox, if it was seen there before.

    For order files the name is the one in processed/ once the outcome is `processed`."""
    row = _row(conn, file_hash, kind)
    return (row[0], row[2]) if row else None


def _row(conn: duckdb.DuckDBPyConnection, file_hash: str, kind: str) -> tuple | None:
    """(file_name, first_seen_at, outcome) of this content in this inbox, or None."""
    rows = conn.execute(
        """
        SELECT file_name, first_seen_at, outcome FROM processed_files
        WHERE file_hash = ? AND kind = ?
        """,
        [file_hash, kind],
    ).fetchall()
    return rows[0] if rows else None


def record_file(
    conn: duckdb.DuckDBPyConnection,
    *,
    file_hash: str,
    kind: str,
    file_name: str,
    outcome: str,
    rows: int,
    seen_at: datetime,
) -> None:
    """Remember a handled drop file: its latest outcome, row count and name (`seen_at`, the
    first sighting, is written only when the inbox has not seen the content before)."""
    conn.execute(
        """
        INSERT INTO processed_files (file_hash, kind, file_name, first_seen_at, outcome, rows)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (file_hash, kind) DO UPDATE SET outcome = excluded.outcome,
            rows = excluded.rows, file_name = excluded.file_name
        """,
        [file_hash, kind, file_name, seen_at, outcome, rows],
    )


def claim_file(
    conn: duckdb.DuckDBPyConnection, file_hash: str, kind: str, file_name: str, now: datetime
) -> FileClaim:
    """Record the content as being handled (outcome `requesting`) unless this inbox knows it
    already; the first sighting's name and time are kept either way."""
    now = require_aware(now, "now")
    row = _row(conn, file_hash, kind)
    if row:
        name, first_seen, outcome = row
        return FileClaim(file_hash, name or file_name, first_seen or now, outcome)
    conn.execute(
        """
        INSERT INTO processed_files (file_hash, kind, file_name, first_seen_at, outcome, rows)
        VALUES (?, ?, ?, ?, 'requesting', 0)
        """,
        [file_hash, kind, file_name, now],
    )
    return FileClaim(file_hash, file_name, now, None)
