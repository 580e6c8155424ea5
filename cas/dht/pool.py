"""The connection layer of the DHT: one :class:`cas.net.Connection` per peer.

Owns: dialling peers (through an injected *dialer*, a callable
``(host, port) -> stream``: TCP by default, memory streams in tests), the
handshake and hello on every stream in and out, the pool of open
connections (one per peer, reused, dialled once however many tasks want it,
dropped when it closes), serving an accepted stream as the admission policy
(:mod:`cas.net.admission`) rules and carrying out its evictions, the frame
budget the connections share, the count per host of the peers refused for
being on another network, probing a peer that hung up to tell a dead node
from an idle one, and giving memory back to the kernel once a flood of
inbound connections is over.

Must never: decide what to answer (the requests a connection receives go to
its *answerer*, the :class:`~cas.dht.driver.DhtDriver`), touch the routing
table (what a connection proves is told to the answerer; a peer found gone
to ``on_gone``), or trust an address: node IDs come from the handshake.

Theory of operation, in three paths:

1. Out: :meth:`ConnectionPool.connect` returns the open connection to a
   contact or dials one (a second caller waits for the first dial). The
   connection's task runs in the pool's nursery (:meth:`run`).
2. In: :meth:`ConnectionPool.serve` runs one accepted stream to its end: an
   admission slot for the handshake, a connection slot once the peer has
   proven its ID, either of which may evict others (their tasks are
   cancelled). A connection whose peer says where it listens is pooled, so
   our own requests to that peer reuse it.
3. Closed by the peer: a connection the peer closed (rather than one that
   failed or idled out here) starts a probe (:meth:`_probe`): a bare TCP
   connect. Refused means nobody listens there any more: ``on_gone``.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from ..allocator import release_free_memory
from ..errors import (
    ConnectionClosedError,
    NetworkMismatchError,
    PeerIdMismatchError,
    PeerRefusedError,
    PeerUnreachableError,
    RemoteProtocolError,
)
from ..net import messages as msg
from ..net.admission import Admission, Admitted, Slot
from ..net.connection import FRAME_TIMEOUT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, PEER_CLOSED, Connection, open_channel
from ..net.framing import FRAME_MEMORY, FrameBudget
from ..net.identity import Identity
from ..net.network_key import NetworkKey
from ..net.noise import PeerIdentity
from .ids import NodeID, id_from_bytes, id_to_bytes
from .routing import Contact

AGENT = "cas/0.1"

REQUEST_TIMEOUT = 5.0
"""Hard limit for one DHT request, dial and handshake included. A peer that
has not answered in 5 s is failed (libp2p's DHT uses 10 s per query; a lookup
never waits for it thanks to the soft timeout, :mod:`.lookups`)."""

RELEASE_AFTER_CLOSES = 64
"""Inbound connections closed since the busiest moment after which the
pool has malloc give its free memory back (:mod:`cas.allocator`): a
flood leaves its connections' objects in the middle of the heap, which
glibc, tuned to keep freed memory, would otherwise hold for good."""

RELEASE_INTERVAL = 5.0
"""Seconds between two such releases at least (each costs milliseconds
and makes the next buffers fault their pages in again)."""

RELEASE_SETTLE = 1.0
"""Seconds a release waits once due, for the rest of a burst of closes (the
flood's end) to happen first."""

PROBE_SETTLE = 1.0
"""Seconds a probe's accepted connection is watched for a reset before the
peer counts as alive. A process being killed closes its sockets one at a
time (and may be preempted in between): the connection whose end started
the probe may close before its listener, which then accepts the probe and
resets it as it closes. Seen in about one kill in ten with 4 daemons on 2
busy cores; the node was then never found dead. A live node says nothing
on a connection until the dialler's first handshake message."""


Dialer = Callable[[str, int], Awaitable[trio.abc.Stream]]
"""Opens a byte stream to ``(host, port)``; raises :class:`OSError` if
nothing listens there."""


def source_address(listen_host: str | None, target_host: str) -> str | None:
    """The local address to dial ``target_host`` from, so that the peer
    sees the address this node listens on (it files an inbound contact
    under the connection's source address and the hello's port); None lets
    the kernel choose, as for a node listening on every address.

    A node bound to one address of a host with several (127.0.0.12 beside
    127.0.0.1, a server's second interface) would otherwise dial from the
    kernel's default source, and its peers would note an address where
    nothing listens: their lookups hand it on, dials to it are refused, and
    the probe after a hang-up finds it "dead". Only an IP literal of the
    same family and the same scope (loopback or not) as the target is used:
    a node on 127.0.0.1 can still dial a remote bootstrap peer as a
    client, and a host name is left to the resolver."""
    if not listen_host:
        return None
    try:
        local = ipaddress.ip_address(listen_host)
        remote = ipaddress.ip_address(target_host)
    except ValueError:
        return None
    if local.is_unspecified or local.version != remote.version or local.is_loopback != remote.is_loopback:
        return None
    return listen_host


def tcp_dialer(listen_host: str | None) -> Dialer:
    """The default dialer: TCP, from ``listen_host`` where
    :func:`source_address` says so."""

    async def dial(host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port, local_address=source_address(listen_host, host))

    return dial


class Answerer(Protocol):
    """Who answers the requests the pool's connections receive (the
    :class:`~cas.dht.driver.DhtDriver`). ``answer_now`` is called from a
    connection's read loop and must never wait; None sends the request on
    to ``answer``. ``seen`` hears of every request a known peer made."""

    def seen(self, contact: Contact) -> None: ...

    def answer_now(self, requester: int, request: msg.Request) -> msg.Response | None: ...

    async def answer(self, requester: int, request: msg.Request,
                     contact: Contact | None = None) -> msg.Response: ...


def peer_id(peer: PeerIdentity) -> NodeID:
    """The node ID a handshake proved."""
    return id_from_bytes(peer.node_id)


class ConnectionPool:
    """One node's connections to its peers. ``await nursery.start(pool.run)``
    first: it owns the tasks of the connections it dials until cancelled."""

    def __init__(
        self,
        identity: Identity,
        answerer: Answerer,
        *,
        dialer: Dialer,
        listen_port: int | None = None,
        announce_host: str | None = None,
        network_key: NetworkKey | None = None,
        admission: Admission | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        frame_timeout: float = FRAME_TIMEOUT,
        frame_memory: int = FRAME_MEMORY,
        clock: Callable[[], float] = trio.current_time,
        on_refused: Callable[[str], None] | None = None,
        on_gone: Callable[[Contact], None] = lambda contact: None,
    ) -> None:
        self.identity = identity
        self._answerer = answerer
        self._dialer = dialer
        self.listen_port = listen_port
        self.announce_host = announce_host
        """The host hellos name (``--announce``): peers file this node under
        it, not the connection's source address."""
        self.network_key = network_key
        self.request_timeout = request_timeout
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._on_refused = on_refused
        self._on_gone = on_gone
        # Who may hold an inbound connection, and whose to close for a
        # newcomer (sans-IO, cas/net/admission.py); the pool closes what it
        # names (the cancel scope of each inbound connection's task).
        self.admission = admission if admission is not None else Admission()
        self._inbound: dict[Slot, trio.CancelScope] = {}
        self._inbound_peak = 0  # most inbound connections at once since memory was last released
        self._release_pending = False
        self._last_release = -math.inf
        # Large frames being received, on all this node's connections at once.
        self.frame_timeout = frame_timeout
        self.frame_budget = FrameBudget(frame_memory)
        self._connections: dict[int, Connection] = {}
        self._dialing: dict[int, trio.Event] = {}
        self.probing: set[int] = set()
        """Node IDs being probed (:meth:`probe_soon`)."""
        self._nursery: trio.Nursery | None = None
        self.handshakes_in = 0
        """Handshakes completed with peers that dialled us, since start."""
        self.handshakes_out = 0
        """Handshakes completed with peers we dialled, since start."""
        self.refused: Counter[str] = Counter()
        """Remote host → handshakes refused because it is on another network."""
        self._refusal_reasons: Counter[tuple[str, str]] = Counter()
        """(host, reason) → refusals: ``on_refused`` hears the 1st, 10th, 100th…"""

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the tasks of dialled connections and probes until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def _hello(self) -> msg.Hello:
        return msg.Hello(agent=AGENT, listen_port=self.listen_port,
                         listen_host=self.announce_host if self.listen_port is not None else None)

    # -- the pool ---------------------------------------------------------------

    def open_to(self, node_id: int) -> Connection | None:
        """The open connection to ``node_id``, if there is one."""
        connection = self._connections.get(node_id)
        return connection if connection is not None and not connection.channel.closed else None

    def connected(self, node_id: int) -> bool:
        return self.open_to(node_id) is not None

    def keep(self, node_id: int, connection: Connection) -> None:
        """Use ``connection`` for requests to ``node_id`` from now on."""
        self._connections[node_id] = connection

    async def close_all(self) -> None:
        """Close every pooled connection: what this node says of itself in
        its hello changed, and peers hear the new one only at the next
        handshake (each probes the old address at once, :meth:`probe_soon`)."""
        for connection in list(self._connections.values()):
            await connection.aclose()

    async def connect(self, contact: Contact) -> Connection:
        """The open connection to ``contact``, dialled if there is none
        (once, however many tasks ask meanwhile). Raises
        :class:`PeerUnreachableError`, or :class:`PeerIdMismatchError` when
        someone else answers at its address."""
        node_id = contact.node_id
        while True:
            existing = self.open_to(node_id)
            if existing is not None:
                return existing
            pending = self._dialing.get(node_id)
            if pending is None:
                break
            await pending.wait()
        event = self._dialing[node_id] = trio.Event()
        try:
            connection, _ = await self.dial(contact.host, contact.port, node_id)
            self._connections[node_id] = connection
            return connection
        finally:
            del self._dialing[node_id]
            event.set()

    async def dial(self, host: str, port: int, expected: int | None) -> tuple[Connection, Contact]:
        """A new connection to ``host:port`` (whose node must prove
        ``expected``, if given) and the contact it proved; not pooled
        (:meth:`keep` does that). Its task runs in the pool's nursery."""
        assert self._nursery is not None, "ConnectionPool.run() is not running"
        expected_bytes = id_to_bytes(expected) if expected is not None else None
        try:
            with trio.fail_after(self.handshake_timeout):
                stream = await self._dialer(host, port)
        except (OSError, trio.TooSlowError) as exc:
            reason = "timed out" if isinstance(exc, trio.TooSlowError) else (exc.strerror or str(exc))
            raise PeerUnreachableError(f"cannot reach {host}:{port}: {reason}") from None
        try:
            channel = await open_channel(stream, self.identity, initiator=True,
                                         expected_peer_id=expected_bytes, hello=self._hello(),
                                         handshake_timeout=self.handshake_timeout,
                                         idle_timeout=self.idle_timeout, network_key=self.network_key,
                                         frame_timeout=self.frame_timeout, budget=self.frame_budget)
        except PeerIdMismatchError:
            raise
        except NetworkMismatchError as exc:
            self._count_refused(host, port, exc, tell=False)  # the caller says it, or not
            raise PeerRefusedError(f"refused peer {host}:{port}: {exc}") from None
        except (RemoteProtocolError, ConnectionClosedError) as exc:
            raise PeerUnreachableError(f"handshake with {host}:{port} failed: {exc}") from None
        self.handshakes_out += 1
        contact = Contact(peer_id(channel.peer), host, port)
        connection = Connection(channel, self._make_handler(contact), quick=self._make_quick(contact),
                                request_timeout=self.request_timeout)
        self._nursery.start_soon(self._run_connection, connection, contact)
        return connection, contact

    async def _run_connection(self, connection: Connection, contact: Contact | None) -> None:
        node_id = peer_id(connection.peer)
        if contact is not None:
            self._connections.setdefault(node_id, connection)
        try:
            await connection.run()
        finally:
            if self._connections.get(node_id) is connection:
                del self._connections[node_id]
        if connection.channel.stats.closed_because == PEER_CLOSED and contact is not None:
            self.probe_soon(contact)

    # -- inbound ----------------------------------------------------------------

    async def serve(self, stream: trio.abc.Stream, host: str, port: int) -> None:
        """Serve one accepted stream from ``host:port`` to its end.

        The admission policy decides at two points: when the stream is
        accepted (a handshake slot) and when the peer has proven its node
        ID (a connection slot); either decision may name connections to
        evict, whose tasks are cancelled here."""
        decision = self.admission.open(host, self._clock())
        if not isinstance(decision, Admitted):
            await stream.aclose()
            return
        slot = decision.slot
        self._evict(decision.evict)
        scope = self._inbound[slot] = trio.CancelScope()
        self._inbound_peak = max(self._inbound_peak, len(self._inbound))
        try:
            with scope:
                await self._serve_inbound(stream, slot, host, port)
        finally:
            self.admission.close(slot)
            del self._inbound[slot]
            if self._inbound_peak - len(self._inbound) >= RELEASE_AFTER_CLOSES and not self._release_pending \
                    and self._nursery is not None:
                try:
                    self._nursery.start_soon(self._release_memory)
                    self._release_pending = True
                except RuntimeError:  # the pool is shutting down: nothing to give back for
                    pass
            if scope.cancelled_caught:  # evicted: the stream may still be open
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _serve_inbound(self, stream: trio.abc.Stream, slot: Slot, host: str, port: int) -> None:
        try:
            channel = await open_channel(stream, self.identity, initiator=False, hello=self._hello(),
                                         handshake_timeout=self.handshake_timeout,
                                         idle_timeout=self.idle_timeout, network_key=self.network_key,
                                         frame_timeout=self.frame_timeout, budget=self.frame_budget,
                                         address=host)
        except NetworkMismatchError as exc:
            self._count_refused(host, port, exc)
            return  # it learnt nothing; open_channel told it why and closed the stream
        except (RemoteProtocolError, ConnectionClosedError, OSError):
            return  # refused; open_channel closed the stream
        self.handshakes_in += 1
        node_id = peer_id(channel.peer)
        decision = self.admission.authenticated(slot, node_id, self._clock())
        if not isinstance(decision, Admitted):
            await channel.aclose()
            return
        self._evict(decision.evict)
        hello = channel.peer_hello
        listen = hello.listen_port if hello is not None else None
        contact = None
        if listen is not None:
            # Filed where it says it can be dialled (an announced address:
            # a forwarded port behind NAT), else where it came from. A
            # false address only costs those who dial it a failed
            # handshake (which must prove the node's ID) before they drop it.
            announced = hello.listen_host if hello is not None else None
            try:
                contact = Contact(node_id, announced or host, listen)
            except ValueError:
                contact = None
        connection = Connection(channel, self._make_handler(contact), quick=self._make_quick(contact))
        await self._run_connection(connection, contact)

    def _evict(self, slots: Sequence[Slot]) -> None:
        """Close the inbound connections the admission policy evicted."""
        for slot in slots:
            scope = self._inbound.get(slot)
            if scope is not None:
                scope.cancel()

    async def _release_memory(self) -> None:
        """Many inbound connections have closed (a flood, over or ending):
        give malloc's free memory back, no sooner than RELEASE_INTERVAL
        after the last time."""
        try:
            await trio.sleep_until(max(trio.current_time() + RELEASE_SETTLE,
                                       self._last_release + RELEASE_INTERVAL))
            release_free_memory()
        finally:
            self._last_release = trio.current_time()
            self._inbound_peak = len(self._inbound)
            self._release_pending = False

    def _count_refused(self, host: str, port: int, error: NetworkMismatchError, *,
                       tell: bool = True) -> None:
        self.refused[host] += 1
        count = self._refusal_reasons[host, str(error)] = self._refusal_reasons[host, str(error)] + 1
        if tell and self._on_refused is not None and str(count).strip("0") == "1":  # 1, 10, 100…
            again = f" ({count} times from {host})" if count > 1 else ""
            self._on_refused(f"refused peer {host}:{port}: {error}{again}")

    # -- requests in: handed to the answerer ----------------------------------

    def _make_handler(self, contact: Contact | None) -> Callable[[PeerIdentity, msg.Request], Awaitable[msg.Response]]:
        answerer = self._answerer

        async def handler(peer: PeerIdentity, request: msg.Request) -> msg.Response:
            requester = peer_id(peer)
            if contact is not None:
                answerer.seen(contact)
            return await answerer.answer(requester, request, contact)

        return handler

    def _make_quick(self, contact: Contact | None) -> Callable[[PeerIdentity, msg.Request], msg.Response | None]:
        answerer = self._answerer
        known = None if contact is None else contact.node_id  # the proven ID of this connection's peer

        def quick(peer: PeerIdentity, request: msg.Request) -> msg.Response | None:
            response = answerer.answer_now(peer_id(peer) if known is None else known, request)
            if response is not None and contact is not None:
                answerer.seen(contact)
            return response

        return quick

    # -- probing a peer that hung up --------------------------------------------

    def probe_soon(self, contact: Contact) -> None:
        """A peer closed our connection: it idled it out, or its process
        died (the kernel closes a dead process's sockets). Tell the two
        apart at once, cheaply, so that a death is acted on (repair) in
        seconds rather than at the next failed request: see :meth:`_probe`."""
        if self._nursery is not None and contact.node_id not in self.probing:
            self.probing.add(contact.node_id)
            self._nursery.start_soon(self._probe, contact)

    async def _probe(self, contact: Contact) -> None:
        """A connect to the peer's address, no handshake: refused means
        nothing listens there any more (``on_gone``); accepted means it is
        alive, unless the connection is reset within PROBE_SETTLE (a dying
        process's listener took it)."""
        try:
            with trio.move_on_after(self.handshake_timeout):
                try:
                    stream = await self._dialer(contact.host, contact.port)
                except OSError:
                    self._on_gone(contact)
                    return
                try:
                    with trio.move_on_after(PROBE_SETTLE):
                        await stream.receive_some(1)  # the end (an admission refusal) is alive too
                except trio.BrokenResourceError:
                    self._on_gone(contact)  # reset: its listener closed with the probe in its queue
                finally:
                    await stream.aclose()
        finally:
            self.probing.discard(contact.node_id)
