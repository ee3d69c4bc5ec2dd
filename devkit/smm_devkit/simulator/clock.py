"""The simulator's clock: real time times a speed, plus offsets that tests add on purpose.

Order progress reads this clock, never the wall clock, so a test freezes time (speed 0) and
moves it with `advance` instead of sleeping, and the outcome is the same on every machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """Monotonic simulated time in epoch seconds (so dates such as subscription expiry work)."""

    def __init__(
        self, speed: float = 1.0, start: float | None = None, wall: Callable[[], float] = time.time
    ) -> None:
        if speed < 0:
            raise ValueError("clock speed must be >= 0")
        self._wall = wall
        self._speed = float(speed)
        self._anchor_wall = wall()
        self._anchor_sim = self._anchor_wall if start is None else float(start)
        self._last = self._anchor_sim

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        """Current simulated time; never goes backwards, even if the wall clock does."""
        current = self._anchor_sim + (self._wall() - self._anchor_wall) * self._speed
        self._last = max(self._last, current)
        return self._last

    def wall(self) -> float:
        return self._wall()

    def advance(self, seconds: float) -> float:
        """Jump forward by `seconds` of simulated time; returns the new time."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._reanchor(self.now() + seconds)
        return self._last

    def set_speed(self, speed: float) -> None:
        """Change how many simulated seconds pass per real second, from now on."""
        if speed < 0:
            raise ValueError("clock speed must be >= 0")
        self._reanchor(self.now())
        self._speed = float(speed)

    def restore(self, sim_time: float, wall_time: float) -> None:
        """Resume from a journaled (simulated, wall) pair: downtime counts at the current speed."""
        self._anchor_sim = float(sim_time)
        self._anchor_wall = float(wall_time)
        self._last = self._anchor_sim

    def _reanchor(self, sim_time: float) -> None:
        self._anchor_sim = sim_time
        self._anchor_wall = self._wall()
        self._last = max(self._last, sim_time)
