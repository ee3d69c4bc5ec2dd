"""The simulator behind the HTTP layer: API calls through latency, rate limit and faults.

`Simulator.api` turns one decoded API call into a `Reply` (status, body, or "drop the
connection"); the server only moves bytes. Everything runs on one event loop, so the panel
state needs no locks and each action is atomic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from smm_devkit.simulator import api
from smm_devkit.simulator.catalog import default_catalog
from smm_devkit.simulator.clock import SimClock
from smm_devkit.simulator.faults import (
    CLOUDFLARE_403,
    CLOUDFLARE_502,
    MAINTENANCE_PAGE,
    REDIRECT_LOCATION,
    REDIRECT_PAGE,
    Fault,
    FaultQueue,
)
from smm_devkit.simulator.journal import Journal
from smm_devkit.simulator.order_types import DEFAULT_DELAY_VALUES
from smm_devkit.simulator.panel_state import PanelState
from smm_devkit.simulator.stats import Stats

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=UTF-8"


@dataclass
class RuntimeConfig:
    """Behaviour that is not panel state: changed live through /_sim/config, never journaled."""

    latency_ms: float = 0.0
    rate_limit_per_minute: int = 0
    status_variants: bool = False
    bare_item_errors: bool = False


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    abort: bool = False  # close the TCP connection without answering


def json_reply(value: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


class Simulator:
    """One simulated panel: its account state, accepted keys, faults, limits and counters."""

    def __init__(self, state: PanelState, keys: Iterable[str], config: RuntimeConfig) -> None:
        self.state = state
        self.keys = tuple(keys)
        if not self.keys or any(not key for key in self.keys):
            raise ValueError("the simulator needs at least one non-empty API key")
        self.config = config
        self.faults = FaultQueue()
        self.stats = Stats()
        self._budget: deque[float] = deque()

    @classmethod
    def create(
        cls,
        *,
        keys: Iterable[str],
        state_file: Path | str | None = None,
        catalog: list[dict[str, Any]] | None = None,
        balance: Decimal | str = "1000.00",
        currency: str = "USD",
        progress_seconds: float = 30.0,
        clock_speed: float = 1.0,
        latency_ms: float = 0.0,
        rate_limit_per_minute: int = 0,
        delay_values: Iterable[int] = DEFAULT_DELAY_VALUES,
        clock_start: float | None = None,
    ) -> Simulator:
        """A simulator, resumed from `state_file` when it holds a journal.

        `clock_start` is the simulated epoch time a new panel starts at (default: the real
        time), e.g. weeks ago for a demo that plays a month of history; a journal's own time
        wins over it."""
        state = PanelState.open(
            SimClock(speed=clock_speed, start=clock_start),
            Journal(state_file),
            catalog=catalog if catalog is not None else default_catalog(),
            balance=Decimal(str(balance)),
            currency=currency,
            progress_seconds=progress_seconds,
            delay_values=delay_values,
        )
        config = RuntimeConfig(latency_ms=latency_ms, rate_limit_per_minute=rate_limit_per_minute)
        return cls(state, keys, config)

    def close(self) -> None:
        self.state.journal.close()

    def config_json(self) -> dict[str, Any]:
        return {
            **asdict(self.config),
            "clock_speed": self.state.clock.speed,
            "delay_values": list(self.state.delay_values),
            **self.state.tuning.to_json(),
        }

    async def api(self, form: Mapping[str, str]) -> Reply:
        """Answer one API v2 call, through rate limit, latency and any queued fault."""
        self.stats.request_started()
        try:
            action = form.get("action", "")
            self.stats.received(action, api.count_ids(action, form))
            retry_after = self._spend_budget()
            if self.config.latency_ms > 0:
                await asyncio.sleep(self.config.latency_ms / 1000)
            if retry_after is not None:
                self.stats.rate_limited += 1
                return self._too_many(retry_after)
            fault = self.faults.take(action)
            if fault is None:
                return json_reply(self._process(form, self._style()))
            self.stats.faults_fired[fault.kind] += 1
            return await self._faulty(fault, form)
        finally:
            self.stats.request_finished()

    async def _faulty(self, fault: Fault, form: Mapping[str, str]) -> Reply:
        style = self._style()
        if fault.kind == "bare_item_errors":
            style = api.Style(style.status_variants, True)
        elif fault.kind == "status_variants":
            style = api.Style(True, style.bare_item_errors)
        if fault.kind == "slow":
            if fault.commits:
                body = self._process(form, style)
                await asyncio.sleep(fault.seconds)
            else:
                await asyncio.sleep(fault.seconds)
                body = self._process(form, style)
            return json_reply(body)
        if fault.kind == "other_id":
            return json_reply(self._answer_other_id(form, style))
        if fault.kind == "refusal":
            return json_reply({"error": fault.message}, status=fault.status)
        body = self._process(form, style) if fault.commits else None
        if fault.kind == "redirect_302":
            reply = Reply(302, REDIRECT_PAGE.encode(), HTML_TYPE)
            reply.headers.append(("Location", REDIRECT_LOCATION))
            return reply
        if fault.kind == "html_403":
            return Reply(403, CLOUDFLARE_403.encode(), HTML_TYPE)
        if fault.kind == "empty_404":
            return Reply(404, b"", HTML_TYPE)
        if fault.kind in ("drop_before", "drop_after"):
            return Reply(0, abort=True)
        if fault.kind == "http_500":
            return json_reply({"error": "Internal Server Error"}, status=500)
        if fault.kind == "html_502":
            return Reply(502, CLOUDFLARE_502.encode(), HTML_TYPE)
        if fault.kind == "html_200":
            return Reply(200, MAINTENANCE_PAGE.encode(), HTML_TYPE)
        if fault.kind == "http_429":
            return self._too_many(fault.retry_after)
        if fault.kind == "truncated_json":
            whole = json_reply(body if fault.commits else {"error": "Incorrect request"}).body
            return Reply(200, whole[: max(1, len(whole) // 2)])
        return json_reply(body)

    def _answer_other_id(self, form: Mapping[str, str], style: api.Style) -> Any:
        """Carry the write out, then answer in its documented shape but naming another id:
        `add` the latest order that existed before (the new id when there was none),
        `refill` the latest earlier refill (likewise), `cancel` other orders than asked."""
        orders_before = set(self.state.orders)
        refills_before = set(self.state.refills)
        body = self._process(form, style)
        action = form.get("action", "")
        if action == "add":
            if isinstance(body, dict) and "order" in body and orders_before:
                return {"order": max(orders_before)}
            return body
        if action == "refill":
            if not refills_before:
                return body
            earlier = max(refills_before)
            if isinstance(body, dict) and "refill" in body:
                return {"refill": str(earlier)}
            if isinstance(body, list):
                return [
                    {**item, "refill": earlier}
                    if isinstance(item.get("refill"), int) and item["refill"] not in refills_before
                    else item
                    for item in body
                ]
            return body
        if action == "cancel" and isinstance(body, list):
            asked = {item["order"] for item in body}
            others = self._other_order_ids(asked)
            return [{**item, "order": next(others)} for item in body]
        return body

    def _other_order_ids(self, asked: set[Any]) -> Iterator[int]:
        """Order ids not in `asked`: existing ones, newest first, then unused ones."""
        for order_id in sorted(self.state.orders, reverse=True):
            if order_id not in asked:
                yield order_id
        numbers = [i for i in asked if isinstance(i, int)]
        following = max([*self.state.orders, *numbers, 0]) + 1
        while True:
            if following not in asked:
                yield following
            following += 1

    def _process(self, form: Mapping[str, str], style: api.Style) -> Any:
        answer = api.handle(self.state, form, self.keys, self.state.clock.now(), style)
        self.stats.processed(answer.error, answer.created)
        return answer.body

    def _style(self) -> api.Style:
        return api.Style(self.config.status_variants, self.config.bare_item_errors)

    def _too_many(self, retry_after: int) -> Reply:
        reply = json_reply({"error": "Too many requests"}, status=429)
        reply.headers.append(("Retry-After", str(retry_after)))
        return reply

    def _spend_budget(self) -> int | None:
        """None if the call fits the per-minute budget, else the seconds to wait."""
        limit = self.config.rate_limit_per_minute
        now = time.monotonic()
        while self._budget and self._budget[0] <= now - 60:
            self._budget.popleft()
        if limit <= 0 or len(self._budget) < limit:
            self._budget.append(now)
            return None
        return max(1, math.ceil(self._budget[0] + 60 - now))
