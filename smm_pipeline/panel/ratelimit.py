"""Per-panel request budget and concurrency cap, shared by every caller in the process.

A panel's budget is `rate_limit_per_minute`; requests are spaced at least 60/rate seconds apart
(so no 60-second window ever holds more than the budget) and at most `max_concurrency` are in
flight at once. Both limits are keyed by panel name, so two clients for the same panel in one
process (two Dagster steps, a sensor and an op) share them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class PanelLimiter:
    def __init__(self, rate_limit_per_minute: int, max_concurrency: int) -> None:
        self.interval = 60.0 / rate_limit_per_minute
        self.max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self._next_start = 0.0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one concurrency slot and start no earlier than the rate budget allows."""
        with self._slots:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next_start)
                self._next_start = start + self.interval
            if start > now:
                time.sleep(start - now)
            yield

    def back_off(self, seconds: float) -> None:
        """The panel asked us to wait (429 Retry-After): no request starts before then."""
        with self._lock:
            self._next_start = max(self._next_start, time.monotonic() + seconds)


_registry: dict[tuple[str, int, int], PanelLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(panel: str, rate_limit_per_minute: int, max_concurrency: int) -> PanelLimiter:
    """The process-wide limiter of a panel (one per name and limits)."""
    key = (panel, rate_limit_per_minute, max_concurrency)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = PanelLimiter(rate_limit_per_minute, max_concurrency)
        return limiter
