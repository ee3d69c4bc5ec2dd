"""One SQL for both engines: the few DuckDB functions the warehouse's statements use, defined
on Postgres under the same names and with the same results.

The statements of `warehouse/` are written once, in SQL both DuckDB and Postgres accept
(standard joins, window functions, FILTER, ON CONFLICT, UPDATE ... FROM, RETURNING, MERGE).
Where DuckDB has a function Postgres lacks, Postgres gets it here, as a plain SQL function
created (CREATE OR REPLACE) each time a process first migrates a database, before the
migrations run. So the statements never branch on the engine, and there is no second copy of
any query. Where the syntax itself differs (TRY_CAST, QUALIFY, GROUP BY ALL, EXCLUDE), the
statements use a form both accept instead.

Each function below behaves as DuckDB's does on the values the warehouse stores. Each is one
SQL expression declared exactly as volatile as its body, so Postgres inlines it into the
statement (a test checks that none is left as a function call in a plan).
"""

from __future__ import annotations

from typing import Any

from smm_pipeline.warehouse.postgres import is_postgres

POSTGRES_FUNCTIONS = r"""
-- list_contains(list, value): value is an element of list (NULL list: NULL).
CREATE OR REPLACE FUNCTION list_contains(anycompatiblearray, anycompatible)
RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $2 = ANY($1)';

-- string_split(text, separator) -> text[]
CREATE OR REPLACE FUNCTION string_split(text, text)
RETURNS text[] LANGUAGE sql IMMUTABLE AS 'SELECT string_to_array($1, $2)';

-- date_diff(part, start, end): the number of `part` boundaries between the two instants, as
-- DuckDB counts them (microsecond, millisecond, second, minute, hour, day). STABLE, as
-- extract() on a timestamptz is: a function declared less volatile than its body is never
-- inlined, and called as a function it cost 17 us a row (20,000 polled orders: 0.39 s of
-- each status write; inlined: 0.03 s).
CREATE OR REPLACE FUNCTION date_diff(text, timestamptz, timestamptz)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE lower($1)
        WHEN 'microsecond' THEN
            floor(extract(epoch FROM $3) * 1000000) - floor(extract(epoch FROM $2) * 1000000)
        WHEN 'millisecond' THEN
            floor(extract(epoch FROM $3) * 1000) - floor(extract(epoch FROM $2) * 1000)
        WHEN 'second' THEN floor(extract(epoch FROM $3)) - floor(extract(epoch FROM $2))
        WHEN 'minute' THEN floor(extract(epoch FROM $3) / 60) - floor(extract(epoch FROM $2) / 60)
        WHEN 'hour' THEN floor(extract(epoch FROM $3) / 3600) - floor(extract(epoch FROM $2) / 3600)
        WHEN 'day' THEN floor(extract(epoch FROM $3) / 86400)
                        - floor(extract(epoch FROM $2) / 86400)
    END::bigint
$$;

-- epoch(interval): its length in seconds, a double.
CREATE OR REPLACE FUNCTION epoch(interval)
RETURNS double precision LANGUAGE sql IMMUTABLE AS 'SELECT extract(epoch FROM $1)::float8';
"""


def ensure_functions(conn: Any) -> None:
    """Create the shared functions on a Postgres connection (DuckDB has them built in)."""
    if is_postgres(conn):
        conn.execute(POSTGRES_FUNCTIONS)


# Intervals from a count of micro/milliseconds (status and refill cadences, monitoring cut-offs).
POSTGRES_FUNCTIONS += r"""
-- to_microseconds(bigint) -> interval
CREATE OR REPLACE FUNCTION to_microseconds(bigint)
RETURNS interval LANGUAGE sql IMMUTABLE AS 'SELECT $1 * interval ''1 microsecond''';

-- to_milliseconds(double) -> interval (rounded to the microsecond, as DuckDB's)
CREATE OR REPLACE FUNCTION to_milliseconds(double precision)
RETURNS interval LANGUAGE sql IMMUTABLE AS 'SELECT $1 * interval ''1 millisecond''';
"""

# The analytics views' arithmetic (views.py).
POSTGRES_FUNCTIONS += r"""
-- money_div(num, den): num / den rounded half away from zero to 6 places, exactly (DuckDB's
-- money_div macro does the same long division on 18-place integers); NULL when den is 0.
CREATE OR REPLACE FUNCTION money_div(numeric, numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $2 = 0 THEN NULL ELSE CAST(
        sign($1) * sign($2)
        * (div(abs($1) * 1000000, abs($2))
           + CASE WHEN 2 * mod(abs($1) * 1000000, abs($2)) >= abs($2) THEN 1 ELSE 0 END)
        * 0.000001 AS numeric(38,6)) END
$$;

"""
