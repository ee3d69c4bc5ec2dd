"""The /_sim/ control endpoints: how tests and benchmarks steer a running simulator.

JSON in, JSON out, loopback callers only (checked by the server). The shapes are listed in
the package docstring; every mutation of panel state goes through PanelState, so it is
journaled like the API's own changes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from smm_devkit.simulator.app import Reply, Simulator, json_reply
from smm_devkit.simulator.catalog import CatalogError, normalize_catalog, normalize_service
from smm_devkit.simulator.faults import parse_fault
from smm_devkit.simulator.money import parse_amount
from smm_devkit.simulator.orders import iso

_ITEM = re.compile(r"^/_sim/(orders|refills)/(\d+)$")
_CONFIG_FIELDS = {
    "latency_ms",
    "rate_limit_per_minute",
    "status_variants",
    "bare_item_errors",
    "clock_speed",
    "delay_values",
    "progress_seconds",
    "outcome_weights",
    "refill_rejected_percent",
}


class AdminError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def handle_admin(sim: Simulator, method: str, path: str, body: bytes) -> Reply:
    """Answer one /_sim/ request."""
    try:
        # Fractions stay literal text (exact money; JSON-serialisable in the journal).
        data = json.loads(body or b"{}", parse_float=str) if method == "POST" else {}
    except json.JSONDecodeError:
        return json_reply({"error": "body must be JSON"}, status=400)
    try:
        return json_reply(_route(sim, method, path.rstrip("/"), data))
    except AdminError as exc:
        return json_reply({"error": str(exc)}, status=exc.status)
    except (CatalogError, ValueError, TypeError, KeyError) as exc:
        return json_reply({"error": f"{type(exc).__name__}: {exc}"}, status=400)


def _route(sim: Simulator, method: str, path: str, data: Any) -> Any:
    state = sim.state
    now = state.clock.now()
    if path == "/_sim/health" and method == "GET":
        return {"ok": True, **_clock(sim)}
    if path == "/_sim/clock" and method == "GET":
        return _clock(sim)
    if path == "/_sim/advance" and method == "POST":
        seconds = float(_field(data, "seconds"))
        if seconds < 0:
            raise AdminError("seconds must be >= 0")
        state.advance(seconds)
        return _clock(sim)
    if path == "/_sim/faults":
        if method == "POST":
            raw = data.get("faults", [data]) if isinstance(data, dict) else data
            for fault in [parse_fault(item) for item in raw]:
                sim.faults.add(fault)
        elif method == "DELETE":
            sim.faults.clear()
        return {"faults": sim.faults.pending()}
    if path == "/_sim/faults/clear" and method == "POST":
        sim.faults.clear()
        return {"faults": []}
    if path == "/_sim/orders" and method == "GET":
        state.settle(now)
        return {"orders": [state.describe(item, now) for item in state.orders.values()]}
    if path == "/_sim/refills" and method == "GET":
        return {"refills": [_refill(sim, refill_id, now) for refill_id in state.refills]}
    match = _ITEM.match(path)
    if match:
        return _item(sim, method, match.group(1), int(match.group(2)), data, now)
    if path == "/_sim/catalog":
        if method == "POST":
            state.set_catalog(_edit_catalog(state.services(), data), now)
        return {"services": state.services()}
    if path == "/_sim/balance":
        if method == "POST":
            currency = data.get("currency")
            state.set_balance(parse_amount(_field(data, "balance")), now, currency)
        state.settle(now)
        return {"balance": state.balance_text(), "currency": state.currency}
    if path == "/_sim/stats" and method == "GET":
        return sim.stats.snapshot(len(state.orders), len(state.refills))
    if path == "/_sim/reset-stats" and method == "POST":
        sim.stats.reset()
        return sim.stats.snapshot(len(state.orders), len(state.refills))
    if path == "/_sim/config":
        if method == "POST":
            _configure(sim, data, now)
        return sim.config_json()
    raise AdminError(f"no admin endpoint {method} {path}", status=404)


def _field(data: Any, name: str) -> Any:
    if not isinstance(data, dict) or name not in data:
        raise AdminError(f"missing field {name!r}")
    return data[name]


def _clock(sim: Simulator) -> dict[str, Any]:
    now = sim.state.clock.now()
    return {"now": now, "iso": iso(now), "speed": sim.state.clock.speed}


def _refill(sim: Simulator, refill_id: int, now: float) -> dict[str, Any]:
    refill = sim.state.refills[refill_id]
    return {
        "refill": refill.id,
        "order": refill.order_id,
        "status": refill.status(now),
        "outcome": refill.outcome,
        "created_at": iso(refill.created_at),
        "forced": refill.frozen_status is not None,
    }


def _item(sim: Simulator, method: str, kind: str, ident: int, data: Any, now: float) -> Any:
    state = sim.state
    if kind == "orders":
        if ident not in state.orders:
            raise AdminError(f"no order {ident}", status=404)
        if method == "POST":
            unknown = set(data) - {"status", "remains", "start_count"}
            if unknown:
                raise AdminError(f"unknown fields {sorted(unknown)}")
            remains, start = data.get("remains"), data.get("start_count")
            state.force_order(
                ident,
                now,
                status=data.get("status"),
                remains=None if remains is None else int(remains),
                start_count_value=None if start is None else int(start),
            )
        state.settle(now)
        return state.describe(state.orders[ident], now)
    if ident not in state.refills:
        raise AdminError(f"no refill {ident}", status=404)
    if method == "POST":
        state.force_refill(ident, str(_field(data, "status")), now)
    return _refill(sim, ident, now)


def _edit_catalog(current: list[dict[str, Any]], data: Any) -> list[dict[str, Any]]:
    """Apply replace, then add, then patch, then remove; returns the new catalog."""
    if not isinstance(data, dict) or not set(data) <= {"replace", "add", "patch", "remove"}:
        raise AdminError("expected an object with replace, add, patch and/or remove")
    services = normalize_catalog(data["replace"]) if "replace" in data else current
    by_id = {service["service"]: service for service in services}
    for raw in data.get("add", []):
        service = normalize_service(raw)
        if service["service"] in by_id:
            raise AdminError(f"service {service['service']} exists; patch it instead")
        by_id[service["service"]] = service
    patches = data.get("patch", {})
    if isinstance(patches, list):
        patches = {
            str(p["service"]): {k: v for k, v in p.items() if k != "service"} for p in patches
        }
    for raw_id, fields in patches.items():
        sid = int(raw_id)
        if sid not in by_id:
            raise AdminError(f"no service {sid} to patch")
        by_id[sid] = normalize_service({**by_id[sid], **fields, "service": sid})
    for raw_id in data.get("remove", []):
        if int(raw_id) not in by_id:
            raise AdminError(f"no service {raw_id} to remove")
        del by_id[int(raw_id)]
    return list(by_id.values())


def _configure(sim: Simulator, data: Any, now: float) -> None:
    if not isinstance(data, dict):
        raise AdminError("expected a JSON object")
    unknown = set(data) - _CONFIG_FIELDS
    if unknown:
        raise AdminError(
            f"unknown config fields {sorted(unknown)}; known: {sorted(_CONFIG_FIELDS)}"
        )
    config = sim.config
    if "latency_ms" in data:
        config.latency_ms = max(0.0, float(data["latency_ms"]))
    if "rate_limit_per_minute" in data:
        config.rate_limit_per_minute = max(0, int(data["rate_limit_per_minute"]))
    for flag in ("status_variants", "bare_item_errors"):
        if flag in data:
            if not isinstance(data[flag], bool):
                raise AdminError(f"{flag} must be true or false")
            setattr(config, flag, data[flag])
    if "clock_speed" in data:
        sim.state.clock.set_speed(float(data["clock_speed"]))
    if "delay_values" in data:
        sim.state.delay_values = tuple(int(v) for v in data["delay_values"])
    if any(k in data for k in ("progress_seconds", "outcome_weights", "refill_rejected_percent")):
        progress = data.get("progress_seconds")
        sim.state.tune(
            now,
            progress_seconds=None if progress is None else float(progress),
            outcome_weights=data.get("outcome_weights"),
            refill_rejected_percent=data.get("refill_rejected_percent"),
        )
