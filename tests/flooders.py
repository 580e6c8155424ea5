"""Attackers, for the admission and memory tests and ``bench/flood.py``.

Four floods against a daemon's listening address, each from chosen
source addresses on 127.0.0.0/8 (``local_address``: Linux routes the whole
/8 to the loopback interface, so 127.0.0.2 … 127.0.0.17 are distinct hosts
to the daemon, and nothing leaves the machine):

* :func:`connection_flood` — many fresh identities (a key pair each costs
  nothing) that complete the handshake and keep their connections alive
  with pings, trying to hold every connection slot;
* :func:`half_open_flood` — TCP connections that never start the
  handshake, reopened as soon as the daemon closes them, trying to hold
  every handshake slot;
* :func:`stalled_frames` — connections that complete the handshake, then
  announce the largest frame and send all of it but its last byte;
* :func:`handshake_flood` — new connections from one address as fast as
  they go, each a fresh identity's handshake, closed once it is done,
  trying to spend the daemon's CPU on handshakes.

Each runs in a trio loop on a thread of its own (:class:`Flood`), so a test
written in plain blocking code (start daemons, run ``cas``) runs beside it;
:meth:`Flood.stop` cancels it and waits for the thread, and every socket a
flooder opened is closed by then (each lives in an ``async with`` or a
``finally``). Progress is counted in a :class:`FloodStatus` that the test
reads (plain integers; the GIL makes the reads safe) and waits on with a
deadline (:meth:`Flood.wait_for`). The pings' pace is the attacker's
behaviour, not synchronisation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Self

import trio

from cas.errors import ConnectionClosedError, RemoteProtocolError, RequestFailedError, RequestTimeoutError
from cas.net import messages as msg
from cas.net.connection import Connection, SecureChannel, open_channel
from cas.net.framing import MAX_FRAME_SIZE, frame_header
from cas.net.identity import Identity

FAKE_LISTEN_PORT = 9
"""The port a flooding identity claims to listen on (discard: nothing
answers there), so the daemon takes it for a DHT node and lets its pings
put it in the routing table, as a real attacker's would."""


@dataclass
class FloodStatus:
    opened: int = 0  # TCP connections made
    connect_failures: int = 0  # connects that failed (the daemon's backlog full, or closed)
    handshakes: int = 0  # handshakes completed
    handshake_failures: int = 0  # closed by the daemon before the handshake completed
    alive: int = 0  # connections open now (a connection flood's: answering pings)
    dropped: int = 0  # closed by the daemon after the handshake, or after holding a slot
    started: int = 0  # stalled frames whose header is sent
    sent: int = 0  # stalled frames all sent but their last byte


Flooder = Callable[[FloodStatus], Awaitable[None]]


class Flood:
    """Runs ``flooder(status)`` in a trio loop on a thread of its own, from
    :meth:`start` until :meth:`stop` (or the end of the ``with``)."""

    def __init__(self, flooder: Flooder) -> None:
        self.status = FloodStatus()
        self._flooder = flooder
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as self._scope:
                self._ready.set()
                await self._flooder(self.status)
                await trio.sleep_forever()  # hold what it opened until stopped

        try:
            trio.run(main)
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the flood's trio loop did not start")
        return self

    def wait_for(self, condition: Callable[[FloodStatus], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.status):
            if self._failure is not None or not self._thread.is_alive():
                raise AssertionError(f"the flood stopped while waiting for {what}: {self._failure!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: {self.status}")
            time.sleep(0.02)

    def stop(self, timeout: float = 30) -> FloodStatus:
        """Cancel the flood, close every socket it opened, wait for its thread."""
        if self._token is not None and self._scope is not None and self._thread.is_alive():
            try:
                self._token.run_sync_soon(self._scope.cancel)
            except trio.RunFinishedError:
                pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the flood did not stop within {timeout:g} s")
        if self._failure is not None:
            raise AssertionError(f"the flood failed: {self._failure!r}") from self._failure
        return self.status

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _connect(status: FloodStatus, host: str, port: int, source: str) -> trio.SocketStream | None:
    try:
        stream = await trio.open_tcp_stream(host, port, local_address=source)
    except OSError:
        status.connect_failures += 1
        return None
    status.opened += 1
    return stream


async def _handshake(status: FloodStatus, stream: trio.SocketStream,
                     listen_port: int | None = FAKE_LISTEN_PORT) -> SecureChannel | None:
    try:
        channel = await open_channel(stream, Identity.generate(), initiator=True,
                                     hello=msg.Hello(agent="flood", listen_port=listen_port))
    except (RemoteProtocolError, ConnectionClosedError, OSError, trio.BrokenResourceError):
        status.handshake_failures += 1
        return None  # open_channel closed the stream
    status.handshakes += 1
    return channel


async def _held_until_closed(status: FloodStatus, stream: trio.abc.Stream,
                             first: Callable[[], Awaitable[None]] | None = None) -> None:
    """Counted alive, do ``first`` (if any) on ``stream``, then read nothing
    until the daemon closes it; counted dropped, and the stream closed."""
    status.alive += 1
    try:
        if first is not None:
            await first()
        while await stream.receive_some(4096):
            pass  # nothing comes; the daemon closes it in the end
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        status.alive -= 1
        status.dropped += 1
        with trio.CancelScope(shield=True):
            await stream.aclose()


def connection_flood(host: str, port: int, source: str, identities: int, *,
                     ping_every: float = 1.0, at_once: int = 32) -> Flooder:
    """``identities`` fresh identities from ``source``, ``at_once`` handshakes
    at a time, each holding its connection with a ping every ``ping_every``
    seconds until the daemon closes it."""

    async def hold(status: FloodStatus, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            stream = await _connect(status, host, port, source)
            if stream is None:
                return
            channel = await _handshake(status, stream)
        if channel is None:
            return
        status.alive += 1
        connection = Connection(channel)  # no handler: the daemon's requests are refused
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection.run)
                try:
                    while True:
                        try:
                            await connection.request(msg.Ping(), timeout=10)
                        except RequestFailedError:
                            pass  # refused (an ID without the network's work): still holding the slot
                        await trio.sleep(ping_every)
                except (ConnectionClosedError, RequestTimeoutError, RemoteProtocolError):
                    status.dropped += 1
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            status.alive -= 1
            with trio.CancelScope(shield=True):
                await connection.aclose()

    async def flood(status: FloodStatus) -> None:
        limiter = trio.CapacityLimiter(at_once)
        async with trio.open_nursery() as nursery:
            for _ in range(identities):
                nursery.start_soon(hold, status, limiter)

    return flood


def half_open_flood(host: str, port: int, sources: Sequence[str], per_source: int) -> Flooder:
    """``per_source`` TCP connections from each of ``sources`` that never
    start the handshake; each is opened again as soon as the daemon closes
    it."""

    async def keep_one_open(status: FloodStatus, source: str) -> None:
        while True:
            stream = await _connect(status, host, port, source)
            if stream is None:
                await trio.sleep(0.01)  # the attacker's pace after a failed connect
                continue
            await _held_until_closed(status, stream)

    async def flood(status: FloodStatus) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(per_source):
                for source in sources:
                    nursery.start_soon(keep_one_open, status, source)

    return flood


def stalled_frames(host: str, port: int, sources: Sequence[str], count: int, *,
                   frame_size: int = MAX_FRAME_SIZE, at_once: int = 32) -> Flooder:
    """``count`` connections, spread over ``sources``, that complete the
    handshake and then announce a frame of ``frame_size`` bytes and send all
    of it but its last byte (not encrypted: the daemon opens a frame only
    once it has all of it), holding the connection until the daemon closes
    it."""
    filler = memoryview(bytes(frame_size - 1))  # shared by all: the flood itself stays small

    async def stall(status: FloodStatus, source: str, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            stream = await _connect(status, host, port, source)
            if stream is None:
                return
            channel = await _handshake(status, stream, listen_port=None)
        if channel is None:
            return
        async def send_all_but_one_byte() -> None:
            await stream.send_all(frame_header(frame_size))
            status.started += 1
            await stream.send_all(filler)
            status.sent += 1

        await _held_until_closed(status, stream, first=send_all_but_one_byte)

    async def flood(status: FloodStatus) -> None:
        limiter = trio.CapacityLimiter(at_once)
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(stall, status, sources[i % len(sources)], limiter)

    return flood


def handshake_flood(host: str, port: int, source: str, *, at_once: int = 16) -> Flooder:
    """New connections from ``source``, ``at_once`` at a time, each one a
    fresh identity's handshake, closed as soon as it completes (or the
    daemon closes it): as many handshakes as the daemon will do."""

    async def churn(status: FloodStatus) -> None:
        while True:
            stream = await _connect(status, host, port, source)
            if stream is None:
                await trio.sleep(0.01)  # the attacker's pace after a failed connect
                continue
            channel = await _handshake(status, stream, listen_port=None)
            if channel is not None:
                with trio.CancelScope(shield=True):
                    await channel.aclose()

    async def flood(status: FloodStatus) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(at_once):
                nursery.start_soon(churn, status)

    return flood


def vm_rss(pid: int) -> int:
    """The resident set size of process ``pid`` now, in bytes (VmRSS)."""
    return _status_field(pid, "VmRSS")


def vm_hwm(pid: int) -> int:
    """The peak resident set size of process ``pid`` so far, in bytes (VmHWM)."""
    return _status_field(pid, "VmHWM")


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {name} in /proc/{pid}/status")
