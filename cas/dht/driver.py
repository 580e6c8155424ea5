"""The trio driver of the DHT: the sans-IO routing table and lookup on real
connections.

Owns: the pool of :class:`cas.net.Connection` objects to other nodes (one
per peer, reused, dialled on demand, dropped when they close), turning
:class:`~cas.dht.lookup.SendQuery` actions into FIND_NODE / FIND_BLOCK
requests and their outcomes back into lookup events, the per-request timers
(a soft timeout that lets the lookup search around a slow peer, a hard one
that gives up on it), feeding the routing table what the wire proves
(``update`` on every request received and every response, ``record_failure``
on every failure, ``remove`` on a peer that proves another identity than the
one it was known by), pinging a full bucket's oldest contact, answering
peers' DHT requests, bootstrap and bucket refresh; namespace records
(PUT_RECORD kept through a :class:`RecordKeeper`, GET_RECORD answered from
it, and :meth:`DhtDriver.find_records` gathering them with a lookup); the
network key every handshake is made with, and a count per host of the
peers refused for being on another network; inbound connections as the
admission policy (:mod:`cas.net.admission`) rules, whose evictions it
carries out, fed with which peers answered our requests; the frame budget
its connections share; and giving memory back to the kernel once a flood
of inbound connections is over.

Must never: decide anything the sans-IO objects decide (who to ask next,
when a lookup is done, who to evict from the table or from the connection
pool); trust an address or a block from a
peer (node IDs come from the handshake, blocks are verified against the CID
asked for, records by the keeper and by whoever reads them); or let one
peer's failure escape into the node.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import trio

from ..allocator import release_free_memory
from ..blocks import Block
from ..cid import CID
from ..errors import (
    CasError,
    ConnectionClosedError,
    InvalidBlockError,
    InvalidRecordError,
    MalformedMessageError,
    NetworkMismatchError,
    PeerIdMismatchError,
    RemoteProtocolError,
    RequestFailedError,
    RequestTimeoutError,
    StorageQuotaError,
)
from ..net import messages as msg
from ..net.admission import Admission, Admitted, Slot
from ..net.connection import FRAME_TIMEOUT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, PEER_CLOSED, Connection, open_channel
from ..net.framing import FRAME_MEMORY, FrameBudget
from ..net.identity import Identity, meets_difficulty
from ..net.network_key import NetworkKey
from ..net.noise import PeerIdentity
from ..ratelimit import KeyedBuckets
from .ids import NodeID, id_from_bytes, id_to_bytes, key_for_digest, random_id_in_bucket
from .lookup import ALPHA, Lookup, LookupResult, SendQuery
from .providers import ProviderRecords
from .routing import REFRESH_INTERVAL, Contact, K, RoutingTable
from .store_batches import StoreBatcher, StoreOutcome

AGENT = "cas/0.1"

REQUEST_TIMEOUT = 5.0
"""Hard limit for one DHT request, dial and handshake included. A peer that
has not answered in 5 s is failed (libp2p's DHT uses 10 s per query; a lookup
never waits for it thanks to the soft timeout below)."""

SOFT_TIMEOUT = 1.0
"""After this long a query stops holding one of the lookup's alpha slots
(``Lookup.on_timeout``); a late answer is still used. The simulator's
default, and several times any healthy round trip."""

REFRESH_CHECK = 60.0
"""How often the refresh loop asks the table which buckets are due."""

MAX_PINGS = 8
"""Pings of full buckets' oldest contacts in flight at once; more
suggestions are dropped (the next update suggests again)."""

HAVE_TIMEOUT = 3.0

STORE_TIMEOUT = 10.0
"""Hard limit for one STORE_BLOCKS: up to 2 MiB to send, and the receiver
verifies and fsyncs before it answers."""

_STORED = StoreOutcome("stored")

STORE_RATE = 1000.0
STORE_BURST = 2048.0
"""Blocks accepted per peer in STORE_BLOCKS: 1000 a second on average (≈ 250 MiB/s
of average-size blocks: one adder at full speed on a LAN; 400/s, ≈ 100 MiB/s, was
below what a replicated add sends each peer once stores were batched), bursts of 2048
(twice the placement queue's length). Beyond that the answer is ``busy``, which
the sender retries after a pause. What a peer may keep here is bounded by
the quota, not by this rate."""

RECORD_RATE = 10.0
RECORD_BURST = 50.0
"""PUT_RECORD requests accepted per peer (a publisher sends one per
namespace per republish; this is generous)."""

RELEASE_AFTER_CLOSES = 64
"""Inbound connections closed since the busiest moment after which the
driver has malloc give its free memory back (:mod:`cas.allocator`): a
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

NOT_FAILURES = frozenset({"busy", "full", "stale"})
"""Error codes that say "not now" or "not me", not "I am broken": the
routing table does not count them against the peer."""


class BootstrapError(CasError):
    """No bootstrap peer could be reached."""


class BootstrapRefusedError(BootstrapError):
    """Every bootstrap peer refused the handshake: they are on another
    network (a network key that differs, or none where one is needed)."""


class PeerUnreachableError(CasError):
    """A peer could not be dialled or did not complete the handshake."""


class PeerRefusedError(PeerUnreachableError):
    """The handshake was refused: the peer is on another network."""


class BlockSource(Protocol):
    """Where the driver looks for blocks peers ask for (any
    :class:`cas.blocks.AsyncBlockStore` will do)."""

    async def has(self, cid: CID) -> bool: ...

    async def get(self, cid: CID) -> bytes: ...


@runtime_checkable
class VerifiesPresence(Protocol):
    """A :class:`BlockSource` that answers HAVE only for copies it has
    verified (the node's store: it re-reads and re-hashes a block whose
    last check is too old, and quarantines one that fails). A source
    without it answers HAVE from ``has``."""

    async def have(self, cids: Sequence[CID]) -> list[bool]: ...


class BlockKeeper(Protocol):
    """Where the driver keeps blocks peers place here (STORE_BLOCKS). The
    blocks are verified before they are handed over; ``keep_many`` returns
    once they are durable, with one outcome per block: anything but an
    exception means kept; a :class:`CasError` is why that block was refused
    (:class:`cas.store.StorageQuotaError` when the quota is full)."""

    async def keep_many(self, blocks: list[Block], sender: bytes | None = None,
                        leases: Sequence[int] = ()) -> list[object]:
        """``sender``: the ID of the node that placed them (its share of
        the storage is limited); ``leases``: seconds to keep each (none:
        as long as the keeper's network allows)."""


@runtime_checkable
class RenewsLeases(Protocol):
    """A :class:`BlockKeeper` whose blocks carry leases that a HAVE with a
    lease renews (the node's store, ``cas/store/_held.py``). A keeper
    without it keeps blocks until its owner drops them."""

    async def renew(self, cids: Sequence[CID], seconds: int) -> None: ...


class RecordKeeper(Protocol):
    """Where the driver keeps namespace records peers put here (PUT_RECORD)
    and finds the ones they ask for (GET_RECORD). ``put`` decides (by
    :func:`cas.names.record.accept_record`) and raises
    :class:`InvalidRecordError` for a record it refuses, or another
    :class:`CasError` (full) when it has no room; it returns once the record
    is durable."""

    async def get_record(self, key: bytes) -> bytes | None: ...

    async def put_record(self, key: bytes, record: bytes, sender: bytes) -> None: ...


@dataclass(frozen=True)
class PeerStatus:
    """One contact of the routing table as ``cas peers`` shows it."""

    contact: Contact
    connected: bool
    last_seen: float | None
    failures: int


@dataclass(frozen=True)
class FindResult:
    """A lookup's outcome plus the wall time it took."""

    lookup: LookupResult
    seconds: float
    block: Block | None = None  # verified: hashed once, on its way in
    holder: Contact | None = None
    providers: tuple[Contact, ...] = ()
    """For FIND_BLOCK without the block: nodes others know hold it
    (provider records, :mod:`.providers`), to ask directly."""


def contact_to_peer(contact: Contact) -> msg.PeerInfo:
    return msg.PeerInfo(id_to_bytes(contact.node_id), contact.host, contact.port)


def peer_to_contact(peer: msg.PeerInfo) -> Contact | None:
    try:
        return Contact(id_from_bytes(peer.node_id), peer.host, peer.port)
    except ValueError:
        return None


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


_CONVERSION_CACHE = 4096
"""Wire peers <-> contacts remembered per driver. Every FIND_NODE answer
carries 20 peers, mostly the same few hundred over and over; converting (and
validating) each anew was a tenth of a lookup's CPU."""


class _Conversions:
    def __init__(self) -> None:
        # Keyed by node ID and checked by identity: the table hands out the
        # same Contact object until the contact changes, and hashing a
        # Contact (a dataclass) costs a Python call where an int's does not.
        self._to_peer: dict[int, tuple[Contact, msg.PeerInfo]] = {}
        self._to_contact: dict[msg.PeerInfo, Contact | None] = {}

    def peer(self, contact: Contact) -> msg.PeerInfo:
        found = self._to_peer.get(contact.node_id)
        if found is not None and found[0] is contact:
            return found[1]
        if len(self._to_peer) >= _CONVERSION_CACHE:
            self._to_peer.clear()
        peer = contact_to_peer(contact)
        self._to_peer[contact.node_id] = (contact, peer)
        return peer

    def contact(self, peer: msg.PeerInfo) -> Contact | None:
        try:
            return self._to_contact[peer]
        except KeyError:
            if len(self._to_contact) >= _CONVERSION_CACHE:
                self._to_contact.clear()
            found = self._to_contact[peer] = peer_to_contact(peer)
            return found


@dataclass(frozen=True)
class _HeldRecord:
    """A record a peer answered GET_RECORD with (not a lookup's value: a
    record lookup always runs to the k closest)."""

    data: bytes


@dataclass(frozen=True)
class _Holders:
    """Providers a peer named for a block it lacks (not a lookup's value:
    the lookup goes on to the closest nodes, which should have the block;
    the providers are asked only if none has)."""

    contacts: tuple[Contact, ...]


class DhtDriver:
    """One node's DHT on trio. ``await nursery.start(driver.run)`` first; it
    owns every connection task until cancelled."""

    def __init__(
        self,
        identity: Identity,
        table: RoutingTable,
        *,
        blocks: BlockSource | None = None,
        keeper: BlockKeeper | None = None,
        records: RecordKeeper | None = None,
        listen_port: int | None = None,
        listen_host: str | None = None,
        k: int = K,
        alpha: int = ALPHA,
        request_timeout: float = REQUEST_TIMEOUT,
        soft_timeout: float = SOFT_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        refresh_interval: float = REFRESH_INTERVAL,
        rng: random.Random | None = None,
        clock: Callable[[], float] = trio.current_time,
        network_key: NetworkKey | None = None,
        on_refused: Callable[[str], None] | None = None,
        id_difficulty: int = 0,
        admission: Admission | None = None,
        frame_timeout: float = FRAME_TIMEOUT,
        frame_memory: int = FRAME_MEMORY,
    ) -> None:
        self.identity = identity
        self.network_key = network_key
        self.id_difficulty = id_difficulty
        """Work a peer's node ID must show (cas.net.identity.id_work): one
        that falls short is never put in the routing table and is refused
        every request."""
        self.short_of_work = 0  # requests refused for it
        self._on_refused = on_refused
        self.peer_lost: list[Callable[[int], None]] = []
        """Called with a contact's ID when the table drops it as failed, or
        as gone (its address refuses connections after it hung up)."""
        self._probing: set[int] = set()
        self.own_id = NodeID(int.from_bytes(identity.node_id, "big"))
        if table.own_id != self.own_id:
            raise ValueError("the routing table belongs to another node")
        self.table = table
        self.blocks = blocks
        self.keeper = keeper
        self._store_limiter: KeyedBuckets[int] = KeyedBuckets(STORE_RATE, STORE_BURST)
        self.providers = ProviderRecords()
        """Who offered blocks this node refused (:mod:`.providers`)."""
        self.records = records
        self._record_limiter: KeyedBuckets[int] = KeyedBuckets(RECORD_RATE, RECORD_BURST)
        self.listen_port = listen_port
        self.listen_host = listen_host
        """The address the node listens on; outbound connections are dialled
        from it when it is one address (:func:`source_address`)."""
        self.k = k
        self.alpha = alpha
        self.request_timeout = request_timeout
        self.soft_timeout = soft_timeout
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.refresh_interval = refresh_interval
        self._rng = rng or random.Random()
        self._clock = clock
        # Who may hold an inbound connection, and whose to close for a
        # newcomer (sans-IO, cas/net/admission.py); the driver closes what it
        # names (the cancel scope of each inbound connection's task).
        self.admission = admission if admission is not None else Admission()
        self.admission.protected = self._good_contact
        self._inbound: dict[Slot, trio.CancelScope] = {}
        self._inbound_peak = 0  # most inbound connections at once since memory was last released
        self._release_pending = False
        self._last_release = -math.inf
        # Large frames being received, on all this node's connections at once.
        self.frame_timeout = frame_timeout
        self.frame_budget = FrameBudget(frame_memory)
        self._connections: dict[int, Connection] = {}
        self._dialing: dict[int, trio.Event] = {}
        self._pinging: set[int] = set()
        self._conversions = _Conversions()
        self._nursery: trio.Nursery | None = None
        self._batcher: StoreBatcher | None = None
        self.messages_sent = 0
        self.handshakes_in = 0
        """Handshakes completed with peers that dialled us, since start."""
        self.handshakes_out = 0
        """Handshakes completed with peers we dialled, since start."""
        self.bad_blocks: Counter[int] = Counter()
        """Node ID → blocks it sent that did not match their CID (``cas peers``)."""
        self.refused: Counter[str] = Counter()
        """Remote host → handshakes refused because it is on another network."""
        self._refusal_reasons: Counter[tuple[str, str]] = Counter()
        """(host, reason) → refusals: ``on_refused`` hears the 1st, 10th, 100th…"""

    # -- lifetime -------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the connection tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._batcher = StoreBatcher(self.store_blocks, nursery)
            task_status.started()
            await trio.sleep_forever()

    def _hello(self) -> msg.Hello:
        return msg.Hello(agent=AGENT, listen_port=self.listen_port)

    def _now(self) -> float:
        return self._clock()

    # -- connections ----------------------------------------------------------

    async def handle_inbound(self, stream: trio.SocketStream) -> None:
        """Serve one accepted TCP stream (give this to ``trio.serve_listeners``).

        The admission policy decides at two points: when the stream is
        accepted (a handshake slot) and when the peer has proven its node
        ID (a connection slot); either decision may name connections to
        evict, whose tasks are cancelled here."""
        try:
            host, port = stream.socket.getpeername()[:2]
        except OSError:
            await stream.aclose()
            return
        decision = self.admission.open(host, self._now())
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
                except RuntimeError:  # the driver is shutting down: nothing to give back for
                    pass
            if scope.cancelled_caught:  # evicted: the stream may still be open
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _serve_inbound(self, stream: trio.SocketStream, slot: Slot, host: str, port: int) -> None:
        try:
            channel = await open_channel(stream, self.identity, initiator=False, hello=self._hello(),
                                         handshake_timeout=self.handshake_timeout,
                                         idle_timeout=self.idle_timeout, network_key=self.network_key,
                                         frame_timeout=self.frame_timeout, budget=self.frame_budget)
        except NetworkMismatchError as exc:
            self._count_refused(host, port, exc)
            return  # it learnt nothing; open_channel told it why and closed the stream
        except (RemoteProtocolError, ConnectionClosedError, OSError):
            return  # refused; open_channel closed the stream
        self.handshakes_in += 1
        peer_id = self._peer_id(channel.peer)
        decision = self.admission.authenticated(slot, peer_id, self._now())
        if not isinstance(decision, Admitted):
            await channel.aclose()
            return
        self._evict(decision.evict)
        hello = channel.peer_hello
        listen = hello.listen_port if hello is not None else None
        contact = None
        if listen is not None:
            try:
                contact = Contact(peer_id, host, listen)
            except ValueError:
                contact = None
        connection = Connection(channel, self._make_handler(contact), quick=self._make_quick(contact))
        await self._run_connection(connection, contact)

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

    def _evict(self, slots: Sequence[Slot]) -> None:
        """Close the inbound connections the admission policy evicted."""
        for slot in slots:
            scope = self._inbound.get(slot)
            if scope is not None:
                scope.cancel()

    def _good_contact(self, peer: object) -> bool:
        """For the admission policy: a peer our routing table holds."""
        return peer in self.table

    def _served(self, node_id: int) -> None:
        """``node_id`` answered one of our requests (not a ping): useful."""
        self.admission.served(node_id)

    async def _run_connection(self, connection: Connection, contact: Contact | None) -> None:
        peer_id = self._peer_id(connection.peer)
        if contact is not None:
            self._connections.setdefault(peer_id, connection)
        try:
            await connection.run()
        finally:
            if self._connections.get(peer_id) is connection:
                del self._connections[peer_id]
        if connection.channel.stats.closed_because == PEER_CLOSED and contact is not None:
            self._probe_soon(contact)

    def _probe_soon(self, contact: Contact) -> None:
        """A peer closed our connection: it idled it out, or its process
        died (the kernel closes a dead process's sockets). Tell the two
        apart at once, cheaply, so that a death is acted on (repair) in
        seconds rather than at the next failed request: see :meth:`_probe`."""
        if self._nursery is not None and contact.node_id not in self._probing:
            self._probing.add(contact.node_id)
            self._nursery.start_soon(self._probe, contact)

    async def _probe(self, contact: Contact) -> None:
        """A TCP connect to the peer's address, no handshake: refused means
        nothing listens there any more, and the contact is dropped as lost
        (``peer_lost``); accepted means it is alive, unless the connection
        is reset within PROBE_SETTLE (a dying process's listener took it)."""

        def lost() -> None:
            if self.table.remove(contact.node_id):
                for hook in self.peer_lost:
                    hook(contact.node_id)

        try:
            with trio.move_on_after(self.handshake_timeout):
                try:
                    stream = await trio.open_tcp_stream(contact.host, contact.port)
                except OSError:
                    lost()
                    return
                try:
                    with trio.move_on_after(PROBE_SETTLE):
                        await stream.receive_some(1)  # the end (an admission refusal) is alive too
                except trio.BrokenResourceError:
                    lost()  # reset: its listener closed with the probe in its queue
                finally:
                    await stream.aclose()
        finally:
            self._probing.discard(contact.node_id)

    def _count_refused(self, host: str, port: int, error: NetworkMismatchError, *,
                       tell: bool = True) -> None:
        self.refused[host] += 1
        count = self._refusal_reasons[host, str(error)] = self._refusal_reasons[host, str(error)] + 1
        if tell and self._on_refused is not None and str(count).strip("0") == "1":  # 1, 10, 100…
            again = f" ({count} times from {host})" if count > 1 else ""
            self._on_refused(f"refused peer {host}:{port}: {error}{again}")

    @staticmethod
    def _peer_id(peer: PeerIdentity) -> NodeID:
        return id_from_bytes(peer.node_id)

    async def _dial(self, host: str, port: int, expected: int | None) -> tuple[Connection, Contact]:
        assert self._nursery is not None, "DhtDriver.run() is not running"
        expected_bytes = id_to_bytes(expected) if expected is not None else None
        try:
            with trio.fail_after(self.handshake_timeout):
                stream = await trio.open_tcp_stream(
                    host, port, local_address=source_address(self.listen_host, host))
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
        peer_id = self._peer_id(channel.peer)
        contact = Contact(peer_id, host, port)
        connection = Connection(channel, self._make_handler(contact), quick=self._make_quick(contact),
                                request_timeout=self.request_timeout)
        self._nursery.start_soon(self._run_connection, connection, contact)
        return connection, contact

    async def _connection_to(self, contact: Contact) -> Connection:
        node_id = contact.node_id
        while True:
            existing = self._connections.get(node_id)
            if existing is not None and not existing.channel.closed:
                return existing
            pending = self._dialing.get(node_id)
            if pending is None:
                break
            await pending.wait()
        event = self._dialing[node_id] = trio.Event()
        try:
            connection, _ = await self._dial(contact.host, contact.port, node_id)
            self._connections[node_id] = connection
            return connection
        finally:
            del self._dialing[node_id]
            event.set()

    def connected(self, node_id: int) -> bool:
        conn = self._connections.get(node_id)
        return conn is not None and not conn.channel.closed

    # -- requests out ---------------------------------------------------------

    async def request(self, contact: Contact, request: msg.Request,
                      timeout: float | None = None) -> msg.Response:
        """Send ``request`` to ``contact`` (dialling if needed) and return its
        response, feeding the routing table either way. Raises
        :class:`CasError` subclasses on any failure."""
        timeout = self.request_timeout if timeout is None else timeout
        try:
            connection = self._connections.get(contact.node_id)
            if connection is None or connection.channel.closed:
                with trio.fail_after(timeout):
                    connection = await self._connection_to(contact)
            self.messages_sent += 1
            response = await connection.request(request, timeout=timeout)
        except PeerIdMismatchError:
            # Someone else answers at that address: the contact is false.
            self.table.remove(contact.node_id)
            raise
        except trio.TooSlowError:
            self._record_failure(contact.node_id)
            raise RequestTimeoutError(f"no answer from {contact.host}:{contact.port} in time") from None
        except (CasError, RemoteProtocolError) as exc:
            if not (isinstance(exc, RequestFailedError) and exc.code in NOT_FAILURES):
                self._record_failure(contact.node_id)
            raise
        self.seen(contact)
        if not isinstance(request, msg.Ping):  # a pong proves it alive, not useful
            self._served(contact.node_id)
        return response

    def _record_failure(self, node_id: int) -> bool:
        """The routing table's ``record_failure``; when that drops the
        contact (it failed too often in a row: presumed dead), every
        ``peer_lost`` hook hears its ID, so that repair can start now
        rather than at its next interval."""
        dropped = self.table.record_failure(node_id)
        if dropped:
            for hook in self.peer_lost:
                hook(node_id)
        return dropped

    def seen(self, contact: Contact) -> None:
        """``contact`` proved itself just now: tell the table, and ping the
        bucket's oldest contact if the bucket is full. A node whose ID does
        not show the network's work never enters the table."""
        if not self._shows_work(contact.node_id):
            return
        oldest = self.table.update(contact, self._now())
        if oldest is not None and oldest.node_id not in self._pinging \
                and len(self._pinging) < MAX_PINGS and self._nursery is not None:
            self._pinging.add(oldest.node_id)
            self._nursery.start_soon(self._ping_oldest, oldest)

    async def _ping_oldest(self, contact: Contact) -> None:
        try:
            await self.ping(contact)
        finally:
            self._pinging.discard(contact.node_id)

    async def ping(self, contact: Contact) -> bool:
        try:
            await self.request(contact, msg.Ping())
            return True
        except (CasError, RemoteProtocolError):
            return False

    async def have(self, contact: Contact, cids: Sequence[CID], lease: int = 0) -> list[bool] | None:
        """Which of ``cids`` the peer holds (None if it did not answer);
        with a ``lease``, it keeps those at least that many seconds more."""
        try:
            response = await self.request(contact, msg.Have(tuple(cids), lease), timeout=HAVE_TIMEOUT)
        except (CasError, RemoteProtocolError):
            return None
        if not isinstance(response, msg.HaveResult):
            return None
        return list(response.present)

    async def store_block(self, contact: Contact, cid: CID, data: bytes, lease: int | None = None) -> StoreOutcome:
        """Ask ``contact`` to keep a block for ``lease`` seconds (None: as
        long as its network allows); ``stored`` only once it has verified
        it against ``cid`` and made it durable. Blocks queued for the same
        peer meanwhile travel in one STORE_BLOCKS
        (:mod:`cas.dht.store_batches`)."""
        assert self._batcher is not None, "DhtDriver.run() is not running"
        return await self._batcher.store(contact, cid, data, lease)

    async def store_block_on(self, contacts: Sequence[Contact], cid: CID, data: bytes,
                             lease: int | None = None) -> list[StoreOutcome]:
        """:meth:`store_block` on each of ``contacts`` at once; the outcomes
        in order, once all are known."""
        assert self._batcher is not None, "DhtDriver.run() is not running"
        return await self._batcher.store_on(contacts, cid, data, lease)

    @property
    def store_messages_sent(self) -> int:
        """STORE_BLOCKS messages :meth:`store_block` has sent."""
        return 0 if self._batcher is None else self._batcher.messages_sent

    async def store_blocks(self, contact: Contact, blocks: Sequence[tuple[CID, bytes]],
                           leases: Sequence[int] = ()) -> list[StoreOutcome]:
        """One STORE_BLOCKS of ``(cid, data)`` pairs (and their leases, or
        none for the peer's full lease); one outcome per block."""
        outcomes = await self._ask_to_keep(contact, msg.StoreBlocks.of(blocks, leases), refusals=NOT_FAILURES,
                                           timeout=STORE_TIMEOUT)
        if isinstance(outcomes, StoreOutcome):
            return [outcomes] * len(blocks)
        return outcomes

    async def put_record(self, contact: Contact, key: bytes, record: bytes) -> StoreOutcome:
        """Ask ``contact`` to hold a namespace record (PUT_RECORD). ``stored``
        also when it holds exactly this record already; ``refused`` with
        ``stale`` when it holds a newer one."""
        outcome = await self._ask_to_keep(
            contact, msg.PutRecord(key, record), refusals=NOT_FAILURES | {"invalid"}, timeout=None
        )
        assert isinstance(outcome, StoreOutcome)  # PUT_RECORD is answered by ok
        return outcome

    async def _ask_to_keep(
        self, contact: Contact, request: msg.Request, *, refusals: frozenset[str], timeout: float | None
    ) -> StoreOutcome | list[StoreOutcome]:
        """Send a request that asks ``contact`` to keep something: an ``Ok``
        is ``stored``, a ``Stored`` one outcome per block, an error code in
        ``refusals`` is ``refused`` (not the peer's fault), anything else
        ``failed``."""
        try:
            response = await self.request(contact, request, timeout=timeout)
        except RequestFailedError as exc:
            if exc.code in refusals:
                return StoreOutcome("refused", f"{exc.code}: {exc}")
            return StoreOutcome("failed", str(exc))
        except (CasError, RemoteProtocolError) as exc:
            return StoreOutcome("failed", str(exc))
        if isinstance(response, msg.Stored):  # the connection checked its length
            return [_STORED if code == "ok" else
                    StoreOutcome("refused" if code in refusals else "failed", f"{code}: {response.message}")
                    for code in response.codes]
        if not isinstance(response, msg.Ok):
            self._record_failure(contact.node_id)
            return StoreOutcome("failed", f"unexpected answer {response.TYPE}")
        return _STORED

    # -- requests in ----------------------------------------------------------

    def _make_handler(self, contact: Contact | None) -> Callable[[PeerIdentity, msg.Request], Awaitable[msg.Response]]:
        async def handler(peer: PeerIdentity, request: msg.Request) -> msg.Response:
            requester = self._peer_id(peer)
            if contact is not None:
                self.seen(contact)
            return await self.answer(requester, request, contact)

        return handler

    def _make_quick(self, contact: Contact | None) -> Callable[[PeerIdentity, msg.Request], msg.Response | None]:
        known = None if contact is None else contact.node_id  # the proven ID of this connection's peer

        def quick(peer: PeerIdentity, request: msg.Request) -> msg.Response | None:
            response = self.answer_now(self._peer_id(peer) if known is None else known, request)
            if response is not None and contact is not None:
                self.seen(contact)
            return response

        return quick

    def _shows_work(self, node_id: int) -> bool:
        return self.id_difficulty <= 0 or meets_difficulty(id_to_bytes(node_id), self.id_difficulty)

    def answer_now(self, requester: int, request: msg.Request) -> msg.Response | None:
        """The response to a request answered from memory (PING, FIND_NODE),
        or None for one that needs :meth:`answer`. The connection calls it
        from its read loop, so it must never wait."""
        if not self._shows_work(requester):
            self.short_of_work += 1
            return msg.Error("refused", f"your node ID does not show the work this network asks for "
                                        f"({self.id_difficulty} bits; docs/network.md, 'Identities')")
        if isinstance(request, msg.FindNode):
            return msg.Nodes(self._closest_peers(id_from_bytes(request.target), requester))
        if isinstance(request, msg.Ping):
            return msg.Pong()
        return None

    async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
        """The response to a peer's DHT request (``contact``: where the
        requester listens, if known)."""
        quick = self.answer_now(requester, request)
        if quick is not None:
            return quick
        if isinstance(request, msg.FindBlock):
            if self.blocks is not None:
                try:
                    if await self.blocks.has(request.cid):
                        return msg.Block(await self.blocks.get(request.cid))
                except CasError:
                    pass  # a damaged block is not served; point elsewhere
            closer = self._closest_peers(key_for_digest(request.cid.digest), requester)
            providers = self.providers.providers(bytes(request.cid), self._now())
            if providers:
                return msg.Providers(tuple(contact_to_peer(p) for p in providers[: msg.MAX_PEERS]), closer)
            return msg.Nodes(closer)
        if isinstance(request, msg.Have):
            if request.lease and isinstance(self.keeper, RenewsLeases):
                await self.keeper.renew(request.cids, request.lease)
            if isinstance(self.blocks, VerifiesPresence):
                return msg.HaveResult(tuple(await self.blocks.have(request.cids)))
            present = []
            for cid in request.cids:
                present.append(bool(self.blocks is not None and await self.blocks.has(cid)))
            return msg.HaveResult(tuple(present))
        if isinstance(request, msg.StoreBlocks):
            return await self._answer_store(requester, request, contact)
        if isinstance(request, msg.GetRecord):
            try:
                target = id_from_bytes(request.key)
            except ValueError:
                return msg.Error("invalid", "a record key is 32 bytes")
            held = await self.records.get_record(request.key) if self.records is not None else None
            return msg.Record(held, self._closest_peers(target, requester))
        if isinstance(request, msg.PutRecord):
            return await self._answer_put_record(requester, request)
        return msg.Error("refused", f"{request.TYPE} is not served by this node yet")

    async def _answer_store(self, requester: int, request: msg.StoreBlocks,
                            contact: Contact | None = None) -> msg.Response:
        """Rate limit, verify, keep: each block ``ok`` only once it is
        durable. A block refused (full) leaves a provider record: the
        sender has it, and readers who ask here are told so."""
        if self.keeper is None:
            return msg.Error("refused", "this node keeps no blocks for others")
        if not self._store_limiter.take(requester, self._now(), cost=len(request.cids)):
            return msg.Error("busy", "too many blocks from you; retry later")
        try:
            blocks = [Block(cid, data) for cid, data in request.blocks()]  # each verified against its CID
        except CasError:
            raise MalformedMessageError("store_blocks: a block's data does not match its CID") from None
        codes = []
        message = ""
        outcomes = await self.keeper.keep_many(blocks, id_to_bytes(requester), request.leases)
        for block, outcome in zip(blocks, outcomes):
            if not isinstance(outcome, BaseException):
                codes.append("ok")
                continue
            if contact is not None:
                self.providers.add(bytes(block.cid), contact, self._now())
            codes.append("full" if isinstance(outcome, StorageQuotaError) else "refused")
            message = message or str(outcome)[: msg.MAX_ERROR_TEXT_LENGTH]
        return msg.Stored(tuple(codes), message)

    async def _answer_put_record(self, requester: int, request: msg.PutRecord) -> msg.Response:
        """Rate limit, then let the keeper judge: ``ok`` once durable,
        ``stale`` for a record not newer than the held one, ``invalid`` for a
        malformed, forged or misfiled one (counted against the sender)."""
        if self.records is None:
            return msg.Error("refused", "this node keeps no records for others")
        if not self._record_limiter.take(requester, self._now()):
            return msg.Error("busy", "too many records from you; retry later")
        try:
            await self.records.put_record(request.key, request.record, id_to_bytes(requester))
        except InvalidRecordError as exc:
            stale = "sequence number" in str(exc)
            if not stale:
                self._record_failure(requester)
            return msg.Error("stale" if stale else "invalid", str(exc)[: msg.MAX_ERROR_TEXT_LENGTH])
        except CasError as exc:
            return msg.Error("full", str(exc)[: msg.MAX_ERROR_TEXT_LENGTH])
        return msg.Ok()

    def _closest_peers(self, target: int, requester: int) -> tuple[msg.PeerInfo, ...]:
        # _Conversions.peer inlined for the remembered contacts (nearly all).
        remembered = self._conversions._to_peer.get
        peers = []
        for contact in self.table.closest(target, self.k, exclude=requester):
            found = remembered(contact.node_id)
            peers.append(found[1] if found is not None and found[0] is contact
                         else self._conversions.peer(contact))
        return tuple(peers)

    # -- lookups --------------------------------------------------------------

    async def find_node(self, target: int) -> FindResult:
        """The k nodes closest to ``target`` that answered (this node left out)."""
        request = msg.FindNode(id_to_bytes(target))
        return await self._lookup(target, request, find_value=False, cid=None)

    async def find_block(self, cid: CID) -> FindResult:
        """Look for ``cid``'s block; ``block`` is set (verified) if a peer had it."""
        return await self._lookup(key_for_digest(cid.digest), msg.FindBlock(cid), find_value=True, cid=cid)

    async def block_from(self, contact: Contact, cid: CID, timeout: float | None = None) -> Block | None:
        """Ask one peer for ``cid`` with a single FIND_BLOCK (no lookup): the
        verified block, or None if it has not got it, did not answer, or
        lied (counted against it, as in a lookup)."""
        try:
            response = await self.request(contact, msg.FindBlock(cid), timeout=timeout)
        except (CasError, RemoteProtocolError):
            return None
        if not isinstance(response, msg.Block):
            return None
        try:
            return Block(cid, response.data)  # verified: the one hash of a block from a peer
        except InvalidBlockError:
            self._record_failure(contact.node_id)
            self.bad_blocks[contact.node_id] += 1
            return None

    async def find_records(self, key: bytes) -> tuple[FindResult, list[tuple[Contact, bytes]]]:
        """A lookup of the k nodes closest to record key ``key`` (GET_RECORD
        to each), and every record they answered with, unverified: the
        caller keeps the newest valid one."""
        found: list[tuple[Contact, bytes]] = []
        result = await self._lookup(id_from_bytes(key), msg.GetRecord(key), find_value=False, cid=None,
                                    records=found)
        return result, found

    async def _lookup(self, target: int, request: msg.Request, *, find_value: bool,
                      cid: CID | None, records: list[tuple[Contact, bytes]] | None = None) -> FindResult:
        started = self._now()
        self.table.mark_lookup(target, started)
        lookup = Lookup(target, self.table.closest(target, self.k), k=self.k, alpha=self.alpha,
                        find_value=find_value, exclude=self.own_id)
        async with trio.open_nursery() as nursery:  # holds only dials to peers not yet connected
            run = _LookupRun(self, lookup, request, cid, records, nursery)
            await run.run()
            if run.dialling:
                nursery.cancel_scope.cancel()
        result = lookup.result
        block = result.value if isinstance(result.value, Block) else None
        return FindResult(result, self._now() - started, block, result.value_from if block else None,
                          tuple(dict.fromkeys(run.providers)))

    def _outcome(self, peer: Contact, response: msg.Response,
                 cid: CID | None) -> tuple[list[Contact], Any] | None:
        """``peer``'s answer to a lookup query as contacts and a value, or
        None (counted against it) if it is nonsense or a forged block."""
        outcome = self._interpret(response, cid)
        if outcome is None:
            self._record_failure(peer.node_id)
            if isinstance(response, msg.Block):
                self.bad_blocks[peer.node_id] += 1
        return outcome

    def _count_failure(self, peer: Contact, error: BaseException) -> None:
        """Feed the table a request's failure, as :meth:`request` does."""
        if isinstance(error, PeerIdMismatchError):
            self.table.remove(peer.node_id)  # someone else answers at that address
        elif not (isinstance(error, RequestFailedError) and error.code in NOT_FAILURES):
            self._record_failure(peer.node_id)

    def _contacts(self, peers: Sequence[msg.PeerInfo]) -> list[Contact]:
        # _Conversions.contact inlined for the remembered peers (nearly all).
        remembered, convert = self._conversions._to_contact.get, self._conversions.contact
        return [c for p in peers if (c := remembered(p)) is not None or (c := convert(p)) is not None]

    def _interpret(self, response: msg.Response, cid: CID | None) -> tuple[list[Contact], Any] | None:
        if isinstance(response, msg.Nodes):
            return self._contacts(response.peers), None
        if isinstance(response, msg.Record):
            return self._contacts(response.peers), None if response.record is None else _HeldRecord(response.record)
        if isinstance(response, msg.Providers) and cid is not None:
            return self._contacts(response.peers), _Holders(tuple(self._contacts(response.providers)))
        if isinstance(response, msg.Block) and cid is not None:
            try:
                return [], Block(cid, response.data)  # verified once, here
            except InvalidBlockError:
                return None  # a peer that lies about a block is a failed peer
        return None

    # -- joining and refreshing -----------------------------------------------

    async def bootstrap(self, addresses: Sequence[tuple[str, int]]) -> list[Contact]:
        """Dial each address (whoever answers proves its own ID), then look up
        our own ID and refresh the buckets beyond our nearest neighbour (the
        paper's join). Raises :class:`BootstrapError` if nobody answered."""
        reached: list[Contact] = []
        problems: list[str] = []
        refused: list[str] = []
        for host, port in addresses:
            try:
                with trio.fail_after(self.request_timeout):
                    connection, contact = await self._dial(host, port, None)
                    if contact.node_id == self.own_id:
                        raise PeerUnreachableError(f"{host}:{port} is this node itself")
                    self._connections[contact.node_id] = connection
                    await connection.request(msg.Ping(), timeout=self.request_timeout)
            except trio.TooSlowError:
                problems.append(f"{host}:{port}: no answer within {self.request_timeout:g} s")
                continue
            except (CasError, RemoteProtocolError) as exc:
                problems.append(str(exc))
                if isinstance(exc, PeerRefusedError):
                    refused.append(str(exc))
                continue
            self.seen(contact)
            reached.append(contact)
        if addresses and not reached:
            fatal = len(refused) == len(addresses)  # every one is on another network: retrying will not help
            raise (BootstrapRefusedError if fatal else BootstrapError)("bootstrap failed: " + "; ".join(problems))
        if self._on_refused is not None:
            for text in refused:  # joined without them: the operator should still know
                self._on_refused(text)
        await self.refresh(force=True)
        return reached

    async def refresh(self, *, force: bool = False) -> int:
        """Look up our own ID, then a random ID in every bucket due for refresh
        (every bucket from our nearest neighbour out, with ``force``).
        Returns the number of lookups made."""
        if not len(self.table):
            return 0
        now = self._now()
        due = self.table.refresh_due(now, 0.0 if force else self.refresh_interval)
        count = 0
        if force or due:
            await self.find_node(self.own_id)
            count += 1
        for index in due:
            if not self.table.nonempty_buckets():
                break
            await self.find_node(random_id_in_bucket(self.own_id, index, self._rng))
            count += 1
        return count

    async def refresh_loop(self, check_every: float = REFRESH_CHECK) -> None:
        """Refresh due buckets every ``check_every`` seconds, until cancelled."""
        while True:
            await trio.sleep(check_every)
            await self.refresh()

    # -- reporting ------------------------------------------------------------

    def peers(self) -> list[PeerStatus]:
        now = self._now()
        out = []
        for contact in self.table.contacts():
            seen = self.table.last_seen(contact.node_id)
            out.append(PeerStatus(contact, self.connected(contact.node_id),
                                  None if seen is None else max(0.0, now - seen),
                                  self.table.failures(contact.node_id)))
        return out


class _Query:
    """One query of a lookup on the wire, and the connection's
    :class:`~cas.net.connection.AnswerWaiter` for its answer."""

    __slots__ = ("connection", "hard", "peer", "request_id", "run", "soft")

    def __init__(self, run: _LookupRun, peer: Contact, soft: float, hard: float) -> None:
        self.run = run
        self.peer = peer
        self.soft = soft  # when it stops holding a slot (Lookup.on_timeout)
        self.hard = hard  # when it is given up (Lookup.on_failure)
        self.connection: Connection | None = None
        self.request_id: int | None = None

    async def answered(self, response: msg.Response) -> None:
        await self.run.answered(self, response)

    def failed(self, error: Exception) -> None:
        self.run.failed(self, error)


class _LookupRun:
    """Drives one :class:`Lookup` on the wire (the trio half of
    :meth:`DhtDriver._lookup`).

    Answers are fed to the lookup by the read loop of the connection they
    arrive on (:meth:`Connection.send_request`), which then sends the queries
    the answer opened itself: one trip through trio's scheduler per answer,
    no task and no cancel scope per query. The lookup's own task (``run``)
    only waits: for the end, for failures (told synchronously, so handled
    here), and for the next deadline. Every query gets the same soft and
    hard timeouts, so the dicts of queries are in deadline order and one
    timer serves them all. A peer without an open connection is dialled by
    a task of its own. When the lookup ends, queries still unanswered are
    forgotten: a late answer is dropped without counting against the peer.
    """

    def __init__(self, driver: DhtDriver, lookup: Lookup, request: msg.Request, cid: CID | None,
                 records: list[tuple[Contact, bytes]] | None, nursery: trio.Nursery) -> None:
        self.driver = driver
        self.lookup = lookup
        self.request = request
        self.cid = cid
        self.records = records
        self.providers: list[Contact] = []
        self.nursery = nursery
        self.waiting: dict[int, _Query] = {}  # node ID -> query not answered yet (hard deadline order)
        self.holding: dict[int, _Query] = {}  # node ID -> query still holding a slot (soft deadline order)
        self.failures: list[tuple[_Query, BaseException]] = []  # told by connections, for run()
        self.dialling = 0  # dial_and_send tasks running
        self.over = False  # run() has returned: late news is ignored
        self.wakeup: trio.Event | None = None  # set to wake run() from its wait
        self.timer: trio.CancelScope | None = None  # run()'s wait, its deadline the next one due

    async def run(self) -> None:
        try:
            await self._run()
        finally:  # also when cancelled: nothing more is sent, nobody is told
            self.over = True
            for query in self.waiting.values():
                if query.connection is not None and query.request_id is not None:
                    query.connection.forget(query.request_id)
            self.waiting.clear()
            self.holding.clear()

    async def _run(self) -> None:
        lookup = self.lookup
        await self.send(lookup.start())
        while not lookup.done:
            if self.failures:
                query, error = self.failures.pop(0)
                await self.send(self.fail(query, error))
                continue
            self.wakeup = trio.Event()
            with trio.CancelScope(deadline=self.next_deadline()) as self.timer:
                await self.wakeup.wait()
            self.timer = self.wakeup = None
            now = trio.current_time()
            for query in list(self.holding.values()):
                if query.soft > now or lookup.done:
                    break
                if self.holding.get(query.peer.node_id) is query:  # not answered meanwhile
                    del self.holding[query.peer.node_id]
                    await self.send(lookup.on_timeout(query.peer))
            for query in list(self.waiting.values()):
                if query.hard > now or lookup.done:
                    break
                await self.send(self.fail(query, RequestTimeoutError(
                    f"no answer from {query.peer.host}:{query.peer.port} in time")))

    def next_deadline(self) -> float:
        soft = next(iter(self.holding.values())).soft if self.holding else math.inf
        hard = next(iter(self.waiting.values())).hard if self.waiting else math.inf
        return min(soft, hard)

    def wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup.set()

    async def send(self, actions: list[SendQuery]) -> None:
        """Ask each peer of ``actions`` (and of whatever a failure to send opens)."""
        driver = self.driver
        todo = list(actions)
        now = trio.current_time()
        while todo and not self.over:
            peer = todo.pop(0).peer
            query = _Query(self, peer, now + driver.soft_timeout, now + driver.request_timeout)
            self.waiting[peer.node_id] = self.holding[peer.node_id] = query
            timer = self.timer
            if timer is not None and query.soft < timer.deadline:
                timer.deadline = query.soft
            connection = driver._connections.get(peer.node_id)
            if connection is None or connection.channel.closed or connection.send_would_wait():
                self.dialling += 1
                self.nursery.start_soon(self.dial_and_send, query)
                continue
            driver.messages_sent += 1
            try:
                await self.send_on(connection, query)
            except (CasError, RemoteProtocolError) as exc:
                todo += self.fail(query, exc)
        if self.lookup.done:
            self.wake()

    async def send_on(self, connection: Connection, query: _Query) -> None:
        request_id = await connection.send_request(self.request, query)
        if self.waiting.get(query.peer.node_id) is query and not self.over:
            query.connection, query.request_id = connection, request_id
        else:  # given up (or over) while the send waited
            connection.forget(request_id)

    async def dial_and_send(self, query: _Query) -> None:
        try:
            await self._dial_and_send(query)
        finally:
            self.dialling -= 1

    async def _dial_and_send(self, query: _Query) -> None:
        driver = self.driver
        try:
            with trio.fail_after(max(0.0, query.hard - trio.current_time())):
                connection = await driver._connection_to(query.peer)
            if self.waiting.get(query.peer.node_id) is not query:
                return
            driver.messages_sent += 1
            await self.send_on(connection, query)
        except trio.TooSlowError:
            error: BaseException = RequestTimeoutError(
                f"no answer from {query.peer.host}:{query.peer.port} in time")
        except (CasError, RemoteProtocolError) as exc:
            error = exc
        else:
            return
        await self.send(self.fail(query, error))

    def fail(self, query: _Query, error: BaseException) -> list[SendQuery]:
        """``query`` failed for good: tell the table and the lookup."""
        node_id = query.peer.node_id
        if self.waiting.get(node_id) is not query:
            return []
        del self.waiting[node_id]
        self.holding.pop(node_id, None)
        if query.connection is not None and query.request_id is not None:
            query.connection.forget(query.request_id)  # a timeout: a late answer is no fault
        self.driver._count_failure(query.peer, error)
        return self.lookup.on_failure(query.peer)

    def failed(self, query: _Query, error: BaseException) -> None:
        """A connection's word that ``query`` failed; handled by run()."""
        if self.waiting.get(query.peer.node_id) is query:
            self.failures.append((query, error))
            self.wake()

    async def answered(self, query: _Query, response: msg.Response) -> None:
        """``query``'s answer, from the read loop of its connection."""
        peer = query.peer
        if self.waiting.get(peer.node_id) is not query:
            return
        del self.waiting[peer.node_id]
        self.holding.pop(peer.node_id, None)
        driver = self.driver
        driver.seen(peer)
        outcome = driver._outcome(peer, response, self.cid)
        lookup = self.lookup
        if outcome is None:
            actions = lookup.on_failure(peer)
        else:
            driver._served(peer.node_id)
            contacts, value = outcome
            if isinstance(value, _HeldRecord):
                if self.records is not None:
                    self.records.append((peer, value.data))
                value = None
            elif isinstance(value, _Holders):  # asked after the lookup, if it finds no copy
                self.providers += [c for c in value.contacts if c.node_id != driver.own_id]
                value = None
            actions = lookup.on_response(peer, contacts, value)
        if lookup.done:
            self.wake()
        elif actions:
            await self.send(actions)
