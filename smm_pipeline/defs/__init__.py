"""Dagster definitions, one module per part of the flow, loaded by `load_from_defs_folder`.

- `resources.py`: the panels and the warehouse, and the in-process executor;
- `panels/`: each panel's service catalog and balance (assets, schedules, low-balance checks);
- `orders/`: the `orders` asset, CSV submission, status polling, the checks and resolution;
- `refills_cancels/`: refill and cancel files, refill-status polling;
- `warehouse/`: the analytics views and the analysts' read-only replica.

Thin by design: each op calls one function of `operations/`, `intake/` or `warehouse/`; the
Dagster helpers they share live in `smm_pipeline.lib`.
"""
