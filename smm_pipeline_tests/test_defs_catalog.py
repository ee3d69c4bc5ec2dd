"""Catalog and balance assets, their schedules and the low-balance check, in real Dagster."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import dagster as dg
import duckdb
import pytest

from smm_pipeline_tests.conftest import TEST_KEY, make_pipeline, panel_yaml


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def materialize(pipeline, instance, asset: str, partition: str = "sim", raise_on_error=True):
    defs = pipeline.defs()
    job = defs.resolve_job_def(
        "refresh_service_catalog" if asset == "service_catalog" else "refresh_panel_balances"
    )
    return job.execute_in_process(
        instance=instance, partition_key=partition, raise_on_error=raise_on_error
    )


def materialization(result, asset: str) -> dict:
    [event] = [
        e
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.event_specific_data.materialization.asset_key == dg.AssetKey(asset)
    ]
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}


def changes(pipeline) -> list[tuple]:
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        return con.execute(
            "SELECT service_id, field, old_value, new_value FROM service_changes "
            "WHERE field NOT IN ('appeared') ORDER BY service_id, field"
        ).fetchall()


def test_catalog_changes_are_recorded_exactly(pipeline, sim, instance):
    first = materialize(pipeline, instance, "service_catalog")
    meta = materialization(first, "service_catalog")
    assert meta["dagster/row_count"] == len(sim.services())
    assert meta["new_services"] == len(sim.services())
    unchanged = materialize(pipeline, instance, "service_catalog")
    assert materialization(unchanged, "service_catalog")["change_rows"] == 0
    assert changes(pipeline) == []

    sim.patch_service(1, rate="0.99")
    sim.patch_service(2, min=25)
    sim.remove_service(3)
    sim.add_service(
        {"service": 500, "name": "New Views", "type": "Default", "category": "TikTok",
         "rate": "0.01", "min": "100", "max": "1000", "refill": False, "cancel": False}
    )  # fmt: skip
    second = materialization(materialize(pipeline, instance, "service_catalog"), "service_catalog")
    assert (second["new_services"], second["changed_services"], second["vanished_services"]) == (
        1,
        2,
        1,
    )
    recorded = changes(pipeline)
    assert [r[:2] for r in recorded] == [(1, "rate"), (2, "min"), (3, "disappeared")]
    assert recorded[0][2:] == ("0.9", "0.99")
    assert recorded[1][2:] == ("20", "25")
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        active, rate = con.execute(
            "SELECT active, rate FROM services WHERE service_id = 3"
        ).fetchall()[0]
        assert active is False and rate == Decimal("0.25")
        appeared = con.execute(
            "SELECT count(*) FROM service_changes WHERE service_id = 500 AND field = 'appeared'"
        ).fetchall()[0][0]
        assert appeared == 1
    again = materialization(materialize(pipeline, instance, "service_catalog"), "service_catalog")
    assert again["change_rows"] == 0


def test_balance_history_and_low_balance_check(pipeline, sim, instance):
    def check_passed(result) -> bool:
        [evaluation] = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert evaluation.check_name == "low_balance_sim"
        return evaluation.passed

    ok = materialize(pipeline, instance, "panel_balances")
    assert materialization(ok, "panel_balances")["balance"] == "1000.00 USD"
    assert check_passed(ok)
    sim.set_balance("100.00")  # exactly the threshold: still fine
    assert check_passed(materialize(pipeline, instance, "panel_balances"))
    sim.set_balance("99.99")
    low = materialize(pipeline, instance, "panel_balances")
    assert low.success  # a WARN check does not fail the run
    assert not check_passed(low)
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        rows = con.execute("SELECT balance, currency FROM balances ORDER BY fetched_at").fetchall()
    assert rows == [
        (Decimal("1000.00"), "USD"),
        (Decimal("100.00"), "USD"),
        (Decimal("99.99"), "USD"),
    ]


def test_a_panel_that_is_down_fails_only_its_own_partition(tmp_path, monkeypatch, sim, instance):
    pipeline = make_pipeline(
        tmp_path,
        monkeypatch,
        [
            panel_yaml("up", sim.url, rate_limit_per_minute=60000),
            panel_yaml("down", "http://127.0.0.1:9/api/v2", max_retries=1),
        ],
    )
    up = materialize(pipeline, instance, "service_catalog", "up")
    down = materialize(pipeline, instance, "service_catalog", "down", raise_on_error=False)
    assert up.success and not down.success
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        panels = con.execute("SELECT DISTINCT panel FROM services").fetchall()
    assert panels == [("up",)]


def test_schedules_request_one_run_per_panel(tmp_path, monkeypatch, sim, instance):
    pipeline = make_pipeline(
        tmp_path, monkeypatch, [panel_yaml("a", sim.url), panel_yaml("b", sim.url)]
    )
    defs = pipeline.defs()
    for name in ("service_catalog_hourly", "panel_balances_every_15_minutes"):
        schedule = defs.get_schedule_def(name)
        assert schedule.execution_timezone == "UTC"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 1, 1, 10, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
        requests = schedule.evaluate_tick(context).run_requests
        assert sorted(r.partition_key for r in requests) == ["a", "b"]
        assert len({r.run_key for r in requests}) == 2


def test_definitions_load_and_name_everything(pipeline):
    defs = pipeline.defs()
    dg.Definitions.validate_loadable(defs)
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"submit_orders", "poll_order_statuses", "refresh_service_catalog"} <= jobs
    sensors = (
        {s.name for s in defs.resolve_sensor_defs()}
        if hasattr(defs, "resolve_sensor_defs")
        else {s.name for s in defs.sensors}
    )
    assert {"order_csv_sensor", "order_status_sensor"} <= sensors


def test_the_shipped_definitions_module_loads(monkeypatch):
    monkeypatch.delenv("SMM_PANELS_FILE", raising=False)
    import importlib

    import smm_pipeline.definitions as module

    module = importlib.reload(module)
    defs = module.defs()  # what workspace.yaml and `dg` load: every module of defs/
    dg.Definitions.validate_loadable(defs)
    asset_keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"service_catalog", "panel_balances", "orders", "warehouse_replica"} <= asset_keys
    assert {"order_csv_sensor", "refill_csv_sensor", "cancel_csv_sensor", "order_status_sensor",
            "refill_status_sensor"} <= {s.name for s in defs.sensors}  # fmt: skip


def test_the_key_is_absent_from_catalog_and_balance_event_logs(pipeline, sim, instance):
    results = [
        materialize(pipeline, instance, "service_catalog"),
        materialize(pipeline, instance, "panel_balances"),
    ]
    for result in results:
        text = "\n".join(repr(e) for e in instance.all_logs(result.run_id))
        assert text and TEST_KEY not in text


def test_no_step_holds_a_pool_slot(pipeline):
    """Steps open the warehouse in short connections only, so none may queue behind another
    run's pool slot (README, Runs side by side: a long submission never delays another
    panel's polls)."""
    defs = pipeline.defs()
    checked = 0
    for job in defs.resolve_all_job_defs():
        for node in job.graph.iterate_op_defs():
            if "warehouse" in node.required_resource_keys:
                assert node.pool is None, f"{job.name}/{node.name} is in pool {node.pool}"
                checked += 1
    assert checked >= 8


def test_a_balance_run_evaluates_only_its_own_panels_low_balance_check(
    tmp_path, monkeypatch, sim, instance
):
    pipeline = make_pipeline(
        tmp_path,
        monkeypatch,
        [
            panel_yaml("a", sim.url, rate_limit_per_minute=60000, low_balance_threshold='"1"'),
            panel_yaml("b", "http://127.0.0.1:9/api/v2", max_retries=1),
        ],
    )

    def evaluated(result) -> list[str]:
        return [
            e.event_specific_data.check_name
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]

    a = materialize(pipeline, instance, "panel_balances", "a")
    assert a.success
    assert evaluated(a) == ["low_balance_a"]  # b's stale (here: missing) balance is not re-reported
    b = materialize(pipeline, instance, "panel_balances", "b", raise_on_error=False)
    assert not b.success and evaluated(b) == []
    checks = dg.AssetSelection.checks_for_assets("panel_balances")
    whole = pipeline.defs().resolve_implicit_global_asset_job_def()
    unpartitioned = whole.get_subset(
        asset_check_selection=checks.resolve_checks(pipeline.defs().resolve_asset_graph())
    ).execute_in_process(instance=instance, raise_on_error=False)
    assert sorted(evaluated(unpartitioned)) == ["low_balance_a", "low_balance_b"]


def test_a_panel_name_with_a_dash_loads_and_gets_its_low_balance_check(
    tmp_path, monkeypatch, sim, instance
):
    """`[a-z0-9_-]+` is a valid panel name; Dagster names allow no `-`, so the check of panel
    `my-panel` is `low_balance_my_panel`, and a balance run of its partition evaluates it."""
    pipeline = make_pipeline(
        tmp_path, monkeypatch, [panel_yaml("my-panel", sim.url, low_balance_threshold='"5"')]
    )
    defs = pipeline.defs()
    dg.Definitions.validate_loadable(defs)
    result = materialize(pipeline, instance, "panel_balances", partition="my-panel")
    [check] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert check.check_name == "low_balance_my_panel"
    assert check.passed


def test_the_analytics_views_are_assets_with_the_warehouses_columns(pipeline):
    """Each view is an asset downstream of the tables it reads, and its column schema is what
    DuckDB describes on the real (migrated) warehouse file."""
    from smm_pipeline.warehouse import connect
    from smm_pipeline.warehouse.views import VIEW_NAMES

    graph = pipeline.defs().resolve_asset_graph()
    with connect(pipeline.db_path) as conn:
        for name in VIEW_NAMES:
            node = graph.get(dg.AssetKey(name))
            schema = node.metadata["dagster/column_schema"]
            described = conn.execute(f"DESCRIBE {name}").fetchall()
            assert [(c.name, c.type) for c in schema.columns] == [(r[0], r[1]) for r in described]
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("spend_daily")).parent_keys}
    assert parents == {"spend_facts"}
    lineage = {k.to_user_string() for k in graph.get(dg.AssetKey("order_facts")).parent_keys}
    assert {"orders", "service_catalog", "panel_balances"} <= lineage
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("orders")).parent_keys} == {
        "service_catalog",
        "panel_balances",
    }
