"""panels.yaml + environment → settings; a broken config fails with one clear sentence."""

from __future__ import annotations

import pickle
from decimal import Decimal
from pathlib import Path

import pytest

from smm_pipeline.config import PROJECT_ROOT, ConfigError, Secret, load_settings, parse_settings


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
