"""The bundled panel simulator, driven over real loopback HTTP with plain httpx.

These tests pin the panel's side of the protocol (seed answer shapes, error sentences, money
arithmetic, progress, faults, persistence) so the client tests can trust what they run against.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from smm_devkit.simulator.__main__ import build_parser
from smm_devkit.simulator.catalog import SERVICE_TYPES, CatalogError, load_catalog_file
from smm_devkit.simulator.faults import parse_fault_spec
from smm_devkit.simulator.journal import Journal, JournalError
from smm_devkit.simulator.server import _is_loopback
from smm_devkit.simulator.testing import (
    SimulatorAdminError,
    running_simulator,
    start_simulator_process,
)

KEY = "test-key"
ALL_COMPLETED = {"Completed": 100}
STATUS_FIELDS = {"charge", "start_count", "status", "remains", "currency"}


@pytest.fixture
def sim():
    with running_simulator(keys=(KEY, "second-key")) as handle:
        yield handle


@pytest.fixture
def client():
    with httpx.Client(timeout=10.0, trust_env=False) as http:
        yield http


def call(client: httpx.Client, sim, action: str, key: str = KEY, **params: Any) -> Any:
    response = client.post(sim.url, data={"key": key, "action": action, **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def add(client, sim, service: int = 1, link: str = "https://instagram.com/p/a", **params) -> int:
    answer = call(client, sim, "add", service=str(service), link=link, **params)
    assert set(answer) == {"order"}, answer
    assert isinstance(answer["order"], int)
    return answer["order"]


def balance(client, sim) -> Decimal:
    return Decimal(call(client, sim, "balance")["balance"])


# -- shapes ---------------------------------------------------------------------------------------


def test_services_answer_the_seed_shape_for_every_type(sim, client):
    services = call(client, sim, "services")
    assert len(services) >= 30
    for service in services:
        assert list(service) == [
            "service",
            "name",
            "type",
            "category",
            "rate",
            "min",
            "max",
            "refill",
            "cancel",
        ]
        assert isinstance(service["service"], int)
        assert all(isinstance(service[k], str) for k in ("rate", "min", "max"))
        assert all(isinstance(service[k], bool) for k in ("refill", "cancel"))
        Decimal(service["rate"])
        assert int(service["min"]) <= int(service["max"])
    assert {s["type"] for s in services} == set(SERVICE_TYPES)
    assert {"Instagram", "TikTok", "YouTube", "Telegram"} <= {s["category"] for s in services}
    assert {s["refill"] for s in services} == {True, False}
    assert {s["cancel"] for s in services} == {True, False}
    assert services[0]["rate"] == "0.90" and services[0]["min"] == "50"


def test_balance_shape_and_add_charges_exactly(sim, client):
    assert call(client, sim, "balance") == {"balance": "1000.00", "currency": "USD"}
    order_id = add(client, sim, 1, quantity="309")
    assert order_id == 10001
    status = call(client, sim, "status", order=str(order_id))
    assert status == {
        "charge": "0.2781",
        "start_count": "0",
        "status": "Pending",
        "remains": "309",
        "currency": "USD",
    }
    assert balance(client, sim) == Decimal("1000.00") - Decimal("0.2781")
    assert call(client, sim, "balance")["balance"] == "999.7219"


def test_status_multi_is_keyed_by_id_with_per_item_errors(sim, client):
    first = add(client, sim, 1, link="https://x.test/1", quantity="100")
    second = add(client, sim, 2, link="https://x.test/2", quantity="20")
    answer = call(client, sim, "status", orders=f"{first}, {second},10,abc")
    assert list(answer) == [str(first), str(second), "10", "abc"]
    assert set(answer[str(first)]) == STATUS_FIELDS
    assert answer[str(second)]["charge"] == "0.0024"
    assert answer["10"] == {"error": "Incorrect order ID"}
    assert answer["abc"] == {"error": "Incorrect order ID"}
    hundred = ",".join(str(i) for i in range(1, 101))
    assert len(call(client, sim, "status", orders=hundred)) == 100
    too_many = ",".join(str(i) for i in range(1, 102))
    for action, field in (
        ("status", "orders"),
        ("refill", "orders"),
        ("refill_status", "refills"),
        ("cancel", "orders"),
    ):
        assert call(client, sim, action, **{field: too_many}) == {"error": "Incorrect request"}


CATALOG_FILE = """[
  {"service": 7, "name": "Followers", "type": "Default", "category": "First Category",
   "rate": 0.90, "min": 50, "max": "10000", "refill": true, "cancel": false,
   "average_time": 1.5},
  {"service": 8, "name": "Comments", "type": "Custom Comments", "category": "Second Category",
   "rate": "8", "min": "10", "max": "1500", "refill": false, "cancel": true}
]"""


def test_catalog_file_is_served_in_the_answer_shape(tmp_path: Path):
    path = tmp_path / "catalog.json"
    path.write_text(CATALOG_FILE, encoding="utf-8")
    proc = start_simulator_process(
        keys=("k1", "k2"), catalog_file=path, balance="50.5", currency="EUR"
    )
    try:
        with httpx.Client(timeout=10.0, trust_env=False) as http:
            services = call(http, proc, "services", key="k2")
            assert services[0] == {
                "service": 7,
                "name": "Followers",
                "type": "Default",
                "category": "First Category",
                "rate": "0.90",
                "min": "50",
                "max": "10000",
                "refill": True,
                "cancel": False,
                "average_time": "1.5",
            }
            assert [s["service"] for s in services] == [7, 8]
            assert call(http, proc, "balance", key="k1") == {"balance": "50.50", "currency": "EUR"}
            order_id = add(http, proc, 7, quantity="100", key="k1")
            assert call(http, proc, "status", order=str(order_id), key="k1")["currency"] == "EUR"
    finally:
        assert proc.stop() == 0
    path.write_text(CATALOG_FILE.replace('"service": 8', '"service": 7'), encoding="utf-8")
    with pytest.raises(CatalogError, match="duplicate service id 7"):
        load_catalog_file(path)


def test_get_with_query_string_is_served_like_php(sim, client):
    response = client.get(sim.url, params={"key": KEY, "action": "balance"})
    assert response.json() == {"balance": "1000.00", "currency": "USD"}


# -- errors ---------------------------------------------------------------------------------------


def test_error_sentences(sim, client):
    assert call(client, sim, "balance", key="wrong") == {"error": "Invalid API key"}
    assert client.post(sim.url, data={"action": "balance"}).json() == {"error": "Invalid API key"}
    assert call(client, sim, "balance", key="second-key")["currency"] == "USD"
    assert client.post(sim.url, data={"key": KEY}).json() == {"error": "Incorrect request"}
    assert call(client, sim, "frobnicate") == {"error": "Incorrect request"}
    assert call(client, sim, "status") == {"error": "Incorrect request"}
    assert call(client, sim, "cancel", order="1") == {"error": "Incorrect request"}

    def add_error(**params: str) -> str:
        answer = call(client, sim, "add", **params)
        assert set(answer) == {"error"}, answer
        return answer["error"]

    assert add_error(service="999", link="https://a", quantity="100") == "Incorrect service ID"
    assert add_error(service="x", link="https://a", quantity="100") == "Incorrect service ID"
    assert add_error(link="https://a", quantity="100") == "Incorrect service ID"
    assert (
        add_error(service="1", link="https://a", quantity="49") == "Quantity less than minimal 50"
    )
    assert add_error(service="1", link="https://a") == "Quantity less than minimal 50"
    assert (
        add_error(service="1", link="https://a", quantity="10001")
        == "Quantity more than maximal 10000"
    )
    assert add_error(service="1", link="https://a", quantity="1e3") == "Incorrect quantity"
    assert add_error(service="1", quantity="100") == "Incorrect link"
    assert add_error(service="21", link="https://a", quantity="1000000") == (
        "Not enough funds on balance"
    )
    assert add(client, sim, 1, link="https://a", quantity="100")
    assert add_error(service="1", link="https://a", quantity="100") == (
        "You have active order with this link. Please wait until order being completed."
    )
    # Another service on the same link is fine.
    assert add(client, sim, 2, link="https://a", quantity="100")
    assert call(client, sim, "status", order="42") == {"error": "Incorrect order ID"}
    assert call(client, sim, "refill", order="42") == {"error": "Incorrect order ID"}
    assert call(client, sim, "refill_status", refill="42") == {"error": "Refill not found"}
    errors = sim.stats()["errors"]
    assert errors["Invalid API key"] == 2
    assert errors["Incorrect service ID"] == 3


def test_duplicate_link_is_allowed_once_the_first_order_finished(sim, client):
    sim.configure(outcome_weights=ALL_COMPLETED)
    add(client, sim, 1, link="https://a", quantity="100")
    sim.advance(31)
    assert add(client, sim, 1, link="https://a", quantity="100")


# -- types ----------------------------------------------------------------------------------------

TEN_LINES = "\r\n".join(f"comment {i}" for i in range(10))
TYPE_CASES = [
    # (service, params, expected charge, expected remains while pending)
    (1, {"quantity": "100"}, "0.09", 100),
    (1, {"quantity": "100", "runs": "3", "interval": "10"}, "0.27", 300),
    (15, {}, "0.45", 1),
    (29, {"quantity": "1000", "keywords": "smm panel\nbuy likes"}, "2.20", 1000),
    (4, {"comments": TEN_LINES}, "0.08", 10),
    (5, {"comments": "nice\nwow\ngreat"}, "2.50", 3),
    (6, {"quantity": "100", "usernames": "alice\nbob"}, "0.32", 100),
    (7, {"quantity": "100", "usernames": "alice\nbob", "hashtags": "#a\n#b"}, "0.38", 100),
    (8, {"usernames": "\n".join(f"user{i}" for i in range(10))}, "0.041", 10),
    (9, {"quantity": "100", "hashtag": "#travel"}, "0.35", 100),
    (10, {"quantity": "100", "username": "https://instagram.com/natgeo"}, "0.36", 100),
    (11, {"quantity": "100", "media": "https://instagram.com/p/xyz"}, "0.36", 100),
    (12, {"quantity": "50", "username": "commenter"}, "0.0875", 50),
    (13, {"username": "commenter", "comments": "a\nb\nc\nd\ne"}, "0.0475", 5),
    (24, {"quantity": "100", "answer_number": "2"}, "0.11", 100),
    (28, {"quantity": "100", "groups": "@group_one\n@group_two"}, "0.65", 100),
]


@pytest.mark.parametrize(("service", "params", "charge", "remains"), TYPE_CASES)
def test_every_type_is_validated_and_priced(sim, client, service, params, charge, remains):
    order_id = add(client, sim, service, link=f"https://t.test/{service}", **params)
    status = call(client, sim, "status", order=str(order_id))
    assert status["charge"] == charge
    assert status["remains"] == str(remains)
    assert balance(client, sim) == Decimal("1000.00") - Decimal(charge)
    assert sim.order(order_id)["params"] == {
        "service": str(service),
        "link": f"https://t.test/{service}",
        **params,
    }


MISSING_FIELD_CASES = [
    (29, {"quantity": "1000"}, "keywords"),
    (4, {}, "comments"),
    (6, {"quantity": "100", "usernames": "\n\n"}, "usernames"),
    (7, {"quantity": "100", "usernames": "a"}, "hashtags"),
    (9, {"quantity": "100"}, "hashtag"),
    (10, {"quantity": "100"}, "username"),
    (11, {"quantity": "100"}, "media"),
    (13, {"comments": "a\nb\nc\nd\ne"}, "username"),
    (24, {"quantity": "100"}, "answer_number"),
    (28, {"quantity": "100"}, "groups"),
]


@pytest.mark.parametrize(("service", "params", "field"), MISSING_FIELD_CASES)
def test_missing_type_fields_are_refused(sim, client, service, params, field):
    answer = call(client, sim, "add", service=str(service), link="https://t.test", **params)
    assert answer == {"error": f"Field {field} is required"}
    assert sim.stats()["orders_total"] == 0


def test_list_quantities_and_drip_feed_limits(sim, client):
    def add_error(service: int, **params: str) -> str:
        return call(client, sim, "add", service=str(service), link="https://q", **params)["error"]

    assert add_error(4, comments="only\none") == "Quantity less than minimal 10"
    assert add_error(5, comments="\n".join("c" * 11)) == "Quantity more than maximal 10"
    assert add_error(1, quantity="100", runs="0", interval="5") == "Incorrect runs"
    assert add_error(1, quantity="100", runs="2") == "Incorrect interval"
    assert add_error(24, quantity="100", answer_number="first") == "Incorrect answer number"


def test_subscriptions_validate_and_spawn_orders_per_post(sim, client):
    sim.configure(outcome_weights=ALL_COMPLETED)

    def sub_error(**params: str) -> str:
        base = {"service": "14", "username": "natgeo", "min": "50", "max": "100", "delay": "0"}
        return call(client, sim, "add", **{**base, **params})["error"]

    assert sub_error(delay="7") == "Incorrect delay"
    assert sub_error(min="10") == "Quantity less than minimal 50"
    assert sub_error(max="6000") == "Quantity more than maximal 5000"
    assert sub_error(min="200", max="100") == "Min quantity is greater than max quantity"
    assert sub_error(expiry="2025-12-31") == "Incorrect expiry date"
    assert sub_error(expiry="31/02/2099") == "Incorrect expiry date"
    assert sub_error(username="") == "Field username is required"

    answer = call(
        client,
        sim,
        "add",
        service="14",
        username="natgeo",
        min="50",
        max="100",
        posts="2",
        delay="20",
        expiry="31/12/2099",
    )
    sub_id = answer["order"]
    assert call(client, sim, "status", order=str(sub_id)) == {
        "status": "Active",
        "expiry": "31/12/2099",
        "posts": "0",
        "orders": [],
    }
    assert balance(client, sim) == Decimal("1000.00")
    sim.advance(6 * 3600 + 20 * 60)
    status = call(client, sim, "status", order=str(sub_id))
    assert status["posts"] == "1" and len(status["orders"]) == 1
    child = call(client, sim, "status", order=str(status["orders"][0]))
    assert set(child) == STATUS_FIELDS
    quantity = int(child["remains"])
    assert 50 <= quantity <= 100
    assert Decimal(child["charge"]) == Decimal("0.15") * quantity / 1000
    assert balance(client, sim) == Decimal("1000.00") - Decimal(child["charge"])
    sim.advance(6 * 3600)
    final = call(client, sim, "status", orders=str(sub_id))[str(sub_id)]
    assert final["status"] == "Completed" and final["posts"] == "2" and len(final["orders"]) == 2
    sim.advance(24 * 3600)
    assert len(call(client, sim, "status", order=str(sub_id))["orders"]) == 2


def test_subscription_old_posts_are_ordered_and_paid_at_once(sim, client):
    sub_id = call(
        client,
        sim,
        "add",
        service="20",
        username="creator",
        min="500",
        max="1000",
        old_posts="3",
        delay="0",
    )["order"]
    status = call(client, sim, "status", order=str(sub_id))
    assert status["posts"] == "3" and status["expiry"] is None
    children = [call(client, sim, "status", order=str(i)) for i in status["orders"]]
    spent = sum((Decimal(c["charge"]) for c in children), Decimal(0))
    assert spent > 0
    assert balance(client, sim) == Decimal("1000.00") - spent
    assert [sim.order(i)["subscription"] for i in status["orders"]] == [sub_id] * 3


# -- money: partial, cancel, refill ---------------------------------------------------------------


def test_partial_refunds_the_undelivered_share_exactly(sim, client):
    sim.configure(outcome_weights={"Partial": 100})
    order_id = add(client, sim, 1, quantity="1000")
    sim.advance(30)
    status = call(client, sim, "status", order=str(order_id))
    assert status["status"] == "Partial"
    remains = int(status["remains"])
    assert 0 < remains < 1000
    expected = Decimal("0.90") - Decimal("0.90") * remains / 1000
    assert Decimal(status["charge"]) == expected
    assert balance(client, sim) == Decimal("1000.00") - expected

    # An operator-forced Partial follows the same arithmetic, and replaces the earlier refund.
    sim.set_order(order_id, status="Partial", remains=250)
    status = call(client, sim, "status", order=str(order_id))
    assert (status["charge"], status["remains"]) == ("0.675", "250")
    assert balance(client, sim) == Decimal("999.325")
    sim.set_order(order_id, status="Partial", remains=1)
    # 0.9 x 1 / 1000 = 0.0009 refunded
    assert call(client, sim, "status", order=str(order_id))["charge"] == "0.8991"
    assert balance(client, sim) == Decimal("999.1009")


def test_partial_refund_of_a_package_is_cut_to_six_decimals(sim, client):
    # A package costs its flat rate whatever its size, so the refunded share need not
    # terminate: 2.50 x 1 / 3 = 0.8333... is cut to 0.833333 and the panel keeps the rest.
    order_id = add(client, sim, 5, link="https://c", comments="one\ntwo\nthree")
    sim.set_order(order_id, status="Partial", remains=1)
    assert call(client, sim, "status", order=str(order_id))["charge"] == "1.666667"
    assert balance(client, sim) == Decimal("998.333333")


def test_cancel_refunds_unfinished_orders_where_allowed(sim, client):
    cancellable = add(client, sim, 1, quantity="1000")  # cancel=true, charge 0.90
    not_cancellable = add(client, sim, 3, link="https://b", quantity="100")  # cancel=false
    answer = call(client, sim, "cancel", orders=f"{cancellable},{not_cancellable},77")
    assert answer == [
        {"order": cancellable, "cancel": 1},
        {"order": not_cancellable, "cancel": {"error": "Cancel is disabled for this service"}},
        {"order": 77, "cancel": {"error": "Incorrect order ID"}},
    ]
    status = call(client, sim, "status", order=str(cancellable))
    assert (status["status"], status["charge"], status["remains"]) == ("Canceled", "0", "1000")
    assert balance(client, sim) == Decimal("1000.00") - Decimal("0.025")
    sim.advance(3600)
    assert call(client, sim, "status", order=str(cancellable))["status"] == "Canceled"
    assert call(client, sim, "cancel", orders=str(cancellable)) == [
        {
            "order": cancellable,
            "cancel": {"error": "The order cannot be canceled in its current status"},
        }
    ]


def test_refill_only_for_finished_orders_on_refill_services(sim, client):
    sim.configure(outcome_weights=ALL_COMPLETED, refill_rejected_percent=0)
    refillable = add(client, sim, 1, quantity="100")
    no_refill = add(client, sim, 2, link="https://b", quantity="100")
    assert call(client, sim, "refill", order=str(refillable)) == {
        "error": "Refill is not available for this order"
    }
    sim.advance(30)
    assert call(client, sim, "refill", order=str(refillable)) == {"refill": "501"}
    assert call(client, sim, "refill", orders=f"{no_refill},{refillable},5") == [
        {"order": no_refill, "refill": {"error": "Refill is disabled for this service"}},
        {
            "order": refillable,
            "refill": {"error": "The refill task is not completed for this order"},
        },
        {"order": 5, "refill": {"error": "Incorrect order ID"}},
    ]
    assert call(client, sim, "refill_status", refill="501") == {"status": "Pending"}
    sim.advance(7)
    assert call(client, sim, "refill_status", refill="501") == {"status": "In progress"}
    sim.advance(30)
    assert call(client, sim, "refill_status", refill="501") == {"status": "Completed"}
    # A Partial order on a refill service is refillable too; refills can be Rejected.
    sim.configure(refill_rejected_percent=100)
    partial = add(client, sim, 16, link="https://c", quantity="1000")
    sim.set_order(partial, status="Partial", remains=100)
    assert call(client, sim, "refill", orders=f"{refillable},{partial}") == [
        {"order": refillable, "refill": 502},
        {"order": partial, "refill": 503},
    ]
    sim.advance(30)
    assert call(client, sim, "refill_status", refills="501,502,503,9") == [
        {"refill": 501, "status": "Completed"},
        {"refill": 502, "status": "Rejected"},
        {"refill": 503, "status": "Rejected"},
        {"refill": 9, "status": {"error": "Refill not found"}},
    ]
    sim.set_refill(503, "Canceled")
    assert call(client, sim, "refill_status", refill="503") == {"status": "Canceled"}


def test_operator_can_force_any_status_word(sim, client):
    order_id = add(client, sim, 1, quantity="100")
    forced = sim.set_order(order_id, status="On hold", start_count=5)
    assert forced["forced"] is True
    status = call(client, sim, "status", order=str(order_id))
    assert (status["status"], status["start_count"], status["charge"]) == ("On hold", "5", "0.09")
    with pytest.raises(SimulatorAdminError):
        sim.set_order(order_id, status="Partial", remains=101)
    with pytest.raises(SimulatorAdminError):
        sim.set_order(4242, status="Completed")


def test_set_balance_is_exact_and_enforced(sim, client):
    assert sim.set_balance("0.05") == Decimal("0.05")
    assert call(client, sim, "balance") == {"balance": "0.05", "currency": "USD"}
    answer = call(client, sim, "add", service="1", link="https://a", quantity="100")
    assert answer == {"error": "Not enough funds on balance"}
    sim.set_balance("12.345678", currency="EUR")
    assert call(client, sim, "balance") == {"balance": "12.345678", "currency": "EUR"}
    with pytest.raises(SimulatorAdminError):
        sim.set_balance("lots")


# -- progress -------------------------------------------------------------------------------------


def test_progress_is_deterministic_and_driven_only_by_the_clock(client):
    def run() -> tuple[list[dict], list[str]]:
        with running_simulator(keys=(KEY,)) as s:
            ids = [add(client, s, 1, link=f"https://p/{i}", quantity="1000") for i in range(40)]
            timeline = []
            for step in (0, 7, 10, 20, 2000):
                s.advance(step)
                timeline.append(call(client, s, "status", orders=",".join(map(str, ids))))
            return timeline, [s.order(i)["outcome"] for i in ids]

    timeline, outcomes = run()
    assert run() == (timeline, outcomes)
    assert len(set(outcomes)) >= 3, outcomes
    ids = list(timeline[0])
    assert all(v["status"] == "Pending" and v["remains"] == "1000" for v in timeline[0].values())
    expected_at_7 = {"Processing": "Processing", "Canceled": "Canceled"}
    expected_at_37 = {
        "Completed": "Completed",
        "Processing": "Completed",
        "Partial": "Partial",
        "Slow": "In progress",
        "Canceled": "Canceled",
    }
    for order_id, outcome in zip(ids, outcomes, strict=True):
        at_7, at_17, at_37, at_end = (timeline[i][order_id] for i in (1, 2, 3, 4))
        assert at_7["status"] == expected_at_7.get(outcome, "In progress")
        assert at_37["status"] == expected_at_37[outcome]
        if outcome in ("Completed", "Partial", "Processing", "Slow"):
            assert int(at_17["remains"]) < int(at_7["remains"]) <= 1000
            assert at_7["start_count"] == at_37["start_count"] != "0"
        assert at_end["status"] == expected_at_37[outcome].replace("In progress", "Completed")
        if outcome == "Canceled":
            assert at_end["charge"] == "0"


def test_clock_can_start_in_the_past_and_orders_are_dated_by_it(client):
    """`clock_start`: a panel whose history begins weeks ago (the demo plays a month)."""
    weeks_ago = time.time() - 35 * 86400
    with running_simulator(keys=(KEY,), clock_start=weeks_ago, progress_seconds=60) as s:
        assert s.clock()["now"] == pytest.approx(weeks_ago)  # frozen at the start
        first = add(client, s, 1, quantity="1000")
        s.advance(86400)
        second = add(client, s, 1, link="https://instagram.com/p/b", quantity="1000")
        orders = {o["order"]: o for o in s.orders()}
        created = {i: datetime.fromisoformat(orders[i]["created_at"]).timestamp() for i in orders}
        assert created[first] == pytest.approx(weeks_ago, abs=1)
        assert created[second] == pytest.approx(weeks_ago + 86400, abs=1)
        assert orders[first]["status"] not in ("Pending", "In progress")  # a day went by
        assert s.clock()["now"] == pytest.approx(weeks_ago + 86400)


# -- persistence ----------------------------------------------------------------------------------


def _snapshot(client: httpx.Client, sim, ids: list[int]) -> dict[str, Any]:
    return {
        "status": call(client, sim, "status", orders=",".join(map(str, ids))),
        "balance": call(client, sim, "balance"),
        "services": call(client, sim, "services"),
        "refills": call(client, sim, "refill_status", refills="501"),
        "orders": sim.orders(),
        "clock": sim.clock()["now"],
    }


def test_state_survives_a_restart(tmp_path: Path, client):
    state = tmp_path / "simulator_state.jsonl"
    with running_simulator(keys=(KEY,), state_file=state) as s:
        s.set_balance("500.25")
        s.configure(outcome_weights={"Partial": 100}, refill_rejected_percent=0)
        first = add(client, s, 1, quantity="1000")
        second = add(client, s, 16, link="https://b", quantity="500")
        call(client, s, "cancel", orders=str(second))
        sub = call(client, s, "add", service="14", username="u", min="50", max="60", delay="0")
        s.advance(6 * 3600 + 40)
        assert call(client, s, "refill", order=str(first)) == {"refill": "501"}
        s.patch_service(1, rate="1.10")
        s.remove_service(2)
        ids = [first, second, sub["order"]]
        before = _snapshot(client, s, ids)
    assert before["status"][str(sub["order"])]["orders"]
    with running_simulator(keys=(KEY,), state_file=state, balance="5") as s:
        assert _snapshot(client, s, ids) == before
        assert (
            add(client, s, 3, link="https://c", quantity="100")
            == max(o["order"] for o in before["orders"]) + 1
        )


def test_state_survives_sigkill(tmp_path: Path):
    state = tmp_path / "simulator_state.jsonl"
    proc = start_simulator_process(state_file=state)
    try:
        with httpx.Client(timeout=10.0, trust_env=False) as http:
            ids = [add(http, proc, 1, link=f"https://k/{i}", quantity="100") for i in range(5)]
            call(http, proc, "cancel", orders=str(ids[0]))
            proc.advance(10)
            before = _snapshot(http, proc, ids)
    finally:
        proc.kill()
    assert proc.process.returncode == -9
    again = proc.respawn()
    try:
        with httpx.Client(timeout=10.0, trust_env=False) as http:
            assert _snapshot(http, again, ids) == before
            assert add(http, again, 1, link="https://k/new", quantity="100") == ids[-1] + 1
    finally:
        assert again.stop() == 0


def test_a_torn_last_journal_line_is_dropped(tmp_path: Path, client):
    state = tmp_path / "simulator_state.jsonl"
    with running_simulator(keys=(KEY,), state_file=state) as s:
        order_id = add(client, s, 1, quantity="100")
    with state.open("ab") as journal:
        journal.write(b'{"e":"add","t":17')
    with running_simulator(keys=(KEY,), state_file=state) as s:
        assert call(client, s, "status", order=str(order_id))["remains"] == "100"
        assert add(client, s, 1, link="https://other", quantity="100") == order_id + 1
    events = Journal(state).read()
    assert [e["e"] for e in events] == ["genesis", "add", "add"]
    # Damage before the end is not a torn write: refuse rather than lose acknowledged events.
    lines = state.read_bytes().splitlines(keepends=True)
    state.write_bytes(lines[0] + b'{"e":"add"\n' + b"".join(lines[1:]))
    with pytest.raises(JournalError, match="damaged line"):
        Journal(state).read()


# -- faults ---------------------------------------------------------------------------------------

ADD_FORM = {"key": KEY, "action": "add", "service": "1", "link": "https://a", "quantity": "100"}


def test_drop_before_commit_closes_the_connection_without_answer(sim):
    sim.inject("drop_before", action="add")
    body = b"key=test-key&action=add&service=1&link=https%3A%2F%2Fa&quantity=100"
    head = (
        b"POST /api/v2 HTTP/1.1\r\nHost: sim\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as sock:
        sock.sendall(head + body)
        try:
            received = sock.recv(65536)
        except ConnectionResetError:
            received = b""
    assert received == b""
    assert sim.orders() == []
    assert sim.stats()["faults_fired"] == {"drop_before": 1}


def test_drop_after_commit_leaves_the_order_created(sim):
    sim.inject("drop_after", action="add")
    with httpx.Client(timeout=10.0, trust_env=False) as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            http.post(sim.url, data=ADD_FORM)
        (order,) = sim.orders()
        assert order["params"]["link"] == "https://a"
        assert balance(http, sim) == Decimal("999.91")


def test_error_pages_and_broken_answers(sim, client):
    sim.inject("http_500", action="add")
    response = client.post(sim.url, data=ADD_FORM)
    assert response.status_code == 500 and response.json() == {"error": "Internal Server Error"}

    sim.inject("html_502", action="add")
    response = client.post(sim.url, data=ADD_FORM)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "cloudflare" in response.text.lower()

    sim.inject("html_200")
    response = client.post(sim.url, data={"key": KEY, "action": "services"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "maintenance" in response.text.lower()
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert sim.orders() == []  # none of the faults above committed the add

    sim.inject("truncated_json", action="add")
    response = client.post(sim.url, data=ADD_FORM)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert '{"order":10001}'.startswith(response.text) and response.text
    assert [o["order"] for o in sim.orders()] == [10001]

    sim.inject("http_429", retry_after=7)
    response = client.post(sim.url, data={"key": KEY, "action": "balance"})
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert sim.faults() == []
    assert call(client, sim, "balance")["balance"] == "999.91"


def test_slow_answer_times_the_client_out_after_committing(sim):
    sim.inject("slow", action="add", seconds=5)
    with httpx.Client(timeout=0.3, trust_env=False) as http, pytest.raises(httpx.ReadTimeout):
        http.post(sim.url, data=ADD_FORM)
    assert [o["link"] for o in sim.orders()] == ["https://a"]


def test_faults_match_their_action_and_count(sim, client):
    sim.inject("http_500", action="status", times=2)
    assert call(client, sim, "balance")["currency"] == "USD"
    form = {"key": KEY, "action": "status", "order": "1"}
    assert [client.post(sim.url, data=form).status_code for _ in range(3)] == [500, 500, 200]
    sim.inject("html_502", times=-1)
    assert [client.post(sim.url, data=form).status_code for _ in range(3)] == [502, 502, 502]
    sim.clear_faults()
    assert client.post(sim.url, data=form).status_code == 200
    assert sim.stats()["faults_fired"] == {"http_500": 2, "html_502": 3}
    with pytest.raises(SimulatorAdminError):
        sim.inject("explode")
    with pytest.raises(SimulatorAdminError):
        sim.inject("slow", action="fly")


def test_redirect_302_commits_then_points_to_a_login_page(sim, client):
    sim.inject("redirect_302", action="add")
    response = client.post(sim.url, data=ADD_FORM)  # httpx does not follow redirects
    assert response.status_code == 302
    assert response.headers["location"] == "/login"
    assert response.headers["content-type"].startswith("text/html")
    assert [o["link"] for o in sim.orders()] == ["https://a"]
    sim.inject("redirect_302", action="add", commit=False)
    assert client.post(sim.url, data=ADD_FORM).status_code == 302
    assert len(sim.orders()) == 1
    assert sim.stats()["faults_fired"] == {"redirect_302": 2}


@pytest.mark.parametrize(("commit", "created"), [(None, 0), (False, 0), (True, 1)])
def test_html_403_block_page_commits_only_when_asked(sim, client, commit, created):
    options = {} if commit is None else {"commit": commit}
    (queued,) = sim.inject("html_403", action="add", **options)
    assert queued["commit"] is bool(created)
    response = client.post(sim.url, data=ADD_FORM)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "you have been blocked" in response.text and "Cloudflare" in response.text
    assert len(sim.orders()) == created
    assert sim.stats()["faults_fired"] == {"html_403": 1}


@pytest.mark.parametrize(("commit", "created"), [(None, 0), (True, 1)])
def test_empty_404_has_no_body(sim, client, commit, created):
    options = {} if commit is None else {"commit": commit}
    sim.inject("empty_404", action="add", **options)
    response = client.post(sim.url, data=ADD_FORM)
    assert (response.status_code, response.content) == (404, b"")
    assert len(sim.orders()) == created
    assert sim.stats()["faults_fired"] == {"empty_404": 1}


def test_refusal_answers_the_given_error_and_does_nothing(sim, client):
    sim.inject("refusal", action="add", message="Service is temporarily disabled")
    assert call(client, sim, "add", **{k: v for k, v in ADD_FORM.items() if k != "action"}) == {
        "error": "Service is temporarily disabled"
    }
    sim.inject("refusal", action="add")  # the default sentence
    assert client.post(sim.url, data=ADD_FORM).json() == {"error": "Incorrect request"}
    sim.inject("refusal", action="add", message="Forbidden", status=403)
    response = client.post(sim.url, data=ADD_FORM)
    assert (response.status_code, response.json()) == (403, {"error": "Forbidden"})
    assert response.headers["content-type"].startswith("application/json")
    assert sim.orders() == []
    assert balance(client, sim) == Decimal("1000.00")
    assert sim.stats()["faults_fired"] == {"refusal": 3}


def test_other_id_add_names_the_latest_earlier_order(sim, client):
    sim.inject("other_id", action="add")
    assert client.post(sim.url, data=ADD_FORM).json() == {"order": 10001}  # none earlier
    first = add(client, sim, 1, link="https://b", quantity="100")
    sim.inject("other_id")  # any write: taken by the add, not by the balance call
    assert call(client, sim, "balance")["currency"] == "USD"
    answer = client.post(sim.url, data={**ADD_FORM, "link": "https://c"}).json()
    assert answer == {"order": first}
    assert [o["order"] for o in sim.orders()] == [10001, first, first + 1]
    assert sim.orders()[-1]["link"] == "https://c"
    sim.inject("other_id", action="add")  # a refused add is answered as it is
    assert client.post(sim.url, data={**ADD_FORM, "service": "999"}).json() == {
        "error": "Incorrect service ID"
    }
    assert sim.stats()["faults_fired"] == {"other_id": 3}


def test_other_id_refill_names_an_earlier_refill(sim, client):
    sim.configure(outcome_weights=ALL_COMPLETED)
    ids = [add(client, sim, 1, link=f"https://r{i}", quantity="100") for i in range(4)]
    sim.advance(30)
    sim.inject("other_id", action="refill")  # no earlier refill: the new id
    assert call(client, sim, "refill", order=str(ids[0])) == {"refill": "501"}
    sim.inject("other_id", action="refill")
    assert call(client, sim, "refill", order=str(ids[1])) == {"refill": "501"}
    sim.inject("other_id", action="refill")
    assert call(client, sim, "refill", orders=f"{ids[2]},{ids[3]},5") == [
        {"order": ids[2], "refill": 502},
        {"order": ids[3], "refill": 502},
        {"order": 5, "refill": {"error": "Incorrect order ID"}},
    ]
    assert [(r["refill"], r["order"]) for r in sim.refills()] == [
        (501, ids[0]), (502, ids[1]), (503, ids[2]), (504, ids[3])
    ]  # fmt: skip
    assert sim.stats()["faults_fired"] == {"other_id": 3}


def test_other_id_cancel_answers_for_other_orders(sim, client):
    ids = [add(client, sim, 1, link=f"https://k{i}", quantity="100") for i in range(4)]
    sim.inject("other_id", action="cancel")
    assert call(client, sim, "cancel", orders=f"{ids[0]},{ids[1]}") == [
        {"order": ids[3], "cancel": 1},
        {"order": ids[2], "cancel": 1},
    ]
    statuses = {o["order"]: o["status"] for o in sim.orders()}
    assert [statuses[i] for i in ids] == ["Canceled", "Canceled", "Pending", "Pending"]
    sim.inject("other_id", action="cancel")  # every order asked: ids that do not exist
    assert call(client, sim, "cancel", orders=",".join(map(str, ids))) == [
        {"order": ids[3] + n, "cancel": c}
        for n, c in zip(
            (1, 2, 3, 4),
            [
                {"error": "The order cannot be canceled in its current status"},
                {"error": "The order cannot be canceled in its current status"},
                1,
                1,
            ],
            strict=True,
        )
    ]
    assert sim.stats()["faults_fired"] == {"other_id": 2}


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "refusal", "commit": True}, "always has commit=false"),
        ({"kind": "other_id", "commit": False}, "always has commit=true"),
        ({"kind": "other_id", "action": "status"}, "never fires on 'status'"),
        ({"kind": "status_variants", "action": "add"}, "never fires on 'add'"),
        ({"kind": "html_403", "message": "x"}, "refusal fault only"),
        ({"kind": "refusal", "status": 99}, "from 200 to 599"),
        ({"kind": "refusal", "message": ""}, "non-empty"),
        ({"kind": "refusal", "colour": "red"}, "unknown fault fields"),
    ],
)
def test_bad_faults_are_refused_with_the_reason(sim, fault, message):
    kind = fault.pop("kind")
    with pytest.raises(SimulatorAdminError, match=message):
        sim.inject(kind, **fault)
    assert sim.faults() == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("html_403", {"kind": "html_403", "action": None, "times": 1, "commit": False}),
        ("html_403:add:-1", {"action": "add", "times": -1}),
        ("empty_404:3", {"action": None, "times": 3}),
        ("empty_404::2:commit=true", {"action": None, "times": 2, "commit": True}),
        ("redirect_302:cancel", {"action": "cancel", "commit": True}),
        ("refusal:add:message=Error: no, sorry", {"message": "Error: no, sorry", "status": 200}),
        ("refusal:status=403:message=Forbidden", {"status": 403, "message": "Forbidden"}),
        ("slow:add:seconds=0.5", {"seconds": 0.5, "commit": True}),
        ("http_429:balance:2:retry_after=0", {"times": 2, "retry_after": 0}),
        ('{"kind": "other_id", "action": "refill", "times": -1}', {"action": "refill"}),
    ],
)
def test_fault_specs_of_the_command_line(spec, expected):
    parsed = parse_fault_spec(spec).to_json()
    assert {k: parsed[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("explode", "unknown fault kind"),
        ("html_403:fly", "unknown action"),
        ("html_403:add:1:2", "expected kind"),
        ("html_403:commit=true:add", "expected kind"),
        ("html_403:commit=maybe", "bad value for commit"),
        ("html_403:add:once", "bad value for times"),
        ("html_403:colour=red", "unknown option"),
        ("refusal:commit=true", "always has commit=false"),
        ("{not json", "not a JSON object"),
    ],
)
def test_bad_fault_specs_say_why(spec, message, capsys):
    with pytest.raises(ValueError, match=message):
        parse_fault_spec(spec)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--fault", spec])
    assert exited.value.code == 2
    assert "bad fault" in capsys.readouterr().err


def test_faults_given_on_the_command_line_are_served():
    proc = start_simulator_process(
        keys=(KEY,),
        faults=["refusal:add:-1:message=Service: disabled", "html_403:balance", "other_id:2"],
    )
    try:
        queued = proc.faults()
        assert [(f["kind"], f["action"], f["times"]) for f in queued] == [
            ("refusal", "add", -1), ("html_403", "balance", 1), ("other_id", None, 2)
        ]  # fmt: skip
        with httpx.Client(timeout=10.0, trust_env=False) as http:
            for _ in range(2):
                assert http.post(proc.url, data=ADD_FORM).json() == {"error": "Service: disabled"}
            response = http.post(proc.url, data={"key": KEY, "action": "balance"})
            assert response.status_code == 403 and "blocked" in response.text
            assert call(http, proc, "balance")["balance"] == "1000.00"
        assert proc.orders() == []
        assert proc.stats()["faults_fired"] == {"refusal": 2, "html_403": 1}
    finally:
        assert proc.stop() == 0


def test_bare_item_errors_and_status_variants(sim, client):
    sim.configure(outcome_weights=ALL_COMPLETED)
    order_id = add(client, sim, 1, quantity="100")
    sim.inject("bare_item_errors")
    answer = call(client, sim, "status", orders=f"{order_id},10")
    assert answer["10"] == "Incorrect order ID" and answer[str(order_id)]["status"] == "Pending"
    assert call(client, sim, "status", orders="10") == {"10": {"error": "Incorrect order ID"}}
    sim.configure(bare_item_errors=True)
    assert call(client, sim, "refill", orders="5") == [{"order": 5, "refill": "Incorrect order ID"}]
    assert call(client, sim, "cancel", orders="5") == [{"order": 5, "cancel": "Incorrect order ID"}]
    assert call(client, sim, "refill_status", refills="9") == [
        {"refill": 9, "status": "Refill not found"}
    ]
    # Single-id answers keep the {"error": ...} object.
    assert call(client, sim, "status", order="10") == {"error": "Incorrect order ID"}
    sim.configure(bare_item_errors=False)

    sim.inject("status_variants")
    assert call(client, sim, "status", order=str(order_id))["status"] == "pending"
    assert call(client, sim, "status", order=str(order_id))["status"] == "Pending"
    sim.configure(status_variants=True)
    sim.advance(10)
    assert call(client, sim, "status", order=str(order_id))["status"] == "In Progress"
    sim.advance(30)
    assert call(client, sim, "status", orders=str(order_id))[str(order_id)]["status"] == "completed"
    other = add(client, sim, 2, link="https://b", quantity="100")
    call(client, sim, "cancel", orders=str(other))
    assert call(client, sim, "status", order=str(other))["status"] == "Cancelled"
    sim.configure(status_variants=False)
    assert call(client, sim, "status", order=str(other))["status"] == "Canceled"


def test_rate_limit_answers_429_with_retry_after(client):
    with running_simulator(rate_limit_per_minute=5) as s:
        for _ in range(5):
            assert call(client, s, "balance")["currency"] == "USD"
        response = client.post(s.url, data={"key": KEY, "action": "balance"})
        assert response.status_code == 429
        assert response.json() == {"error": "Too many requests"}
        assert 1 <= int(response.headers["retry-after"]) <= 60
        stats = s.stats()
        assert (stats["rate_limited"], stats["calls"]["balance"]) == (1, 6)
        assert stats["max_calls_per_minute"] == 6
        s.configure(rate_limit_per_minute=0)
        assert call(client, s, "balance")["currency"] == "USD"


def test_hundreds_of_concurrent_requests_are_answered(sim):
    sim.configure(latency_ms=50)

    async def burst() -> list[Any]:
        # Ten clients of thirty connections: httpx's pool gets slow (quadratic) with hundreds
        # of connections in one client, and this test measures the server, not the pool.
        clients = [httpx.AsyncClient(timeout=30.0, trust_env=False) for _ in range(10)]

        async def one(i: int) -> Any:
            form = {**ADD_FORM, "service": "2", "link": f"https://c/{i}"}
            response = await clients[i % 10].post(sim.url, data=form)
            return response.json()

        try:
            return await asyncio.gather(*(one(i) for i in range(300)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    answers = asyncio.run(burst())
    assert sorted(a["order"] for a in answers) == list(range(10001, 10301))
    stats = sim.stats()
    assert stats["orders_created"] == 300
    assert stats["max_in_flight"] >= 50
    with httpx.Client(timeout=10.0, trust_env=False) as http:
        assert balance(http, sim) == Decimal("1000.00") - 300 * Decimal("0.012")


# -- admin ----------------------------------------------------------------------------------------


def test_catalog_changes_are_served_and_enforced(sim, client):
    sim.patch_service(1, rate="1.10", min=100)
    services = {s["service"]: s for s in call(client, sim, "services")}
    assert (services[1]["rate"], services[1]["min"]) == ("1.10", "100")
    answer = call(client, sim, "add", service="1", link="https://a", quantity="50")
    assert answer == {"error": "Quantity less than minimal 100"}
    sim.remove_service(2)
    assert 2 not in {s["service"] for s in call(client, sim, "services")}
    answer = call(client, sim, "add", service="2", link="https://a", quantity="50")
    assert answer == {"error": "Incorrect service ID"}
    new = {"service": 900, "name": "Threads Followers", "type": "Default", "category": "Threads"}
    sim.add_service(new, rate="2.00", min="10", max="1000", refill=False, cancel=True)
    order_id = add(client, sim, 900, quantity="10")
    assert call(client, sim, "status", order=str(order_id))["charge"] == "0.02"
    for bad in (
        lambda: sim.patch_service(12345, rate="1"),
        lambda: sim.add_service(new, rate="1", min="1", max="2"),
        lambda: sim.patch_service(1, rate="abc"),
        lambda: sim.patch_service(1, min=10, max=5),
    ):
        with pytest.raises(SimulatorAdminError):
            bad()


def test_stats_count_calls_and_ids_per_call(sim, client):
    call(client, sim, "status", orders="1,2,3")
    call(client, sim, "status", order="1")
    call(client, sim, "balance")
    stats = sim.stats()
    assert stats["calls"] == {"status": 2, "balance": 1}
    assert stats["ids_per_call"] == {"status": [3, 1]}
    assert stats["api_requests"] == 3
    assert sim.reset_stats()["calls"] == {}


def test_admin_endpoints_are_for_loopback_callers_only():
    assert _is_loopback(("127.0.0.1", 5000))
    assert _is_loopback(("::1", 5000, 0, 0))
    assert _is_loopback(("::ffff:127.0.0.1", 5000, 0, 0))
    assert not _is_loopback(("10.0.0.5", 5000))
    assert not _is_loopback(("::ffff:192.168.1.1", 5000, 0, 0))
    assert not _is_loopback(None)
