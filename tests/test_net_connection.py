"""The trio driver: channels over in-memory streams (and one real TCP test),
request multiplexing, bad input, timeouts and limits.

Every test but the TCP one runs on trio's MockClock with autojump, so
timeouts of minutes pass in microseconds and nothing sleeps for real.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas.errors import (
    ConnectionClosedError,
    HandshakeTimeoutError,
    IncompatibleVersionError,
    MalformedMessageError,
    PeerIdMismatchError,
    RemoteProtocolError,
    RequestFailedError,
    RequestTimeoutError,
)
from cas.net import messages as m
from cas.net.connection import Connection, SecureChannel, connect_tcp, open_channel, serve
from cas.net.framing import MAX_FRAME_SIZE, FrameBudget, encode_frame, frame_header
from cas.net.identity import Identity
from cas.net.noise import PeerIdentity


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        trio.run(functools.partial(fn, *args, **kwargs),
                 clock=trio.testing.MockClock(autojump_threshold=0))

    return run


async def echo_handler(peer: PeerIdentity, request: m.Request) -> m.Response:
    if isinstance(request, m.Ping):
        return m.Pong()
    if isinstance(request, m.FindNode):
        # Answer later for lower targets, so responses come back out of order.
        await trio.sleep(10 - request.target[0])
        return m.Nodes((m.PeerInfo(request.target, "192.0.2.1", 4001),))
    if isinstance(request, m.StoreBlocks):
        if not all(cid.verify(data) for cid, data in request.blocks()):
            raise RemoteProtocolError("block does not match its CID")
        return m.Stored(("ok",) * len(request.cids))
    if isinstance(request, m.Have):
        return m.HaveResult(())  # wrong length on purpose
    return m.Error("not_found", "nothing here")


async def channel_pair(
    a: Identity | None = None, b: Identity | None = None, **options: Any
) -> tuple[SecureChannel, SecureChannel]:
    a, b = a or Identity.generate(), b or Identity.generate()
    left, right = trio.testing.memory_stream_pair()
    result: dict[str, SecureChannel] = {}

    async def side(name: str, stream: Any, identity: Identity, initiator: bool) -> None:
        result[name] = await open_channel(stream, identity, initiator=initiator,
                                          hello=m.Hello(agent=name), **options)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "a", left, a, True)
        nursery.start_soon(side, "b", right, b, False)
    return result["a"], result["b"]


async def send_raw(channel: SecureChannel, data: bytes, *, encrypt: bool = True) -> None:
    """Send bytes as the channel would, bypassing message encoding (an attacker)."""
    body = channel._transport.seal(data) if encrypt else data
    await channel._stream.send_all(encode_frame(body) if encrypt else data)


# -- handshake ---------------------------------------------------------------------------


@trio_test
async def test_channel_handshake_proves_identities_and_exchanges_hellos() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    a, b = await channel_pair(alice, bob, expected_peer_id=None)
    assert a.peer.node_id == bob.node_id and b.peer.node_id == alice.node_id
    assert a.peer_hello == m.Hello(agent="b") and b.peer_hello == m.Hello(agent="a")
    await a.send_message(m.Ping(request_id=3))
    assert await b.receive_message() == m.Ping(request_id=3)


@trio_test
async def test_dialing_the_wrong_node_id_is_refused_and_closes_the_stream() -> None:
    left, right = trio.testing.memory_stream_pair()
    expected = Identity.generate().node_id
    errors: list[BaseException] = []

    async def responder() -> None:
        try:
            await open_channel(right, Identity.generate(), initiator=False)
        except RemoteProtocolError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(responder)
        with pytest.raises(PeerIdMismatchError):
            await open_channel(left, Identity.generate(), initiator=True,
                               expected_peer_id=expected)
    assert len(errors) == 1  # the responder saw the stream close mid-handshake


@trio_test
async def test_a_silent_client_is_dropped_after_the_handshake_timeout() -> None:
    left, right = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(HandshakeTimeoutError):
        await open_channel(right, Identity.generate(), initiator=False, handshake_timeout=10)
    assert trio.current_time() - start == pytest.approx(10)
    with pytest.raises(trio.BrokenResourceError):
        await left.send_all(b"x")


@pytest.mark.parametrize("newer_side", ["initiator", "responder"])
@trio_test
async def test_a_peer_with_another_protocol_version_is_refused(newer_side: str) -> None:
    left, right = trio.testing.memory_stream_pair()
    errors: list[BaseException] = []

    async def side(stream: Any, initiator: bool) -> None:
        newer = (newer_side == "initiator") == initiator
        hello = m.Hello(version=m.PROTOCOL_VERSION + 1) if newer else m.Hello()
        try:
            await open_channel(stream, Identity.generate(), initiator=initiator, hello=hello)
        except RemoteProtocolError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, left, True)
        nursery.start_soon(side, right, False)
    # The side that sees a version it does not speak refuses; in both orders
    # it first received the other's hello, so the refusal names the version.
    assert [type(e) for e in errors] == [IncompatibleVersionError]


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"\x00\x00\x00\x20" + b"x" * 32,
                                     b"\x00\x00\x00\x05abc"])
@trio_test
async def test_garbage_instead_of_a_handshake_fails_cleanly(garbage: bytes) -> None:
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        async def attacker() -> None:
            await left.send_all(garbage)
            await left.aclose()
        nursery.start_soon(attacker)
        with pytest.raises(RemoteProtocolError):
            await open_channel(right, Identity.generate(), initiator=False)


# -- request multiplexing ------------------------------------------------------------------


@trio_test
async def test_concurrent_requests_share_one_channel_and_match_by_id() -> None:
    a, b = await channel_pair()
    answers: dict[int, m.Response] = {}
    async with serve(b, echo_handler), serve(a, echo_handler) as client:
        async def ask(i: int) -> None:
            answers[i] = await client.request(m.FindNode(bytes([i]) * 32))

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(ask, i)
        # The server answers concurrently (and wrongly-ordered on purpose) too.
        assert await client.request(m.Ping()) == m.Pong(request_id=9)
    for i, response in answers.items():
        assert isinstance(response, m.Nodes) and response.peers[0].node_id == bytes([i]) * 32
    assert a.stats.strikes == b.stats.strikes == 0


@trio_test
async def test_requests_work_in_both_directions_on_one_channel() -> None:
    a, b = await channel_pair()
    async with serve(a, echo_handler) as left, serve(b, echo_handler) as right:
        assert isinstance(await left.request(m.Ping()), m.Pong)
        assert isinstance(await right.request(m.Ping()), m.Pong)


@trio_test
async def test_error_responses_and_handler_refusals_raise_request_failed() -> None:
    a, b = await channel_pair()
    async with serve(b, echo_handler), serve(a) as client:
        with pytest.raises(RequestFailedError) as info:
            await client.request(m.GetRecord(b"k"))
        assert info.value.code == "not_found"
        with pytest.raises(RequestFailedError) as info:
            await client.request(m.StoreBlocks.of([(m.CID.for_data(0x55, b"x"), b"y")]))
        assert info.value.code == "invalid"
    assert b.stats.strikes == 1  # the refused store counted against the sender


@trio_test
async def test_a_quick_handler_answers_what_it_can_and_passes_the_rest_on() -> None:
    def quick(peer: PeerIdentity, request: m.Request) -> m.Response | None:
        if isinstance(request, m.Ping):
            return m.Pong()
        if isinstance(request, m.StoreBlocks):
            raise RemoteProtocolError("refused at once")
        return None

    async def handler(peer: PeerIdentity, request: m.Request) -> m.Response:
        handled.append(request.TYPE)
        return await echo_handler(peer, request)

    handled: list[str] = []
    a, b = await channel_pair()
    async with serve(b, handler, quick=quick), serve(a) as client:  # type: ignore[arg-type]
        assert await client.request(m.Ping()) == m.Pong(request_id=1)
        with pytest.raises(RequestFailedError) as info:
            await client.request(m.StoreBlocks.of([(m.CID.for_data(0x55, b"x"), b"x")]))
        assert info.value.code == "invalid"
        with pytest.raises(RequestFailedError, match="nothing here"):
            await client.request(m.GetRecord(b"k"))
    assert handled == ["get_record"]  # only what quick passed on
    assert b.stats.strikes == 1


@trio_test
async def test_a_node_without_handler_refuses_requests() -> None:
    a, b = await channel_pair()
    async with serve(b), serve(a) as client:
        with pytest.raises(RequestFailedError, match="refused"):
            await client.request(m.Ping())


@trio_test
async def test_a_response_of_the_wrong_shape_is_refused_and_counted() -> None:
    a, b = await channel_pair()
    async with serve(b, echo_handler), serve(a) as client:
        with pytest.raises(MalformedMessageError):
            await client.request(m.Have((m.CID.for_data(0x55, b"x"),)))
    assert a.stats.unexpected == 1 and a.stats.strikes == 1


@trio_test
async def test_a_request_without_answer_times_out_and_a_late_answer_is_ignored() -> None:
    a, b = await channel_pair()
    async with serve(a, request_timeout=5) as client:
        with pytest.raises(RequestTimeoutError):
            await client.request(m.Ping())
        request = await b.receive_message()
        await b.send_message(m.Pong(request_id=request.request_id))  # late
        await b.send_message(m.Pong(request_id=12345))  # never asked
        await trio.testing.wait_all_tasks_blocked()
    assert a.stats.unexpected == 1 and a.stats.strikes == 1


@trio_test
async def test_pending_requests_fail_when_the_connection_closes() -> None:
    a, b = await channel_pair()
    async with serve(a) as client, trio.open_nursery() as nursery:
        async def close_soon() -> None:
            await b.receive_message()
            await b.aclose()
        nursery.start_soon(close_soon)
        with pytest.raises(ConnectionClosedError):
            await client.request(m.Ping())


@trio_test
async def test_a_request_stuck_sending_times_out_and_closes_the_channel() -> None:
    """A peer that stops reading cannot hold a request forever; a frame cut
    off mid-send leaves the stream unusable, so the channel closes."""
    left, right = trio.testing.lockstep_stream_pair()
    result: dict[str, SecureChannel] = {}

    async def side(name: str, stream: Any, initiator: bool) -> None:
        result[name] = await open_channel(stream, Identity.generate(), initiator=initiator)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "a", left, True)
        nursery.start_soon(side, "b", right, False)
    async with serve(result["a"], request_timeout=5) as client:  # "b" never reads
        with pytest.raises(RequestTimeoutError):
            await client.request(m.Ping())
    assert result["a"].stats.closed_because == "a send was cancelled mid-frame"


async def lockstep_pair(**options: Any) -> tuple[SecureChannel, SecureChannel]:
    """Channels over streams that buffer nothing: a send waits for a read."""
    left, right = trio.testing.lockstep_stream_pair()
    result: dict[str, SecureChannel] = {}

    async def side(name: str, stream: Any, initiator: bool) -> None:
        result[name] = await open_channel(stream, Identity.generate(), initiator=initiator, **options)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "a", left, True)
        nursery.start_soon(side, "b", right, False)
    return result["a"], result["b"]


def a_block_message(size: int = 1 << 20) -> m.StoreBlocks:
    block = bytes(size)
    return m.StoreBlocks.of([(m.CID.for_data(0x55, block), block)])


@pytest.mark.parametrize("announced", [1000, MAX_FRAME_SIZE], ids=["small frame", "large frame"])
@trio_test
async def test_a_frame_stalled_midway_closes_the_connection_after_the_frame_timeout(announced: int) -> None:
    budget = FrameBudget()
    a, b = await channel_pair(frame_timeout=5, budget=budget)
    started = trio.current_time()
    await a._stream.send_all(frame_header(announced) + b"x" * 500)  # and never the rest
    with trio.fail_after(60):
        await Connection(b, echo_handler).run()  # returns once the channel closes
    assert 5 <= trio.current_time() - started < 6  # the frame timeout, not the 120 s idle one
    assert "a frame stalled" in (b.stats.closed_because or "")
    assert budget.used == 0  # the large body's memory was given back


@trio_test
async def test_a_stalled_frame_also_times_out_for_a_reader_without_a_connection() -> None:
    a, b = await channel_pair(frame_timeout=5)
    await a._stream.send_all(frame_header(1000) + b"x" * 10)
    with pytest.raises(ConnectionClosedError):
        await b.receive_message()
    assert "a frame stalled" in (b.stats.closed_because or "")


@trio_test
async def test_a_frame_that_arrives_slowly_but_within_the_timeout_is_received() -> None:
    a, b = await channel_pair(frame_timeout=5)
    frame = encode_frame(a._transport.seal(m.encode(m.Ping(request_id=7))))
    async with trio.open_nursery() as nursery:
        async def dribble() -> None:
            for i in range(len(frame)):  # a byte every 0.1 s: the whole frame within ~3 s
                await a._stream.send_all(frame[i : i + 1])
                await trio.sleep(0.1)

        nursery.start_soon(dribble)
        assert await b.receive_message() == m.Ping(request_id=7)


@pytest.mark.parametrize("waiter_timeout", [20, 3])
@trio_test
async def test_large_frames_wait_for_the_budget_and_a_stalled_one_holds_it_only_until_its_timeout(
        waiter_timeout: float) -> None:
    """A frame waits for room in the budget (reading nothing, holding no
    buffer) and is received once the stalled frame holding it times out;
    the waiting counts against its own frame timeout, from its header."""
    budget = FrameBudget(MAX_FRAME_SIZE)  # room for one large frame at a time
    stalled_sender, stalled = await channel_pair(frame_timeout=5, budget=budget)
    sender, receiver = await channel_pair(frame_timeout=waiter_timeout, budget=budget)
    got: m.Message | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Connection(stalled, echo_handler).run)
        await stalled_sender._stream.send_all(frame_header(MAX_FRAME_SIZE) + b"x" * 100_000)
        await trio.testing.wait_all_tasks_blocked()
        assert budget.used == MAX_FRAME_SIZE  # the stalled frame holds all of it
        started = trio.current_time()
        nursery.start_soon(sender.send_message, a_block_message())
        try:
            got = await receiver.receive_message()
        except ConnectionClosedError:
            pass
        waited = trio.current_time() - started
    assert "a frame stalled" in (stalled.stats.closed_because or "")
    assert budget.refusals >= 1
    if waiter_timeout > 5:
        assert isinstance(got, m.StoreBlocks) and len(got.blocks()[0][1]) == 1 << 20
        assert 5 <= waited < 6  # until the stalled frame's 5 s were up
        assert not receiver.closed
    else:
        assert got is None and 3 <= waited < 4
        assert "a frame stalled" in (receiver.stats.closed_because or "")
    assert budget.used == 0


@trio_test
async def test_a_closed_connection_waiting_for_the_budget_stops_waiting() -> None:
    budget = FrameBudget(MAX_FRAME_SIZE)
    assert budget.claim("10.0.0.9").try_reserve(budget.limit)  # held by someone else for good
    sender, receiver = await channel_pair(frame_timeout=1000, budget=budget)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send_message, a_block_message())

        async def close_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await receiver.aclose()

        nursery.start_soon(close_soon)
        with pytest.raises(ConnectionClosedError), trio.fail_after(10):
            await receiver.receive_message()
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_peer_that_takes_none_of_our_frame_is_closed_after_the_frame_timeout() -> None:
    a, _b = await lockstep_pair(frame_timeout=5)  # _b never reads
    started = trio.current_time()
    with pytest.raises(ConnectionClosedError):
        await a.send_message(a_block_message())
    assert 5 <= trio.current_time() - started < 6
    assert "did not take a frame of ours" in (a.stats.closed_because or "")


class Waiter:
    """An AnswerWaiter that writes down what it is told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, object]] = []
        self.event = trio.Event()

    async def answered(self, response: m.Response) -> None:
        self.told.append(("answered", response))
        self.event.set()

    def failed(self, error: Exception) -> None:
        self.told.append(("failed", error))
        self.event.set()


@trio_test
async def test_send_request_returns_at_once_and_the_read_loop_tells_the_waiter() -> None:
    a, b = await channel_pair()
    async with serve(b, echo_handler), serve(a) as client:
        ok, refused, wrong = Waiter(), Waiter(), Waiter()
        first = await client.send_request(m.Ping(), ok)
        second = await client.send_request(m.GetRecord(b"k"), refused)
        third = await client.send_request(m.Have((m.CID.for_data(0x55, b"x"),)), wrong)
        assert len({first, second, third}) == 3
        for waiter in (ok, refused, wrong):
            await waiter.event.wait()
    assert ok.told == [("answered", m.Pong(request_id=first))]
    [(kind, error)] = refused.told
    assert kind == "failed" and isinstance(error, RequestFailedError) and error.code == "not_found"
    [(kind, error)] = wrong.told
    assert kind == "failed" and isinstance(error, MalformedMessageError)
    assert a.stats.strikes == 1  # only the answer of the wrong type


@trio_test
async def test_a_request_its_caller_gave_up_on_leaves_a_late_answer_no_fault() -> None:
    a, b = await channel_pair()
    async with serve(a) as client:
        with trio.move_on_after(0.5):  # the caller moves on (another holder answered first)
            await client.request(m.Ping())
        request = await b.receive_message()
        await b.send_message(m.Pong(request_id=request.request_id))  # late
        await trio.testing.wait_all_tasks_blocked()
    assert a.stats.unexpected == 0 and a.stats.strikes == 0


@trio_test
async def test_a_forgotten_request_is_never_told_and_its_late_answer_is_no_fault() -> None:
    a, b = await channel_pair()
    async with serve(a) as client:
        waiter = Waiter()
        request_id = await client.send_request(m.Ping(), waiter)
        request = await b.receive_message()
        assert request.request_id == request_id
        client.forget(request_id)
        client.forget(request_id)  # twice is harmless
        await b.send_message(m.Pong(request_id=request_id))  # late
        await trio.testing.wait_all_tasks_blocked()
    assert waiter.told == []
    assert a.stats.unexpected == 0 and a.stats.strikes == 0


@trio_test
async def test_a_sent_request_fails_when_the_connection_closes() -> None:
    a, b = await channel_pair()
    async with serve(a) as client:
        waiter = Waiter()
        await client.send_request(m.Ping(), waiter)
        await b.receive_message()
        await b.aclose()
        await waiter.event.wait()
        [(kind, error)] = waiter.told
        assert kind == "failed" and isinstance(error, ConnectionClosedError)
        with pytest.raises(ConnectionClosedError):
            await client.send_request(m.Ping(), Waiter())  # and nothing more is sent


# -- bad input after the handshake -----------------------------------------------------------


async def two_clients_one_server(
    body: Callable[[Any, Any, SecureChannel], Awaitable[None]], **server_options: Any
) -> None:
    """A server holding two connections; ``body(good, bad, bad_server_side)``."""
    server_id = Identity.generate()
    good_a, good_b = await channel_pair(b=server_id)
    bad_a, bad_b = await channel_pair(b=server_id)
    async with serve(good_b, echo_handler, **server_options), \
            serve(bad_b, echo_handler, **server_options), \
            serve(good_a) as good, serve(bad_a) as bad:
        await body(good, bad, bad_b)


@trio_test
async def test_garbage_mid_stream_closes_that_connection_only() -> None:
    async def body(good: Any, bad: Any, bad_server: SecureChannel) -> None:
        assert isinstance(await bad.request(m.Ping()), m.Pong)
        await send_raw(bad.channel, b"\x00\x00\x00\x30" + b"\x99" * 48, encrypt=False)
        await trio.testing.wait_all_tasks_blocked()
        assert bad_server.closed and "decryption failed" in (bad_server.stats.closed_because or "")
        assert isinstance(await good.request(m.Ping()), m.Pong)
        with pytest.raises(ConnectionClosedError):
            await bad.request(m.Ping())

    await two_clients_one_server(body)


@trio_test
async def test_an_oversized_frame_header_closes_the_connection() -> None:
    async def body(good: Any, bad: Any, bad_server: SecureChannel) -> None:
        await send_raw(bad.channel, b"\x7f\xff\xff\xff", encrypt=False)
        await trio.testing.wait_all_tasks_blocked()
        assert bad_server.closed and "exceeds" in (bad_server.stats.closed_because or "")
        assert isinstance(await good.request(m.Ping()), m.Pong)

    await two_clients_one_server(body)


@trio_test
async def test_malformed_messages_are_dropped_counted_then_the_peer_is_cut_off() -> None:
    async def body(good: Any, bad: Any, bad_server: SecureChannel) -> None:
        await send_raw(bad.channel, b"\xa1\x61t\x64nope")  # decrypts, wrong shape
        assert isinstance(await bad.request(m.Ping()), m.Pong)  # still served
        assert bad_server.stats.malformed == 1 and bad_server.stats.strikes == 1
        for _ in range(bad_server.max_strikes - 1):
            await send_raw(bad.channel, b"not cbor")
        await trio.testing.wait_all_tasks_blocked()
        assert bad_server.closed and "too many strikes" in (bad_server.stats.closed_because or "")
        assert isinstance(await good.request(m.Ping()), m.Pong)

    await two_clients_one_server(body)


@trio_test
async def test_a_silent_connection_is_closed_after_the_idle_timeout() -> None:
    _a, b = await channel_pair(idle_timeout=60)
    start = trio.current_time()
    async with serve(b, echo_handler) as server:
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(3600):
            while not b.closed:
                await trio.sleep(1)
    assert trio.current_time() - start == pytest.approx(60, abs=1.5)
    assert b.stats.closed_because == "idle for 60 s"
    assert server.statistics().strikes == 0


@trio_test
async def test_a_connection_that_keeps_receiving_outlives_the_idle_timeout() -> None:
    a, b = await channel_pair(idle_timeout=60)
    async with serve(a) as client, serve(b, echo_handler):
        start = trio.current_time()
        for _ in range(10):  # 450 s in all, never 60 s of silence
            await trio.sleep(45)
            assert isinstance(await client.request(m.Ping()), m.Pong)
        assert not b.closed and trio.current_time() - start >= 450
        with trio.fail_after(3600):
            while not b.closed:
                await trio.sleep(1)
        assert trio.current_time() - start == pytest.approx(450 + 60, abs=1.5)
    assert b.stats.closed_because == "idle for 60 s"


@trio_test
async def test_the_rate_limit_answers_busy_and_counts() -> None:
    now = [0.0]
    a, b = await channel_pair()
    async with serve(b, echo_handler, rate=1, burst=2, clock=lambda: now[0]), \
            serve(a) as client:
        assert isinstance(await client.request(m.Ping()), m.Pong)
        assert isinstance(await client.request(m.Ping()), m.Pong)
        with pytest.raises(RequestFailedError) as info:
            await client.request(m.Ping())
        assert info.value.code == "busy"
        now[0] += 1.0  # one token refills
        assert isinstance(await client.request(m.Ping()), m.Pong)
    assert b.stats.rate_limited == 1


_fuzz = settings(max_examples=25, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@_fuzz
@given(st.lists(st.one_of(
    st.binary(max_size=100).map(lambda b: ("sealed", b)),
    st.binary(max_size=100).map(lambda b: ("raw", b)),
    st.sampled_from(list(m.MESSAGE_TYPES.values())).map(lambda c: ("type", c.TYPE.encode())),
), min_size=1, max_size=5))
def test_fuzz_after_handshake_only_that_connection_suffers(inputs: list) -> None:
    @trio_test
    async def scenario() -> None:
        async def body(good: Any, bad: Any, bad_server: SecureChannel) -> None:
            for kind, data in inputs:
                try:
                    if kind == "type":  # valid CBOR, plausible type, wrong fields
                        await send_raw(bad.channel, m.dagcbor.encode({"t": data.decode()}))
                    else:
                        await send_raw(bad.channel, data, encrypt=(kind == "sealed"))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
            await trio.testing.wait_all_tasks_blocked()
            # Every bad input had a consequence: a strike, a closed connection,
            # or (raw bytes short of a whole frame) a partial frame still waiting.
            sent_anything = any(data for _, data in inputs) or any(k != "raw" for k, _ in inputs)
            assert (bad_server.stats.strikes > 0 or bad_server.closed
                    or bad_server._decoder.buffered > 0 or not sent_anything)
            assert isinstance(await good.request(m.Ping()), m.Pong)

        await two_clients_one_server(body)

    scenario()


# -- limits as units ---------------------------------------------------------------------------


# -- one test over real TCP ------------------------------------------------------------------


def test_over_real_tcp_on_localhost() -> None:
    async def main() -> None:
        server_id, client_id = Identity.generate(), Identity.generate()

        async def on_connection(stream: trio.SocketStream) -> None:
            try:
                channel = await open_channel(stream, server_id, initiator=False)
            except RemoteProtocolError:
                return
            await Connection(channel, echo_handler).run()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    functools.partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1"))
                port = listeners[0].socket.getsockname()[1]
                channel = await connect_tcp("127.0.0.1", port, client_id,
                                            expected_peer_id=server_id.node_id)
                assert channel.peer.node_id == server_id.node_id
                async with serve(channel) as client:
                    assert isinstance(await client.request(m.Ping()), m.Pong)
                    block = bytes(range(256)) * (m.MAX_BLOCK_SIZE // 256)
                    cid = m.CID.for_data(0x55, block)
                    assert await client.request(m.StoreBlocks.of([(cid, block)])) == m.Stored(("ok",), request_id=2)
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_over_real_tcp_large_concurrent_frames_and_a_vanishing_peer() -> None:
    """Frames bigger than the socket buffer (written in part, the rest through
    send_all) from several tasks at once, interleaved with small ones; then
    the server's socket closes and the client sees a closed connection."""

    async def main() -> None:
        server_id, client_id = Identity.generate(), Identity.generate()
        server_channels: list[SecureChannel] = []

        async def on_connection(stream: trio.SocketStream) -> None:
            channel = await open_channel(stream, server_id, initiator=False)
            server_channels.append(channel)
            await Connection(channel, echo_handler, rate=1e6, burst=1e6).run()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    functools.partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1"))
                port = listeners[0].socket.getsockname()[1]
                channel = await connect_tcp("127.0.0.1", port, client_id)
                async with serve(channel) as client:
                    answers: list[object] = []

                    async def store(seed: int) -> None:
                        block = bytes([seed]) * m.MAX_BLOCK_SIZE
                        answers.append(await client.request(m.StoreBlocks.of([(m.CID.for_data(0x55, block), block)])))

                    async def ping() -> None:
                        answers.append(await client.request(m.Ping()))

                    async with trio.open_nursery() as senders:
                        for seed in range(6):
                            senders.start_soon(store, seed)
                            senders.start_soon(ping)
                    assert sorted(type(a).__name__ for a in answers) == ["Pong"] * 6 + ["Stored"] * 6
                    await server_channels[0].aclose()
                    with pytest.raises(ConnectionClosedError):
                        await client.request(m.Ping(), timeout=10)
                    assert channel.closed
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_the_package_exports_exactly_its_public_surface() -> None:
    import cas.net

    assert sorted(cas.net.__all__) == sorted(set(cas.net.__all__))
    for name in cas.net.__all__:
        assert getattr(cas.net, name) is not None, name
    public = {name for name in vars(cas.net) if not name.startswith("_")}
    submodules = {"identity", "network_key", "noise", "framing", "messages", "connection",
                  "admission", "frame_budget", "annotations"}
    assert public - submodules == set(cas.net.__all__)
