"""The code location Dagster loads (workspace.yaml): `defs`."""

from smm_pipeline.defs.location import build_definitions

defs = build_definitions()
