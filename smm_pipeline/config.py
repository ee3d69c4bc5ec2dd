"""`panels.yaml` + environment → validated settings (SPEC §2).

A broken configuration fails at load with one sentence that names the panel and the field.
Keys are read from the environment only, through the variable each panel names in `key_env`,
and are wrapped in `Secret` so that no `repr()`, log line or exception can show them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
# The documented subscription delays when a panel does not list its own (persiansmm's list).
DEFAULT_DELAY_VALUES = (0, 5, 10, 15, 20, 30, 40, 50, 60, 90, 120, 150, 180, 210, 240, 270, 300,
                        360, 420, 480, 540, 600)  # fmt: skip
_NAME_RE = re.compile(r"^[a-z0-9_-]+$")


class ConfigError(ValueError):
    """The configuration is unusable; the message says where and what to do."""


class Secret:
    """A string that never shows itself: repr/str give '***'; `.reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # never pickled into run storage by accident
        raise TypeError("a Secret cannot be serialised")


@dataclass(frozen=True)
class PanelConfig:
    name: str
    url: str
    key_env: str
    enabled: bool = True
    rate_limit_per_minute: int = 120
    max_concurrency: int = 4
    timeout_seconds: float = 30.0
    delay_values: tuple[int, ...] = DEFAULT_DELAY_VALUES
    low_balance_threshold: Decimal | None = None
    max_batch_spend: Decimal | None = None
    user_agent: str = DEFAULT_USER_AGENT
    max_retries: int = 4

    def api_key(self, environ: Mapping[str, str] | None = None) -> Secret:
        """The panel's key from the environment; a clear error when it is not set."""
        env = os.environ if environ is None else environ
        value = env.get(self.key_env, "")
        if not value.strip():
            raise ConfigError(
                f"panel {self.name!r}: key_env {self.key_env} is not set; "
                f"set {self.key_env} in .env or the environment"
            )
        return Secret(value.strip())


@dataclass(frozen=True)
class PipelineConfig:
    """Tunables of the pipeline itself (optional `pipeline:` section of panels.yaml)."""

    catalog_max_age_minutes: int = 60
    stuck_order_hours: float = 72.0
    poll_min_interval_minutes: float = 2.0
    poll_max_interval_minutes: float = 240.0
    sensor_interval_seconds: int = 30
    # A dropped file bigger than this is refused unread (moved to rejected/ with errors.csv).
    max_file_bytes: int = 50_000_000
    # How long one poll request waits for the panel's budget before the poll defers the rest
    # of its orders to the next run (submissions to the panel come first).
    poll_budget_wait_seconds: float = 15.0
    # The analysts' replica is republished at most this often (and at least this often while
    # the warehouse changes): the bound on its lag behind the warehouse. 0: after every run.
    replica_max_lag_seconds: float = 120


@dataclass(frozen=True)
class Settings:
    panels: tuple[PanelConfig, ...]
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    data_dir: Path = PROJECT_ROOT / "data"
    duckdb_path: Path = PROJECT_ROOT / "data" / "warehouse.duckdb"
    source: Path | None = None

    @property
    def budget_dir(self) -> Path:
        """Where the panels' request budgets live, shared by every run process."""
        return self.data_dir / "panel_budget"

    @property
    def enabled_panels(self) -> tuple[PanelConfig, ...]:
        return tuple(p for p in self.panels if p.enabled)

    def panel(self, name: str) -> PanelConfig:
        for p in self.panels:
            if p.name == name:
                return p
        raise ConfigError(f"unknown panel {name!r}; configured: {', '.join(self.panel_names)}")

    @property
    def panel_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.enabled_panels)


_PANEL_FIELDS = {
    "name", "url", "key_env", "enabled", "rate_limit_per_minute", "max_concurrency",
    "timeout_seconds", "delay_values", "low_balance_threshold", "max_batch_spend", "user_agent",
    "max_retries",
}  # fmt: skip
_PIPELINE_FIELDS = set(PipelineConfig.__dataclass_fields__)


def _positive_int(panel: str, fld: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"panel {panel!r}: field {fld} must be a positive whole number")
    return value


def _money(panel: str, fld: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"panel {panel!r}: field {fld} must be a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError(f"panel {panel!r}: field {fld} must be a non-negative amount")
    return amount


def _parse_panel(raw: Any, index: int) -> PanelConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"panels[{index}]: each panel must be a mapping with name, url, key_env")
    name = raw.get("name")
    label = name if isinstance(name, str) else f"#{index + 1}"
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"panel {label!r}: field name must match [a-z0-9_-]+")
    unknown = sorted(set(raw) - _PANEL_FIELDS)
    if unknown:
        raise ConfigError(f"panel {name!r}: unknown field {unknown[0]} (a typo?)")
    for required in ("url", "key_env"):
        if not isinstance(raw.get(required), str) or not raw[required].strip():
            raise ConfigError(f"panel {name!r}: field {required} is required")
    url = raw["url"].strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"panel {name!r}: field url must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"panel {name!r}: field url must use https (plain http only for a local simulator)"
        )
    if parts.username or parts.password or parts.query:
        raise ConfigError(f"panel {name!r}: field url must not carry credentials or a query")
    key_env = raw["key_env"].strip()
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key_env):
        raise ConfigError(f"panel {name!r}: field key_env must be an environment variable name")
    kwargs: dict[str, Any] = {"name": name, "url": url, "key_env": key_env}
    if "enabled" in raw:
        if not isinstance(raw["enabled"], bool):
            raise ConfigError(f"panel {name!r}: field enabled must be true or false")
        kwargs["enabled"] = raw["enabled"]
    for fld in ("rate_limit_per_minute", "max_concurrency", "max_retries"):
        if fld in raw:
            kwargs[fld] = _positive_int(name, fld, raw[fld])
    if "timeout_seconds" in raw:
        t = raw["timeout_seconds"]
        if isinstance(t, bool) or not isinstance(t, int | float) or t <= 0:
            raise ConfigError(f"panel {name!r}: field timeout_seconds must be a positive number")
        kwargs["timeout_seconds"] = float(t)
    if "delay_values" in raw:
        dv = raw["delay_values"]
        if (
            not isinstance(dv, list)
            or not dv
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in dv)
        ):
            raise ConfigError(
                f"panel {name!r}: field delay_values must be a list of whole minutes (0, 5, ...)"
            )
        kwargs["delay_values"] = tuple(sorted(set(dv)))
    for fld in ("low_balance_threshold", "max_batch_spend"):
        if fld in raw:
            kwargs[fld] = _money(name, fld, raw[fld])
    if "user_agent" in raw:
        if not isinstance(raw["user_agent"], str) or not raw["user_agent"].strip():
            raise ConfigError(f"panel {name!r}: field user_agent must be a non-empty string")
        kwargs["user_agent"] = raw["user_agent"].strip()
    return PanelConfig(**kwargs)


def _parse_pipeline(raw: Any) -> PipelineConfig:
    if raw is None:
        return PipelineConfig()
    if not isinstance(raw, dict):
        raise ConfigError("pipeline: must be a mapping of settings")
    unknown = sorted(set(raw) - _PIPELINE_FIELDS)
    if unknown:
        raise ConfigError(f"pipeline: unknown field {unknown[0]} (a typo?)")
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"pipeline: field {k} must be a positive number")
        if k == "replica_max_lag_seconds" and v < 0:
            raise ConfigError(f"pipeline: field {k} must be 0 (after every run) or more")
        if v <= 0 and k != "replica_max_lag_seconds":
            raise ConfigError(f"pipeline: field {k} must be a positive number")
    if "max_file_bytes" in raw and not isinstance(raw["max_file_bytes"], int):
        raise ConfigError(
            "pipeline: field max_file_bytes must be a whole number of bytes (like 50000000)"
        )
    return PipelineConfig(**raw)


def parse_settings(
    document: Any,
    *,
    environ: Mapping[str, str] | None = None,
    source: Path | None = None,
    check_keys: bool = True,
) -> Settings:
    """Validate a loaded panels.yaml document. With `check_keys`, every enabled panel's key
    variable must be set."""
    env = os.environ if environ is None else environ
    if not isinstance(document, dict) or "panels" not in document:
        raise ConfigError(f"{source or 'panels.yaml'}: must contain a 'panels:' list")
    unknown = sorted(set(document) - {"panels", "pipeline"})
    if unknown:
        raise ConfigError(f"{source or 'panels.yaml'}: unknown top-level field {unknown[0]}")
    raw_panels = document["panels"]
    if not isinstance(raw_panels, list) or not raw_panels:
        raise ConfigError(f"{source or 'panels.yaml'}: 'panels:' must be a non-empty list")
    panels = [_parse_panel(raw, i) for i, raw in enumerate(raw_panels)]
    seen: set[str] = set()
    for p in panels:
        if p.name in seen:
            raise ConfigError(f"panel {p.name!r}: field name is used twice; names must be unique")
        seen.add(p.name)
    if not any(p.enabled for p in panels):
        raise ConfigError(f"{source or 'panels.yaml'}: no panel is enabled")
    if check_keys:
        for p in panels:
            if p.enabled:
                p.api_key(env)
    return Settings(
        panels=tuple(panels),
        pipeline=_parse_pipeline(document.get("pipeline")),
        data_dir=data_dir_from_env(env),
        duckdb_path=duckdb_path_from_env(env),
        source=source,
    )


def data_dir_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """`SMM_DATA_DIR`, default `data/` in the project."""
    env = os.environ if environ is None else environ
    return Path(env.get("SMM_DATA_DIR") or PROJECT_ROOT / "data")


def duckdb_path_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """`SMM_DUCKDB_PATH`, default `<SMM_DATA_DIR>/warehouse.duckdb`."""
    env = os.environ if environ is None else environ
    return Path(env.get("SMM_DUCKDB_PATH") or data_dir_from_env(env) / "warehouse.duckdb")


def settings_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("SMM_PANELS_FILE") or PROJECT_ROOT / "panels.yaml")


def load_settings(
    path: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    check_keys: bool = True,
) -> Settings:
    """Read and validate panels.yaml (or `SMM_PANELS_FILE`)."""
    file = Path(path) if path is not None else settings_path(environ)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: file not found (set SMM_PANELS_FILE or create it)") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}: not valid YAML{where}") from None
    return parse_settings(document, environ=environ, source=file, check_keys=check_keys)
