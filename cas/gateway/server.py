"""The gateway's HTTP/1.1 server: h11 driven over trio sockets.

Owns the connections: accepting them within a bound, reading requests
through an :class:`h11.Connection` (the protocol is h11's; this module only
moves bytes and enforces time), handing each request to the handler, and
writing its answer, keep-alive included. The bounds are named constants:
connections held at once (beyond them a newcomer gets 503 and is closed),
how long a client may take to send a request's head, how long an idle
keep-alive connection is kept, how long one write to a slow reader may
stall. It also counts the answers by status (:class:`HttpStats`) for
``/metrics``.

Must never: know what a URL means (the handler does, with
:mod:`cas.gateway.router`), let an exception reach the client as a
traceback (a handler's failure is a logged 500, or, once the answer has
begun, a closed connection), or read a request body into memory (GET and
HEAD have none; a body larger than a few KiB closes the connection).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import h11
import trio

from .router import TEXT, error_page, reason

MAX_CONNECTIONS = 64
"""Connections served at once; more get 503 (nginx's worker_connections
is 512 for a whole server; this gateway is one process's side job)."""

HEAD_TIMEOUT = 10.0
"""Seconds from a request's first byte to the end of its head (nginx's
client_header_timeout is 60 s; a loopback client needs far less)."""

KEEPALIVE_TIMEOUT = 30.0
"""Seconds an idle keep-alive connection waits for its next request."""

SEND_TIMEOUT = 60.0
"""Seconds one write may wait for a client that does not read (nginx's
send_timeout is 60 s)."""

MAX_HEAD = 16 * 1024
"""Largest request head read (h11's default is 16 KiB)."""

MAX_BODY = 64 * 1024
"""Request body bytes read and dropped before the connection is closed."""

READ_SIZE = 64 * 1024

SERVER = "cas-gateway"


Send = Callable[[bytes], Awaitable[None]]
BodyWriter = Callable[[Send], Awaitable[None]]


class Request(NamedTuple):
    method: str
    target: str
    headers: list[tuple[str, str]]


class Response(NamedTuple):
    """An answer: its status, headers, and body: bytes, or a writer that
    sends the body in pieces (a HEAD's is never called)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | BodyWriter = b""


Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class HttpStats:
    """What the server has done since it started."""

    responses: Counter[int] = field(default_factory=Counter)
    open: int = 0
    refused: int = 0  # connections turned away at the bound
    aborted: int = 0  # answers cut short (the client went, a write stalled, the content failed)


class HttpServer:
    """Serves ``handler`` on listeners (:meth:`serve`)."""

    def __init__(self, handler: Handler, log: Callable[[str], None], *,
                 max_connections: int = MAX_CONNECTIONS, head_timeout: float = HEAD_TIMEOUT,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT, send_timeout: float = SEND_TIMEOUT) -> None:
        self._handler = handler
        self._log = log
        self._slots = trio.CapacityLimiter(max_connections)
        self.head_timeout = head_timeout
        self.keepalive_timeout = keepalive_timeout
        self.send_timeout = send_timeout
        self.stats = HttpStats()

    async def serve(self, listeners: Sequence[trio.SocketListener]) -> None:
        await trio.serve_listeners(self.serve_stream, list(listeners))

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """One connection, to its end."""
        async with stream:
            try:
                self._slots.acquire_on_behalf_of_nowait(stream)
            except trio.WouldBlock:
                self.stats.refused += 1
                await self._refuse(stream)
                return
            self.stats.open += 1
            try:
                await self._serve(stream, h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD))
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                pass  # the client went, or stalled: nothing to tell it
            finally:
                self.stats.open -= 1
                self._slots.release_on_behalf_of(stream)

    async def _refuse(self, stream: trio.abc.Stream) -> None:
        body = error_page(503, "too many connections; try again shortly")
        data = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
        self.stats.responses[503] += 1
        with trio.move_on_after(1):
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _next_event(self, stream: trio.abc.Stream, conn: h11.Connection, timeout: float) -> h11.Event | type:
        with trio.fail_after(timeout):
            while True:
                event = conn.next_event()
                if event is not h11.NEED_DATA:
                    return event
                conn.receive_data(bytes(await stream.receive_some(READ_SIZE)))

    async def _serve(self, stream: trio.abc.Stream, conn: h11.Connection) -> None:
        while True:
            try:
                # Idle until the next request's first byte (unless it came
                # with the last), then its head within its own bound.
                if not conn.trailing_data[0]:
                    with trio.move_on_after(self.keepalive_timeout) as idle:
                        conn.receive_data(bytes(await stream.receive_some(READ_SIZE)))  # b"": the client closed
                    if idle.cancelled_caught:
                        return
                event = await self._next_event(stream, conn, self.head_timeout)
            except h11.RemoteProtocolError as exc:
                await self._send_error(stream, conn, exc.error_status_hint, str(exc))
                return
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            request = Request(event.method.decode("ascii", "replace"), event.target.decode("ascii", "replace"),
                              [(k.decode("ascii", "replace"), v.decode("latin-1")) for k, v in event.headers])
            if not await self._drain_body(stream, conn):
                await self._send_error(stream, conn, 413, "a request body is not expected here")
                return
            response = await self._answer(request)
            if not await self._send(stream, conn, request, response):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _drain_body(self, stream: trio.abc.Stream, conn: h11.Connection) -> bool:
        read = 0
        while True:
            event = await self._next_event(stream, conn, self.head_timeout)
            if isinstance(event, h11.EndOfMessage):
                return True
            if isinstance(event, h11.Data):
                read += len(event.data)
                if read > MAX_BODY:
                    return False
            else:
                return False

    async def _answer(self, request: Request) -> Response:
        try:
            return await self._handler(request)
        except Exception as exc:  # the edge: a handler's bug is a logged 500, never a traceback sent
            self._log(f"gateway: internal error answering {request.method} {request.target}: "
                      f"{type(exc).__name__}: {exc}")
            return Response(500, [("Content-Type", TEXT)], error_page(500, "internal error; see the node's log"))

    async def _send(self, stream: trio.abc.Stream, conn: h11.Connection, request: Request,
                    response: Response) -> bool:
        """Write ``response``; False if the connection is done for."""
        headers = [("Server", SERVER), *response.headers]
        body = response.body
        if isinstance(body, bytes) and not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        self.stats.responses[response.status] += 1

        async def send(data: bytes) -> None:
            if data:
                await self._write(stream, conn.send(h11.Data(data=data)))

        try:
            await self._write(stream, conn.send(h11.Response(
                status_code=response.status, headers=headers, reason=reason(response.status).encode())))
            if request.method != "HEAD" and response.status not in (204, 304):
                if isinstance(body, bytes):
                    await send(body)
                else:
                    await body(send)
            await self._write(stream, conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            self.stats.aborted += 1
            return False
        except Exception as exc:  # the content failed after the answer began: cut it short
            self.stats.aborted += 1
            self._log(f"gateway: {request.method} {request.target} cut short: {_describe(exc)}")
            return False
        return True

    async def _write(self, stream: trio.abc.Stream, data: bytes | None) -> None:
        if data:
            with trio.fail_after(self.send_timeout):
                await stream.send_all(data)

    async def _send_error(self, stream: trio.abc.Stream, conn: h11.Connection, status: int, message: str) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = error_page(status, message)
        self.stats.responses[status] += 1
        try:
            await self._write(stream, conn.send(h11.Response(status_code=status, reason=reason(status).encode(), headers=[
                ("Server", SERVER), ("Content-Type", TEXT), ("Content-Length", str(len(body))),
                ("Connection", "close")])))
            await self._write(stream, conn.send(h11.Data(data=body)))
            await self._write(stream, conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, h11.LocalProtocolError):
            pass


def _describe(exc: BaseException) -> str:
    """One line for the log: the first error inside exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
