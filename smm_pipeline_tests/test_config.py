"""panels.yaml + environment → settings; a broken config fails with one clear sentence."""

from __future__ import annotations

import dataclasses
import pickle
from decimal import Decimal
from pathlib import Path

import pytest

from smm_pipeline.config import (
    PROJECT_ROOT,
    ConfigError,
    PanelConfig,
    PipelineConfig,
    Secret,
    Settings,
    load_settings,
    parse_settings,
)


def panel(**fields):
    base = {"name": "p1", "url": "https://panel.example/api/v2", "key_env": "P1_KEY"}
    return {**base, **fields}


def settings(*panels, env=None, **doc):
    return parse_settings({"panels": list(panels), **doc}, environ=env or {"P1_KEY": "secret-1"})


def test_the_shipped_file_is_valid_and_carries_both_seed_providers():
    loaded = load_settings(PROJECT_ROOT / "panels.yaml", environ={"SIMULATOR_API_KEY": "x"})
    assert loaded.panel_names == ("simulator",)
    persian = loaded.panel("persiansmm")
    private = loaded.panel("privatesmm")
    assert not persian.enabled and not private.enabled
    assert {20, 40, 50} <= set(persian.delay_values)
    assert not {20, 40, 50} & set(private.delay_values)
    assert persian.url == "https://my.persiansmm.com/api/v2"
    assert loaded.panel("simulator").low_balance_threshold == Decimal("50.00")


def test_defaults_and_exact_money():
    s = settings(panel(max_batch_spend="12.30", low_balance_threshold=5))
    p = s.panel("p1")
    assert p.max_batch_spend == Decimal("12.30")
    assert p.low_balance_threshold == Decimal("5")
    assert p.rate_limit_per_minute == 120 and p.max_concurrency == 4
    assert s.pipeline.catalog_max_age_minutes == 60


@pytest.mark.parametrize(
    ("doc_panels", "env", "message"),
    [
        ([panel(rate_limit=5)], None, "panel 'p1': unknown field rate_limit (a typo?)"),
        ([panel()], {}, "panel 'p1': key_env P1_KEY is not set; set P1_KEY in .env"),
        ([panel(url="ftp://x/api")], None, "panel 'p1': field url must be an http(s) URL"),
        ([panel(url="http://panel.example/api")], None, "panel 'p1': field url must use https"),
        ([panel(), panel()], None, "panel 'p1': field name is used twice"),
        ([panel(name="a-b"), panel(name="a_b")], None, "panel 'a_b': field name differs from"),
        ([panel(name="Bad Name")], None, "panel 'Bad Name': field name must match"),
        ([panel(max_concurrency=0)], None, "panel 'p1': field max_concurrency must be a positive"),
        ([panel(max_batch_spend="ten")], None, "panel 'p1': field max_batch_spend must be a dec"),
        ([panel(delay_values=[5, "x"])], None, "panel 'p1': field delay_values must be a list"),
        ([{"name": "p1", "url": "https://x.io/api"}], None, "panel 'p1': field key_env is req"),
        ([panel(url="https://user:pw@x.io/api")], None, "must not carry credentials"),
    ],
)
def test_broken_configs_name_the_panel_and_the_field(doc_panels, env, message):
    with pytest.raises(ConfigError) as info:
        parse_settings({"panels": doc_panels}, environ={"P1_KEY": "k"} if env is None else env)
    assert message in str(info.value)
    assert str(info.value).count(".") <= 3  # one sentence, not a traceback dump


def test_disabled_panels_need_no_key():
    s = parse_settings(
        {"panels": [panel(), panel(name="off", key_env="OFF_KEY", enabled=False)]},
        environ={"P1_KEY": "k"},
    )
    assert s.panel_names == ("p1",)


def test_unknown_top_level_and_pipeline_fields(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown top-level field panel"):
        parse_settings({"panels": [panel()], "panel": []}, environ={"P1_KEY": "k"})
    with pytest.raises(ConfigError, match="pipeline: unknown field stuck_hours"):
        settings(panel(), pipeline={"stuck_hours": 3})
    bad = tmp_path / "panels.yaml"
    bad.write_text("panels: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.yaml")


def test_paths_come_from_the_environment(tmp_path: Path):
    s = parse_settings(
        {"panels": [panel()]},
        environ={"P1_KEY": "k", "SMM_DATA_DIR": str(tmp_path / "d")},
    )
    assert s.data_dir == tmp_path / "d"
    assert s.duckdb_path == tmp_path / "d" / "warehouse.duckdb"


def test_the_key_is_a_secret_that_never_shows():
    s = settings(panel(), env={"P1_KEY": "  super-secret-key  "})
    key = s.panel("p1").api_key({"P1_KEY": "  super-secret-key  "})
    assert key.reveal() == "super-secret-key"
    assert "super-secret" not in repr(key) and "super-secret" not in str(key)
    assert "super-secret" not in repr(s)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert Secret("a") == Secret("a")


def test_a_retired_pipeline_field_says_it_is_no_longer_a_setting():
    with pytest.raises(ConfigError) as info:
        settings(panel(), pipeline={"sensor_interval_seconds": 30})
    assert str(info.value) == (
        "pipeline: field sensor_interval_seconds is no longer a setting "
        "(the file sensors look every 15 s); remove it"
    )


KEY = "sk-live-4711-never-shown"


@pytest.mark.parametrize(
    "doc_panel",
    [
        panel(rate_limit=5),
        panel(max_concurrency=0),
        panel(max_batch_spend="ten"),
        panel(url="ftp://x/api"),
        panel(api_key=KEY),  # the key pasted into panels.yaml
        panel(rate_limit_per_minute=KEY),
        panel(url=f"https://user:{KEY}@panel.example/api/v2"),
        panel(url=f"ftp://user:{KEY}@panel.example/api/v2"),
        panel(url=f"https://panel.example/api/v2?key={KEY}"),
        panel(url=f"http://[::1{KEY}/api"),
        panel(name="p2", key_env="P2_KEY"),  # P2_KEY is set but blank
    ],
)
def test_a_key_never_shows_in_an_error(doc_panel):
    env = {"P1_KEY": KEY, "P2_KEY": "  "}
    with pytest.raises(ConfigError) as info:
        parse_settings({"panels": [doc_panel]}, environ=env)
    message = str(info.value)
    assert KEY not in message and "4711" not in message
    assert "\n" not in message and "validation error" not in message.lower()
    chained = info.value.__cause__ or (
        not info.value.__suppress_context__ and info.value.__context__
    )
    assert not chained  # no pydantic ValidationError printed under it either


def test_a_key_never_shows_in_a_repr():
    s = settings(panel(), panel(name="p2", key_env="P2_KEY"), env={"P1_KEY": KEY, "P2_KEY": KEY})
    assert s.panel("p1").api_key({"P1_KEY": KEY}).reveal() == KEY
    for shown in (repr(s), str(s), repr(s.panels), repr(s.panel("p2")), repr(s.pipeline)):
        assert KEY not in shown and "4711" not in shown


def test_every_field_has_its_own_sentence():
    """A value no field accepts (a mapping) gets the field's sentence, never a generic one."""
    for f in dataclasses.fields(PanelConfig):
        with pytest.raises(ConfigError) as info:
            settings(panel(**{f.name: {"x": 1}}))
        label = "#1" if f.name == "name" else "p1"
        assert str(info.value).startswith(f"panel '{label}': field {f.name} "), str(info.value)
        assert "is not valid" not in str(info.value)
    for f in dataclasses.fields(PipelineConfig):
        with pytest.raises(ConfigError) as info:
            settings(panel(), pipeline={f.name: {"x": 1}})
        assert str(info.value).startswith(f"pipeline: field {f.name} "), str(info.value)
        assert "is not valid" not in str(info.value)


def test_yaml_values_are_strict_and_money_exact(tmp_path: Path):
    file = tmp_path / "panels.yaml"
    file.write_text(
        "panels:\n"
        "  - {name: p1, url: 'https://p.example/api', key_env: P1_KEY,\n"
        "     timeout_seconds: 5, max_batch_spend: 10.1, low_balance_threshold: 0.3,\n"
        "     delay_values: [30, 0, 5, 5]}\n"
        "pipeline: {stuck_order_hours: 3, replica_max_lag_seconds: 0}\n"
    )
    s = load_settings(file, environ={"P1_KEY": "k"})
    p = s.panel("p1")
    assert p.max_batch_spend == Decimal("10.1") and str(p.max_batch_spend) == "10.1"
    assert str(p.low_balance_threshold) == "0.3"
    assert p.timeout_seconds == 5.0 and type(p.timeout_seconds) is float
    assert p.delay_values == (0, 5, 30)
    assert type(s.pipeline.stuck_order_hours) is float and s.pipeline.replica_max_lag_seconds == 0
    for fields, message in (
        ({"rate_limit_per_minute": True}, "field rate_limit_per_minute must be a positive whole"),
        ({"max_retries": "4"}, "field max_retries must be a positive whole number"),
        ({"timeout_seconds": True}, "field timeout_seconds must be a positive number"),
        ({"timeout_seconds": float("nan")}, "field timeout_seconds must be a positive number"),
        ({"delay_values": [0, True]}, "field delay_values must be a list of whole minutes"),
        ({"max_batch_spend": True}, "field max_batch_spend must be a decimal amount"),
        ({"max_batch_spend": -1}, "field max_batch_spend must be a non-negative amount"),
        ({"enabled": "yes"}, "field enabled must be true or false"),
    ):
        with pytest.raises(ConfigError, match=f"^panel 'p1': {message}"):
            settings(panel(**fields))
    with pytest.raises(ConfigError, match="^pipeline: field catalog_max_age_minutes must be a wh"):
        settings(panel(), pipeline={"catalog_max_age_minutes": 2.5})
    with pytest.raises(ConfigError, match="^pipeline: field stuck_order_hours must be a positive"):
        settings(panel(), pipeline={"stuck_order_hours": True})


def test_objects_built_in_code_are_frozen_hashable_and_replaceable():
    p = PanelConfig("p1", "https://p.example/api", "P1_KEY", max_retries=0)
    s = Settings(panels=(p,))
    assert {p: 1}[p] == 1 and hash(s) == hash(Settings(panels=(p,)))
    assert s.pipeline == PipelineConfig() and s.budget_dir == s.data_dir / "panel_budget"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_concurrency = 2  # type: ignore[misc]
    assert dataclasses.replace(p, max_concurrency=1).max_concurrency == 1
    assert pickle.loads(pickle.dumps(s)) == s
