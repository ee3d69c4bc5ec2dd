"""Queued misbehaviour: the ways real panels fail, served on purpose and counted.

A fault is taken by the next API call it matches (optionally only calls of one action), for
`times` calls (-1: until cleared). Transport faults decide whether the action is committed
before the failure, which is what makes an outcome *ambiguous* for the client.

Faults that answer something which is not the API at all (a redirect, a Cloudflare block page,
an empty 404) are what a wrong panel url, a wrong path or a blocked IP look like; `refusal`
is the panel's own `{"error": message}` with nothing done; `other_id` carries the action out
and then names another order (or refill) in its answer, as a buggy panel might.

From the command line a fault is `--fault kind[:action][:times][:name=value...]` (see
`parse_fault_spec`), or the same JSON object the admin endpoint takes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from smm_devkit.simulator.api import ACTIONS

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
    "redirect_302": True,  # the action happened, then HTTP 302 to a login page (no JSON)
    "html_403": False,  # HTTP 403 with a Cloudflare "you have been blocked" page
    "empty_404": False,  # HTTP 404 with an empty body
    "refusal": False,  # HTTP `status` (200) {"error": `message`}; never commits
    "other_id": True,  # done, but the answer names another order/refill
}
# Kinds whose commit is fixed: a refusal never acts, an answer naming another id always did.
_FIXED_COMMIT = {"refusal": False, "other_id": True}
# Faults that only make sense where they change something.
_KIND_ACTIONS = {
    "bare_item_errors": frozenset({"status", "refill", "refill_status", "cancel"}),
    "status_variants": frozenset({"status", "refill_status"}),
    "other_id": frozenset({"add", "refill", "cancel"}),
}
FIELDS = ("kind", "action", "times", "seconds", "retry_after", "commit", "message", "status")
DEFAULT_REFUSAL = "Incorrect request"
REDIRECT_LOCATION = "/login"


@dataclass
class Fault:
    kind: str
    action: str | None = None
    times: int = 1
    seconds: float = 5.0  # for "slow"
    retry_after: int = 1  # for "http_429"
    commit: bool | None = None  # None: the kind's default (FAULT_KINDS)
    message: str = DEFAULT_REFUSAL  # for "refusal": the error sentence
    status: int = 200  # for "refusal": the HTTP status it comes with

    @property
    def commits(self) -> bool:
        return FAULT_KINDS[self.kind] if self.commit is None else self.commit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "commit": self.commits}

    def matches(self, action: str) -> bool:
        if self.action is not None and self.action != action:
            return False
        allowed = _KIND_ACTIONS.get(self.kind)
        return allowed is None or action in allowed


def parse_fault(raw: Mapping[str, Any]) -> Fault:
    """A fault from an admin request, or ValueError saying what is wrong with it."""
    unknown = set(raw) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fault fields {sorted(unknown)}; known: {list(FIELDS)}")
    kind = str(raw.get("kind", ""))
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
    action = raw.get("action")
    if action is not None and action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {list(ACTIONS)}")
    allowed = _KIND_ACTIONS.get(kind)
    if action is not None and allowed is not None and action not in allowed:
        only = ", ".join(a for a in ACTIONS if a in allowed)
        raise ValueError(f"the {kind} fault never fires on {action!r}; it applies to {only}")
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
    fixed = _FIXED_COMMIT.get(kind)
    if fixed is not None and commit is not None and commit is not fixed:
        raise ValueError(f"the {kind} fault always has commit={str(fixed).lower()}")
    message = raw.get("message", DEFAULT_REFUSAL)
    if not isinstance(message, str) or not message:
        raise ValueError("message must be a non-empty string")
    status = raw.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int | str):
        raise ValueError("status must be an HTTP status code")
    status = int(status)
    if not 200 <= status <= 599:
        raise ValueError("status must be an HTTP status code from 200 to 599")
    if ("message" in raw or "status" in raw) and kind != "refusal":
        raise ValueError("message and status are options of the refusal fault only")
    return Fault(kind, action, times, seconds, retry_after, commit, message, status)


def parse_fault_spec(text: str) -> Fault:
    """A fault from the command line: `kind[:action][:times][:name=value...]`.

    `action` may be left out (`html_403:-1` or `html_403::-1`: every action, until cleared).
    Options follow the positional parts: `commit=true|false`, `seconds=N`, `retry_after=N`,
    `status=N` and `message=TEXT` (the rest of the spec, colons included, so it comes last).
    A spec starting with `{` is the JSON object the admin endpoint takes. Raises ValueError
    saying what is wrong.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object: {exc}") from None
        if not isinstance(decoded, dict):
            raise ValueError("not a JSON object")
        return parse_fault(decoded)
    kind, *parts = text.split(":")
    raw: dict[str, Any] = {"kind": kind}
    positional = ["action", "times"]
    for index, part in enumerate(parts):
        name, eq, value = part.partition("=")
        if eq:
            positional = []  # options come last
            if name == "message":
                raw["message"] = ":".join([value, *parts[index + 1 :]])
                break
            if name not in _CLI_OPTIONS:
                known = ", ".join([*_CLI_OPTIONS, "message"])
                raise ValueError(f"unknown option {name!r}; known: {known}")
            raw[name] = _option(name, value)
            continue
        if not positional:
            raise ValueError("expected kind[:action][:times][:name=value...]")
        if positional[0] == "action" and part.lstrip("-").isdigit():
            positional.pop(0)  # `kind:times`: no action given
        field = positional.pop(0)
        if part:  # an empty action means any action
            raw[field] = part if field == "action" else _option("times", part)
    return parse_fault(raw)


_CLI_OPTIONS = ("commit", "seconds", "retry_after", "status")


def _option(name: str, value: str) -> Any:
    try:
        if name == "commit":
            if value.lower() not in ("true", "false"):
                raise ValueError
            return value.lower() == "true"
        if name == "seconds":
            return float(value)
        return int(value)
    except ValueError:
        raise ValueError(f"bad value for {name}: {value!r}") from None


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

CLOUDFLARE_403 = """<!DOCTYPE html>
<html lang="en-US">
<head>
<title>Attention Required! | Cloudflare</title>
<meta charset="UTF-8" />
<meta name="robots" content="noindex, nofollow" />
</head>
<body>
<div id="cf-wrapper">
<div id="cf-error-details" class="cf-error-details-wrapper">
<h1 data-translate="block_headline">Sorry, you have been blocked</h1>
<h2 class="cf-subheadline">You are unable to access panel.example</h2>
<p>This website is using a security service to protect itself from online attacks. The action
you just performed triggered the security solution.</p>
<div class="cf-error-footer">Cloudflare Ray ID: <strong>8f1c2a3b4d5e6f71</strong> &bull;
Performance &amp; security by Cloudflare</div>
</div>
</div>
</body>
</html>
"""

REDIRECT_PAGE = """<!DOCTYPE html>
<html>
<head><meta charset="UTF-8" /><meta http-equiv="refresh" content="0;url=/login" />
<title>Redirecting to /login</title></head>
<body>Redirecting to <a href="/login">/login</a>.</body>
</html>
"""
