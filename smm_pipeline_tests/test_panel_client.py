"""The API v2 client against the simulator over real loopback HTTP."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from smm_pipeline.config import PanelConfig, Secret
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.errors import (
    AmbiguousSubmissionError,
    APIError,
    HTTPStatusError,
    InsufficientFundsError,
    InvalidResponseError,
    RateLimitedError,
    TransportError,
)
from smm_pipeline_tests.conftest import TEST_KEY


def make_client(url: str, name: str = "sim", key: str = TEST_KEY, **overrides) -> PanelClient:
    fields = dict(
        name=name, url=url, key_env="X", rate_limit_per_minute=60000, max_concurrency=8,
        timeout_seconds=2.0, max_retries=3,
    )  # fmt: skip
    fields.update(overrides)
    return PanelClient(PanelConfig(**fields), Secret(key), sleep=lambda s: None)


@pytest.fixture
def client(sim):
    with make_client(sim.url) as c:
        yield c


def test_services_are_typed_and_exact(client):
    services = {s.service_id: s for s in client.services()}
    assert services[1].rate == Decimal("0.90")
    assert isinstance(services[1].rate, Decimal)
    assert services[1].min == 50 and services[1].max == 10000
    assert services[1].refill is True and services[1].cancel is True
    assert services[4].type == "Custom Comments"
    assert {s.type for s in services.values()} >= {"Default", "Package", "Subscriptions"}


def test_balance_is_decimal(client):
    balance = client.balance()
    assert balance.balance == Decimal("1000.00")
    assert balance.currency == "USD"


def test_add_and_single_status(client, sim):
    order_id = client.add({"service": "1", "link": "https://instagram.com/p/x", "quantity": "100"})
    status = client.status(order_id)
    assert status.order_id == order_id
    assert status.status == "Pending"
    assert status.charge == Decimal("0.09")  # 0.90 × 100 / 1000, exact
    assert client.balance().balance == Decimal("999.91")


def test_api_errors_carry_the_panel_message(client):
    with pytest.raises(APIError, match="Incorrect service ID"):
        client.add({"service": "99999", "link": "https://x.com/a", "quantity": "100"})
    with pytest.raises(APIError, match="Quantity less than minimal 50"):
        client.add({"service": "1", "link": "https://x.com/a", "quantity": "10"})
    with pytest.raises(APIError, match="Incorrect order ID"):
        client.status(424242)


def test_invalid_key_is_an_api_error_without_the_key(sim):
    with make_client(sim.url, key="wrong-key-123") as c, pytest.raises(APIError) as info:
        c.balance()
    assert "Invalid API key" in str(info.value)
    assert "wrong-key-123" not in str(info.value)


def test_not_enough_funds(client, sim):
    sim.set_balance("0.01")
    with pytest.raises(InsufficientFundsError, match="Not enough funds"):
        client.add({"service": "1", "link": "https://x.com/a", "quantity": "1000"})


def test_multi_status_chunks_by_100(client, sim):
    ids = [
        client.add({"service": "2", "link": f"https://x.com/p{i}", "quantity": "20"})
        for i in range(250)
    ]
    sim.reset_stats()
    statuses = client.statuses([*ids, 1, 2])  # 1 and 2 do not exist
    calls = sim.stats()
    assert len(statuses) == 252
    assert statuses[ids[0]].status == "Pending"
    assert statuses[1].error == "Incorrect order ID"
    status_calls = calls["calls"]["status"] if "calls" in calls else calls["status"]
    assert status_calls == 3


def test_bare_string_item_errors_are_data(client, sim):
    order_id = client.add({"service": "2", "link": "https://x.com/q", "quantity": "20"})
    sim.configure(bare_item_errors=True)
    statuses = client.statuses([order_id, 5])
    assert statuses[5].error == "Incorrect order ID"
    assert statuses[order_id].error is None


def test_status_spelling_variants_are_normalised(client, sim):
    ids = [
        client.add({"service": "2", "link": f"https://x.com/v{i}", "quantity": "20"})
        for i in range(3)
    ]
    sim.configure(status_variants=True)
    sim.set_order(ids[0], status="Canceled")
    sim.set_order(ids[1], status="In progress")
    statuses = client.statuses(ids)
    assert statuses[ids[0]].status == "Canceled"
    assert statuses[ids[1]].status == "In progress"
    assert all(s.error is None for s in statuses.values())


@pytest.mark.parametrize(
    "kind",
    ["http_500", "html_502", "html_200", "truncated_json", "drop_before"],
)
def test_read_only_actions_retry_faults(client, sim, kind):
    sim.inject(kind, action="balance", times=2)
    assert client.balance().balance == Decimal("1000.00")
    assert client.calls["balance"] == 3


def test_read_only_fault_exhausts_retries_with_the_right_class(client, sim):
    sim.inject("html_502", action="services", times=10)
    with pytest.raises(HTTPStatusError, match="HTTP 502"):
        client.services()
    sim.clear_faults()
    sim.inject("html_200", action="services", times=10)
    with pytest.raises(InvalidResponseError, match="HTML page"):
        client.services()
    sim.clear_faults()
    sim.inject("truncated_json", action="services", times=10)
    with pytest.raises(InvalidResponseError, match="truncated JSON"):
        client.services()


def test_rate_limited_429_honours_retry_after(sim):
    waits: list[float] = []
    config = PanelConfig(
        name="sim429", url=sim.url, key_env="X", rate_limit_per_minute=60000, max_retries=2
    )
    with PanelClient(config, Secret(TEST_KEY), sleep=waits.append) as c:
        sim.inject("http_429", action="balance", times=1, retry_after=7)
        assert c.balance().currency == "USD"
    assert waits == [7.0]


def test_429_on_every_try_is_rate_limited(client, sim):
    sim.inject("http_429", action="balance", times=10, retry_after=1)
    with pytest.raises(RateLimitedError):
        client.balance()


@pytest.mark.parametrize(
    ("kind", "created"),
    [
        ("drop_after", 1),
        ("drop_before", 0),
        ("http_500", 0),
        ("html_502", 0),
        ("html_200", 0),
        ("truncated_json", 1),
    ],
)
def test_add_is_never_retried_after_an_ambiguous_failure(client, sim, kind, created):
    before = len(sim.orders())
    sim.inject(kind, action="add", times=1)
    with pytest.raises(AmbiguousSubmissionError):
        client.add({"service": "1", "link": "https://x.com/amb", "quantity": "100"})
    assert client.calls["add"] == 1
    assert len(sim.orders()) - before == created


def test_add_timeout_is_ambiguous(sim):
    with make_client(sim.url, name="slow", timeout_seconds=0.5) as c:
        sim.inject("slow", action="add", times=1, seconds=2)
        with pytest.raises(AmbiguousSubmissionError, match="no answer in time"):
            c.add({"service": "1", "link": "https://x.com/slow", "quantity": "100"})
        assert c.calls["add"] == 1


def test_add_after_429_is_retried_because_nothing_was_processed(client, sim):
    sim.inject("http_429", action="add", times=1, retry_after=0)
    order_id = client.add({"service": "1", "link": "https://x.com/r", "quantity": "100"})
    assert client.calls["add"] == 2
    assert [o for o in sim.orders() if o["order"] == order_id or o.get("id") == order_id]


def test_connection_refused_is_retried_even_for_add():
    with make_client("http://127.0.0.1:9/api/v2", name="refused") as c:
        with pytest.raises(TransportError) as info:
            c.add({"service": "1", "link": "https://x.com/a", "quantity": "100"})
        assert info.value.sent is False
        assert c.calls["add"] == 4  # first try + max_retries


def test_refill_and_cancel_multi(client, sim):
    done = client.add({"service": "1", "link": "https://x.com/f", "quantity": "100"})
    running = client.add({"service": "1", "link": "https://x.com/g", "quantity": "100"})
    sim.set_order(done, status="Completed", remains=0)
    refills = {r.order_id: r for r in client.refills([done, running, 777])}
    assert refills[done].refill_id is not None and refills[done].error is None
    assert refills[running].refill_id is None and refills[running].error
    assert refills[777].error == "Incorrect order ID"
    statuses = client.refill_statuses([refills[done].refill_id, 999999])
    assert statuses[refills[done].refill_id].status == "Pending"
    assert statuses[999999].error == "Refill not found"
    cancels = {c.order_id: c for c in client.cancel([running, done, 777])}
    assert cancels[running].accepted
    assert not cancels[done].accepted and cancels[done].error
    assert cancels[777].error == "Incorrect order ID"


def test_single_refill_and_refill_status(client, sim):
    done = client.add({"service": "1", "link": "https://x.com/h", "quantity": "100"})
    sim.set_order(done, status="Completed", remains=0)
    refill = client.refill(done)
    assert refill.refill_id is not None
    assert client.refill_status(refill.refill_id).status == "Pending"


def test_refill_chunk_that_drops_is_ambiguous_not_retried(client, sim):
    ids = []
    for i in range(3):
        oid = client.add({"service": "1", "link": f"https://x.com/ra{i}", "quantity": "100"})
        sim.set_order(oid, status="Completed", remains=0)
        ids.append(oid)
    sim.inject("drop_after", action="refill", times=1)
    results = client.refills(ids)
    assert all(r.ambiguous for r in results)
    assert client.calls["refill"] == 1


def test_the_key_never_shows(sim, caplog):
    caplog.set_level(logging.DEBUG)
    with make_client(sim.url) as c:
        assert TEST_KEY not in repr(c)
        sim.inject("html_502", action="balance", times=10)
        with pytest.raises(HTTPStatusError) as info:
            c.balance()
        sim.clear_faults()
        sim.inject("drop_after", action="add", times=1)
        with pytest.raises(AmbiguousSubmissionError) as amb:
            c.add({"service": "1", "link": "https://x.com/k", "quantity": "100"})
    texts = [str(info.value), repr(info.value), str(amb.value), repr(amb.value), caplog.text]
    assert caplog.text  # retries were logged
    assert all(TEST_KEY not in t for t in texts)
    assert "***" in repr(Secret(TEST_KEY))


def test_rate_limit_is_respected(sim):
    """With a budget of 600/min, 6 requests are spaced ≥ 0.1 s apart (checked on the
    simulator's own arrival clock is not possible; we check the limiter's schedule)."""
    with make_client(sim.url, name="budget", rate_limit_per_minute=600, max_concurrency=4) as c:
        starts: list[float] = []
        import time

        original = c._http.post

        def timed(*args, **kwargs):
            starts.append(time.monotonic())
            return original(*args, **kwargs)

        c._http.post = timed
        list(c.map_concurrent(lambda _: c.balance(), range(6)))
    starts.sort()
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.1 - 0.005
