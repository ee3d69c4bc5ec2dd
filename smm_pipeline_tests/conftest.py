"""Shared fixtures: a real simulator over loopback, a real DuckDB file, real Dagster."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from smm_devkit.simulator.testing import ThreadedSimulator, running_simulator
from smm_pipeline.config import Settings, load_settings
from smm_pipeline.operations.inbox import Folders
from smm_pipeline.warehouse.db import Location
from smm_pipeline.warehouse.postgres import PostgresTarget
from smm_pipeline_tests.postgres_server import postgres_database, postgres_server  # noqa: F401

TEST_KEY = "test-key-7f3a9c"
KEY_ENV = "SMM_TEST_PANEL_KEY"


ENGINES = ("duckdb", "postgres")


def engine_location(request: pytest.FixtureRequest, engine: str, tmp_path: Path) -> Location:
    """A fresh, empty warehouse on `engine`: a DuckDB file under tmp_path, or a new database
    on the session's throwaway Postgres."""
    if engine == "duckdb":
        return tmp_path / "warehouse.duckdb"
    return PostgresTarget(request.getfixturevalue("postgres_database").url())


@pytest.fixture(params=ENGINES)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    """The same test on each engine: a DuckDB file, then a Postgres database."""
    return engine_location(request, request.param, tmp_path)


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    """A simulator with a frozen clock (orders move only on `sim.advance`)."""
    with running_simulator(keys=(TEST_KEY,)) as handle:
        yield handle


def panel_yaml(name: str, url: str, key_env: str = KEY_ENV, **extra: object) -> str:
    lines = [f"  - name: {name}", f"    url: {url}", f"    key_env: {key_env}"]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines)


@dataclass
class Pipeline:
    """A configured pipeline under tmp_path: panels.yaml, data dir and warehouse."""

    root: Path
    settings: Settings
    db_path: Location  # the warehouse: a DuckDB file, or a PostgresTarget
    folders: Folders
    panels_file: Path
    _loaded: tuple[bytes, object] | None = field(default=None, repr=False, compare=False)

    def drop(self, kind: str, name: str, content: str | bytes) -> Path:
        path = self.folders.inbox(kind) / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def defs(self):
        """The code location as Dagster loads it, for this panels.yaml: loaded again only when
        the file changed (loading costs about 0.15 s, and a test asks for it at every step)."""
        from smm_pipeline.definitions import load_definitions

        content = self.panels_file.read_bytes()
        if self._loaded is None or self._loaded[0] != content:
            self._loaded = (content, load_definitions())
        return self._loaded[1]


def make_pipeline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    panels: list[str],
    pipeline_yaml: str = "",
    warehouse: Location | None = None,
) -> Pipeline:
    """A pipeline under tmp_path; its warehouse is `warehouse` (a PostgresTarget sets
    SMM_WAREHOUSE_URL), else the DuckDB file tmp_path/warehouse.duckdb."""
    panels_file = tmp_path / "panels.yaml"
    panels_file.write_text("panels:\n" + "\n".join(panels) + "\n" + pipeline_yaml)
    data = tmp_path / "data"
    db_path = tmp_path / "warehouse.duckdb" if warehouse is None else warehouse
    monkeypatch.setenv("SMM_PANELS_FILE", str(panels_file))
    monkeypatch.setenv("SMM_DATA_DIR", str(data))
    if isinstance(db_path, PostgresTarget):
        monkeypatch.setenv("SMM_WAREHOUSE_URL", db_path.url)
        monkeypatch.delenv("SMM_DUCKDB_PATH", raising=False)
    else:
        monkeypatch.delenv("SMM_WAREHOUSE_URL", raising=False)
        monkeypatch.setenv("SMM_DUCKDB_PATH", str(db_path))
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    folders = Folders(data)
    folders.ensure()
    return Pipeline(tmp_path, load_settings(panels_file), db_path, folders, panels_file)


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: ThreadedSimulator) -> Pipeline:
    """One panel, `sim`, against the simulator; generous limits so tests run fast."""
    return one_panel_pipeline(tmp_path, monkeypatch, sim)


@pytest.fixture(params=ENGINES)
def engine_pipeline(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sim: ThreadedSimulator,
) -> Pipeline:
    """`pipeline` on each engine: its warehouse a DuckDB file, then a Postgres database."""
    location = engine_location(request, request.param, tmp_path)
    return one_panel_pipeline(tmp_path, monkeypatch, sim, location)


def one_panel_pipeline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sim: ThreadedSimulator,
    warehouse: Location | None = None,
) -> Pipeline:
    return make_pipeline(
        tmp_path,
        monkeypatch,
        [
            panel_yaml(
                "sim",
                sim.url,
                rate_limit_per_minute=60000,
                max_concurrency=8,
                timeout_seconds=5,
                low_balance_threshold='"100.00"',
                max_batch_spend='"500.00"',
            )
        ],
        textwrap.dedent(
            """
            pipeline:
              catalog_max_age_minutes: 60
            """
        ),
        warehouse,
    )
