"""Resources: the panel registry (panels.yaml + keys from the environment) and the warehouse.

Keys never enter run config or resource config: `panels.yaml` names the environment variable of
each panel's key (`key_env`), and the key is read from the process environment when a client is
made. Only the path of panels.yaml and of the DuckDB file are resource config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from smm_pipeline.config import Settings, duckdb_path_from_env, load_settings
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.warehouse.db import WarehouseError, connect
from smm_pipeline.warehouse.snapshot import publish_snapshot


class PanelsResource(dg.ConfigurableResource):
    """The configured panels. `panels_file` defaults to SMM_PANELS_FILE or ./panels.yaml."""

    panels_file: str | None = None

    def settings(self) -> Settings:
        return load_settings(self.panels_file, check_keys=False)

    @contextmanager
    def client(self, panel: str) -> Iterator[PanelClient]:
        config = self.settings().panel(panel)
        client = PanelClient(config, config.api_key())
        try:
            yield client
        finally:
            client.close()

    @contextmanager
    def clients(
        self, settings: Settings, only: Iterable[str] | None = None
    ) -> Iterator[dict[str, PanelClient]]:
        """Clients for the enabled panels (or `only` those), closed on exit."""
        wanted = set(settings.panel_names if only is None else only)
        clients = {
            p.name: PanelClient(p, p.api_key()) for p in settings.enabled_panels if p.name in wanted
        }
        try:
            yield clients
        finally:
            for client in clients.values():
                client.close()


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse. `path` defaults to SMM_DUCKDB_PATH or data/warehouse.duckdb."""

    path: str | None = None

    @property
    def db_path(self) -> Path:
        return Path(self.path) if self.path else duckdb_path_from_env()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.db_path) as conn:
            yield conn

    def publish(self, log: logging.Logger | dg.DagsterLogManager) -> None:
        """Refresh the analysts' read-only replica after a write. A failure (the live file
        held too long, a full disk) is a warning, never the run's failure: the run's writes
        are committed, and the next run publishes again. Call it after the run's signals
        to the sensors (materializations), so that a failed publish cannot lose them."""
        try:
            publish_snapshot(self.db_path)
        except (WarehouseError, duckdb.Error, OSError) as exc:
            log.warning(f"the read-only replica was not refreshed this time: {exc}")
