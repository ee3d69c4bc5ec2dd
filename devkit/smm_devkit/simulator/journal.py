"""Append-only JSON-lines journal: the simulator's state survives restarts and SIGKILL.

Each mutation is one line written with a single unbuffered `write` before the panel answers,
so a killed process loses nothing it acknowledged, and cost stays O(1) per mutation (no
rewrite of the whole state). A line cut short by a kill is dropped at the next start.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JournalError(RuntimeError):
    """The journal file is damaged in a way that would lose acknowledged state."""


class Journal:
    """Events of one simulated panel, in order; `path=None` keeps nothing (in-memory panel)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self._fd: int | None = None

    def read(self) -> list[dict[str, Any]]:
        """All complete events; a torn last line is cut off so new events append cleanly."""
        if self.path is None or not self.path.exists():
            return []
        data = self.path.read_bytes()
        events: list[dict[str, Any]] = []
        good_end = 0
        position = 0
        while position < len(data):
            newline = data.find(b"\n", position)
            end = len(data) if newline < 0 else newline + 1
            line = data[position:end].strip()
            if line:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    if data[end:].strip():
                        raise JournalError(
                            f"{self.path}: damaged line at byte {position}; refusing to "
                            "start on a journal that would drop acknowledged events"
                        ) from exc
                    log.warning(
                        "%s: dropping a torn last line (%d bytes)", self.path, end - position
                    )
                    break
            good_end = end
            position = end
        if good_end < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
        if good_end and not data[:good_end].endswith(b"\n"):
            with open(self.path, "ab") as handle:
                handle.write(b"\n")
        return events

    def append(self, event: dict[str, Any]) -> None:
        """Write one event as one line, durably enough to survive the process being killed."""
        if self.path is None:
            return
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"
        payload = line.encode("utf-8")
        written = os.write(self._fd, payload)
        while written < len(payload):
            written += os.write(self._fd, payload[written:])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
