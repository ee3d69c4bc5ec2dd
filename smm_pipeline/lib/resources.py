"""Resources: the panel registry (panels.yaml + keys from the environment) and the warehouse,
with the one rule that publishes the analysts' replica after a write (`replica_hooks`).

Keys never enter run config or resource config: `panels.yaml` names the environment variable of
each panel's key (`key_env`), and the key is read from the process environment when a client is
made. Only the path of panels.yaml and of the DuckDB file are resource config.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from smm_pipeline.config import Settings, load_settings
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.ratelimit import Priority
from smm_pipeline.warehouse.db import Location, WarehouseError, connect, warehouse_location
from smm_pipeline.warehouse.postgres import PostgresTarget
from smm_pipeline.warehouse.snapshot import publish_snapshot, replica_age

REPLICA_KEY = dg.AssetKey("warehouse_replica")


class PanelsResource(dg.ConfigurableResource):
    """The configured panels. `panels_file` defaults to SMM_PANELS_FILE or ./panels.yaml."""

    panels_file: str | None = None

    def settings(self) -> Settings:
        return load_settings(self.panels_file, check_keys=False)

    @contextmanager
    def client(self, panel: str) -> Iterator[PanelClient]:
        settings = self.settings()
        config = settings.panel(panel)
        client = PanelClient(config, config.api_key(), budget_dir=settings.budget_dir)
        try:
            yield client
        finally:
            client.close()

    @contextmanager
    def clients(
        self,
        settings: Settings,
        only: Iterable[str] | None = None,
        *,
        priority: Priority = Priority.SUBMIT,
    ) -> Iterator[dict[str, PanelClient]]:
        """Clients for the enabled panels (or `only` those), closed on exit. Every client
        draws on its panel's budget shared by all run processes; `Priority.POLL` clients take
        only what submissions leave, and give up after `poll_budget_wait_seconds`."""
        wanted = set(settings.panel_names if only is None else only)
        wait = settings.pipeline.poll_budget_wait_seconds if priority is Priority.POLL else None
        clients = {
            p.name: PanelClient(
                p, p.api_key(), budget_dir=settings.budget_dir, priority=priority, budget_wait=wait
            )
            for p in settings.enabled_panels
            if p.name in wanted
        }
        try:
            yield clients
        finally:
            for client in clients.values():
                client.close()


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse: Postgres when SMM_WAREHOUSE_URL is set (read from the environment only,
    so its password never enters run or resource config), else the DuckDB file at `path`,
    which defaults to SMM_DUCKDB_PATH or data/warehouse.duckdb."""

    path: str | None = None

    @property
    def location(self) -> Location:
        if self.path:
            return Path(self.path)
        return warehouse_location()

    @property
    def on_postgres(self) -> bool:
        return isinstance(self.location, PostgresTarget)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.location) as conn:
            yield conn

    def publish_if_due(
        self, log: dg.DagsterLogManager, instance: dg.DagsterInstance, max_lag: float
    ) -> None:
        """The one publish rule: refresh the analysts' read-only replica after a write, unless
        it was published less than `pipeline.replica_max_lag_seconds` ago (then a later run, or
        replica_sensor, publishes it within that bound). Called by `replica_hooks` when a
        writing step ends, so after the step's signals to the sensors (its materializations):
        a failed publish cannot lose them."""
        if self.on_postgres:  # analysts read Postgres itself: nothing to publish
            return
        age = replica_age(self.location)
        if age is not None and age < max_lag:
            log.debug(f"replica published {age:.0f} s ago: left for later (max lag {max_lag} s)")
            return
        self.publish_now(log, instance.report_runless_asset_event, max_lag)

    def publish_now(
        self,
        log: dg.DagsterLogManager,
        report: Callable[[dg.AssetMaterialization], object],
        max_lag: float,
    ) -> bool:
        """Publish the replica now, and report its cost as a `warehouse_replica`
        materialization through `report` (a step's `log_event`, or the instance's runless
        event after a step). A failure (the live file held too long, a full disk) is a warning,
        never the run's failure: the run's writes are committed, and the replica is published
        again by the next run or replica_sensor."""
        if self.on_postgres:
            log.info("the warehouse is on Postgres: analysts read it live, no replica to publish")
            return True
        started = time.perf_counter()
        try:
            replica = publish_snapshot(self.location)
        except (WarehouseError, duckdb.Error, OSError) as exc:
            log.warning(f"the read-only replica was not refreshed this time: {exc}")
            return False
        seconds = time.perf_counter() - started
        report(
            dg.AssetMaterialization(
                asset_key=REPLICA_KEY,
                description="replica published",
                metadata={
                    "publish_seconds": dg.MetadataValue.float(round(seconds, 3)),
                    "replica_mb": dg.MetadataValue.float(round(replica.stat().st_size / 1e6, 2)),
                    "max_lag_seconds": max_lag,
                    "path": dg.MetadataValue.path(str(replica)),
                },
            )
        )
        log.info(f"replica published in {seconds:.2f} s ({replica})")
        return True


def _publish(context: dg.HookContext) -> None:
    max_lag = context.resources.panels.settings().pipeline.replica_max_lag_seconds
    context.resources.warehouse.publish_if_due(context.log, context.instance, max_lag)


@dg.success_hook(required_resource_keys={"warehouse", "panels"})
def publish_replica_after_success(context: dg.HookContext) -> None:
    _publish(context)


@dg.failure_hook(required_resource_keys={"warehouse", "panels"})
def publish_replica_after_failure(context: dg.HookContext) -> None:
    """A refused file writes too (processed_files, rejected rows): publish after it as well."""
    _publish(context)


# Every job that writes the warehouse carries these: the replica follows its writes.
replica_hooks = {publish_replica_after_success, publish_replica_after_failure}
