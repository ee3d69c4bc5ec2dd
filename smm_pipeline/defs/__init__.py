"""Dagster wiring: resources, assets, jobs, sensors, schedules and checks.

Thin by design: each function calls into `panel/`, `intake/` and `warehouse/`.
"""
