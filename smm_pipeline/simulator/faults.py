"""Queued misbehaviour: the ways real panels fail, served on purpose and counted.

A fault is taken by the next API call it matches (optionally only calls of one action), for
`times` calls (-1: until cleared). Transport faults decide whether the action is committed
before the failure, which is what makes an outcome *ambiguous* for the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from smm_pipeline.simulator.api import ACTIONS

# kind -> whether the action is committed by default before the fault shows.
FAULT_KINDS: dict[str, bool] = {
    "drop_before": False,  # connection closed with no answer; nothing happened
    "drop_after": True,  # the action happened, then the connection closed with no answer
    "http_500": False,  # HTTP 500 with a JSON error
    "html_502": False,  # HTTP 502 with a Cloudflare "Bad gateway" page
    "html_200": False,  # HTTP 200 with an HTML maintenance page
    "truncated_json": True,  # the real answer, cut in the middle (valid HTTP, invalid JSON)
    "http_429": False,  # HTTP 429 with Retry-After
    "slow": True,  # the action happens, the answer comes `seconds` later
    "bare_item_errors": True,  # multi answers carry per-item errors as bare strings
    "status_variants": True,  # status words spelled differently ("Cancelled", "completed")
}
# Presentation faults only make sense where they change something.
_STYLE_ACTIONS = {
    "bare_item_errors": frozenset({"status", "refill", "refill_status", "cancel"}),
    "status_variants": frozenset({"status", "refill_status"}),
}


@dataclass
class Fault:
    kind: str
    action: str | None = None
    times: int = 1
    seconds: float = 5.0  # for "slow"
    retry_after: int = 1  # for "http_429"
    commit: bool | None = None  # None: the kind's default (FAULT_KINDS)

    @property
    def commits(self) -> bool:
        return FAULT_KINDS[self.kind] if self.commit is None else self.commit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "commit": self.commits}

    def matches(self, action: str) -> bool:
        if self.action is not None and self.action != action:
            return False
        allowed = _STYLE_ACTIONS.get(self.kind)
        return allowed is None or action in allowed


def parse_fault(raw: Mapping[str, Any]) -> Fault:
    """A fault from an admin request, or ValueError saying what is wrong with it."""
    unknown = set(raw) - {"kind", "action", "times", "seconds", "retry_after", "commit"}
    if unknown:
        raise ValueError(f"unknown fault fields {sorted(unknown)}")
    kind = str(raw.get("kind", ""))
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
    action = raw.get("action")
    if action is not None and action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {list(ACTIONS)}")
    times = int(raw.get("times", 1))
    if times == 0 or times < -1:
        raise ValueError("times must be >= 1, or -1 for until cleared")
    seconds = float(raw.get("seconds", 5.0))
    retry_after = int(raw.get("retry_after", 1))
    if seconds < 0 or retry_after < 0:
        raise ValueError("seconds and retry_after must be >= 0")
    commit = raw.get("commit")
    if commit is not None and not isinstance(commit, bool):
        raise ValueError("commit must be true, false or absent")
    return Fault(kind, action, times, seconds, retry_after, commit)


class FaultQueue:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def take(self, action: str) -> Fault | None:
        """The first queued fault matching `action`, used up by one call."""
        for index, fault in enumerate(self._faults):
            if fault.matches(action):
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        del self._faults[index]
                return fault
        return None

    def clear(self) -> None:
        self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        return [fault.to_json() for fault in self._faults]


CLOUDFLARE_502 = """<!DOCTYPE html>
<html lang="en-US">
<head>
<title>panel.example | 502: Bad gateway</title>
<meta charset="UTF-8" />
<meta name="robots" content="noindex, nofollow" />
</head>
<body>
<div id="cf-wrapper">
<div id="cf-error-details" class="p-0">
<h1><span class="inline-block">Bad gateway</span>
<span class="code-label">Error code 502</span></h1>
<p>Visit <a href="https://www.cloudflare.com/5xx-error-landing">cloudflare.com</a> for more
information.</p>
<div class="cf-error-footer">Cloudflare Ray ID: <strong>8f1c2a3b4d5e6f70</strong> &bull;
Performance &amp; security by Cloudflare</div>
</div>
</div>
</body>
</html>
"""

MAINTENANCE_PAGE = """<!DOCTYPE html>
<html>
<head><title>Site Maintenance</title><meta charset="utf-8"></head>
<body>
<article>
<h1>We&rsquo;ll be back soon!</h1>
<p>Sorry for the inconvenience but we&rsquo;re performing some maintenance at the moment.
We&rsquo;ll be back online shortly!</p>
<p>&mdash; The Team</p>
</article>
</body>
</html>
"""
