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

TEST_KEY = "test-key-7f3a9c"
KEY_ENV = "SMM_TEST_PANEL_KEY"


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
    db_path: Path
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, panels: list[str], pipeline_yaml: str = ""
) -> Pipeline:
    panels_file = tmp_path / "panels.yaml"
    panels_file.write_text("panels:\n" + "\n".join(panels) + "\n" + pipeline_yaml)
    data = tmp_path / "data"
    db_path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("SMM_PANELS_FILE", str(panels_file))
    monkeypatch.setenv("SMM_DATA_DIR", str(data))
    monkeypatch.setenv("SMM_DUCKDB_PATH", str(db_path))
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    folders = Folders(data)
    folders.ensure()
    return Pipeline(tmp_path, load_settings(panels_file), db_path, folders, panels_file)


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: ThreadedSimulator) -> Pipeline:
    """One panel, `sim`, against the simulator; generous limits so tests run fast."""
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
    )
