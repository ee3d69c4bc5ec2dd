"""Pipeline-level fault matrix: every simulator fault x the writing actions `add`, `refill`
and `cancel`, over real loopback HTTP into a real DuckDB file, asserting the exact warehouse
states and that nothing reached the panel twice.

The rules (README, Exactly once, and ambiguous orders): only readable JSON is a definite
outcome of a write. A refusal
(`{"error"}` below 500) is a definite failure with the panel's words; a 429 is retried and
succeeds once; a lost, cut, 5xx, HTML or late answer is ambiguous and never resent. An answer
that is not the API at all (redirect, Cloudflare page, empty 404, HTML 200) is ambiguous for
the request that got it and stops the panel's batch: what was not sent yet is a definite
"not sent: ..." failure. An `add` answered with an order id another row holds is ambiguous
with `answered_order_id` set, and spend counts that order once.

One simulator serves the whole module (faults cleared around every case). `add` goes through
`submit_file` with one worker, so exactly one row gets the fault and the order of the others
is known. Refill and cancel files go through their file path (inbox -> warehouse ->
processed/ with results.csv: what the jobs run; one case per action also through sensor and
job), one call at a time and one id per call, on orders placed once for the whole module.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pandas as pd
import pytest

from smm_devkit.simulator.faults import FAULT_KINDS
from smm_devkit.simulator.testing import (
    SimulatorAdminError,
    ThreadedSimulator,
    running_simulator,
)
from smm_pipeline.config import PanelConfig, Secret
from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.operations.cancels import process_cancel_file
from smm_pipeline.operations.refills import process_refill_file
from smm_pipeline.operations.submission import NOT_THE_API_STOP, submit_file
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.panel.parsing import MISSING_WRITE
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.status import Cadence
from smm_pipeline_tests.conftest import TEST_KEY, Pipeline, make_pipeline, panel_yaml
from smm_pipeline_tests.dagster_helpers import event_texts, look_twice, run_requested, settle
from smm_pipeline_tests.test_refills_cancels import place_orders, results
from smm_pipeline_tests.test_submission import LIKES, outbox, record

TIMEOUT = 2.0  # every client's timeout_seconds; the slow fault answers later than this
N = 3  # rows (orders) per case
OUTCOME_UNKNOWN = "outcome unknown, the request may have reached the panel ({})"
MULTI_NOT_SENT = (
    "not sent: the panel answered an earlier request of this batch with something that is not "
    "the API ({})"
)
FORMULA = '=HYPERLINK("http://evil.example","click")'

# What each fault amounts to: the cause inside "outcome unknown, ... (cause)".
CAUSE = {
    "drop_before": "connection failed (RemoteProtocolError)",
    "drop_after": "connection failed (RemoteProtocolError)",
    "http_500": "HTTP 500: Internal Server Error",
    "html_502": "HTTP 502 with an HTML page, not the API's JSON answer",
    "truncated_json": "answered invalid or truncated JSON (HTTP 200)",
    "slow": "no answer in time (ReadTimeout)",
    "redirect_302": (
        "redirected (HTTP 302 to /login); redirects are never followed because the key "
        "travels in the body: fix the panel url"
    ),
    "html_403": "HTTP 403 with an HTML page, not the API's JSON answer",
    "empty_404": "HTTP 404 with an empty body, not the API's JSON answer",
    "html_200": "answered an HTML page (HTTP 200)",
}


@dataclass(frozen=True)
class Case:
    """One scenario: the faults queued in order, and what the first request of the batch
    gets: `ambiguous` (the batch goes on), `stop` (ambiguous, and the batch stops), `refused`
    (a definite refusal), `ok` (429: retried) or `other_id` (the second request is answered
    with the first one's id). `acted`: whether the panel carried out the faulted request."""

    id: str
    faults: tuple[tuple[str, dict[str, Any]], ...]
    first: str
    acted: bool
    message: str | None = None

    @property
    def kind(self) -> str:
        return self.faults[-1][0]

    @property
    def cause(self) -> str | None:
        return CAUSE.get(self.kind)


def _case(kind: str, first: str, name: str | None = None, **options: Any) -> Case:
    acted = options.get("commit", FAULT_KINDS[kind])
    return Case(name or kind, ((kind, options),), first, acted, options.get("message"))


ONE_OFF = ["drop_before", "drop_after", "http_500", "html_502", "truncated_json"]
CASES = [
    *(_case(kind, "ambiguous") for kind in ONE_OFF),
    _case("slow", "ambiguous", seconds="4"),  # answers after the client gave up
    _case("redirect_302", "stop"),
    _case("html_403", "stop", "html_403-commit", commit=True),
    _case("html_403", "stop", "html_403-no-commit", commit=False),
    _case("empty_404", "stop"),
    _case("html_200", "stop"),
    _case("http_429", "ok", times=2, retry_after=0),
    _case("refusal", "refused", message="Service is temporarily disabled"),
    # A 4xx refusal whose text a spreadsheet would run: stored as the panel's words.
    _case("refusal", "refused", "refusal-400-formula", message=FORMULA, status=400),
]
# A harmless fault that matches the action first (slow, no delay), so that the second request
# of the batch is the one answered with an earlier id.
OTHER_ID = Case("other_id", (("slow", {"seconds": "0"}), ("other_id", {})), "other_id", True)
BARE = Case("bare_item_errors", (("bare_item_errors", {}),), "refused", False)
NEVER_ON_WRITES = ["status_variants"]
assert {c.kind for c in [*CASES, OTHER_ID, BARE]} | {*NEVER_ON_WRITES} == set(FAULT_KINDS)


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[ThreadedSimulator]:
    with running_simulator(keys=(TEST_KEY,)) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _clean_faults(shared_sim: ThreadedSimulator) -> Iterator[None]:
    shared_sim.clear_faults()
    yield
    shared_sim.clear_faults()


def inject(sim: ThreadedSimulator, action: str, case: Case) -> None:
    sim.reset_stats()
    for kind, options in case.faults:
        sim.inject(kind, action=action, **options)


def fired(sim: ThreadedSimulator) -> int:
    return sum(sim.stats()["faults_fired"].values())


def write_calls(sim: ThreadedSimulator, action: str) -> int:
    return sim.stats()["calls"].get(action, 0)


def expected_calls(case: Case) -> int:
    if case.first == "stop":
        return 1
    if case.first == "ok":
        return N + case.faults[0][1]["times"]
    return N


def acted_on(case: Case) -> list[bool]:
    """Whether the panel carried out the request of each row of the batch."""
    if case.first == "ambiguous":
        return [case.acted, True, True]
    if case.first == "stop":
        return [case.acted, False, False]
    if case.first == "refused":
        return [False, True, True]
    return [True] * N


# ------------------------------------------------------------------ add


@dataclass
class AddEnv:
    db: Path
    client: PanelClient


@pytest.fixture(scope="module")
def add_env(tmp_path_factory, shared_sim) -> Iterator[AddEnv]:
    """One warehouse file and one client (one worker) for every `add` case."""
    config = PanelConfig(
        name="add",
        url=shared_sim.url,
        key_env="UNUSED",
        rate_limit_per_minute=60000,
        max_concurrency=1,
        timeout_seconds=TIMEOUT,
    )
    with PanelClient(config, Secret(TEST_KEY)) as client:
        yield AddEnv(tmp_path_factory.mktemp("add") / "w.duckdb", client)


def case_outbox(case_id: str) -> pd.DataFrame:
    """N rows of one case, on panel `add`: refs and links unique to the case, file hash too."""
    name = case_id.replace("-", "_")
    return outbox(name, N).assign(panel="add", file_hash=name)


def submit(env: AddEnv, hash_: str):
    return submit_file(env.db, hash_, {"add": env.client})


def orders_state(db: Path, refs: list[str]) -> list[tuple]:
    """(submit_state, submit_error, order_id, answered_order_id) per ref, in that order; and
    the warehouse-wide rules: no order id held by two submitted rows, nothing left pending
    or sending."""
    with connect(db) as conn:
        found = conn.execute(
            """
            SELECT ref, submit_state, submit_error, order_id, answered_order_id FROM orders
            WHERE list_contains(?, ref)
            """,
            [refs],
        ).fetchall()
        twins = conn.execute(
            """
            SELECT panel, order_id FROM orders WHERE submit_state = 'submitted'
            GROUP BY ALL HAVING count(*) > 1
            """
        ).fetchall()
        left = conn.execute(
            "SELECT ref, submit_state FROM orders WHERE submit_state IN ('pending', 'sending')"
        ).fetchall()
    assert twins == [], "one panel order id held by two submitted rows"
    assert left == [], "rows left pending or sending"
    by_ref = {ref: tuple(rest) for ref, *rest in found}
    return [by_ref[ref] for ref in refs]


def placed(sim: ThreadedSimulator, links: list[str]) -> list[int | None]:
    """The panel order id of each link (None: never placed); never two orders of one link."""
    found: dict[str, list[int]] = {link: [] for link in links}
    for order in sim.orders():
        if order["link"] in found:
            found[order["link"]].append(order["order"])
    assert all(len(ids) <= 1 for ids in found.values()), found
    return [ids[0] if ids else None for ids in found.values()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_add_under_each_fault(add_env, shared_sim, case):
    sim, frame = shared_sim, case_outbox(case.id)
    hash_, refs, links = frame["file_hash"][0], list(frame["ref"]), list(frame["link"])
    record(add_env.db, frame)
    inject(sim, "add", case)
    report = submit(add_env, hash_)
    again = submit(add_env, hash_)  # nothing pending: nothing is sent again

    ids = placed(sim, links)
    assert [i is not None for i in ids] == acted_on(case)
    assert sim.stats()["orders_created"] == sum(acted_on(case))
    unknown = ("ambiguous", OUTCOME_UNKNOWN.format(case.cause), None, None)
    not_sent = ("failed", NOT_THE_API_STOP.format(cause=case.cause), None, None)
    done = [("submitted", None, i, None) for i in ids]
    if case.first == "ambiguous":
        expected = [unknown, *done[1:]]
    elif case.first == "stop":
        expected = [unknown, *[not_sent] * (N - 1)]
    elif case.first == "refused":
        expected = [("failed", case.message, None, None), *done[1:]]
    else:
        expected = done
    assert orders_state(add_env.db, refs) == expected
    assert write_calls(sim, "add") == expected_calls(case)
    assert fired(sim) == case.faults[0][1].get("times", 1)
    assert (again.total, again.calls) == (0, 0)
    assert report.stopped_panels == (["add"] if case.first == "stop" else [])
    if case.first != "stop":
        return

    assert not_sent[1].startswith("not sent:")
    # The rows not sent are plain failures: recorded again (a later drop of the file), they
    # are sent; the ambiguous row is left alone.
    record(add_env.db, frame)
    resent = submit(add_env, hash_)
    assert (resent.total, resent.submitted, resent.calls) == (N - 1, N - 1, N - 1)
    ids = placed(sim, links)
    assert (ids[0] is not None) is case.acted
    assert orders_state(add_env.db, refs) == [unknown, *[
        ("submitted", None, i, None) for i in ids[1:]]]  # fmt: skip


@pytest.mark.parametrize("across_files", [False, True], ids=["same-batch", "earlier-file"])
def test_add_answered_with_an_id_another_row_holds(add_env, shared_sim, across_files):
    """other_id: the panel places the order but answers the previous order's id. That row is
    ambiguous (order_id NULL, answered_order_id the other row's id, the error naming that
    row), the other row keeps its order, and spend counts that order once."""
    sim = shared_sim
    frame = case_outbox("other_id_" + ("files" if across_files else "batch"))
    frame = frame.assign(campaign="other" + ("files" if across_files else "batch"))
    hash_, refs, links = frame["file_hash"][0], list(frame["ref"]), list(frame["link"])
    if across_files:
        # Row 0 in an earlier file; the fault on the first add of the next file.
        first_hash = hash_ + "_first"
        record(add_env.db, frame.iloc[:1].assign(file_hash=first_hash), frame.iloc[1:])
        sim.reset_stats()
        submit(add_env, first_hash)
        sim.inject("other_id", action="add")
    else:
        record(add_env.db, frame)
        inject(sim, "add", OTHER_ID)
    report = submit(add_env, hash_)
    again = submit(add_env, hash_)

    ids = placed(sim, links)
    assert None not in ids  # the panel placed all three, once each
    assert sim.stats()["orders_created"] == N
    held = f"the panel answered order id {ids[0]}, which ref {refs[0]!r} already holds"
    state = orders_state(add_env.db, refs)
    assert state[0] == ("submitted", None, ids[0], None)
    assert state[1][0] == "ambiguous" and state[1][2:] == (None, ids[0])
    assert state[1][1].startswith(held)
    assert state[2] == ("submitted", None, ids[2], None)
    assert (report.ambiguous, again.calls) == (1, 0)
    assert write_calls(sim, "add") == N
    # Spend counts the answered order once: two orders, not three.
    campaign = "other" + ("files" if across_files else "batch")
    with connect(add_env.db) as conn:
        orders, charge = conn.execute(
            "SELECT sum(orders), sum(charge) FROM spend_daily WHERE campaign = ?", [campaign]
        ).fetchone()
        reached = conn.execute(
            "SELECT ref, reached_panel FROM order_facts WHERE list_contains(?, ref)", [refs]
        ).fetchall()
    assert (orders, charge) == (2, 2 * LIKES)
    assert dict(reached) == {refs[0]: True, refs[1]: False, refs[2]: True}


@pytest.mark.parametrize(
    ("kind", "action"),
    [("bare_item_errors", "add"), *(("status_variants", a) for a in ("add", "refill", "cancel"))],
)
def test_faults_that_cannot_change_a_write_are_refused_at_injection(shared_sim, kind, action):
    """bare_item_errors only changes multi answers (refill and cancel: in the matrix below),
    status_variants only status words: the simulator refuses to queue them where they would
    never fire, so no case of the matrix is silently a no-op."""
    with pytest.raises(SimulatorAdminError, match=f"never fires on '{action}'"):
        shared_sim.inject(kind, action=action)


# ------------------------------------------------------------------ refill and cancel files

RC_CASES = [*CASES, OTHER_ID, BARE]
JOB_CASE = _case("html_403", "stop", "job", commit=True)  # through sensor and job
WINDOW = "window"  # a batch longer than one window of the file path (100 ids x concurrency)
BARE_CANCEL_SERVICE = 31  # cancel=true, refill=false: its cancel is switched off at the panel
BARE_REFILL_ERROR = "The refill task is not completed for this order"
BARE_CANCEL_ERROR = "Cancel is disabled for this service"


@dataclass
class ActionEnv:
    pipeline: Pipeline
    ids: dict[str, int]  # ref -> panel order id
    clients: dict[str, PanelClient]
    instance: dg.DagsterInstance

    def refs(self, action: str, case_id: str, n: int = N) -> list[int]:
        return [self.ids[f"{action[0]}-{case_id}-{i}"] for i in range(n)]


@pytest.fixture(scope="module")
def action_env(tmp_path_factory, shared_sim) -> Iterator[ActionEnv]:
    """One pipeline (one panel) with the orders of every refill and cancel case placed once:
    refs `r-<case>-<i>` (Completed) and `c-<case>-<i>` (Pending); the cases' client sends one
    call at a time."""
    sim = shared_sim
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test() as instance:
        panel = panel_yaml(
            "sim",
            sim.url,
            rate_limit_per_minute=60000,
            max_concurrency=8,  # to place the orders; the cases send one call at a time
            timeout_seconds=TIMEOUT,
            max_batch_spend='"500.00"',
        )
        pipeline = make_pipeline(tmp_path_factory.mktemp("actions"), mp, [panel])
        rows = []
        for case in [*RC_CASES, JOB_CASE]:
            for i in range(N):
                rows.append((f"r-{case.id}-{i}", 1, 100))
                bare = case is BARE and i == 0
                rows.append((f"c-{case.id}-{i}", BARE_CANCEL_SERVICE if bare else 1, 100))
        rows += [(f"r-{WINDOW}-{i}", 1, 50) for i in range(101)]
        ids = place_orders(pipeline, "orders.csv", rows)
        for ref, order_id in ids.items():
            if ref.startswith("r-"):
                sim.set_order(order_id, status="Completed")
        config = replace(pipeline.settings.panels[0], max_concurrency=1)
        with PanelClient(config, config.api_key()) as client:
            yield ActionEnv(pipeline, ids, {"sim": client}, instance)


def handle_file(
    env: ActionEnv, kind: str, name: str, content: str, *, ids_per_call: int = 1
) -> None:
    """Drop a refill or cancel file and handle it as its job does (inbox -> warehouse ->
    processed/ with results.csv), the client sending `ids_per_call` ids a call (so that the
    chunks of a batch go out one after another)."""
    pipeline = env.pipeline
    for leftover in pipeline.folders.inbox(kind).iterdir():  # a failed case's file
        leftover.unlink()
    pipeline.drop(kind, name, content)
    settings = pipeline.settings
    cadence = Cadence(
        settings.pipeline.poll_min_interval_minutes, settings.pipeline.poll_max_interval_minutes
    )
    handle = process_refill_file if kind == "refills" else process_cancel_file
    for client in env.clients.values():
        client.max_ids_per_call = ids_per_call
    handle(settings, pipeline.db_path, name, file_hash(content.encode()), env.clients, cadence)


def drop_through_job(env: ActionEnv, kind: str, name: str, content: str) -> None:
    """Drop a file, let its sensor look twice, run the one run it asks for (real Dagster)."""
    sensor, job = {
        "refills": ("refill_csv_sensor", "request_refills"),
        "cancels": ("cancel_csv_sensor", "cancel_orders"),
    }[kind]
    settle(env.pipeline.drop(kind, name, content))
    defs = env.pipeline.defs()
    ticked = look_twice(defs, sensor, env.instance)
    assert len(ticked.run_requests) == 1, ticked.skip_message
    result = run_requested(defs, ticked.run_requests[0], env.instance, job)
    assert result.success, event_texts(result)
    assert TEST_KEY not in event_texts(result)


def raw_refill(sim: ThreadedSimulator, order_id: int) -> int:
    """A refill asked for outside the pipeline (another tool, the panel's web page)."""
    answer = httpx.post(
        sim.url, data={"key": TEST_KEY, "action": "refill", "order": str(order_id)}
    ).json()
    return int(answer["refill"])


def expected_multi(case: Case, action: str) -> list[tuple[str, str | None]]:
    """(state, error) per order of a refill or cancel batch, in file order."""
    ok = "submitted" if action == "refill" else "accepted"
    refused = "failed" if action == "refill" else "refused"
    if case.first == "ambiguous":
        return [("ambiguous", OUTCOME_UNKNOWN.format(case.cause)), (ok, None), (ok, None)]
    if case.first == "stop":
        stop = MULTI_NOT_SENT.format(case.cause)
        return [("ambiguous", OUTCOME_UNKNOWN.format(case.cause))] + [(refused, stop)] * (N - 1)
    if case is BARE:
        return [(refused, BARE_REFILL_ERROR if action == "refill" else BARE_CANCEL_ERROR),
                (ok, None), (ok, None)]  # fmt: skip
    if case.first == "refused":
        return [(refused, case.message), (ok, None), (ok, None)]
    if case is OTHER_ID and action == "cancel":  # the answer names other orders
        return [(ok, None), ("ambiguous", MISSING_WRITE), (ok, None)]
    return [(ok, None)] * N  # 429; other_id on refill is checked on its own


def in_report(error: str | None) -> str:
    """An error as results.csv shows it: text a spreadsheet would run gets a leading quote,
    the panel's words stay data."""
    if not error:
        return ""
    return "'" + error if error.startswith("=") else error


def refill_ids_on_panel(sim: ThreadedSimulator) -> dict[int, int]:
    """order id -> its refill id at the panel; never two refills of one order."""
    by_order = collections.defaultdict(list)
    for refill in sim.refills():
        by_order[refill["order"]].append(refill["refill"])
    assert all(len(v) == 1 for v in by_order.values()), by_order
    return {order: refills[0] for order, refills in by_order.items()}


ORDERS_LEFT = ("SELECT count(*) FROM orders WHERE submit_state IN ('pending', 'sending')", [])


def read(env: ActionEnv, *queries: tuple[str, list]) -> list[list[tuple]]:
    """Several queries on one read-only connection to the warehouse."""
    with duckdb.connect(str(env.pipeline.db_path), read_only=True) as con:
        return [con.execute(sql, params).fetchall() for sql, params in queries]


def stored_refills(env: ActionEnv, ids: list[int]) -> list[tuple]:
    """(request_state, refill_id, error) per order, in that order; and no panel refill id
    of these orders held by two submitted refills."""
    rows, twins, orders_left = read(
        env,
        (
            "SELECT order_id, request_state, refill_id, error FROM refills "
            "WHERE list_contains(?, order_id)",
            [ids],
        ),
        (
            "SELECT refill_id FROM refills WHERE request_state = 'submitted' "
            "GROUP BY refill_id HAVING count(*) > 1 AND bool_or(list_contains(?, order_id))",
            [ids],
        ),
        ORDERS_LEFT,
    )
    assert len(rows) == len(ids), rows  # one request per order
    assert orders_left == [(0,)], "orders left pending or sending"
    assert twins == [], "one panel refill id held by two submitted refills"
    by_order = {oid: tuple(rest) for oid, *rest in rows}
    return [by_order[oid] for oid in ids]


def refill_case(env: ActionEnv, sim: ThreadedSimulator, case: Case) -> tuple[list[int], dict]:
    """Run one refill case; returns the batch's order ids and the panel's new refills."""
    ids = env.refs("refill", case.id)
    if case is BARE:
        raw_refill(sim, ids[0])  # the panel refuses another refill while this one runs
    before = set(refill_ids_on_panel(sim).values())
    inject(sim, "refill", case)
    handle_file(env, "refills", f"refill-{case.id}.csv", "order\n" + "".join(f"{i}\n" for i in ids))
    after = refill_ids_on_panel(sim)
    new = {o: r for o, r in after.items() if r not in before}
    assert set(new) <= set(ids)  # no refill of any other order
    return ids, new


def check_redrop(env: ActionEnv, sim: ThreadedSimulator, kind: str, name: str, ids) -> None:
    """The same content dropped again (another name): nothing is sent again."""
    sim.reset_stats()
    content = "order\n" + "".join(f"{i}\n" for i in ids)
    handle_file(env, kind, f"{name}-again.csv", content)
    assert write_calls(sim, kind.removesuffix("s")) == 0
    rows = results(env.pipeline, f"{name}-again.results.csv")
    assert [r["state" if kind == "refills" else "result"] for r in rows] == ["skipped"] * len(ids)


@pytest.mark.parametrize("case", [*CASES, BARE], ids=lambda c: c.id)
def test_refill_file_under_each_fault(action_env, shared_sim, case):
    env, sim = action_env, shared_sim
    ids, new = refill_case(env, sim, case)
    assert [oid in new for oid in ids] == acted_on(case)
    assert write_calls(sim, "refill") == expected_calls(case)
    expected = [
        (state, new[oid] if state == "submitted" else None, error)
        for oid, (state, error) in zip(ids, expected_multi(case, "refill"), strict=True)
    ]
    assert stored_refills(env, ids) == expected
    report = results(env.pipeline, f"refill-{case.id}.results.csv")
    assert [(int(r["order"]), r["state"], r["refill_id"], r["error"]) for r in report] == [
        (oid, state, "" if rid is None else str(rid), in_report(error))
        for oid, (state, rid, error) in zip(ids, expected, strict=True)
    ]
    check_redrop(env, sim, "refills", f"refill-{case.id}", ids)


def test_refill_answered_with_an_id_another_refill_holds(action_env, shared_sim):
    """other_id on refill: the panel creates the second order's refill but answers the first
    one's refill id. Like `add`, that answer must not make two rows hold one refill id: the
    second row is ambiguous, without a refill id to poll."""
    env, sim = action_env, shared_sim
    ids, new = refill_case(env, sim, OTHER_ID)
    assert sorted(new) == sorted(ids)  # the panel made all three refills
    assert write_calls(sim, "refill") == N
    stored = stored_refills(env, ids)  # asserts no refill id held by two submitted rows
    assert stored[0] == ("submitted", new[ids[0]], None)
    assert stored[1][:2] == ("ambiguous", None)
    assert stored[2] == ("submitted", new[ids[2]], None)


def stored_cancels(env: ActionEnv, name: str, ids: list[int]) -> list[tuple]:
    rows, orders_left = read(
        env,
        ("SELECT order_id, result, error FROM cancels WHERE source_file = ?", [f"{name}.csv"]),
        ORDERS_LEFT,
    )
    assert sorted(oid for oid, *_ in rows) == sorted(ids)  # nothing recorded for other orders
    assert orders_left == [(0,)], "orders left pending or sending"
    by_order = {oid: tuple(rest) for oid, *rest in rows}
    return [by_order[oid] for oid in ids]


@pytest.mark.parametrize("case", [*CASES, OTHER_ID, BARE], ids=lambda c: c.id)
def test_cancel_file_under_each_fault(action_env, shared_sim, case):
    env, sim = action_env, shared_sim
    ids = env.refs("cancel", case.id)
    name = f"cancel-{case.id}"
    if case is BARE:  # the panel changed its terms; the warehouse's catalog is older
        sim.patch_service(BARE_CANCEL_SERVICE, cancel=False)
    inject(sim, "cancel", case)
    try:
        handle_file(env, "cancels", f"{name}.csv", "order\n" + "".join(f"{i}\n" for i in ids))
    finally:
        if case is BARE:
            sim.patch_service(BARE_CANCEL_SERVICE, cancel=True)

    statuses = {o["order"]: o["status"] for o in sim.orders()}
    assert [statuses[oid] == "Canceled" for oid in ids] == acted_on(case)
    assert write_calls(sim, "cancel") == expected_calls(case)
    expected = expected_multi(case, "cancel")
    assert stored_cancels(env, name, ids) == expected
    report = results(env.pipeline, f"{name}.results.csv")
    assert [(int(r["order"]), r["result"], r["error"]) for r in report] == [
        (oid, result, in_report(error)) for oid, (result, error) in zip(ids, expected, strict=True)
    ]
    check_redrop(env, sim, "cancels", name, ids)


@pytest.mark.parametrize("kind", ["refills", "cancels"])
def test_a_block_page_through_sensor_and_job(action_env, shared_sim, kind):
    """The same rules through the real sensor and job, with the client's own chunking (one
    call of up to 100 ids): the one call got a Cloudflare block page after acting, so every
    order of it is ambiguous, and a re-drop sends nothing."""
    env, sim = action_env, shared_sim
    action = kind.removesuffix("s")
    ids = env.refs(action, JOB_CASE.id)
    name = f"{action}-job"
    before = set(refill_ids_on_panel(sim).values())
    inject(sim, action, JOB_CASE)
    drop_through_job(env, kind, f"{name}.csv", "order\n" + "".join(f"{i}\n" for i in ids))
    assert write_calls(sim, action) == 1
    unknown = OUTCOME_UNKNOWN.format(JOB_CASE.cause)
    if kind == "refills":
        new = {o: r for o, r in refill_ids_on_panel(sim).items() if o in ids and r not in before}
        assert sorted(new) == sorted(ids)  # commit=True: the panel made them
        assert stored_refills(env, ids) == [("ambiguous", None, unknown)] * N
    else:
        statuses = {o["order"]: o["status"] for o in sim.orders()}
        assert [statuses[oid] for oid in ids] == ["Canceled"] * N
        assert stored_cancels(env, name, ids) == [("ambiguous", unknown)] * N
    column = "state" if kind == "refills" else "result"
    report = results(env.pipeline, f"{name}.results.csv")
    assert [(r[column], r["error"]) for r in report] == [("ambiguous", unknown)] * N
    check_redrop(env, sim, kind, name, ids)


def test_a_stop_holds_across_the_windows_of_a_long_refill_file(action_env, shared_sim):
    """101 finished orders, one call at a time, the client's own 100 ids a call: the file
    path sends them in windows of 100 x max_concurrency. The first call gets a block page (not
    acted on): its 100 orders are ambiguous and the batch stops, so the 101st order, in the
    next window, is not sent ("not sent: ...") rather than requested anyway."""
    env, sim = action_env, shared_sim
    ids = env.refs("refill", WINDOW, 101)
    case = _case("html_403", "stop", commit=False)
    inject(sim, "refill", case)
    handle_file(
        env, "refills", "window.csv", "order\n" + "".join(f"{i}\n" for i in ids), ids_per_call=100
    )
    stored = stored_refills(env, ids)
    assert stored[:100] == [("ambiguous", None, OUTCOME_UNKNOWN.format(case.cause))] * 100
    assert stored[100] == ("failed", None, MULTI_NOT_SENT.format(case.cause))
    assert write_calls(sim, "refill") == 1
    assert not set(ids) & set(refill_ids_on_panel(sim))
