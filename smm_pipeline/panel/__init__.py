"""API v2 protocol layer: client, typed answers, order types, errors.

Knows nothing of Dagster, DuckDB or CSV files.
"""
