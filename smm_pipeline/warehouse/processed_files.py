"""The `processed_files` table: what became of each dropped file's content, per inbox.

A file is identified by its content (sha256) *and* its kind (orders, refills, cancels): the
same bytes dropped in the wrong inbox are a different file there, so rejecting them in one
inbox never makes another inbox forget (or believe) that it handled them. The name and time of
the content's first sighting are kept; the outcome is the latest run's:

- orders: `rejected`, `accepted` (its rows are in the outbox), `processed` (reported);
- refills and cancels: `requesting` (a run is on it), `processed`, `rejected`.
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
    rows = conn.execute(
        "SELECT file_name, outcome FROM processed_files WHERE file_hash = ? AND kind = ?",
        [file_hash, kind],
    ).fetchall()
    return (rows[0][0], rows[0][1]) if rows else None


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
    """Remember a handled drop file (first sighting kept, latest outcome and name)."""
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
    rows = conn.execute(
        """
        SELECT file_name, first_seen_at, outcome FROM processed_files
        WHERE file_hash = ? AND kind = ?
        """,
        [file_hash, kind],
    ).fetchall()
    if rows:
        name, first_seen, outcome = rows[0]
        return FileClaim(file_hash, name or file_name, first_seen or now, outcome)
    conn.execute(
        """
        INSERT INTO processed_files (file_hash, kind, file_name, first_seen_at, outcome, rows)
        VALUES (?, ?, ?, ?, 'requesting', 0)
        """,
        [file_hash, kind, file_name, now],
    )
    return FileClaim(file_hash, file_name, now, None)


def finish_file(
    conn: duckdb.DuckDBPyConnection, file_hash: str, kind: str, outcome: str, rows: int
) -> None:
    """Set the outcome (`processed` or `rejected`) of a claimed file."""
    conn.execute(
        "UPDATE processed_files SET outcome = ?, rows = ? WHERE file_hash = ? AND kind = ?",
        [outcome, rows, file_hash, kind],
    )
