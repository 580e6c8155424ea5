"""The gateway's HTTP server edge (cas.gateway.server) over in-memory
streams: keep-alive, a handler's failure as a logged 500, the bound on
connections, a client too slow to send its request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio.testing

from cas.gateway.server import HttpServer, Request, Response, Send


async def _handler(request: Request) -> Response:
    if request.target == "/boom":
        raise RuntimeError("a bug")
    if request.target == "/stream":
        async def body(send: Send) -> None:
            for piece in (b"one ", b"two"):
                await send(piece)
        return Response(200, [("Content-Type", "text/plain")], body)
    return Response(200, [("Content-Type", "text/plain")], request.target.encode())


def _run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


async def _read_all(stream: trio.abc.Stream, until: bytes, count: int = 1) -> bytes:
    data = b""
    with trio.fail_after(5):
        while data.count(until) < count:
            more = await stream.receive_some(65536)
            if not more:
                break
            data += more
    return data


def test_keep_alive_serves_requests_in_turn_and_a_handler_bug_is_a_logged_500() -> None:
    _run(_test_keep_alive_serves_requests_in_turn_and_a_handler_bug_is_a_logged_500)


async def _test_keep_alive_serves_requests_in_turn_and_a_handler_bug_is_a_logged_500() -> None:
    logged: list[str] = []
    server = HttpServer(_handler, logged.append)
    client, served = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, served)
        await client.send_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await _read_all(client, b"HTTP/1.1 200", 2)
        data += await _read_all(client, b"0\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK") and b"\r\n\r\n/a" in data and b"one " in data
        await client.send_all(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        failed = await _read_all(client, b"see the node's log")
        assert failed.startswith(b"HTTP/1.1 500") and b"Traceback" not in failed and b"a bug" not in failed
        assert any("RuntimeError: a bug" in line for line in logged)
        await client.aclose()
    assert server.stats.responses[200] == 2 and server.stats.responses[500] == 1


def test_a_connection_past_the_bound_gets_503() -> None:
    _run(_test_a_connection_past_the_bound_gets_503)


async def _test_a_connection_past_the_bound_gets_503() -> None:
    server = HttpServer(_handler, print, max_connections=1)
    first, first_served = trio.testing.memory_stream_pair()
    second, second_served = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, first_served)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(server.serve_stream, second_served)
        refused = await _read_all(second, b"try again")
        assert refused.startswith(b"HTTP/1.1 503") and server.stats.refused == 1
        await first.aclose()


def test_a_malformed_request_is_400_and_a_slow_one_is_dropped() -> None:
    _run(_test_a_malformed_request_is_400_and_a_slow_one_is_dropped)


async def _test_a_malformed_request_is_400_and_a_slow_one_is_dropped() -> None:
    server = HttpServer(_handler, print, head_timeout=5, keepalive_timeout=30)
    bad, bad_served = trio.testing.memory_stream_pair()
    slow, slow_served = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, bad_served)
        await bad.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        assert (await _read_all(bad, b"\r\n\r\n")).startswith(b"HTTP/1.1 400")
        nursery.start_soon(server.serve_stream, slow_served)
        await slow.send_all(b"GET /a HTTP/1.1\r\n")  # and nothing more
        with trio.fail_after(60):  # the autojump clock: seconds of waiting in no time
            while server.stats.open:
                await trio.sleep(1)
        assert await slow.receive_some(100) == b""  # closed without an answer
