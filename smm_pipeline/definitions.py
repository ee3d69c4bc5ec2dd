"""The code location Dagster loads (workspace.yaml, `[tool.dagster]`): `defs`, every module of
`smm_pipeline/defs/` loaded by `load_from_defs_folder`, for the panels of panels.yaml
(`SMM_PANELS_FILE`) and the warehouse of `SMM_DUCKDB_PATH`, read when it loads."""

import dagster as dg

from smm_pipeline.config import PROJECT_ROOT
from smm_pipeline.lib.panels import configured_settings


def load_definitions() -> dg.Definitions:
    """The whole code location, built now from the current environment. panels.yaml is read
    first, so that a broken one fails the load with its own one-sentence error."""
    configured_settings()
    return dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)


@dg.definitions
def defs() -> dg.Definitions:
    return load_definitions()
