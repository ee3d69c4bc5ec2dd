"""The API v2 client against the simulator over real loopback HTTP."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx
import pytest

from smm_devkit.simulator.testing import SimulatorAdminError, running_simulator
from smm_pipeline.config import PanelConfig, Secret
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.errors import (
    AmbiguousSubmissionError,
    APIError,
    HTTPStatusError,
    InsufficientFundsError,
    InvalidResponseError,
    PanelError,
    RateLimitedError,
    TransportError,
)
from smm_pipeline.panel.models import CancelResult, RefillResult, RefillStatus
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
    assert calls["calls"]["status"] == 3
    assert sorted(calls["ids_per_call"]["status"]) == [52, 100, 100]


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
        sim.inject("http_429", action="balance", times=1, retry_after=2)
        assert c.balance().currency == "USD"
    assert waits == [2.0]  # the panel's Retry-After, not the 0.5 s backoff


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


def test_rate_limit_is_respected_as_seen_by_the_simulator():
    """A budget of 300/min allows 5 requests in any second: the simulator's own clock (real
    speed) stamps each order on arrival, so the budget is measured at the panel's side."""
    with running_simulator(keys=(TEST_KEY,), clock_speed=1.0) as live:
        with make_client(live.url, name="budget", rate_limit_per_minute=300) as c:
            params = [
                {"service": "1", "link": f"https://x.com/b{i}", "quantity": "100"} for i in range(6)
            ]
            placed = [r for _p, r in c.map_concurrent(c.add, params)]
        arrivals = sorted(datetime.fromisoformat(o["created_at"]) for o in live.orders())
        assert live.stats()["calls"]["add"] == 6
    assert all(isinstance(r, int) for r in placed) and len(arrivals) == 6
    # The sixth waits until the first is a second old (less loopback jitter); unthrottled,
    # all six arrive within a few milliseconds.
    assert (arrivals[5] - arrivals[0]).total_seconds() >= 0.9


def test_concurrency_cap_is_shared_by_every_client_of_the_panel(sim):
    sim.configure(latency_ms=100)
    first = make_client(sim.url, name="capped3", max_concurrency=3)
    second = make_client(sim.url, name="capped3", max_concurrency=3)
    with first, second, ThreadPoolExecutor(max_workers=24) as pool:
        balances = list(pool.map(lambda i: (first, second)[i % 2].balance(), range(24)))
    stats = sim.stats()
    assert [b.balance for b in balances] == [Decimal("1000.00")] * 24
    assert stats["calls"]["balance"] == 24
    assert stats["max_in_flight"] == 3


@pytest.mark.parametrize(
    ("kind", "error", "options"),
    [
        ("drop_after", TransportError, {}),
        ("drop_before", TransportError, {}),
        ("slow", TransportError, {"seconds": "1.5"}),
        ("http_500", HTTPStatusError, {}),
    ],
)
def test_read_fault_on_every_try_ends_in_its_error_class(sim, kind, error, options):
    with make_client(sim.url, name="exhaust", timeout_seconds=0.5, max_retries=1) as c:
        sim.inject(kind, action="balance", times=10, **options)
        with pytest.raises(error) as info:
            c.balance()
    assert type(info.value) is error
    if error is TransportError:
        assert info.value.sent is True
    else:
        assert info.value.status_code == 500
    assert sim.stats()["calls"]["balance"] == 2  # first try + max_retries, then the error


def _completed_order(client: PanelClient, sim, link: str) -> int:
    order_id = client.add({"service": "1", "link": link, "quantity": "100"})
    sim.set_order(order_id, status="Completed", remains=0)
    return order_id


@pytest.mark.parametrize(
    ("kind", "created"),
    [("drop_after", 1), ("drop_before", 0), ("http_500", 0), ("html_502", 0),
     ("html_200", 0), ("truncated_json", 1), ("slow", 1)],
)  # fmt: skip
def test_single_refill_under_a_fault_is_ambiguous_and_sent_once(sim, kind, created):
    with make_client(sim.url, name="refill1", timeout_seconds=0.5) as c:
        done = _completed_order(c, sim, f"https://x.com/r-{kind}")
        sim.reset_stats()
        sim.inject(kind, action="refill", times=5, seconds="1.5")
        with pytest.raises(AmbiguousSubmissionError):
            c.refill(done)
    assert sim.stats()["calls"]["refill"] == 1
    assert len(sim.refills()) == created


@pytest.mark.parametrize("kind", ["drop_after", "drop_before", "http_500", "html_200", "slow"])
def test_multi_cancel_under_a_fault_is_ambiguous_for_every_order(sim, kind):
    with make_client(sim.url, name="cancel1", timeout_seconds=0.5) as c:
        ids = [
            c.add({"service": "1", "link": f"https://x.com/c{i}", "quantity": "100"})
            for i in range(3)
        ]
        sim.reset_stats()
        sim.inject(kind, action="cancel", times=5, seconds="1.5")
        results = c.cancel([*ids, 777])
    assert [r.order_id for r in results] == [*ids, 777]
    assert all(r.ambiguous and not r.accepted and r.error for r in results)
    assert sim.stats()["calls"]["cancel"] == 1


def test_bare_string_item_errors_of_refills_and_cancels_are_data(client, sim):
    done = _completed_order(client, sim, "https://x.com/bare-done")
    running = client.add({"service": "1", "link": "https://x.com/bare-run", "quantity": "100"})
    refill_id = client.refill(done).refill_id
    sim.configure(bare_item_errors=True)
    refills = {r.order_id: r for r in client.refills([running, 777])}
    assert refills[777] == RefillResult(777, error="Incorrect order ID")
    assert refills[running].refill_id is None and refills[running].error
    assert not refills[running].ambiguous
    statuses = client.refill_statuses([refill_id, 999999])
    assert statuses[999999] == RefillStatus(999999, error="Refill not found")
    assert statuses[refill_id].status == "Pending"
    cancels = {c.order_id: c for c in client.cancel([running, done, 777])}
    assert cancels[running] == CancelResult(running, accepted=True)
    assert cancels[777] == CancelResult(777, accepted=False, error="Incorrect order ID")
    assert not cancels[done].accepted and not cancels[done].ambiguous and cancels[done].error


def test_subscription_status_through_the_client(client, sim):
    sub_id = client.add(
        {"service": "14", "username": "natgeo", "min": "50", "max": "100", "posts": "2",
         "delay": "0", "expiry": "31/12/2099"}
    )  # fmt: skip
    fresh = client.status(sub_id)
    assert fresh.is_subscription and fresh.status == "Active" and fresh.error is None
    assert (fresh.expiry, fresh.posts, fresh.orders) == ("31/12/2099", 0, ())
    assert fresh.charge is None
    sim.advance(6 * 3600 + 60)
    later = client.statuses([sub_id])[sub_id]
    assert later.is_subscription and later.posts == 1 and len(later.orders) == 1
    child = client.status(later.orders[0])
    assert not child.is_subscription and child.charge is not None and child.charge > 0


# -- a panel front-end: what the simulator cannot send --------------------------------------------

Reply = tuple[int, dict[str, str], str]


class Front:
    """A panel's front-end on loopback between the client and the simulator: it answers the
    scripted replies first (a 503 with Retry-After, a key echoed back, a malformed item: things
    some real panels send and the simulator does not), then forwards requests unchanged."""

    def __init__(self, upstream: str) -> None:
        self.script: deque[Callable[[dict[str, str]], Reply]] = deque()
        self._upstream = httpx.Client(timeout=10.0, trust_env=False)
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if front.script:
                    form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
                    status, headers, text = front.script.popleft()(form)
                else:
                    answer = front._upstream.post(
                        upstream,
                        content=raw,
                        headers={"Content-Type": self.headers["Content-Type"]},
                    )
                    status, headers, text = answer.status_code, {}, answer.text
                data = text.encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api/v2"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def reply(self, status: int, body: object, **headers: str) -> None:
        """Queue one answer; `body` may be a function of the received form."""
        self.script.append(
            lambda form: (
                status,
                headers,
                body
                if isinstance(body, str)
                else json.dumps(body(form) if callable(body) else body),
            )
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()


@pytest.fixture
def front(sim) -> Iterator[Front]:
    server = Front(sim.url)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize(
    ("status", "body"),
    [(503, "<html><h1>503 Service Unavailable</h1></html>"), (500, {"error": "Busy"}),
     (502, "<html>Bad gateway</html>")],
)  # fmt: skip
def test_retry_after_on_a_5xx_is_honoured_for_reads(sim, front, status, body):
    waits: list[float] = []
    config = PanelConfig(name="front503", url=front.url, key_env="X", rate_limit_per_minute=60000)
    with PanelClient(config, Secret(TEST_KEY), sleep=waits.append) as c:
        front.reply(status, body, **{"Retry-After": "1"})
        assert c.balance().balance == Decimal("1000.00")
    assert waits == [1.0]
    assert sim.stats()["calls"]["balance"] == 1


def test_a_5xx_without_retry_after_backs_off_on_its_own(sim, front):
    waits: list[float] = []
    config = PanelConfig(name="front503b", url=front.url, key_env="X", rate_limit_per_minute=60000)
    with PanelClient(config, Secret(TEST_KEY), sleep=waits.append, backoff_base=0.5) as c:
        front.reply(503, "<html>503</html>")
        assert c.balance().currency == "USD"
    assert len(waits) == 1 and 0.25 <= waits[0] <= 0.5  # base × jitter, not a Retry-After


def test_a_write_under_a_503_with_retry_after_is_still_ambiguous(sim, front):
    waits: list[float] = []
    config = PanelConfig(name="front503w", url=front.url, key_env="X", rate_limit_per_minute=60000)
    with PanelClient(config, Secret(TEST_KEY), sleep=waits.append) as c:
        front.reply(503, "<html>503</html>", **{"Retry-After": "1"})
        with pytest.raises(AmbiguousSubmissionError, match="HTTP 503"):
            c.add({"service": "1", "link": "https://x.com/w", "quantity": "100"})
    assert waits == [] and c.calls["add"] == 1


def test_a_key_echoed_by_the_panel_is_redacted_everywhere(sim, front):
    def echo(form: dict[str, str]) -> dict[str, str]:
        return {"error": f"Invalid API key {form['key']} (key={form['key']})"}

    with make_client(front.url, name="echo", max_retries=0) as c:
        front.reply(200, echo)
        with pytest.raises(APIError) as refused:
            c.balance()
        front.reply(500, echo)
        with pytest.raises(HTTPStatusError) as failed:
            c.balance()
        front.reply(200, lambda form: {"1": {"error": f"order of {form['key']} not found"}})
        item = c.statuses([1])[1]
        sim.patch_service(1, name=f"Followers {TEST_KEY}")
        names = {s.service_id: s.name for s in c.services()}
    assert refused.value.panel_message == "Invalid API key *** (key=***)"
    assert "HTTP 500: Invalid API key *** (key=***)" in str(failed.value)
    assert item.error == "order of *** not found"
    assert names[1] == "Followers ***"
    texts = [str(refused.value), repr(refused.value), str(failed.value), item.error, names[1]]
    assert all(TEST_KEY not in t for t in texts)


def test_one_malformed_item_does_not_fail_the_chunk(sim, front):
    with make_client(front.url, name="odd") as c:
        good = c.add({"service": "2", "link": "https://x.com/odd", "quantity": "20"})
        front.reply(
            200,
            {"1": {"charge": "abc", "status": "Partial"},
             str(good): {"charge": "0.5", "status": "In progress", "remains": "3"}},
        )  # fmt: skip
        statuses = c.statuses([1, good])
        front.reply(200, [{"order": 1, "refill": "abc"}, {"order": 2, "refill": 9}, {"order": 3}])
        refills = c.refills([1, 2, 3])
    assert "charge is not a number" in statuses[1].error
    assert statuses[good].status == "In progress" and statuses[good].charge == Decimal("0.5")
    assert [r.ambiguous for r in refills] == [True, False, True]
    assert refills[1] == RefillResult(2, refill_id=9)


# -- the write fault matrix: every simulator fault x add, refill, cancel ---------------------------


@dataclass(frozen=True)
class Expect:
    """What a write under one fault amounts to for the client and at the panel."""

    outcome: str  # "done", "refused" (APIError, definite) or "ambiguous"
    commits: bool  # the panel carried the faulted call out
    stops: bool = False  # AmbiguousSubmissionError.stops_batch
    cause: type[PanelError] | None = None  # AmbiguousSubmissionError.cause
    calls: int = 1  # requests the faulted call took
    per_action: tuple[tuple[str, str], ...] = ()  # outcome overrides by action

    def outcome_of(self, action: str) -> str:
        return dict(self.per_action).get(action, self.outcome)


AMBIGUOUS = "ambiguous"
HTTPError = HTTPStatusError  # short, for the table
WRITE_FAULTS = [
    ("drop_before", {}, Expect(AMBIGUOUS, False, cause=TransportError)),
    ("drop_after", {}, Expect(AMBIGUOUS, True, cause=TransportError)),
    ("http_500", {}, Expect(AMBIGUOUS, False, cause=HTTPError)),
    ("html_502", {}, Expect(AMBIGUOUS, False, cause=HTTPError)),
    ("html_200", {}, Expect(AMBIGUOUS, False, stops=True, cause=InvalidResponseError)),
    ("html_200", {"commit": True}, Expect(AMBIGUOUS, True, stops=True, cause=InvalidResponseError)),
    ("truncated_json", {}, Expect(AMBIGUOUS, True, cause=InvalidResponseError)),
    ("http_429", {"retry_after": 0}, Expect("done", True, calls=2)),
    ("slow", {"seconds": "1"}, Expect(AMBIGUOUS, True, cause=TransportError)),
    ("bare_item_errors", {}, Expect("done", True)),  # refill and cancel only
    ("status_variants", {}, Expect("done", True)),  # never fires on a write
    ("redirect_302", {}, Expect(AMBIGUOUS, True, stops=True, cause=HTTPError)),
    ("redirect_302", {"commit": False}, Expect(AMBIGUOUS, False, True, HTTPError)),
    ("html_403", {}, Expect(AMBIGUOUS, False, stops=True, cause=HTTPError)),
    ("html_403", {"commit": True}, Expect(AMBIGUOUS, True, stops=True, cause=HTTPError)),
    ("empty_404", {}, Expect(AMBIGUOUS, False, stops=True, cause=HTTPError)),
    ("empty_404", {"commit": True}, Expect(AMBIGUOUS, True, stops=True, cause=HTTPError)),
    ("refusal", {"message": "Service is disabled"}, Expect("refused", False)),
    ("refusal", {"message": "Forbidden", "status": 403}, Expect("refused", False)),
    ("refusal", {"message": "Oops", "status": 500}, Expect(AMBIGUOUS, False, cause=HTTPError)),
    # The panel acted but named another order/refill: add and refill cannot tell (the warehouse
    # finds the duplicate id); a cancel answer without the asked order leaves it ambiguous.
    ("other_id", {}, Expect("done", True, per_action=(("cancel", AMBIGUOUS),))),
]  # fmt: skip
# Faults that can never fire on an action are refused when injected.
NOT_FOR = {"bare_item_errors": {"add"}, "status_variants": {"add", "refill", "cancel"}}


def _fault_id(case: tuple) -> str:
    kind, options, _expect = case
    return "-".join([kind, *(f"{k}={v}" for k, v in options.items())])


@dataclass
class Setup:
    client: PanelClient
    ids: list[int]  # the orders the faulted call is about (add: none)
    earlier: int | None  # add: an earlier order; refill: an earlier refill


def _setup(sim, action: str, kind: str, options: dict) -> Setup:
    """A client sending one id per call, one call at a time (so the faulted call is the first
    and the rest of a multi write is still unsent when its answer arrives), and the panel's
    state the action needs."""
    name = "mx-" + _fault_id((kind, options, None)).replace("=", "_") + f"-{action}"
    timeout = 0.2 if kind == "slow" else 5.0
    c = make_client(sim.url, name=name[:60], max_concurrency=1, timeout_seconds=timeout)
    c.max_ids_per_call = 1
    if action == "add":
        earlier = c.add({"service": "1", "link": "https://x.com/earlier", "quantity": "100"})
        setup = Setup(c, [], earlier)
    elif action == "refill":
        done = [_completed_order(c, sim, f"https://x.com/mx-r{i}") for i in range(4)]
        setup = Setup(c, done[:3], c.refill(done[3]).refill_id)
    else:
        ids = [
            c.add({"service": "1", "link": f"https://x.com/mx-c{i}", "quantity": "100"})
            for i in range(3)
        ]
        setup = Setup(c, ids, None)
    sim.reset_stats()
    return setup


def _canceled(sim) -> int:
    return sum(o["status"] == "Canceled" for o in sim.orders())


@pytest.mark.parametrize("action", ["add", "refill", "cancel"])
@pytest.mark.parametrize(
    ("kind", "options", "expect"), WRITE_FAULTS, ids=map(_fault_id, WRITE_FAULTS)
)
def test_write_fault_matrix(sim, kind, options, expect, action):
    """The public write call under each fault: the exact outcome, and what the panel holds."""
    setup = _setup(sim, action, kind, options)
    c = setup.client
    with c:
        if action in NOT_FOR.get(kind, ()):
            with pytest.raises(SimulatorAdminError, match="never fires"):
                sim.inject(kind, action=action, **options)
            return
        orders, refills, canceled = len(sim.orders()), len(sim.refills()), _canceled(sim)
        calls_before = c.calls[action]
        sim.inject(kind, action=action, times=1, **options)
        outcome = expect.outcome_of(action)
        stops = outcome == AMBIGUOUS and expect.stops
        if action == "add":
            _check_add(c, sim, kind, expect, options, setup.earlier)
            assert len(sim.orders()) - orders == int(expect.commits)
            sent = expect.calls
        else:
            if action == "refill":
                results: list = c.refills(setup.ids)
                made = [r.refill_id for r in results]
            else:
                results = c.cancel(setup.ids)
                made = [r.accepted for r in results]
            assert [r.order_id for r in results] == setup.ids
            first, rest = results[0], results[1:]
            if outcome == "done":
                assert not first.ambiguous and first.error is None and made[0]
                if kind == "other_id":  # the refill was made; the answer named the earlier one
                    assert first.refill_id == setup.earlier
            elif outcome == "refused":
                assert not first.ambiguous and first.error == options["message"] and not made[0]
            else:
                assert first.ambiguous and not made[0]
                assert "outcome unknown" in first.error or "may have" in first.error
            if stops:
                assert all(r.error.startswith("not sent: ") and not r.ambiguous for r in rest)
                assert not any(made[1:])
            else:
                assert all(r.error is None and not r.ambiguous for r in rest) and all(made[1:])
            sent = expect.calls + (0 if stops else len(rest))
            carried_out = int(expect.commits) + (0 if stops else len(rest))
            if action == "refill":
                assert len(sim.refills()) - refills == carried_out
            else:
                assert _canceled(sim) - canceled == carried_out
            assert len(sim.orders()) == orders
        stats = sim.stats()
        assert stats["calls"][action] == sent
        assert c.calls[action] - calls_before == sent
        assert stats["faults_fired"] == ({} if kind == "status_variants" else {kind: 1})


def _check_add(c, sim, kind: str, expect: Expect, options: dict, earlier: int | None) -> None:
    params = {"service": "1", "link": "https://x.com/mx-add", "quantity": "100"}
    outcome = expect.outcome_of("add")
    if outcome == "done":
        order_id = c.add(params)
        newest = max(o["order"] for o in sim.orders())
        # other_id: the order was placed, the answer named an earlier one (just an int here)
        assert order_id == (earlier if kind == "other_id" else newest) and earlier != newest
        return
    with pytest.raises(PanelError) as info:
        c.add(params)
    error = info.value
    if outcome == "refused":
        assert type(error) is APIError and error.panel_message == options["message"]
        return
    assert type(error) is AmbiguousSubmissionError
    assert error.stops_batch is expect.stops
    assert type(error.cause) is expect.cause


@pytest.mark.parametrize("action", ["refill", "cancel"])
@pytest.mark.parametrize(
    ("kind", "options", "expect"), WRITE_FAULTS, ids=map(_fault_id, WRITE_FAULTS)
)
def test_write_fault_errors_of_one_refill_or_cancel(sim, kind, options, expect, action):
    """The error class and stops_batch of one refill (single form) or one cancel call."""
    if action in NOT_FOR.get(kind, ()):
        return  # refused at injection (test_write_fault_matrix)
    setup = _setup(sim, action, kind, options)
    with setup.client as c:
        calls_before = c.calls[action]
        sim.inject(kind, action=action, times=1, **options)

        def send():
            if action == "refill":
                return c.refill(setup.ids[0])
            return c.request("cancel", {"orders": str(setup.ids[0])})

        outcome = expect.outcome_of(action) if action == "refill" else expect.outcome
        if outcome == "done":
            answer = send()
            if action == "refill":
                assert answer.refill_id and not answer.ambiguous
                if kind == "other_id":
                    assert answer.refill_id == setup.earlier
            else:
                assert isinstance(answer, list) and len(answer) == 1
        else:
            with pytest.raises(PanelError) as info:
                send()
            error = info.value
            if outcome == "refused":
                assert type(error) is APIError and error.panel_message == options["message"]
            else:
                assert type(error) is AmbiguousSubmissionError
                assert (error.stops_batch, type(error.cause)) == (expect.stops, expect.cause)
        assert sim.stats()["calls"][action] == expect.calls == c.calls[action] - calls_before
    held = len(sim.refills()) - 1 if action == "refill" else _canceled(sim)
    assert held == int(expect.commits)


@pytest.mark.parametrize(
    ("kind", "stops"),
    [("html_403", True), ("empty_404", True), ("redirect_302", True), ("http_500", False)],
)
def test_a_panel_answering_every_request_wrongly_stops_a_multi_write_at_once(sim, kind, stops):
    """A wrong url or a blocked IP answers every request the same way: with chunks in flight
    concurrently, only those sent before the first answer are ambiguous; the rest are never
    sent and come back as definite failures (safe to send again once the url is fixed)."""
    with make_client(sim.url, name=f"stop-{kind}", max_concurrency=3) as c:
        ids = [
            c.add({"service": "1", "link": f"https://x.com/st{i}", "quantity": "100"})
            for i in range(12)
        ]
        c.max_ids_per_call = 1
        sim.reset_stats()
        sim.inject(kind, action="cancel", times=-1)
        results = c.cancel(ids)
    sent = sim.stats()["calls"]["cancel"]
    ambiguous = [r for r in results if r.ambiguous]
    not_sent = [r for r in results if not r.ambiguous]
    assert [r.order_id for r in results] == ids and not any(r.accepted for r in results)
    assert len(ambiguous) == sent == c.calls["cancel"]
    if stops:
        assert 1 <= sent <= 3  # at most the chunks already in flight
        assert len(not_sent) == 12 - sent
        assert all(r.error.startswith("not sent: the panel answered an earlier") for r in not_sent)
    else:
        assert sent == 12 and not not_sent
    assert _canceled(sim) == (sent if kind == "redirect_302" else 0)  # it commits, then redirects


@pytest.mark.parametrize(
    ("kind", "options", "error", "status"),
    [("redirect_302", {}, HTTPStatusError, 302), ("html_403", {}, HTTPStatusError, 403),
     ("empty_404", {}, HTTPStatusError, 404), ("refusal", {"message": "Nope"}, APIError, None),
     ("refusal", {"message": "Nope", "status": 403}, APIError, None)],
)  # fmt: skip
def test_reads_under_the_new_faults_fail_without_retrying(
    client, sim, kind, options, error, status
):
    sim.inject(kind, action="balance", times=5, **options)
    with pytest.raises(error) as info:
        client.balance()
    assert type(info.value) is error
    if status is not None:
        assert info.value.status_code == status
    assert client.calls["balance"] == 1 == sim.stats()["calls"]["balance"]


@pytest.mark.parametrize(
    ("status", "body", "headers", "stops", "words"),
    [(403, "Forbidden", {}, True, "HTTP 403 with a body that is not JSON"),
     (401, "", {}, True, "HTTP 401 with an empty body"),
     (405, "<html>Method Not Allowed</html>", {}, True, "HTTP 405 with an HTML page"),
     (301, "", {"Location": f"https://panel.example/api/v2?key={TEST_KEY}"}, True,
      "redirected (HTTP 301 to https://panel.example/api/v2?key=***)"),
     (408, "", {}, False, "HTTP 408 with an empty body"),
     (400, {"order": 5, "note": "odd"}, {}, False, "HTTP 400"),
     (503, "<html>Service Unavailable</html>", {}, False, "HTTP 503 with an HTML page"),
     (200, "", {}, False, "answered an empty body (HTTP 200)"),
     (200, "<!DOCTYPE html><p>login</p>", {}, True, "answered an HTML page (HTTP 200)"),
     (200, '{"order": 1', {}, False, "invalid or truncated JSON"),
     (200, {"status": "ok"}, {}, False, "add answer has no 'order'")],
)  # fmt: skip
def test_what_a_write_answer_amounts_to(sim, front, status, body, headers, stops, words):
    with make_client(front.url, name="front-write") as c:
        front.reply(status, body, **headers)
        with pytest.raises(AmbiguousSubmissionError) as info:
            c.add({"service": "1", "link": "https://x.com/fw", "quantity": "100"})
    assert info.value.stops_batch is stops
    assert words in str(info.value)
    assert TEST_KEY not in str(info.value)
    assert c.calls["add"] == 1 and sim.orders() == []  # never resent, never forwarded


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 422])
def test_a_json_refusal_is_definite_below_500(sim, front, status):
    with make_client(front.url, name="front-refusal") as c:
        front.reply(status, {"error": "Invalid API key"})
        with pytest.raises(APIError, match="Invalid API key") as info:
            c.add({"service": "1", "link": "https://x.com/fr", "quantity": "100"})
        front.reply(status, {"error": "Incorrect request"})
        assert c.refills([1])[0] == RefillResult(1, error="Incorrect request")
    assert type(info.value) is APIError
    assert c.calls["add"] == 1


def test_ambiguous_errors_do_not_stop_a_batch_unless_told():
    cause = TransportError("connection failed", sent=True)
    assert AmbiguousSubmissionError(cause).stops_batch is False
    assert AmbiguousSubmissionError(cause, stops_batch=True).stops_batch is True


def test_a_panel_whose_certificate_is_not_trusted_gets_no_request(tmp_path):
    """TLS is verified (one shared context per process): against a loopback https server with
    a self-signed certificate the call fails before any request (so before the key) is sent."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"balance": "1.00", "currency": "USD"}')

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/api/v2"
    client = make_client(url, max_retries=0)
    try:
        with pytest.raises(TransportError) as info:
            client.balance()
        assert received == []  # refused in the handshake: nothing, no key, was sent
        assert TEST_KEY not in str(info.value)
        # The same server answers a client that trusts its certificate: it was the check.
        trusting = httpx.Client(verify=ssl.create_default_context(cafile=str(cert)))
        assert trusting.post(url, data={"action": "balance"}).status_code == 200
        trusting.close()
        assert len(received) == 1
    finally:
        client.close()
        server.shutdown()
        server.server_close()
