"""The trio driver: secure channels over streams, and request multiplexing.

This module owns the only I/O of the network layer. It is deliberately thin:
every decision about bytes is made by the sans-IO pieces (the handshake in
:mod:`.noise`, frames in :mod:`.framing`, shapes in :mod:`.messages`); what
lives here is time and tasks:

* :func:`open_channel` runs the handshake and the hello exchange over any
  ``trio.abc.Stream`` under one deadline (a private network's handshake when
  given a network key, sending a peer on another network the handshake's
  refusal before closing), and returns a :class:`SecureChannel`
  (``send_message`` / ``receive_message``).
* :class:`Connection` multiplexes requests over one channel: ``request()``
  tags a request with a fresh id and waits for the response with that id,
  while ``run()`` reads, routes responses to their waiters and serves the
  peer's requests with a handler, under a per-connection rate limit
  (:class:`cas.ratelimit.TokenBucket`, read with the injected clock) and an
  idle timeout.
* a frame stalled in either direction (its body not all received, or not
  all taken by the peer, within :data:`FRAME_TIMEOUT`) closes the
  connection; large frames are received only as the frame budget allows
  (:class:`~cas.net.frame_budget.FrameBudget`, which shares it out by
  source address: the channel waits, not reads, until its claim is granted).

Who may connect at all is the admission policy's (:mod:`.admission`).

What a connection does with bad input (docs/network.md has the table):
anything that breaks the byte stream (a bad frame, a failed decryption, a
stream that ends mid-frame, a peer silent for longer than the idle timeout)
closes that connection; a message that decrypts but is malformed,
unexpected or over the rate limit is dropped (or answered ``busy``) and
counts as a strike against the peer, and too many strikes close the
connection. None of it raises out of :meth:`Connection.run`; the node goes on
serving everyone else.

It never interprets requests (that is the handler's job: the DHT and the
store) and never verifies content.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import trio

from ..errors import (
    ConnectionClosedError,
    HandshakeTimeoutError,
    IncompatibleVersionError,
    LocalProtocolError,
    MalformedMessageError,
    NetworkMismatchError,
    RemoteProtocolError,
    RequestFailedError,
    RequestTimeoutError,
)
from ..ratelimit import TokenBucket
from . import messages as msg
from .framing import (
    FRAME_BUFFERS,
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    MAX_HANDSHAKE_FRAME_SIZE,
    MIN_FRAME_SIZE,
    FrameBudget,
    FrameDecoder,
    encode_frame,
    frame_header,
)
from .identity import Identity
from .messages import Message, Request, Response
from .network_key import NetworkKey
from .noise import Handshake, PeerIdentity, Role, Transport, sealed_size

# -- limits and timeouts ------------------------------------------------------------

# The handshake plus hellos is two round trips; 10 s covers a slow
# intercontinental link many times over and bounds what a silent or
# dribbling client can hold (the same order as nginx's client_header_timeout).
HANDSHAKE_TIMEOUT = 10.0
# A connection on which nothing arrives for this long is closed; peers that
# want to keep one open send PING (Kademlia refreshes buckets hourly; a
# connection pool reopens on demand, so this can be short).
IDLE_TIMEOUT = 120.0
# A frame whose body has not all arrived this long after its first bytes
# closes the connection, and so does a frame of ours the peer has not taken
# in that time: a stalled frame holds memory (up to 2 MiB, and a share of
# the frame budget). The largest frame in 10 s is 1.7 Mbit/s, which a slow
# uplink still makes; the same order as the handshake and STORE timeouts.
FRAME_TIMEOUT = 10.0
# How long request() waits for its response by default.
REQUEST_TIMEOUT = 30.0
# Incoming requests per second per connection, and the burst allowed above
# that. A DHT lookup sends a peer a handful of requests and repair batches
# HAVE, but placement sends one STORE_BLOCK per block and copy: an add at
# 100 MiB/s puts ~400 a second on each of its R closest peers (the driver's
# own STORE_BLOCK limit). Beyond this the peer is answered busy and struck.
REQUEST_RATE = 1000.0
REQUEST_BURST = 2000.0
# Requests from one peer being served at once; more are answered "busy".
MAX_CONCURRENT_REQUESTS = 16
# Our own requests outstanding on one connection at once; request() waits
# for a slot beyond that (backpressure on our side, not an error).
MAX_PENDING_REQUESTS = 256
# Strikes (malformed, unexpected or rate-limited messages) before we give up
# on a connection. Several, so that one bug or burst is not fatal.
MAX_STRIKES = 16
# Bytes asked of the stream per read outside a large body (which is read
# in place, all that is missing at once); the frame decoder bounds the rest.
# Small, because what a read brings beyond a large frame's header stays in
# memory, outside the frame budget, while the frame waits for the budget:
# 16 KiB on each of 512 connections is 8 MiB. DHT messages are a few KiB.
READ_SIZE = 16 * 1024
# Late responses (for requests that already timed out) are not the peer's
# fault; remember this many timed-out ids so they are dropped quietly.
_REMEMBERED_TIMEOUTS = 256

# Which responses may answer which request (Error may answer any).
EXPECTED_RESPONSES: dict[type[Request], tuple[type[Response], ...]] = {
    msg.Ping: (msg.Pong,),
    msg.FindNode: (msg.Nodes,),
    msg.FindBlock: (msg.Block, msg.Nodes, msg.Providers),
    msg.StoreBlocks: (msg.Stored,),
    msg.Have: (msg.HaveResult,),
    msg.DialBack: (msg.DialBackResult,),
    msg.PutRecord: (msg.Ok,),
    msg.GetRecord: (msg.Record,),
}

Clock = Callable[[], float]
Handler = Callable[[PeerIdentity, Request], Awaitable[Response]]
# Answers at once, without waiting for anything, the requests it can (a DHT
# node's FIND_NODE and PING), and returns None for the rest.
QuickHandler = Callable[[PeerIdentity, Request], "Response | None"]


PEER_CLOSED = "the peer closed the connection"
"""``ChannelStats.closed_because`` when the peer ended the stream (EOF):
an idle close on its side, or its process died."""


# -- the secure channel -------------------------------------------------------------------


@dataclass
class ChannelStatistics:
    messages_sent: int = 0
    messages_received: int = 0
    malformed: int = 0
    unexpected: int = 0
    rate_limited: int = 0
    strikes: int = 0
    closed_because: str | None = None


class SecureChannel:
    """An authenticated, encrypted message channel to one known peer.

    Made by :func:`open_channel`. ``send_message`` may be called from several
    tasks (sends are serialised so frames never interleave and nonces stay
    in wire order); ``receive_message`` from one task at a time. The idle
    timeout is kept by :meth:`close_when_idle` when it runs beside the reader
    (:class:`Connection` does that), else by a timeout around each read.
    """

    def __init__(self, stream: trio.abc.Stream, transport: Transport, peer: PeerIdentity,
                 decoder: FrameDecoder, *, idle_timeout: float = IDLE_TIMEOUT,
                 frame_timeout: float = FRAME_TIMEOUT,
                 max_strikes: int = MAX_STRIKES) -> None:
        self._stream = stream
        self._transport = transport
        self._decoder = decoder
        self._send_lock = trio.Lock()
        self._closed = False
        # The idle timeout: when close_when_idle() runs beside the reader, it
        # closes the channel after idle_timeout with nothing received, and
        # reads need no cancel scope of their own (one per read cost ~10 µs
        # in trio, a twentieth of a whole request's round trip).
        self._last_received = trio.current_time()
        self._idle_watched = False
        self._watch: trio.CancelScope | None = None  # close_when_idle's sleep, its deadline the next due
        # The frame timeout: when the frame being received must be complete
        # (inf between frames). Set when a read leaves part of a frame in the
        # decoder, so a message that arrives whole costs nothing.
        self._frame_deadline = math.inf
        self._memory_wait: trio.CancelScope | None = None  # waiting for the frame budget
        decoder.claim.on_grant = self._memory_granted
        # A TCP stream is read and written through its file descriptor (see
        # _receive and _send_frame); any other stream through its methods.
        # POSIX only: elsewhere os.read and os.write do not work on sockets.
        self._socket = (stream.socket if type(stream) is trio.SocketStream and os.name == "posix"
                        else None)
        self.peer = peer
        self.peer_hello: msg.Hello | None = None
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.max_strikes = max_strikes
        self.stats = ChannelStatistics()

    def __repr__(self) -> str:
        return f"SecureChannel(peer={self.peer!r}, closed={self._closed})"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sending(self) -> bool:
        """Whether a message is being sent (a send now would wait for it)."""
        return self._send_lock.locked()

    def statistics(self) -> ChannelStatistics:
        return self.stats

    async def send_message(self, message: Message) -> None:
        """Encode, encrypt and send one message. Raises
        :class:`ConnectionClosedError` if the channel is or becomes closed."""
        parts = msg.encode_parts(message)
        borrowed: memoryview | None = None
        # Uncontended (the usual case), take the lock without Lock.acquire()'s
        # extra trip through the scheduler: send_all below is the checkpoint.
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise ConnectionClosedError("the connection is closed")
            # Inline, blocks too: OpenSSL's AES-GCM holds the GIL, so
            # a worker thread would add a hop and save nothing (2 MiB: ~0.25 ms).
            if len(parts) == 1:
                frame: bytes | memoryview = encode_frame(self._transport.seal(parts[0]))
            else:  # a block: encrypted from where it lies straight into a borrowed frame
                body_size = sealed_size(sum(len(part) for part in parts))
                frame = borrowed = FRAME_BUFFERS.take(HEADER_SIZE + body_size)
                frame[:HEADER_SIZE] = frame_header(body_size)
                self._transport.seal_into(parts, frame[HEADER_SIZE:])
            try:
                await self._send_frame(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                await self._close(f"send failed: {exc}")
                raise ConnectionClosedError("the connection broke while sending") from None
            except trio.Cancelled:
                # Part of the frame may be on the wire; the stream cannot be
                # resynchronised, so it is closed.
                await self._close("a send was cancelled mid-frame")
                raise
        finally:
            self._send_lock.release()
            if borrowed is not None:
                FRAME_BUFFERS.give_back(borrowed)  # the kernel has the bytes, or the connection is gone
        self.stats.messages_sent += 1

    async def receive_message(self) -> Message:
        """The next message from the peer.

        A malformed message raises :class:`MalformedMessageError` and counts
        a strike; the channel stays usable unless the strikes run out. Any
        other :class:`RemoteProtocolError` (framing, decryption) closes the
        channel, as do the idle timeout and the end of the stream, which
        raise :class:`ConnectionClosedError`.
        """
        decoder = self._decoder
        while True:
            if self._closed:
                raise ConnectionClosedError(
                    f"the connection is closed ({self.stats.closed_because})")
            try:
                body = decoder.next_frame()
            except RemoteProtocolError as exc:
                await self._close(f"bad frame: {exc}")
                raise
            if body is not None:
                break
            if decoder.at_eof:
                await self._close(PEER_CLOSED)
                continue
            if decoder.buffered or decoder.waiting_for_memory:  # inside a frame
                if self._frame_deadline == math.inf:
                    self._start_frame_clock()
                elif trio.current_time() >= self._frame_deadline:
                    await self._close(self._stalled())
                    continue
                if decoder.waiting_for_memory:
                    await self._wait_for_memory()
                    continue
            if self._idle_watched:
                await self._receive()
            else:
                with trio.move_on_at(min(trio.current_time() + self.idle_timeout,
                                         self._frame_deadline)) as idle:
                    await self._receive()
                if idle.cancelled_caught:
                    await self._close(self._stalled() if trio.current_time() >= self._frame_deadline
                                      else f"idle for {self.idle_timeout:g} s")
                    continue
        self._frame_deadline = math.inf
        try:
            plaintext = self._transport.open(body)
        except RemoteProtocolError as exc:
            await self._close(f"decryption failed: {exc}")
            raise
        finally:
            self._decoder.recycle(body)  # decrypted into a buffer of its own
        self.stats.messages_received += 1
        try:
            return msg.decode(plaintext)
        except MalformedMessageError:
            self.stats.malformed += 1
            await self.strike("malformed message")
            raise

    def _start_frame_clock(self) -> None:
        """The frame being received began with the last read: it must be
        complete within the frame timeout."""
        deadline = self._frame_deadline = self._last_received + self.frame_timeout
        watch = self._watch
        if watch is not None and deadline < watch.deadline:
            watch.deadline = deadline

    def _stalled(self) -> str:
        return f"a frame stalled: not complete {self.frame_timeout:g} s after it began"

    async def _wait_for_memory(self) -> None:
        """Until the frame budget grants the frame its turn (or the frame's
        deadline passes, or the channel closes); the caller tries again."""
        if self._decoder.claim.granted:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(deadline=self._frame_deadline) as self._memory_wait:
            await trio.sleep_forever()
        self._memory_wait = None

    def _memory_granted(self) -> None:
        """The budget granted the frame being waited for (called by it,
        synchronously, from whichever task gave memory back)."""
        if self._memory_wait is not None:
            self._memory_wait.cancel()

    async def _send_frame(self, frame: bytes | memoryview) -> None:
        sock = self._socket
        if sock is not None:
            # The kernel nearly always takes a whole frame at once, so write
            # it straight away: trio's send_all costs three context managers,
            # a trip through the scheduler and a wrapper per call on top of
            # the system call. A cancellation point still, not a schedule
            # point; whatever the kernel does not take goes through send_all.
            await trio.lowlevel.checkpoint_if_cancelled()
            fd = sock.fileno()  # -1 once closed: never write to a reused descriptor
            if fd < 0:
                raise trio.ClosedResourceError("the socket is closed")
            try:
                sent = os.write(fd, frame)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket write failed: {exc}") from None
            if sent == len(frame):
                return
            await self._send_rest(memoryview(frame)[sent:])
            return
        await self._send_rest(frame)

    async def _send_rest(self, data: bytes | memoryview) -> None:
        """``send_all``, within the frame timeout: a peer that has not taken
        our frame by then is not reading, and holds its buffer."""
        with trio.move_on_after(self.frame_timeout) as stalled:
            await self._stream.send_all(data)
        if stalled.cancelled_caught:
            raise trio.BrokenResourceError(
                f"the peer did not take a frame of ours within {self.frame_timeout:g} s")

    async def _receive(self) -> None:
        """One read into the frame decoder (the end of the stream, or a
        closed socket, as the end).

        Asks for the rest of the frame being received when that is more
        than READ_SIZE (a block): one system call and one wake-up instead
        of one per 64 KiB; and reads a block's body straight into the
        buffer the decoder keeps for it (``body_space``)."""
        space = self._decoder.body_space()
        size = len(space) if space is not None else max(READ_SIZE, self._decoder.missing)
        sock = self._socket
        data: bytes | bytearray = b""
        count = 0
        try:
            if sock is None:
                data = await self._stream.receive_some(size)
                count = len(data)
                if space is not None:
                    space[:count] = data
            else:
                # Wait first, then read: the read loop has just drained the
                # socket, so trying first (as trio's recv does) would cost a
                # failed system call and an exception per message.
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    fd = sock.fileno()
                    if fd < 0:
                        break
                    try:
                        if space is not None:
                            count = os.readv(fd, [space])
                        else:
                            data = os.read(fd, size)
                            count = len(data)
                        break
                    except BlockingIOError:
                        continue
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            count = 0
        if not count:
            self._decoder.receive_data(b"")
            return
        self._last_received = trio.current_time()
        if space is not None:
            self._decoder.body_filled(count)
        else:
            self._decoder.receive_data(data)

    async def close_when_idle(self) -> None:
        """Close the channel once nothing has been received for
        ``idle_timeout`` seconds; run it beside the task that calls
        :meth:`receive_message` (as :meth:`Connection.run` does) and cancel
        it with that task. While it runs, reads take no timeout of their own.

        It sleeps until the last receipt plus the timeout, and only closes if
        nothing arrived meanwhile: one timer per idle period, not per read.
        """
        self._idle_watched = True
        try:
            while not self._closed:
                now = trio.current_time()
                # The reader, blocked in a read or waiting for the frame
                # budget, is woken by the close.
                if now >= self._frame_deadline:
                    await self._close(self._stalled())
                    return
                deadline = self._last_received + self.idle_timeout
                if now >= deadline:
                    await self._close(f"idle for {self.idle_timeout:g} s")
                    return
                with trio.CancelScope(deadline=min(deadline, self._frame_deadline)) as self._watch:
                    await trio.sleep_forever()
                self._watch = None
        finally:
            self._watch = None
            self._idle_watched = False

    async def strike(self, reason: str) -> None:
        """Count one misbehaviour against the peer; close after too many."""
        self.stats.strikes += 1
        if self.stats.strikes >= self.max_strikes:
            await self._close(f"too many strikes (last: {reason})")

    async def _close(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self.stats.closed_because = reason
            self._decoder.close()  # a body half-received gives its memory back
            if self._memory_wait is not None:
                self._memory_wait.cancel()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    async def aclose(self) -> None:
        await self._close("closed by us")


async def _send_frame(stream: trio.abc.Stream, body: bytes) -> None:
    await stream.send_all(encode_frame(body, MAX_HANDSHAKE_FRAME_SIZE))


async def _receive_frame(stream: trio.abc.Stream, decoder: FrameDecoder, hint: str = "") -> bytes:
    while (body := decoder.next_frame()) is None:
        if decoder.at_eof:
            raise RemoteProtocolError(f"the peer closed the connection during the handshake{hint}")
        decoder.receive_data(await stream.receive_some(READ_SIZE))
    assert isinstance(body, bytes)  # a handshake frame is under IN_PLACE_BODY: never a borrowed view
    return body


async def _send_refusal(stream: trio.abc.Stream, refusal: bytes | None) -> None:
    """Tell a peer on another network why it is refused (best effort: it
    may be gone already, and the handshake deadline still bounds this)."""
    if refusal is None:
        return
    try:
        await _send_frame(stream, refusal)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def open_channel(
    stream: trio.abc.Stream,
    identity: Identity,
    *,
    initiator: bool,
    expected_peer_id: bytes | None = None,
    hello: msg.Hello | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
    network_key: NetworkKey | None = None,
    frame_timeout: float = FRAME_TIMEOUT,
    budget: FrameBudget | None = None,
    address: str | None = None,
) -> SecureChannel:
    """Run the handshake and the hello exchange on ``stream``.

    Returns the channel with ``peer`` (the proven identity) and
    ``peer_hello`` set. On any failure the stream is closed and a
    :class:`RemoteProtocolError` subclass is raised: :class:`HandshakeError`
    (and its :class:`PeerIdMismatchError` / :class:`IdentityProofError` /
    :class:`NetworkMismatchError`), :class:`HandshakeTimeoutError` or
    :class:`IncompatibleVersionError`. With ``network_key`` only a peer
    holding the same key completes it; without, only a peer holding none.
    Large frames received on the channel share ``budget`` (the process's
    :data:`~cas.net.framing.FRAME_BUDGET` by default), counted under the
    peer's ``address`` (by default the TCP stream's remote address; one
    address for all streams that are not sockets).
    """
    hello = hello or msg.Hello()
    role = Role.INITIATOR if initiator else Role.RESPONDER
    handshake = Handshake(identity, role, expected_peer_id=expected_peer_id,
                          network_key=network_key)
    if address is None:
        address = _remote_host(stream)
    decoder = FrameDecoder(limit=MAX_HANDSHAKE_FRAME_SIZE, budget=budget, address=address)
    channel: SecureChannel | None = None
    received = 0
    try:
        with trio.fail_after(handshake_timeout):
            while not handshake.complete:
                if handshake.our_turn:
                    await _send_frame(stream, handshake.next_message())
                else:
                    # A private initiator whose message 1 is answered by a
                    # close met a node that predates private networks, or
                    # something that is no cas node (either way, no refusal).
                    hint = (" (a node not on this node's private network may do that)"
                            if network_key is not None and initiator and received == 0 else "")
                    try:
                        handshake.receive_message(await _receive_frame(stream, decoder, hint))
                        received += 1
                    except NetworkMismatchError:
                        await _send_refusal(stream, handshake.refusal)
                        raise
            assert handshake.peer is not None
            decoder.limit, decoder.minimum = MAX_FRAME_SIZE, MIN_FRAME_SIZE
            channel = SecureChannel(stream, handshake.transport(), handshake.peer, decoder,
                                    idle_timeout=idle_timeout, frame_timeout=frame_timeout)
            # Hellos go in turn, initiator first (it is the one waiting anyway),
            # so the exchange needs no buffering in the stream.
            if initiator:
                await channel.send_message(hello)
            first = await channel.receive_message()
            if not isinstance(first, msg.Hello):
                raise RemoteProtocolError(f"expected hello, got {first.TYPE}")
            if not initiator:  # answer even a version we refuse: the peer learns why
                await channel.send_message(hello)
            if first.version != msg.PROTOCOL_VERSION:
                raise IncompatibleVersionError(
                    f"peer speaks protocol version {first.version}, "
                    f"we speak {msg.PROTOCOL_VERSION}")
            channel.peer_hello = first
            return channel
    except trio.TooSlowError:
        await _abort(stream, channel, "handshake timed out")
        raise HandshakeTimeoutError(
            f"the peer did not complete the handshake within {handshake_timeout:g} s") from None
    except (RemoteProtocolError, ConnectionClosedError) as exc:
        await _abort(stream, channel, f"handshake failed: {exc}")
        if isinstance(exc, RemoteProtocolError):
            raise
        raise RemoteProtocolError(f"the connection closed during the handshake: {exc}") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await _abort(stream, channel, "stream broke during the handshake")
        raise RemoteProtocolError("the connection broke during the handshake") from None


async def _abort(stream: trio.abc.Stream, channel: SecureChannel | None, reason: str) -> None:
    if channel is not None:
        await channel._close(reason)
    else:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _remote_host(stream: trio.abc.Stream) -> str:
    """The peer's address of a TCP stream; "" for any other stream."""
    if isinstance(stream, trio.SocketStream):
        try:
            return str(stream.socket.getpeername()[0])
        except (OSError, IndexError, TypeError):
            pass
    return ""


async def connect_tcp(host: str, port: int, identity: Identity, *,
                      expected_peer_id: bytes | None = None,
                      hello: msg.Hello | None = None,
                      handshake_timeout: float = HANDSHAKE_TIMEOUT,
                      network_key: NetworkKey | None = None) -> SecureChannel:
    """Dial ``host:port`` and open a channel as the initiator."""
    with trio.fail_after(handshake_timeout):
        stream = await trio.open_tcp_stream(host, port)
    return await open_channel(stream, identity, initiator=True,
                              expected_peer_id=expected_peer_id, hello=hello,
                              handshake_timeout=handshake_timeout, network_key=network_key)


# -- request multiplexing -------------------------------------------------------------------


class AnswerWaiter(Protocol):
    """Who learns the outcome of a request sent with
    :meth:`Connection.send_request`, exactly once (unless it is forgotten
    first)."""

    async def answered(self, response: Response) -> None:
        """The answer arrived (of a type that answers the request, not an
        error). Awaited by the connection's read loop itself: it may send
        (that is what it is for), but nothing more from this peer is read
        until it returns, so it must not wait for anything else."""

    def failed(self, error: Exception) -> None:
        """The request failed: :class:`RequestFailedError` (an error
        answer), :class:`MalformedMessageError` (an answer of the wrong
        type) or :class:`ConnectionClosedError`. Synchronous: it may be
        called from the read loop or while the connection shuts down."""


class _Pending:
    __slots__ = ("error", "event", "request", "response", "waiter")

    def __init__(self, request: Request, waiter: AnswerWaiter | None = None) -> None:
        self.request = request
        self.waiter = waiter
        # A waiter is told directly; only request() waits on an event.
        self.event = trio.Event() if waiter is None else None
        self.response: Response | None = None
        self.error: Exception | None = None


class Connection:
    """Many concurrent requests, both ways, over one :class:`SecureChannel`.

    ``run()`` must be running (see :func:`serve`) for ``request()`` to get
    answers. ``handler(peer, request)`` serves the peer's requests and
    returns the response (its ``request_id`` is filled in here); a handler
    that raises :class:`RemoteProtocolError` (say, a block that does not
    match its CID) gets the peer an ``invalid`` error and a strike.

    ``quick(peer, request)``, if given, is tried first, by the read loop
    itself: a response it returns is sent from there, with no task, for
    requests that need no waiting (a spawned task per request was ~5 % of a
    DHT lookup's CPU); None passes the request on to ``handler``. The rate
    limit applies to both. While the reply is written the loop reads
    nothing more from this peer, which only a peer that stops reading its
    own answers can notice.
    """

    def __init__(self, channel: SecureChannel, handler: Handler | None = None, *,
                 quick: QuickHandler | None = None,
                 rate: float = REQUEST_RATE, burst: float = REQUEST_BURST,
                 clock: Clock | None = None,
                 request_timeout: float = REQUEST_TIMEOUT,
                 max_concurrent: int = MAX_CONCURRENT_REQUESTS) -> None:
        self.channel = channel
        self._handler = handler
        self._quick = quick
        self._clock = clock or trio.current_time
        self._bucket = TokenBucket(rate, burst, self._clock())
        self._request_timeout = request_timeout
        self._serving = trio.Semaphore(max_concurrent)
        self._pending: dict[int, _Pending] = {}
        self._pending_slots = trio.Semaphore(MAX_PENDING_REQUESTS)
        self._timed_out: OrderedDict[int, None] = OrderedDict()
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"Connection({self.channel!r}, pending={len(self._pending)})"

    @property
    def peer(self) -> PeerIdentity:
        return self.channel.peer

    def statistics(self) -> ChannelStatistics:
        return self.channel.stats

    def _next_id(self) -> int:
        while True:
            request_id = next(self._ids)
            if request_id > msg.MAX_REQUEST_ID:
                self._ids = itertools.count(1)
                continue
            if request_id not in self._pending:
                return request_id

    async def request(self, request: Request, timeout: float | None = None) -> Response:
        """Send ``request`` and wait for its response.

        Raises :class:`RequestFailedError` if the peer answers with an error,
        :class:`RequestTimeoutError` if it does not answer in time,
        :class:`ConnectionClosedError` if the connection closes first, and
        :class:`MalformedMessageError` if it answers with the wrong type.
        The timeout covers waiting for a pending-request slot too.
        """
        pending: _Pending | None = None
        with trio.move_on_after(self._request_timeout if timeout is None else timeout):
            # A free slot is taken without Semaphore.acquire()'s extra trip
            # through the scheduler; sending is the checkpoint.
            try:
                self._pending_slots.acquire_nowait()
            except trio.WouldBlock:
                await self._pending_slots.acquire()
            try:
                request_id = self._next_id()
                request = msg.with_request_id(request, request_id)
                pending = self._pending[request_id] = _Pending(request)
                assert pending.event is not None
                try:
                    await self.channel.send_message(request)
                    await pending.event.wait()
                finally:
                    del self._pending[request_id]
                    if not pending.event.is_set():  # timed out, or the caller gave up (cancelled)
                        self._remember_timeout(request_id)  # so its late answer is no strike
            finally:
                self._pending_slots.release()
        if pending is None:
            raise RequestTimeoutError(f"too many requests outstanding to send {request.TYPE}")
        assert pending.event is not None
        if not pending.event.is_set():
            raise RequestTimeoutError(f"no answer to {request.TYPE} in time")
        if pending.error is not None:
            raise pending.error
        response = pending.response
        assert response is not None
        if isinstance(response, msg.Error):
            raise RequestFailedError(response.code, response.message)
        return response

    async def send_request(self, request: Request, waiter: AnswerWaiter) -> int:
        """Send ``request`` and return its id at once, without waiting for
        the answer: ``waiter`` is told the outcome (see
        :class:`AnswerWaiter`), the answer itself by the read loop with no
        task in between. There is no timeout here: the caller keeps its own
        deadlines (one timer for many requests) and calls :meth:`forget`
        when it gives up. Raises :class:`ConnectionClosedError` if the
        request could not be sent (the waiter is then never called)."""
        try:
            self._pending_slots.acquire_nowait()
        except trio.WouldBlock:
            await self._pending_slots.acquire()
        request_id = self._next_id()
        request = msg.with_request_id(request, request_id)
        self._pending[request_id] = _Pending(request, waiter)
        try:
            await self.channel.send_message(request)
        except BaseException:
            if self._pending.pop(request_id, None) is not None:
                self._pending_slots.release()
            raise
        return request_id

    def forget(self, request_id: int) -> None:
        """Give up on a request sent with :meth:`send_request`: its waiter
        is not called, and a late answer is dropped without a strike (as
        for a request that timed out). Nothing happens if it has already
        been answered or failed."""
        pending = self._pending.get(request_id)
        if pending is not None and pending.waiter is not None:
            del self._pending[request_id]
            self._pending_slots.release()
            self._remember_timeout(request_id)

    def send_would_wait(self) -> bool:
        """Whether :meth:`send_request` would have to wait before sending
        (another send in progress, or no pending-request slot free)."""
        return self.channel.sending or self._pending_slots.value == 0

    def _remember_timeout(self, request_id: int) -> None:
        self._timed_out[request_id] = None
        while len(self._timed_out) > _REMEMBERED_TIMEOUTS:
            self._timed_out.popitem(last=False)

    async def run(self) -> None:
        """Read and dispatch until the connection closes. Never raises for
        anything the peer does; returns once the channel is closed."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.channel.close_when_idle)
                await self._read_loop(nursery)
                nursery.cancel_scope.cancel()
        finally:
            closed = ConnectionClosedError(
                f"the connection closed ({self.channel.stats.closed_because})")
            for request_id, pending in list(self._pending.items()):
                if pending.waiter is not None:
                    del self._pending[request_id]
                    self._pending_slots.release()
                    pending.waiter.failed(closed)
                else:
                    assert pending.event is not None
                    pending.error = closed
                    pending.event.set()
            await self.channel._close(self.channel.stats.closed_because or "connection ended")

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                message = await self.channel.receive_message()
            except MalformedMessageError:
                continue  # dropped and counted by the channel
            except (RemoteProtocolError, ConnectionClosedError):
                return  # the channel closed itself
            if isinstance(message, msg.Response):
                await self._on_response(message)
            elif isinstance(message, msg.Request):
                await self._on_request(message, nursery)
            else:  # a second hello
                self.channel.stats.unexpected += 1
                await self.channel.strike(f"unexpected {message.TYPE}")
            if self.channel.closed:
                return

    async def _on_response(self, response: Response) -> None:
        pending = self._pending.get(response.request_id)
        if pending is None or (pending.event is not None and pending.event.is_set()):
            if response.request_id in self._timed_out:
                del self._timed_out[response.request_id]
                return  # a late answer to a request we gave up on: not a fault
            self.channel.stats.unexpected += 1
            await self.channel.strike(f"response to unknown request {response.request_id}")
            return
        allowed = EXPECTED_RESPONSES.get(type(pending.request), ())
        problem = None
        if not isinstance(response, (msg.Error, *allowed)):
            problem = f"{response.TYPE} does not answer {pending.request.TYPE}"
        elif isinstance(response, msg.HaveResult) and isinstance(pending.request, msg.Have) \
                and len(response.present) != len(pending.request.cids):
            problem = "have_result length differs from the request"
        elif isinstance(response, msg.Stored) and isinstance(pending.request, msg.StoreBlocks) \
                and len(response.codes) != len(pending.request.cids):
            problem = "stored length differs from the request"
        waiter = pending.waiter
        if waiter is not None:  # sent by send_request: tell the waiter now
            del self._pending[response.request_id]
            self._pending_slots.release()
            if problem is not None:
                self.channel.stats.unexpected += 1
                await self.channel.strike(problem)
                waiter.failed(MalformedMessageError(problem))
            elif isinstance(response, msg.Error):
                waiter.failed(RequestFailedError(response.code, response.message))
            else:
                await waiter.answered(response)
            return
        if problem is not None:
            pending.error = MalformedMessageError(problem)
            self.channel.stats.unexpected += 1
            await self.channel.strike(problem)
        else:
            pending.response = response
        assert pending.event is not None
        pending.event.set()

    async def _on_request(self, request: Request, nursery: trio.Nursery) -> None:
        if self._handler is None:
            await self._reply(msg.Error("refused", "this node serves no requests",
                                        request_id=request.request_id))
            return
        if not self._bucket.take(self._clock()):
            self.channel.stats.rate_limited += 1
            await self.channel.strike("over the request rate limit")
            await self._reply(msg.Error("busy", "rate limit exceeded",
                                        request_id=request.request_id))
            return
        if self._quick is not None:
            try:
                response = self._quick(self.channel.peer, request)
            except RemoteProtocolError as exc:
                await self.channel.strike(f"handler refused {request.TYPE}")
                response = msg.Error("invalid", str(exc)[: msg.MAX_ERROR_TEXT_LENGTH])
            if response is not None:
                if not isinstance(response, msg.Response):
                    raise LocalProtocolError(f"quick handler returned {response!r}, not a response")
                await self._reply(msg.with_request_id(response, request.request_id))
                return
        try:
            self._serving.acquire_nowait()
        except trio.WouldBlock:
            await self._reply(msg.Error("busy", "too many requests in progress",
                                        request_id=request.request_id))
            return
        nursery.start_soon(self._serve_one, request)

    async def _serve_one(self, request: Request) -> None:
        try:
            assert self._handler is not None
            try:
                response = await self._handler(self.channel.peer, request)
            except RemoteProtocolError as exc:
                await self.channel.strike(f"handler refused {request.TYPE}")
                response = msg.Error("invalid", str(exc)[: msg.MAX_ERROR_TEXT_LENGTH])
            if not isinstance(response, msg.Response):
                raise LocalProtocolError(f"handler returned {response!r}, not a response")
            await self._reply(msg.with_request_id(response, request.request_id))
        finally:
            self._serving.release()

    async def _reply(self, response: Message) -> None:
        try:
            await self.channel.send_message(response)
        except ConnectionClosedError:
            pass  # the read loop notices and ends

    async def aclose(self) -> None:
        await self.channel.aclose()


@asynccontextmanager
async def serve(channel: SecureChannel, handler: Handler | None = None,
                **options: float | Clock | None) -> AsyncIterator[Connection]:
    """Run a :class:`Connection` over ``channel`` for the body of the block;
    the connection is closed when the block exits."""
    connection = Connection(channel, handler, **options)  # type: ignore[arg-type]  # each option has the type its name takes
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        try:
            yield connection
        finally:
            await connection.aclose()
