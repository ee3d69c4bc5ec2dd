"""`python -m smm_devkit.simulator`: run the bundled API v2 panel until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from smm_devkit.simulator.app import Simulator
from smm_devkit.simulator.catalog import load_catalog_file
from smm_devkit.simulator.faults import Fault, parse_fault_spec
from smm_devkit.simulator.order_types import DEFAULT_DELAY_VALUES
from smm_devkit.simulator.server import SimulatorServer

DEFAULT_KEY = "sim-demo-key"


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a decimal amount: {text!r}") from exc


def _delays(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of minutes: {text!r}"
        ) from exc


def _fault(text: str) -> Fault:
    try:
        return parse_fault_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad fault {text!r}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smm_devkit.simulator",
        description="A simulated SMM panel speaking API v2, with admin endpoints under /_sim/.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--key",
        action="append",
        dest="keys",
        help="accepted API key (repeatable); default: $SIMULATOR_API_KEY, else sim-demo-key",
    )
    parser.add_argument("--state-file", help="JSON-lines journal; state survives restarts")
    parser.add_argument("--catalog-file", help="JSON list of services (the `services` shape)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit-per-minute", type=int, default=0, help="0 = unlimited")
    parser.add_argument("--balance", type=_decimal, default=Decimal("1000.00"))
    parser.add_argument("--currency", default="USD")
    parser.add_argument(
        "--progress-seconds",
        type=float,
        default=30.0,
        help="simulated seconds an order takes to deliver (at clock speed 1: real seconds)",
    )
    parser.add_argument(
        "--clock-speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second; 0 freezes time (then only /_sim/advance moves it)",
    )
    parser.add_argument(
        "--delay-values",
        type=_delays,
        default=DEFAULT_DELAY_VALUES,
        help="subscription delays (minutes) the panel accepts, comma-separated",
    )
    parser.add_argument(
        "--fault",
        action="append",
        dest="faults",
        type=_fault,
        default=[],
        metavar="KIND[:ACTION][:TIMES][:NAME=VALUE...]",
        help="queue a fault at start (repeatable), e.g. html_403:add:-1, "
        "refusal:add:2:message=Service disabled, empty_404::1:commit=true; "
        "an empty ACTION is any action, TIMES -1 is until cleared (default 1); options "
        "commit, seconds, retry_after, status, message (last: it keeps its colons); or the "
        "JSON object POST /_sim/faults takes",
    )
    return parser


async def _serve(server: SimulatorServer) -> None:
    await server.start()
    print(f"simulator listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="simulator %(levelname)s %(message)s")
    keys = args.keys or [os.environ.get("SIMULATOR_API_KEY") or DEFAULT_KEY]
    catalog = load_catalog_file(args.catalog_file) if args.catalog_file else None
    sim = Simulator.create(
        keys=keys,
        state_file=args.state_file,
        catalog=catalog,
        balance=args.balance,
        currency=args.currency,
        progress_seconds=args.progress_seconds,
        clock_speed=args.clock_speed,
        latency_ms=args.latency_ms,
        rate_limit_per_minute=args.rate_limit_per_minute,
        delay_values=args.delay_values,
    )
    for fault in args.faults:
        sim.faults.add(fault)
    asyncio.run(_serve(SimulatorServer(sim, args.host, args.port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
