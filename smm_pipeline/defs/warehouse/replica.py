"""The analysts' read-only replica: `warehouse_replica`, kept within its stated lag.

Every writing step publishes the replica when it ends, if it is older than
`pipeline.replica_max_lag_seconds` (`lib.resources.replica_hooks`, the one publish rule).
`replica_sensor` covers the quiet time after the last run: it looks at the two files'
modification times only (a sensor opens no DuckDB connection: README, Dagster) and launches
`publish_replica` when the warehouse changed after the replica was published and the replica is
at least that old. Each publish is a `warehouse_replica` materialization carrying its cost.
"""

import time

import dagster as dg

from smm_pipeline.lib.resources import REPLICA_KEY, PanelsResource, WarehouseResource
from smm_pipeline.warehouse.snapshot import replica_is_stale, warehouse_mtime
from smm_pipeline.warehouse.views import VIEW_NAMES

replica_asset = dg.AssetSpec(
    REPLICA_KEY,
    group_name="warehouse",
    kinds={"duckdb"},
    deps=["orders", "refills", "cancels", "service_catalog", "panel_balances", *VIEW_NAMES],
    description="`<warehouse>.read.duckdb`: the copy analysts open read-only (notebooks, the "
    "DuckDB shell). At most pipeline.replica_max_lag_seconds (plus the sensor's 30 s) behind "
    "a changing warehouse.",
)


@dg.op(description="Copy the warehouse into the analysts' read-only replica.")
def publish_replica_now(
    context: dg.OpExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
) -> None:
    max_lag = panels.settings().pipeline.replica_max_lag_seconds
    if not warehouse.publish_now(context.log, context.log_event, max_lag):
        raise dg.Failure("the replica could not be published (see the warning above)")


@dg.job(description="Publish the analysts' read-only replica (launched by replica_sensor).")
def publish_replica():
    publish_replica_now()


@dg.sensor(
    job=publish_replica,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publishes the read-only replica when the warehouse changed after it and it "
    "is older than pipeline.replica_max_lag_seconds.",
)
def replica_sensor(
    context: dg.SensorEvaluationContext, panels: PanelsResource, warehouse: WarehouseResource
):
    if warehouse.on_postgres:
        return dg.SkipReason(
            "the warehouse is on Postgres: analysts read it live, there is no replica"
        )
    max_lag = panels.settings().pipeline.replica_max_lag_seconds
    if not replica_is_stale(warehouse.location, max_lag):
        return dg.SkipReason(f"the replica is current, or younger than {max_lag} s")
    changed = warehouse_mtime(warehouse.location) or 0.0
    # A publish that failed is tried again in the next slot: a run key is never run twice.
    slot = int(time.time() // max(30.0, max_lag))
    return dg.RunRequest(run_key=f"replica:{changed:.3f}:{slot}")
