"""The resources every job uses, and how runs execute.

Keys never enter run config or resource config: `panels.yaml` names the environment variable
of each panel's key (`key_env`), read from the process environment when a client is made.
"""

import dagster as dg

from smm_pipeline.lib.resources import PanelsResource, WarehouseResource

defs = dg.Definitions(
    resources={"panels": PanelsResource(), "warehouse": WarehouseResource()},
    # Every job's steps run one after another in the run's process: a process per step would
    # only add start-up time.
    executor=dg.in_process_executor,
)
