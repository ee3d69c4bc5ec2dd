"""The service catalog: one set-based sync per fetch, with a change log.

A panel's catalog holds thousands of services and changes a little at a time, so the fetched
list is loaded as one DataFrame and diffed against the stored rows in SQL: one MERGE writes
`services`, one INSERT writes every `service_changes` row. Services that vanish are kept with
active=false (orders and analytics still refer to them), never deleted.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import pandas as pd

from smm_pipeline.panel.models import Service
from smm_pipeline.warehouse.timestamps import require_aware

TRACKED_FIELDS = ("name", "type", "category", "rate", "min", "max", "refill", "cancel")
_CHANGE_COLUMNS = ["panel", "service_id", "changed_at", "field", "old_value", "new_value"]


@dataclass(frozen=True)
class ServiceRow:
    """A stored catalog entry: the panel's service plus our lifecycle columns."""

    panel: str
    service_id: int
    name: str
    type: str
    category: str
    rate: Decimal
    min: int
    max: int
    refill: bool
    cancel: bool
    active: bool
    first_seen_at: datetime
    last_seen_at: datetime

    def as_service(self) -> Service:
        return Service(
            service_id=self.service_id,
            name=self.name,
            type=self.type,
            category=self.category,
            rate=self.rate,
            min=self.min,
            max=self.max,
            refill=self.refill,
            cancel=self.cancel,
        )


@dataclass(frozen=True)
class CatalogSyncResult:
    """What one sync did. `changes` holds the rows written to service_changes."""

    panel: str
    synced_at: datetime
    services: int
    new: int
    changed: int
    vanished: int
    reappeared: int
    changes: pd.DataFrame

    def preview_markdown(self, limit: int = 50) -> str:
        """The first `limit` change rows as a markdown table, for Dagster metadata."""
        if self.changes.empty:
            return "No changes."
        shown = self.changes.head(limit).drop(columns=["panel", "changed_at"])
        text = shown.to_markdown(index=False)
        if len(self.changes) > limit:
            text += f"\n\n… and {len(self.changes) - limit} more change rows"
        return text


def _fetched_frame(services: Sequence[Service]) -> pd.DataFrame:
    # rate travels as text and is cast to DECIMAL in SQL: no float ever touches it. The dtypes
    # are explicit so that an empty list has them too (Postgres makes a table of them).
    def column(values: list, dtype: str) -> pd.Series:
        return pd.Series(values, dtype=dtype)

    return pd.DataFrame(
        {
            "pos": column(list(range(len(services))), "int64"),
            "service_id": column([int(s.service_id) for s in services], "int64"),
            "name": column([s.name for s in services], "string"),
            "type": column([s.type for s in services], "string"),
            "category": column([s.category for s in services], "string"),
            "rate": column([str(s.rate) for s in services], "string"),
            "min": column([int(s.min) for s in services], "int64"),
            "max": column([int(s.max) for s in services], "int64"),
            "refill": column([bool(s.refill) for s in services], "bool"),
            "cancel": column([bool(s.cancel) for s in services], "bool"),
        }
    )


def _as_text(column: str, side: str) -> str:
    if column == "rate":
        # '0.900000' -> '0.9', '10.000000' -> '10': the cast always yields a decimal point.
        return f"rtrim(rtrim(CAST({side}_{column} AS VARCHAR), '0'), '.')"
    return f"CAST({side}_{column} AS VARCHAR)"


def _changes_sql(fetched: str, changes: str) -> str:
    """One join of fetched and stored rows, kept only where something differs (a few percent
    of a catalog), then one change row per differing field: the field comparisons run on that
    small set, not on the whole catalog once per field."""
    both = ", ".join(f"f.{c} AS f_{c}, s.{c} AS s_{c}" for c in TRACKED_FIELDS)
    differs = " OR ".join(f"s.{c} IS DISTINCT FROM f.{c}" for c in TRACKED_FIELDS)
    field_diffs = "\n".join(
        f"""UNION ALL
        SELECT service_id, '{col}', {_as_text(col, "s")}, {_as_text(col, "f")}
        FROM pairs WHERE s_{col} IS DISTINCT FROM f_{col}"""
        for col in TRACKED_FIELDS
    )
    return f"""
    CREATE TEMP TABLE {changes} AS
    WITH stored AS (SELECT * FROM services WHERE panel = $panel),
    pairs AS MATERIALIZED (
        SELECT f.service_id, s.active AS was_active, {both}
        FROM {fetched} AS f JOIN stored AS s USING (service_id)
        WHERE NOT s.active OR {differs}
    ),
    diff AS (
        SELECT f.service_id, 'appeared' AS field, CAST(NULL AS VARCHAR) AS old_value,
               f.name AS new_value
        FROM {fetched} AS f
        WHERE NOT EXISTS (SELECT 1 FROM stored AS s WHERE s.service_id = f.service_id)
        UNION ALL
        SELECT service_id, 'reappeared', NULL, f_name FROM pairs WHERE NOT was_active
        UNION ALL
        SELECT s.service_id, 'disappeared', s.name, NULL
        FROM stored AS s
        WHERE s.active
          AND NOT EXISTS (SELECT 1 FROM {fetched} AS f WHERE f.service_id = s.service_id)
        {field_diffs}
    )
    SELECT CAST($panel AS VARCHAR) AS panel, CAST(service_id AS BIGINT) AS service_id,
           CAST($synced_at AS TIMESTAMPTZ) AS changed_at, CAST(field AS VARCHAR) AS field,
           CAST(old_value AS VARCHAR) AS old_value, CAST(new_value AS VARCHAR) AS new_value
    FROM diff
    """


def _merge_sql(fetched: str) -> str:
    """Fetched rows into `services`: updated where stored, inserted where new. (The MERGE
    both engines accept: Postgres 16 has no WHEN NOT MATCHED BY SOURCE, so the vanished rows
    are `_VANISHED_SQL`, in the same transaction.)"""
    updates = ", ".join(f"{col} = f.{col}" for col in TRACKED_FIELDS)
    columns = ", ".join(TRACKED_FIELDS)
    values = ", ".join(f"f.{col}" for col in TRACKED_FIELDS)
    return f"""
    MERGE INTO services AS s
    USING {fetched} AS f
    ON s.panel = $panel AND s.service_id = f.service_id
    WHEN MATCHED THEN UPDATE SET {updates}, active = true, last_seen_at = $synced_at
    WHEN NOT MATCHED THEN
        INSERT (panel, service_id, {columns}, active, first_seen_at, last_seen_at)
        VALUES ($panel, f.service_id, {values}, true, $synced_at, $synced_at)
    """


def _vanished_sql(fetched: str) -> str:
    """The panel's active services the fetched list no longer has: kept, active=false."""
    return f"""
    UPDATE services SET active = false
    WHERE panel = $panel AND active
      AND NOT EXISTS (SELECT 1 FROM {fetched} AS f WHERE f.service_id = services.service_id)
    """


def _refuse_empty_catalog(conn: duckdb.DuckDBPyConnection, panel: str) -> None:
    active = conn.execute(
        "SELECT count(*) FROM services WHERE panel = ? AND active", [panel]
    ).fetchall()[0][0]
    if active:
        raise ValueError(
            f"panel {panel!r} answered an empty catalog while {active} services are "
            f"active; refusing to mark them all vanished (check the panel and retry)"
        )


def sync_catalog(
    conn: duckdb.DuckDBPyConnection,
    panel: str,
    services: Sequence[Service],
    synced_at: datetime,
) -> CatalogSyncResult:
    """Store a freshly fetched catalog for `panel` and log every difference, atomically.

    Runs in its own transaction. A service listed twice keeps its last entry. An empty list is
    refused while the panel has active services: a panel glitch must not mark the whole
    catalog vanished.
    """
    synced_at = require_aware(synced_at, "synced_at")
    suffix = uuid.uuid4().hex[:12]
    frame_name, fetched, changes = f"_fetched_df_{suffix}", f"_fetched_{suffix}", f"_chg_{suffix}"
    params = {"panel": panel, "synced_at": synced_at}
    # BEGIN first: an execute() also settles any result the caller left half-fetched, which
    # register() would otherwise refuse.
    conn.execute("BEGIN TRANSACTION")
    try:
        if not services:
            _refuse_empty_catalog(conn, panel)
        conn.register(frame_name, _fetched_frame(services))
        conn.execute(
            f"""
            CREATE TEMP TABLE {fetched} AS
            SELECT CAST(service_id AS BIGINT) AS service_id, CAST(name AS VARCHAR) AS name,
                   CAST(type AS VARCHAR) AS type, CAST(category AS VARCHAR) AS category,
                   CAST(rate AS DECIMAL(38,18)) AS rate, CAST(min AS BIGINT) AS min,
                   CAST(max AS BIGINT) AS max, CAST(refill AS BOOLEAN) AS refill,
                   CAST(cancel AS BOOLEAN) AS cancel
            FROM (SELECT *, row_number() OVER (PARTITION BY service_id ORDER BY pos DESC) AS n
                  FROM {frame_name}) AS listed
            WHERE n = 1
            """
        )
        conn.unregister(frame_name)
        conn.execute(_changes_sql(fetched, changes), params)
        conn.execute(_merge_sql(fetched), params)
        conn.execute(_vanished_sql(fetched), {"panel": panel})
        conn.execute(f"INSERT INTO service_changes SELECT * FROM {changes}")
        counts = conn.execute(
            f"""
            SELECT (SELECT count(*) FROM {fetched}),
                   count(*) FILTER (WHERE field = 'appeared'),
                   count(DISTINCT service_id) FILTER (WHERE field IN {TRACKED_FIELDS}),
                   count(*) FILTER (WHERE field = 'disappeared'),
                   count(*) FILTER (WHERE field = 'reappeared')
            FROM {changes}
            """
        ).fetchall()[0]
        total, new, changed, vanished, reappeared = (int(c) for c in counts)
        conn.execute(
            "INSERT INTO catalog_syncs VALUES ($panel, $synced_at, $n, $new, $chg, $van, $re)",
            {**params, "n": total, "new": new, "chg": changed, "van": vanished, "re": reappeared},
        )
        frame = conn.execute(f"SELECT * FROM {changes} ORDER BY service_id, field").df()
        conn.execute(f"DROP TABLE {fetched}")
        conn.execute(f"DROP TABLE {changes}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        with contextlib.suppress(Exception):  # duckdb.Error, or psycopg's
            conn.unregister(frame_name)
        raise
    return CatalogSyncResult(
        panel=panel,
        synced_at=synced_at,
        services=total,
        new=new,
        changed=changed,
        vanished=vanished,
        reappeared=reappeared,
        changes=frame[_CHANGE_COLUMNS],
    )


def load_catalog(
    conn: duckdb.DuckDBPyConnection, panel: str | None = None
) -> dict[tuple[str, int], ServiceRow]:
    """Every stored service (of one panel, or all), active or not, keyed by (panel, id)."""
    sql = (
        "SELECT panel, service_id, name, type, category, rate, min, max, refill, cancel, "
        "active, first_seen_at, last_seen_at FROM services"
    )
    rows = (
        conn.execute(sql + " WHERE panel = ?", [panel]).fetchall()
        if panel is not None
        else conn.execute(sql).fetchall()
    )
    return {(r[0], int(r[1])): ServiceRow(*r) for r in rows}


def catalog_age(
    conn: duckdb.DuckDBPyConnection, panel: str, *, now: datetime | None = None
) -> timedelta | None:
    """Time since the panel's last catalog sync, or None when it was never synced."""
    last = conn.execute(
        "SELECT max(synced_at) FROM catalog_syncs WHERE panel = ?", [panel]
    ).fetchall()[0][0]
    if last is None:
        return None
    current = datetime.now(UTC) if now is None else require_aware(now, "now")
    return current - last
