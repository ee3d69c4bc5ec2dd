"""What clients did to the simulated panel, for tests and benchmarks to assert on.

Counts calls per action (every call received), ids per call, errors answered, faults fired,
the peak of concurrent API requests and the busiest 60-second and 1-second windows: the
numbers that prove a client batches, stays within its concurrency cap and its request budget,
and never submits twice.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.api_requests = 0
        self.calls: Counter[str] = Counter()
        self.ids_per_call: dict[str, list[int]] = {}
        self.orders_created = 0
        self.errors: Counter[str] = Counter()
        self.faults_fired: Counter[str] = Counter()
        self.rate_limited = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_calls_per_minute = 0
        self.max_calls_per_second = 0
        self._window: deque[float] = deque()
        self._second: deque[float] = deque()

    def request_started(self) -> None:
        self.api_requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def request_finished(self) -> None:
        self.in_flight -= 1

    def received(self, action: str, ids: int) -> None:
        """One API call arrived, whatever then happens to it (fault, 429, bad key)."""
        self.calls[action] += 1
        if ids:
            self.ids_per_call.setdefault(action, []).append(ids)
        now = time.monotonic()
        self._window.append(now)
        while self._window and self._window[0] <= now - 60:
            self._window.popleft()
        self.max_calls_per_minute = max(self.max_calls_per_minute, len(self._window))
        self._second.append(now)
        while self._second and self._second[0] <= now - 1:
            self._second.popleft()
        self.max_calls_per_second = max(self.max_calls_per_second, len(self._second))

    def processed(self, error: str | None, created: bool) -> None:
        """The panel carried out a call: it answered `error`, or placed an order."""
        if error:
            self.errors[error] += 1
        if created:
            self.orders_created += 1

    def snapshot(self, orders_total: int, refills_total: int) -> dict[str, Any]:
        return {
            "api_requests": self.api_requests,
            "calls": dict(self.calls),
            "ids_per_call": {k: list(v) for k, v in self.ids_per_call.items()},
            "orders_created": self.orders_created,
            "orders_total": orders_total,
            "refills_total": refills_total,
            "errors": dict(self.errors),
            "faults_fired": dict(self.faults_fired),
            "rate_limited": self.rate_limited,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "max_calls_per_minute": self.max_calls_per_minute,
            "max_calls_per_second": self.max_calls_per_second,
        }
