"""The sample files in data/samples/: each valid one passes the real intake against the
simulator's default catalog and the shipped panels.yaml, the broken one fails for each of its
mistakes, and the all-types file goes end to end through the real jobs against a simulator
configured exactly like the shipped `simulator` panel."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from smm_devkit.simulator.catalog import SERVICE_TYPES, default_catalog
from smm_pipeline.config import PROJECT_ROOT, Settings, load_settings
from smm_pipeline.intake.orders import CatalogEntry, validate_order_file
from smm_pipeline.intake.refills_cancels import read_cancel_file, read_refill_file
from smm_pipeline.operations.inbox import Folders
from smm_pipeline.panel.parsing import parse_services
from smm_pipeline_tests.conftest import TEST_KEY, Pipeline
from smm_pipeline_tests.dagster_helpers import (
    drop_and_run,
    event_texts,
    look_twice,
    run_requested,
    settle,
)

SAMPLES = PROJECT_ROOT / "data" / "samples"
SHIPPED_PANELS = PROJECT_ROOT / "panels.yaml"
ORDER_SAMPLES = sorted(p.name for p in SAMPLES.glob("orders_*.csv"))
VALID_ORDER_SAMPLES = [n for n in ORDER_SAMPLES if n != "orders_with_errors.csv"]
SIMULATOR_BALANCE = Decimal("1000.00")  # the simulator's default starting balance


def type_file(service_type: str) -> str:
    return "orders_" + re.sub(r"[^a-z0-9]+", "_", service_type.lower()) + ".csv"


def records(name: str) -> list[dict[str, str]]:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture(scope="module")
def shipped_settings() -> Settings:
    return load_settings(SHIPPED_PANELS, check_keys=False)


@pytest.fixture(scope="module")
def catalog() -> dict[tuple[str, int], CatalogEntry]:
    """The simulator's default catalog, parsed the way the pipeline parses `services`."""
    return {("simulator", s.service_id): CatalogEntry(s) for s in parse_services(default_catalog())}


def service_types() -> dict[int, str]:
    return {int(s["service"]): s["type"] for s in default_catalog()}


def test_the_shipped_panels_file_has_one_enabled_panel_the_samples_are_for(shipped_settings):
    assert shipped_settings.panel_names == ("simulator",)


def test_one_sample_file_per_service_type_holding_only_that_type():
    types = service_types()
    expected = {type_file(t) for t in SERVICE_TYPES}
    assert expected <= set(ORDER_SAMPLES)
    assert set(ORDER_SAMPLES) - expected == {"orders_all_types.csv", "orders_with_errors.csv"}
    for service_type in SERVICE_TYPES:
        rows = records(type_file(service_type))
        assert rows, type_file(service_type)
        assert {types[int(r["service"])] for r in rows} == {service_type}


@pytest.mark.parametrize("name", VALID_ORDER_SAMPLES)
def test_valid_sample_passes_intake_against_the_default_catalog(name, catalog, shipped_settings):
    content = (SAMPLES / name).read_bytes()
    result = validate_order_file(
        content, name, catalog, shipped_settings, {"simulator": SIMULATOR_BALANCE}
    )
    assert result.errors == []
    assert len(result.rows) == len(records(name))
    assert all(not row.warnings for row in result.rows), [r.warnings for r in result.rows]
    # Refs are the user's own in every sample (none derived), each with a campaign label.
    assert all(not row.ref_derived and row.campaign for row in result.rows)
    assert (
        0 < result.panel_totals["simulator"] <= shipped_settings.panel("simulator").max_batch_spend
    )


def test_all_types_sample_has_every_type_and_costs_exactly_what_the_rates_say(
    catalog, shipped_settings
):
    content = (SAMPLES / "orders_all_types.csv").read_bytes()
    result = validate_order_file(
        content, "orders_all_types.csv", catalog, shipped_settings, {"simulator": SIMULATOR_BALANCE}
    )
    assert {row.service_type for row in result.rows} == set(SERVICE_TYPES)
    costs = {row.ref: row.estimated_cost for row in result.rows}
    assert costs["all-ig-followers"] == Decimal("0.45")  # 0.90 × 500 / 1000
    assert costs["all-ig-likes-drip"] == Decimal("0.12")  # 0.12 × 200 × 5 runs / 1000
    assert costs["all-ig-visits-package"] == Decimal("0.45")  # a package: the flat rate
    assert costs["all-ig-custom-comments"] == Decimal("0.08")  # 10 lines × 8 / 1000
    assert costs["all-ig-auto-likes"] == Decimal("0.15")  # 0.15 × max 100 / 1000 × 10 posts
    assert result.panel_totals["simulator"] == sum(costs.values())


def test_refs_and_links_are_never_shared_between_sample_files():
    owner_of_ref: dict[str, str] = {}
    owner_of_link: dict[str, str] = {}
    for name in ORDER_SAMPLES:
        for row in records(name):
            ref = row["ref"]
            assert owner_of_ref.setdefault(ref, name) == name, (ref, name)
            target = row.get("link") or row["username"]
            assert owner_of_link.setdefault(target, name) == name, (target, name)
    assert len(owner_of_ref) == sum(len(records(n)) for n in VALID_ORDER_SAMPLES) + 10


def test_the_errors_sample_is_refused_for_each_of_its_mistakes(catalog, shipped_settings):
    content = (SAMPLES / "orders_with_errors.csv").read_bytes()
    result = validate_order_file(
        content,
        "orders_with_errors.csv",
        catalog,
        shipped_settings,
        {"simulator": SIMULATOR_BALANCE},
    )
    found = {(e.row, e.column) for e in result.errors}
    assert found == {
        (2, "service"),  # service 999 does not exist
        (3, "link"),  # no https://
        (4, "quantity"),  # below the minimum
        (5, "quantity"),  # "1,000"
        (6, "comments"),  # 3 comments, the minimum is 10
        (7, "usernames"),  # required for Mentions
        (8, "quantity"),  # a Package takes no quantity
        (9, "min"),  # min above max
        (9, "delay"),  # 25 is not an allowed delay
        (9, "expiry"),  # in the past
        (10, "runs"),  # zero runs
        (11, "ref"),  # the ref of row 1 again
    }
    # Every row but the first is wrong; the first, valid, is refused with the file.
    assert {e.row for e in result.errors} == set(range(2, 12))
    messages = " | ".join(e.message for e in result.errors)
    assert "service 999 does not exist" in messages
    assert "delay 25 is not allowed" in messages


def test_refill_and_cancel_samples_name_eligible_orders_of_the_all_types_sample(
    shipped_settings,
):
    orders = {row["ref"]: row for row in records("orders_all_types.csv")}
    flags = {int(s["service"]): s for s in default_catalog()}
    refills = read_refill_file((SAMPLES / "refills.csv").read_bytes(), "refills.csv",
                               shipped_settings)  # fmt: skip
    cancels = read_cancel_file((SAMPLES / "cancels.csv").read_bytes(), "cancels.csv",
                               shipped_settings)  # fmt: skip
    assert refills.ok and cancels.ok, (refills.errors, cancels.errors)
    assert len(refills.rows) == 4 and len(cancels.rows) == 2
    for row in refills.rows:
        assert row.panel == "simulator" and row.order_id is None
        assert flags[int(orders[row.ref]["service"])]["refill"], row.ref
    for row in cancels.rows:
        order = orders[row.ref]
        assert flags[int(order["service"])]["cancel"], row.ref
        assert int(order["runs"]) > 1, "a drip-feed order runs for hours: still cancelable"


# ------------------------------------------------------------------ end to end


@pytest.fixture
def shipped_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim) -> Pipeline:
    """The shipped panels.yaml, unchanged except that `simulator` points at the test's one."""
    document = yaml.safe_load(SHIPPED_PANELS.read_text(encoding="utf-8"))
    entry = next(p for p in document["panels"] if p["name"] == "simulator")
    entry["url"] = sim.url
    panels_file = tmp_path / "panels.yaml"
    panels_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    data = tmp_path / "data"
    db_path = data / "warehouse.duckdb"
    monkeypatch.setenv("SMM_PANELS_FILE", str(panels_file))
    monkeypatch.setenv("SMM_DATA_DIR", str(data))
    monkeypatch.setenv("SMM_DUCKDB_PATH", str(db_path))
    monkeypatch.setenv(entry["key_env"], TEST_KEY)
    folders = Folders(data)
    folders.ensure()
    return Pipeline(tmp_path, load_settings(panels_file), db_path, folders, panels_file)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def results(pipeline: Pipeline, name: str) -> list[dict[str, str]]:
    text = (pipeline.folders.processed / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def drop_action(pipeline: Pipeline, instance, kind: str, sample: str):
    sensor, job = {
        "refills": ("refill_csv_sensor", "request_refills"),
        "cancels": ("cancel_csv_sensor", "cancel_orders"),
    }[kind]
    settle(pipeline.drop(kind, sample, (SAMPLES / sample).read_bytes()))
    defs = pipeline.defs()
    ticked = look_twice(defs, sensor, instance)
    assert len(ticked.run_requests) == 1, ticked.skip_message
    return run_requested(defs, ticked.run_requests[0], instance, job)


def test_all_types_sample_submits_then_cancels_and_refills_against_the_simulator(
    shipped_pipeline, sim, instance
):
    pipeline = shipped_pipeline
    sim.configure(outcome_weights={"Completed": 1}, refill_rejected_percent=0)
    content = (SAMPLES / "orders_all_types.csv").read_bytes()
    submitted = drop_and_run(pipeline, instance, "orders_all_types.csv", content)
    assert submitted.success, event_texts(submitted)
    rows = results(pipeline, "orders_all_types.results.csv")
    assert [r["submit_state"] for r in rows] == ["submitted"] * 23
    on_panel = {o["order"]: o for o in sim.orders()}
    assert sorted(on_panel) == sorted(int(r["order_id"]) for r in rows)
    sample = {r["ref"]: r for r in records("orders_all_types.csv")}
    for row in rows:
        sent = on_panel[int(row["order_id"])]
        assert sent["service"] == int(row["service"])
        expected_target = sample[row["ref"]]["link"] or sample[row["ref"]]["username"]
        assert (sent["params"].get("link") or sent["params"]["username"]) == expected_target

    # Right away the drip-feed orders are still running: both cancels are accepted.
    canceled = drop_action(pipeline, instance, "cancels", "cancels.csv")
    assert canceled.success, event_texts(canceled)
    assert [r["result"] for r in results(pipeline, "cancels.results.csv")] == ["accepted"] * 2

    # Hours later everything else has completed: all four refills go out.
    sim.advance(6 * 3600)
    refilled = drop_action(pipeline, instance, "refills", "refills.csv")
    assert refilled.success, event_texts(refilled)
    refill_rows = results(pipeline, "refills.results.csv")
    assert [r["state"] for r in refill_rows] == ["submitted"] * 4, refill_rows
    assert len(sim.refills()) == 4

    # The broken sample is refused whole: nothing more reaches the panel.
    before = len(sim.orders())
    broken = drop_and_run(
        pipeline,
        instance,
        "orders_with_errors.csv",
        (SAMPLES / "orders_with_errors.csv").read_bytes(),
    )
    assert not broken.success
    assert len(sim.orders()) == before
    assert (pipeline.folders.rejected / "orders_with_errors.errors.csv").is_file()
    with duckdb.connect(str(pipeline.db_path), read_only=True) as con:
        states = con.execute(
            "SELECT submit_state, count(*) FROM orders GROUP BY ALL ORDER BY 1"
        ).fetchall()
    assert states == [("submitted", 23)]
