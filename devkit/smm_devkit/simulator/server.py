"""HTTP/1.1 for the simulator: asyncio streams plus the h11 state machine.

A framework (ASGI) could not drop a TCP connection mid-request without answering, which is
the most important fault a panel client must survive; with raw streams the server can
`abort()` the transport. Keep-alive is supported; every connection is its own task so
hundreds of concurrent calls cost only coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from urllib.parse import parse_qsl

import h11

from smm_devkit.simulator.admin import handle_admin
from smm_devkit.simulator.app import Reply, Simulator, json_reply

log = logging.getLogger(__name__)

API_PATHS = ("/api/v2", "/api/v2/")
MAX_BODY = 4 * 1024 * 1024
IDLE_TIMEOUT = 75.0  # seconds a keep-alive connection may sit idle
READ_TIMEOUT = 30.0  # seconds to finish sending a started request


class _BodyTooLarge(Exception):
    pass


def _is_loopback(peer: object) -> bool:
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _form(query: str, body: bytes) -> dict[str, str]:
    """Query then body fields, last value winning, as PHP's $_REQUEST does."""
    form = dict(parse_qsl(query, keep_blank_values=True))
    form.update(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return form


class SimulatorServer:
    """Serves one Simulator on host:port (port 0 picks a free one; see `.port` after start)."""

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api/v2"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end every connection now (pending slow answers included)."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self.sim.close()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        loopback = _is_loopback(writer.get_extra_info("peername"))
        try:
            while True:
                try:
                    request = await self._read_request(conn, reader, writer)
                except _BodyTooLarge:
                    await self._send(conn, writer, json_reply({"error": "Too large"}, 413))
                    break
                if request is None:
                    break
                reply = await self._respond(*request, loopback)
                if reply.abort:
                    writer.transport.abort()
                    return
                await self._send(conn, writer, reply)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(Exception):
                    await self._send(conn, writer, json_reply({"error": "Bad request"}, 400))
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            writer.transport.abort()
        finally:
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                async with asyncio.timeout(IDLE_TIMEOUT if request is None else READ_TIMEOUT):
                    data = await reader.read(65536)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            else:  # ConnectionClosed or PAUSED
                return None

    async def _respond(self, request: h11.Request, body: bytes, loopback: bool) -> Reply:
        method = request.method.decode("ascii", errors="replace")
        path, _, query = request.target.decode("latin-1").partition("?")
        try:
            if path in API_PATHS:
                if method not in ("GET", "POST"):
                    return json_reply({"error": "Method not allowed"}, 405)
                return await self.sim.api(_form(query, body if method == "POST" else b""))
            if path.startswith("/_sim/"):
                if not loopback:
                    return json_reply({"error": "admin endpoints are loopback only"}, 403)
                return handle_admin(self.sim, method, path, body)
            return json_reply({"error": "Not found"}, 404)
        except Exception:
            log.exception("simulator failed answering %s %s", method, path)
            return json_reply({"error": "Internal Server Error"}, 500)

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        headers = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            ("Server", "smm-simulator"),
            *reply.headers,
        ]
        data = conn.send(h11.Response(status_code=reply.status, headers=headers))
        data += conn.send(h11.Data(data=reply.body)) + conn.send(h11.EndOfMessage())
        writer.write(data)
        await writer.drain()
