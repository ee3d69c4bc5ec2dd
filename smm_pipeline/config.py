"""`panels.yaml` + environment → validated settings (README, Configuration).

The fields of `PanelConfig` and `PipelineConfig` are the schema of their sections of panels.yaml:
pydantic validates a section against their annotations (strictly: no `true` for a number, no
"5" for 5; an unknown field is refused), and the first problem it finds becomes one sentence
that names the panel and the field, a `ConfigError`. Each annotation carries its sentence
(`_Invalid`); a validator with something more precise to say raises `_refusal(...)`.
Objects built in Python code (tests, benchmarks) are plain frozen dataclasses, not validated.

Keys are read from the environment only, through the variable each panel names in `key_env`,
and are wrapped in `Secret` so that no `repr()`, log line or exception can show them.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from pydantic_core import PydanticCustomError

from smm_pipeline.errors import SmmPipelineError

if TYPE_CHECKING:
    from smm_pipeline.warehouse.postgres import PostgresTarget

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
# The documented subscription delays when a panel does not list its own (persiansmm's list).
DEFAULT_DELAY_VALUES = (0, 5, 10, 15, 20, 30, 40, 50, 60, 90, 120, 150, 180, 210, 240, 270, 300,
                        360, 420, 480, 540, 600)  # fmt: skip
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ConfigError(SmmPipelineError, ValueError):
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


# ------------------------------------------------------------------ field types


@dataclass(frozen=True)
class _Invalid:
    """Annotation metadata: what the field must be, for any error in it that no validator of
    its own words ("field max_concurrency" + " must be a positive whole number")."""

    sentence: str


def _refusal(sentence: str) -> PydanticCustomError:
    """What a validator raises to say exactly what is wrong ("field url" + sentence)."""
    return PydanticCustomError("config", "{sentence}", {"sentence": sentence})


def _http_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed [IPv6 bracket; not echoed: it may hold credentials
        raise _refusal("must be an http(s) URL") from None
    if parts.username or parts.password or parts.query:  # checked first: never echoed either
        raise _refusal("must not carry credentials or a query")
    if parts.scheme not in ("http", "https") or not host:
        raise _refusal(f"must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and host not in _LOCAL_HOSTS:
        raise _refusal("must use https (plain http only for a local simulator)")
    return url


def _env_name(name: str) -> str:
    if not _ENV_NAME_RE.fullmatch(name):
        raise _refusal("must be an environment variable name")
    return name


def _sorted_unique(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))


def _money(value: Any) -> Decimal | None:
    """An exact amount: a YAML float like 10.1 becomes Decimal('10.1') (through its repr),
    never the binary float's expansion."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise _refusal("must be a decimal amount")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise _refusal("must be a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise _refusal("must be a non-negative amount")
    return amount


def _no_fraction(sentence: str):
    """For a whole-number field: a YAML float (1.5, even 2.0) is refused with `sentence`."""

    def check(value: Any) -> Any:
        if isinstance(value, float):
            raise _refusal(sentence)
        return value

    return BeforeValidator(check)


_TEXT = StringConstraints(strict=True, strip_whitespace=True, min_length=1)

PanelName = Annotated[str, Field(strict=True, pattern=r"^[a-z0-9_-]+$"),
                      _Invalid("must match [a-z0-9_-]+")]  # fmt: skip
PanelUrl = Annotated[str, _TEXT, AfterValidator(_http_url), _Invalid("is required")]
EnvName = Annotated[str, _TEXT, AfterValidator(_env_name), _Invalid("is required")]
Text = Annotated[str, _TEXT, _Invalid("must be a non-empty string")]
Switch = Annotated[bool, Field(strict=True), _Invalid("must be true or false")]
Count = Annotated[int, Field(strict=True, gt=0), _Invalid("must be a positive whole number")]
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False),
                     _Invalid("must be a positive number")]  # fmt: skip
Money = Annotated[Decimal | None, PlainValidator(_money), _Invalid("must be a decimal amount")]
DelayValues = Annotated[
    tuple[Annotated[int, Field(strict=True, ge=0)], ...],
    Field(min_length=1),
    AfterValidator(_sorted_unique),
    _Invalid("must be a list of whole minutes (0, 5, ...)"),
]
WholeMinutes = Annotated[int, Field(strict=True, gt=0),
                         _no_fraction("must be a whole number of minutes"),
                         _Invalid("must be a positive number")]  # fmt: skip
WholeBytes = Annotated[int, Field(strict=True, gt=0),
                       _no_fraction("must be a whole number of bytes (like 50000000)"),
                       _Invalid("must be a positive number")]  # fmt: skip
SecondsOrZero = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False),
                          _Invalid("must be 0 (after every run) or more")]  # fmt: skip


# ------------------------------------------------------------------ settings


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class PanelConfig:
    """One entry of `panels:`."""

    name: PanelName
    url: PanelUrl
    key_env: EnvName
    enabled: Switch = True
    rate_limit_per_minute: Count = 120
    max_concurrency: Count = 4
    timeout_seconds: Positive = 30.0
    delay_values: DelayValues = DEFAULT_DELAY_VALUES
    low_balance_threshold: Money = None
    max_batch_spend: Money = None
    user_agent: Text = DEFAULT_USER_AGENT
    max_retries: Count = 4

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


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class PipelineConfig:
    """Tunables of the pipeline itself (optional `pipeline:` section of panels.yaml)."""

    catalog_max_age_minutes: WholeMinutes = 60
    stuck_order_hours: Positive = 72.0
    poll_min_interval_minutes: Positive = 2.0
    poll_max_interval_minutes: Positive = 240.0
    # A dropped file bigger than this is refused unread (moved to rejected/ with errors.csv).
    max_file_bytes: WholeBytes = 50_000_000
    # How long one poll request waits for the panel's budget before the poll defers the rest
    # of its orders to the next run (submissions to the panel come first).
    poll_budget_wait_seconds: Positive = 15.0
    # The analysts' replica is republished at most this often (and at least this often while
    # the warehouse changes): the bound on its lag behind the warehouse. 0: after every run.
    replica_max_lag_seconds: SecondsOrZero = 120.0


# Settings that panels.yaml once had: setting one is refused with why it went.
_RETIRED_PIPELINE_FIELDS = {"sensor_interval_seconds": "the file sensors look every 15 s"}


@dataclass(frozen=True)
class Settings:
    panels: tuple[PanelConfig, ...]
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    data_dir: Path = PROJECT_ROOT / "data"
    duckdb_path: Path = PROJECT_ROOT / "data" / "warehouse.duckdb"
    source: Path | None = None
    # The warehouse's Postgres (SMM_WAREHOUSE_URL), None while the warehouse is the DuckDB file.
    warehouse_postgres: PostgresTarget | None = None

    @property
    def budget_dir(self) -> Path | PostgresTarget:
        """Where the panels' request budgets live, shared by every run process: the warehouse's
        Postgres when the warehouse is on Postgres (runs on every machine share it), else a
        folder on this machine."""
        if self.warehouse_postgres is not None:
            return self.warehouse_postgres
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


# ------------------------------------------------------------------ validation

_UNKNOWN_FIELD = ("unexpected_keyword_argument", "extra_forbidden", "invalid_key")


@functools.cache
def _adapter(section: type) -> TypeAdapter[Any]:
    return TypeAdapter(section)


@functools.cache
def _invalid_sentences(section: type) -> dict[str, str]:
    sentences = {}
    for name, hint in get_type_hints(section, include_extras=True).items():
        said = [m.sentence for m in getattr(hint, "__metadata__", ()) if isinstance(m, _Invalid)]
        sentences[name] = said[-1] if said else "is not valid"
    return sentences


def _validated(section: type, raw: dict, where: str, retired: Mapping[str, str] = {}) -> Any:
    """`raw` as a `section` object, or a ConfigError: "<where>: <one sentence>"."""
    try:
        return _adapter(section).validate_python(raw)
    except ValidationError as exc:  # its text (several lines, with the inputs) is not shown
        raise ConfigError(f"{where}: {_sentence(section, exc, retired)}") from None


def _sentence(section: type, exc: ValidationError, retired: Mapping[str, str]) -> str:
    """The first problem, in the order a reader fixes them: the name, then unknown fields
    (alphabetically), then the others in field order."""

    def rank(error: Any) -> tuple[int, str]:
        fld = str(error["loc"][0]) if error["loc"] else ""
        if fld == "name":
            return (0, "")
        return (1, fld) if error["type"] in _UNKNOWN_FIELD else (2, "")

    error = min(exc.errors(include_url=False, include_input=False), key=rank)
    fld = str(error["loc"][0]) if error["loc"] else "?"
    if error["type"] in _UNKNOWN_FIELD:
        if fld in retired:
            return f"field {fld} is no longer a setting ({retired[fld]}); remove it"
        return f"unknown field {fld} (a typo?)"
    if error["type"] == "config":
        return f"field {fld} {error['ctx']['sentence']}"
    return f"field {fld} {_invalid_sentences(section).get(fld, 'is not valid')}"


def _parse_panel(raw: Any, index: int) -> PanelConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"panels[{index}]: each panel must be a mapping with name, url, key_env")
    name = raw.get("name")
    label = name if isinstance(name, str) else f"#{index + 1}"
    return _validated(PanelConfig, raw, f"panel {label!r}")


def _parse_pipeline(raw: Any) -> PipelineConfig:
    if raw is None:
        return PipelineConfig()
    if not isinstance(raw, dict):
        raise ConfigError("pipeline: must be a mapping of settings")
    return _validated(PipelineConfig, raw, "pipeline", _RETIRED_PIPELINE_FIELDS)


def panel_identifier(name: str) -> str:
    """A panel name as a Dagster name may hold it (letters, digits and `_`: the low-balance
    check of each panel): `-` becomes `_`. Two panels whose identifiers agree are refused."""
    return name.replace("-", "_")


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
    warehouse_postgres = None
    if (env.get("SMM_WAREHOUSE_URL") or "").strip():
        # A bad URL fails at load like any setting (the URL itself is never echoed whole).
        from smm_pipeline.warehouse.db import warehouse_location  # imports this module

        warehouse_postgres = warehouse_location(env)
    unknown = sorted(set(document) - {"panels", "pipeline"}, key=str)
    if unknown:
        raise ConfigError(f"{source or 'panels.yaml'}: unknown top-level field {unknown[0]}")
    raw_panels = document["panels"]
    if not isinstance(raw_panels, list) or not raw_panels:
        raise ConfigError(f"{source or 'panels.yaml'}: 'panels:' must be a non-empty list")
    panels = [_parse_panel(raw, i) for i, raw in enumerate(raw_panels)]
    seen: dict[str, str] = {}
    for p in panels:
        if p.name in seen.values():
            raise ConfigError(f"panel {p.name!r}: field name is used twice; names must be unique")
        twin = seen.get(panel_identifier(p.name))
        if twin is not None:
            raise ConfigError(
                f"panel {p.name!r}: field name differs from panel {twin!r} only by - and _, "
                "which Dagster's check names cannot tell apart; rename one"
            )
        seen[panel_identifier(p.name)] = p.name
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
        warehouse_postgres=warehouse_postgres,
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
