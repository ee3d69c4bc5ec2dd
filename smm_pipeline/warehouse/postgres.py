"""The warehouse on Postgres (`SMM_WAREHOUSE_URL=postgresql://...`): a connection that speaks
to the warehouse modules the way a DuckDB connection does.

The warehouse layer is one set of statements for both engines. Most of them are plain SQL both
accept; what differs is kept small and in one place:

- here, the connection's surface: `execute(sql, params)` with DuckDB's `?` placeholders (turned
  into psycopg's `%s` outside quoted text), `fetchall`/`fetchone`/`df()`, `executemany`, and
  `register(name, frame)`, which DuckDB answers with a scan of the DataFrame and Postgres with a
  temporary table filled by `COPY` (one round trip for any number of rows);
- in `warehouse/dialect.py`, the handful of expressions that are spelt differently (a median,
  an arg_max, a list split, exact money arithmetic).

Every connection is short, as on DuckDB (no step holds one across a network wait), speaks UTC,
and runs in autocommit, so the modules' explicit `BEGIN TRANSACTION ... COMMIT` mean the same on
both engines. Readers never block writers (MVCC), so on Postgres there is no gate and no
replica: analysts read the live database.

The URL carries the database password: it is never logged, put in run config, raised in an
error or shown in a repr (`PostgresTarget.safe` is the URL without it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from smm_pipeline.config import ConfigError
from smm_pipeline.errors import WarehouseError

SCHEMES = ("postgresql", "postgres")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONNECT_TIMEOUT_SECONDS = 10

# psycopg type OIDs, for a result's DataFrame: the dtypes DuckDB's .df() gives the same columns.
_INTS = {20, 21, 23}
_FLOATS = {700, 701, 1700}  # DuckDB's df() turns DECIMAL into float64 too
_TIMESTAMPTZ = 1184
_TIMESTAMP = 1114
_DATE = 1082
_BOOL = 16


@dataclass(frozen=True)
class PostgresTarget:
    """A Postgres warehouse, from `SMM_WAREHOUSE_URL`. The URL (with its password) is kept out
    of every repr, log line and error: `safe` is what may be shown."""

    url: str = field(repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in SCHEMES or not parts.hostname and "host=" not in parts.query:
            raise ConfigError(
                f"SMM_WAREHOUSE_URL must be a postgresql://user:password@host:port/database "
                f"URL, got {redact(self.url)!r}"
            )

    @property
    def safe(self) -> str:
        return redact(self.url)

    def __str__(self) -> str:
        return self.safe


def redact(url: str) -> str:
    """`url` with its password replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        netloc = parts.netloc
    else:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[-1]
        netloc = f"{user}:***@{host}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@functools.lru_cache(maxsize=1024)
def to_psycopg(sql: str, named: bool = False) -> str:
    """DuckDB's `?` placeholders (or, `named`, its `$name` ones) as psycopg's `%s` (`%(name)s`),
    and a literal `%` doubled; quoted strings, quoted identifiers and comments are left alone
    (except the `%` doubling, which psycopg needs everywhere in a statement with parameters)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # '' inside a string
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "?" and not named:
            out.append("%s")
            i += 1
        elif ch == "$" and named and (m := _NAME.match(sql, i + 1)):
            out.append(f"%({m.group(0)})s")
            i = m.end()
        elif ch == "%":
            out.append("%%")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _column_type(series: pd.Series) -> str:
    """The Postgres type of a DataFrame column, as DuckDB would scan it."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "TIMESTAMPTZ"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "TIMESTAMP"
    if pd.api.types.is_bool_dtype(dtype):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(dtype):
        return "BIGINT"
    if pd.api.types.is_float_dtype(dtype):
        return "DOUBLE PRECISION"
    for value in series:
        if value is None or value is pd.NA or value is pd.NaT:
            continue
        if isinstance(value, float) and np.isnan(value):
            continue
        if isinstance(value, bool | np.bool_):
            return "BOOLEAN"
        if isinstance(value, int | np.integer):
            return "BIGINT"
        if isinstance(value, Decimal):
            return "NUMERIC"
        if isinstance(value, float | np.floating):
            return "DOUBLE PRECISION"
        if isinstance(value, datetime):
            return "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        if isinstance(value, list | tuple | np.ndarray):
            return "TEXT[]"
        return "TEXT"
    return "TEXT"


def _python(value: Any) -> Any:
    """A DataFrame cell as the Python value psycopg writes (a missing value is NULL)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class PgResult:
    """The answer of one statement: DuckDB's fetch methods over a psycopg cursor."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def description(self):
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall() if self._cursor.description else []

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchmany(self, size: int) -> list[tuple]:
        return self._cursor.fetchmany(size)

    def df(self) -> pd.DataFrame:
        """The rows as a DataFrame with the dtypes DuckDB's `.df()` gives the same columns."""
        description = self._cursor.description or []
        rows = self._cursor.fetchall() if description else []
        names = [d.name for d in description]
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        data: dict[str, Any] = {}
        for d, values in zip(description, columns, strict=True):
            data[d.name] = _series(d.type_code, values)
        return pd.DataFrame(data, columns=names)

    fetchdf = df


def _series(oid: int, values: Sequence[Any]) -> pd.Series:
    has_null = any(v is None for v in values)
    if oid in _INTS:
        return pd.Series(values, dtype="Int64" if has_null or not values else "int64")
    if oid in _FLOATS:
        return pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64")
    if oid == _TIMESTAMPTZ:
        return pd.Series(pd.to_datetime(list(values), utc=True)).astype("datetime64[us, UTC]")
    if oid in (_TIMESTAMP, _DATE):
        return pd.Series(pd.to_datetime(list(values))).astype("datetime64[us]")
    if oid == _BOOL:
        return pd.Series(values, dtype="boolean" if has_null else "bool")
    return pd.Series(values, dtype=object if not values else None)


class PgConnection:
    """A psycopg connection with the DuckDB connection methods the warehouse modules use."""

    engine = "postgres"

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._registered: set[str] = set()

    def execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> PgResult:
        cursor = self.raw.cursor()
        if params is None:
            cursor.execute(sql)
        elif isinstance(params, Mapping):
            cursor.execute(to_psycopg(sql, True), {k: _param(v) for k, v in params.items()})
        else:
            cursor.execute(to_psycopg(sql), [_param(p) for p in params])
        return PgResult(cursor)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(to_psycopg(sql), [[_param(p) for p in row] for row in rows])

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """`frame` as a temporary table `name` of this connection (DuckDB scans the frame
        itself): created with the columns' types and filled by one COPY."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise WarehouseError(f"not a plain table name: {name!r}")
        columns = [str(c) for c in frame.columns]
        for column in columns:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", column):
                raise WarehouseError(f"not a plain column name: {column!r}")
        types = [_column_type(frame[c]) for c in frame.columns]
        ddl = ", ".join(f'"{c}" {t}' for c, t in zip(columns, types, strict=True))
        with self.raw.cursor() as cursor:
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
            cursor.execute(f'CREATE TEMPORARY TABLE "{name}" ({ddl})')
            if len(frame):
                quoted = ", ".join(f'"{c}"' for c in columns)
                with cursor.copy(f'COPY "{name}" ({quoted}) FROM STDIN') as copy:
                    for row in frame.itertuples(index=False, name=None):
                        copy.write_row([_python(v) for v in row])
        self._registered.add(name)

    def unregister(self, name: str) -> None:
        self._registered.discard(name)
        with self.raw.cursor() as cursor:
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')

    # A transaction, as DuckDB's connection spells it (the connection is in autocommit mode
    # otherwise, so every other statement commits on its own).
    def begin(self) -> None:
        self.raw.execute("BEGIN")

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _EmptyList:
    """An empty list parameter: Postgres cannot type `'{}'`, so it is sent as an empty text[]
    (DuckDB's empty VARCHAR[] list)."""


def _param(value: Any) -> Any:
    if isinstance(value, tuple | list) and not value:
        return _EmptyList()
    if isinstance(value, tuple):
        return list(value)
    return _python(value)


def connect_raw(target: PostgresTarget):
    """A psycopg connection to the warehouse (autocommit, UTC, strings as text), without the
    DuckDB-like surface: for the journal and other companions that hold their own."""
    try:
        import psycopg
    except ImportError as exc:  # the `postgres` extra is not installed
        raise WarehouseError(
            "SMM_WAREHOUSE_URL names a Postgres warehouse, but psycopg is not installed: "
            "pip install 'smm-pipeline[postgres]'"
        ) from exc
    try:
        raw = psycopg.connect(
            target.url,
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            options="-c TimeZone=UTC",
            application_name="smm_pipeline",
        )
    except psycopg.Error as exc:
        # psycopg's message names host, port, user and database, never the password.
        raise WarehouseError(
            f"cannot reach the Postgres warehouse {target.safe}: {exc}".strip()
        ) from None
    # Strings as `text` (psycopg leaves them untyped by default), so a list parameter is a
    # typed text[] as DuckDB's VARCHAR[] is, and polymorphic functions resolve.
    raw.adapters.register_dumper(str, psycopg.types.string.StrDumper)
    raw.adapters.register_dumper(_EmptyList, _empty_list_dumper(psycopg))
    return raw


@functools.cache
def _empty_list_dumper(psycopg: Any) -> type:
    class EmptyListDumper(psycopg.adapt.Dumper):
        oid = psycopg.adapters.types["text[]"].oid

        def dump(self, obj: object) -> bytes:
            return b"{}"

    return EmptyListDumper


@contextmanager
def pg_connect(target: PostgresTarget, *, read_only: bool = False) -> Iterator[PgConnection]:
    """A short connection to the Postgres warehouse, closed on exit."""
    with connect_readonly_pg(target) if read_only else PgConnection(connect_raw(target)) as conn:
        yield conn


def connect_readonly_pg(target: PostgresTarget) -> PgConnection:
    """A read-only connection for analysts (the caller closes it, or uses `with`): every
    transaction of its session is read only, so a query typed by mistake cannot write. Readers
    never block the pipeline on Postgres (MVCC): no replica is needed."""
    conn = PgConnection(connect_raw(target))
    try:
        conn.execute("SET default_transaction_read_only = on")
    except BaseException:
        conn.close()
        raise
    return conn


def is_postgres(conn: Any) -> bool:
    return getattr(conn, "engine", None) == "postgres"
