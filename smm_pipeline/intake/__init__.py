"""CSV intake: dropped files → validated order rows (costs, budget) or per-row errors, and
the reports written beside them. Pure logic over bytes and plain data: no Dagster, no DuckDB,
no HTTP; reports are the only files it writes.

Callers import from the modules (`intake.orders`, `intake.csv_files`, `intake.refills_cancels`,
`intake.reports`, `intake.budget`, ...): the package itself re-exports nothing.
"""

__all__: list[str] = []
