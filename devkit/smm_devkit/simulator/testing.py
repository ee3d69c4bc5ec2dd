"""Start a simulator for tests and benchmarks, and steer it through its admin endpoints.

Two ways to run one, with the same handle API:

* `running_simulator(...)`: in this process, on a background thread with its own event loop
  (fast to start, for most tests);
* `start_simulator_process(...)`: as `python -m smm_devkit.simulator` in a child process
  (for crash tests that SIGKILL it, and for benchmarks that must not share our GIL).

Tests default to a frozen clock (`clock_speed=0`): orders move only when the test calls
`advance(seconds)`, so results never depend on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from smm_devkit.simulator.app import Simulator
from smm_devkit.simulator.order_types import DEFAULT_DELAY_VALUES
from smm_devkit.simulator.server import SimulatorServer

READY_PREFIX = "simulator listening on "


class SimulatorAdminError(RuntimeError):
    """An admin call was refused (bad field, unknown order...); the message says why."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        raise TypeError("pass money and rates as str or Decimal, not float")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class SimulatorHandle:
    """A running simulator: its API URL and key, and methods wrapping /_sim/ endpoints."""

    def __init__(self, base_url: str, keys: tuple[str, ...]) -> None:
        self.base_url = base_url
        self.url = f"{base_url}/api/v2"
        self.keys = keys
        self.key = keys[0]
        self._http = httpx.Client(base_url=base_url, timeout=30.0, trust_env=False)

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else _jsonable(body)
        response = self._http.request(method, f"/_sim/{path}", json=payload)
        if response.status_code >= 400:
            raise SimulatorAdminError(f"{method} /_sim/{path}: {response.text}")
        return response.json()

    # faults and config
    def inject(
        self, kind: str, action: str | None = None, times: int = 1, **options: Any
    ) -> list[dict[str, Any]]:
        """Queue a fault (see FAULT_KINDS) for the next `times` calls (of `action`, if given).

        Options: `commit` (bool; fixed for refusal and other_id), `seconds` (slow),
        `retry_after` (http_429), `message` and `status` (refusal, default "Incorrect request"
        and 200). E.g. `inject("html_403", "add", commit=True)`,
        `inject("refusal", "add", message="Service is disabled")`, `inject("other_id", "cancel")`.
        """
        fault = {"kind": kind, "action": action, "times": times, **options}
        return self._call("POST", "faults", fault)["faults"]

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "faults")["faults"]

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def configure(self, **fields: Any) -> dict[str, Any]:
        """Change latency_ms, rate_limit_per_minute, status_variants, bare_item_errors,
        clock_speed, delay_values, progress_seconds, outcome_weights, refill_rejected_percent."""
        return self._call("POST", "config", fields)

    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")

    # time
    def advance(self, seconds: float) -> float:
        """Move simulated time forward; returns the new simulated epoch time."""
        return self._call("POST", "advance", {"seconds": str(seconds)})["now"]

    def clock(self) -> dict[str, Any]:
        return self._call("GET", "clock")

    # orders and refills
    def orders(self) -> list[dict[str, Any]]:
        return self._call("GET", "orders")["orders"]

    def order(self, order_id: int) -> dict[str, Any]:
        return self._call("GET", f"orders/{order_id}")

    def set_order(
        self,
        order_id: int,
        status: str | None = None,
        remains: int | None = None,
        start_count: int | None = None,
    ) -> dict[str, Any]:
        """Freeze an order in a state (refund follows: Partial pays back remains, Canceled all)."""
        fields = {"status": status, "remains": remains, "start_count": start_count}
        return self._call(
            "POST", f"orders/{order_id}", {k: v for k, v in fields.items() if v is not None}
        )

    def refills(self) -> list[dict[str, Any]]:
        return self._call("GET", "refills")["refills"]

    def set_refill(self, refill_id: int, status: str) -> dict[str, Any]:
        return self._call("POST", f"refills/{refill_id}", {"status": status})

    # catalog
    def services(self) -> list[dict[str, Any]]:
        return self._call("GET", "catalog")["services"]

    def patch_service(self, service_id: int, **fields: Any) -> list[dict[str, Any]]:
        """Change fields of a service (e.g. rate="1.20", min=100); returns the catalog."""
        return self._call("POST", "catalog", {"patch": {str(service_id): fields}})["services"]

    def remove_service(self, service_id: int) -> list[dict[str, Any]]:
        return self._call("POST", "catalog", {"remove": [service_id]})["services"]

    def add_service(
        self, service: dict[str, Any] | None = None, **fields: Any
    ) -> list[dict[str, Any]]:
        """Add a service given in the `services` answer shape; returns the catalog."""
        return self._call("POST", "catalog", {"add": [{**(service or {}), **fields}]})["services"]

    def replace_catalog(self, services: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._call("POST", "catalog", {"replace": list(services)})["services"]

    # money
    def balance(self) -> Decimal:
        return Decimal(self._call("GET", "balance")["balance"])

    def set_balance(self, amount: Decimal | str | int, currency: str | None = None) -> Decimal:
        body: dict[str, Any] = {"balance": str(amount)}
        if currency:
            body["currency"] = currency
        return Decimal(self._call("POST", "balance", body)["balance"])

    # counters
    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def reset_stats(self) -> dict[str, Any]:
        return self._call("POST", "reset-stats", {})

    def close(self) -> None:
        self._http.close()


class ThreadedSimulator(SimulatorHandle):
    """A simulator served from a background thread of this process."""

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = SimulatorServer(sim, host, port)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="smm-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("simulator thread did not start within 15 s")
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        super().__init__(self._server.url.removesuffix("/api/v2"), sim.keys)
        self.simulator = sim

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._stopping = asyncio.Event()
            self._loop.run_until_complete(self._server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        try:
            self._loop.run_until_complete(self._stopping.wait())
        finally:
            self._loop.run_until_complete(self._server.close())
            self._loop.close()

    def stop(self) -> None:
        """Close every connection and stop the thread (idempotent)."""
        if self._thread.is_alive():
            assert self._stopping is not None
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(15)
        self.close()


@contextlib.contextmanager
def running_simulator(
    keys: Iterable[str] = ("test-key",),
    *,
    state_file: Path | str | None = None,
    catalog: list[dict[str, Any]] | None = None,
    balance: Decimal | str = "1000.00",
    currency: str = "USD",
    latency_ms: float = 0.0,
    rate_limit_per_minute: int = 0,
    progress_seconds: float = 30.0,
    clock_speed: float = 0.0,
    delay_values: Iterable[int] = DEFAULT_DELAY_VALUES,
    host: str = "127.0.0.1",
    port: int = 0,
    clock_start: float | None = None,
) -> Iterator[ThreadedSimulator]:
    """A simulator on a free loopback port for the duration of the `with` block
    (`clock_start`: the simulated epoch time it starts at; default the real time)."""
    sim = Simulator.create(
        keys=tuple(keys),
        state_file=state_file,
        catalog=catalog,
        balance=balance,
        currency=currency,
        progress_seconds=progress_seconds,
        clock_speed=clock_speed,
        latency_ms=latency_ms,
        rate_limit_per_minute=rate_limit_per_minute,
        delay_values=delay_values,
        clock_start=clock_start,
    )
    try:
        handle = ThreadedSimulator(sim, host, port)
    except BaseException:
        sim.close()
        raise
    try:
        yield handle
    finally:
        handle.stop()


class SimulatorProcess(SimulatorHandle):
    """A simulator running as a child process; `kill()` is a real SIGKILL."""

    def __init__(self, args: list[str], env: dict[str, str], keys: tuple[str, ...], timeout: float):
        self._args = args
        self._env = env
        self._timeout = timeout
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smm_devkit.simulator", *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        line = self._wait_ready(timeout)
        super().__init__(line.removeprefix(READY_PREFIX).strip().removesuffix("/api/v2"), keys)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_ready(self, timeout: float) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(max(0.0, deadline - time.monotonic())):
                    line = self.process.stdout.readline().decode()
                    if line.startswith(READY_PREFIX):
                        return line
                    if not line:
                        break
        self.process.kill()
        self.process.wait()
        self._log.seek(0)
        detail = self._log.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"simulator process did not start: {detail}")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait (SIGKILL if it hangs); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._cleanup()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the crash a journal must survive."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._cleanup()

    def respawn(self) -> SimulatorProcess:
        """Start the same simulator again (same port, state file, keys) after it stopped."""
        if self.process.poll() is None:
            raise RuntimeError("the simulator is still running; stop() or kill() it first")
        args = list(self._args)
        args[args.index("--port") + 1] = str(self.port)
        return SimulatorProcess(args, self._env, self.keys, self._timeout)

    def _cleanup(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulator_process(
    port: int = 0,
    state_file: Path | str | None = None,
    keys: Iterable[str] = ("test-key",),
    *,
    catalog_file: Path | str | None = None,
    balance: Decimal | str = "1000.00",
    currency: str = "USD",
    latency_ms: float = 0.0,
    rate_limit_per_minute: int = 0,
    progress_seconds: float = 30.0,
    clock_speed: float = 0.0,
    host: str = "127.0.0.1",
    startup_timeout: float = 20.0,
    faults: Iterable[str] = (),
) -> SimulatorProcess:
    """`python -m smm_devkit.simulator` as a child process, returned once it listens.

    `faults` are `--fault` specs (`kind[:action][:times][:name=value...]`) queued at start."""
    keys = tuple(keys)
    args = ["--host", host, "--port", str(port)]
    for key in keys:
        args += ["--key", key]
    if state_file is not None:
        args += ["--state-file", str(state_file)]
    if catalog_file is not None:
        args += ["--catalog-file", str(catalog_file)]
    args += ["--balance", str(balance), "--currency", currency]
    args += ["--latency-ms", str(latency_ms), "--rate-limit-per-minute", str(rate_limit_per_minute)]
    args += ["--progress-seconds", str(progress_seconds), "--clock-speed", str(clock_speed)]
    for fault in faults:
        args += ["--fault", fault]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return SimulatorProcess(args, env, keys, startup_timeout)
