"""Simulated time for the demo: the pipeline's "now" follows the simulators' clock.

`make demo` plays weeks of history in about a minute. The simulated panels have a clock of
their own (`SimClock`, moved with `/_sim/advance`); the pipeline stamps its rows with
`datetime.now(UTC)` (`submitted_at`, `observed_at`, `fetched_at`, `changed_at`,
`requested_at`...). For the rows to land on the simulated days, `pipeline_clock` replaces the
name `datetime` in every `smm_pipeline` module that imported it (`from datetime import
datetime`) by a class whose `now()` reads a `SimulatedNow`, for the demo's duration and in the
demo's process only (the runs are executed in process). Everything else about that class is
the real `datetime`: constructors return real `datetime` objects and `isinstance` checks
accept them.

What stays on the real clock, on purpose: `time.time()` (the file sensors' "unchanged for one
interval" rule, the request budget, the replica's lag, the status sensors' due times, which
are then always due: the demo's poll cadence is minutes of simulated time) and DuckDB's
`now()` in SQL (balance_runway's "last 7 days", the stuck-orders check). The demo's history
therefore ends at the real present, so those windows look back over the simulated weeks.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType

PACKAGE = "smm_pipeline"


class SimulatedNow:
    """A simulated instant (epoch seconds) that the demo moves forward by jumps; between
    jumps it runs at the speed of real time, so stamps taken during one run still increase."""

    def __init__(self, start: float) -> None:
        self._lock = threading.Lock()
        self._instant = float(start)
        self._set_at = time.monotonic()

    def now(self) -> float:
        with self._lock:
            return self._instant + (time.monotonic() - self._set_at)

    def jump_to(self, instant: float) -> float:
        """Move forward to `instant` (never back: an instant already passed leaves the clock
        where it is); returns the new simulated time."""
        with self._lock:
            now = time.monotonic()
            self._instant = max(float(instant), self._instant + (now - self._set_at))
            self._set_at = now
            return self._instant

    def datetime(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.now(), _dt.UTC)


class _AnyDatetime(type):
    """`isinstance(x, <the replacement>)` is `isinstance(x, datetime)`: real datetimes pass."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, _dt.datetime)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, _dt.datetime)


def following_datetime(source: Callable[[], float]) -> type[_dt.datetime]:
    """A stand-in for the `datetime` class whose `now()` is `source()` (epoch seconds)."""

    class datetime(_dt.datetime, metaclass=_AnyDatetime):  # noqa: N801 - replaces `datetime`
        def __new__(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
            return _dt.datetime(*args, **kwargs)

        @classmethod
        def now(cls, tz: _dt.tzinfo | None = None) -> _dt.datetime:  # type: ignore[override]
            return _dt.datetime.fromtimestamp(source(), tz)

        @classmethod
        def utcnow(cls) -> _dt.datetime:  # type: ignore[override]
            return _dt.datetime.fromtimestamp(source(), _dt.UTC).replace(tzinfo=None)

        @classmethod
        def today(cls) -> _dt.datetime:  # type: ignore[override]
            return _dt.datetime.fromtimestamp(source())

    return datetime


def pipeline_modules() -> list[ModuleType]:
    """The pipeline's modules imported so far (`load_definitions()` imports every one; a
    module first imported after the patch would keep the real clock, which the demo's tests
    rule out)."""
    return [
        module
        for name, module in sorted(sys.modules.items())
        if module is not None and (name == PACKAGE or name.startswith(f"{PACKAGE}."))
    ]


@contextlib.contextmanager
def pipeline_clock(clock: SimulatedNow) -> Iterator[list[str]]:
    """For the `with` block, `datetime.now()` in the pipeline's modules (those imported: call
    it after `load_definitions()`) reads `clock`; yields the names of the modules that now
    follow it. Restored on exit."""
    replacement = following_datetime(clock.now)
    patched: list[tuple[ModuleType, object]] = []
    for module in pipeline_modules():
        if module.__dict__.get("datetime") is _dt.datetime:
            patched.append((module, module.__dict__["datetime"]))
            module.datetime = replacement  # type: ignore[attr-defined]
    try:
        yield [module.__name__ for module, _ in patched]
    finally:
        for module, original in patched:
            module.datetime = original  # type: ignore[attr-defined]
