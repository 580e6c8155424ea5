"""The trio driver of the DHT: one node's DHT, wired together.

Owns: the wiring of the three parts of a node's DHT, and what only the
whole knows: feeding the routing table what the wire proves (``update`` on
every request received and every response, ``record_failure`` on every
failure, ``remove`` on a peer that proves another identity than the one it
was known by, telling ``peer_lost`` of a contact dropped), pinging a full
bucket's oldest contact, single requests to one peer (PING, HAVE,
STORE_BLOCKS batched by :mod:`.store_batches`, PUT_RECORD, one FIND_BLOCK),
doing the store I/O that answering a request needs, bootstrap and bucket
refresh.

The parts, each in its own module (go-libp2p-kad-dht's layout: the
handlers apart from the query code, the connection layer injected):

* :mod:`.pool` — the connections: dialling (through an injected dialer),
  the handshake, one pooled connection per peer, serving accepted streams
  as the admission policy rules, probing a peer that hung up.
* :mod:`.responder` — sans-IO: what each inbound request is answered, as
  one table of handlers; what needs the store is returned as work, which
  :meth:`DhtDriver.answer` does here and hands back.
* :mod:`.lookups` — the sans-IO :class:`~cas.dht.lookup.Lookup` run over
  the pool (FIND_NODE, FIND_BLOCK, GET_RECORD lookups).

Must never: decide anything the sans-IO objects decide (who to ask next,
when a lookup is done, what to answer, who to evict from the table or from
the connection pool); trust an address or a block from a peer (node IDs
come from the handshake, blocks are verified against the CID asked for,
records by the keeper and by whoever reads them); or let one peer's
failure escape into the node.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import trio

from ..blocks import Block
from ..cid import CID
from ..errors import (
    BlockNotFoundError,
    BootstrapError,
    BootstrapRefusedError,
    CasError,
    InvalidBlockError,
    PeerError,
    PeerIdMismatchError,
    PeerRefusedError,
    PeerUnreachableError,
    RemoteProtocolError,
    RepositoryError,
    RequestFailedError,
    RequestTimeoutError,
)
from ..net import messages as msg
from ..net.admission import Admission
from ..net.connection import FRAME_TIMEOUT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT
from ..net.framing import FRAME_MEMORY, FrameBudget
from ..net.identity import Identity
from ..net.network_key import NetworkKey
from .ids import NodeID, random_id_in_bucket
from .lookup import ALPHA
from .lookups import SOFT_TIMEOUT, FindResult, Lookups, peer_to_contact
from .pool import AGENT, REQUEST_TIMEOUT, ConnectionPool, Dialer, source_address, tcp_dialer
from .providers import ProviderRecords
from .reachability import ASK, Reachability, verdict
from .responder import (
    CheckPresence,
    DialRequester,
    KeepBlocks,
    KeepRecord,
    ReadBlock,
    ReadRecord,
    Responder,
    contact_to_peer,
)
from .routing import REFRESH_INTERVAL, Contact, K, RoutingTable
from .rtt import MAX_STORE_TIMEOUT, RttTable
from .store_batches import StoreBatcher, StoreOutcome

__all__ = [  # what importers find here, wherever it lives now
    "AGENT", "HAVE_TIMEOUT", "NOT_FAILURES", "REFRESH_CHECK", "REQUEST_TIMEOUT", "SOFT_TIMEOUT",
    "STORE_TIMEOUT", "BlockKeeper", "BlockSource", "BootstrapError", "BootstrapRefusedError",
    "DhtDriver", "FindResult", "PeerRefusedError", "PeerStatus", "PeerUnreachableError",
    "RecordKeeper", "RenewsLeases", "VerifiesPresence", "contact_to_peer", "peer_to_contact",
    "source_address",
]

REFRESH_CHECK = 60.0
"""How often the refresh loop asks the table which buckets are due."""

MAX_PINGS = 8
"""Pings of full buckets' oldest contacts in flight at once; more
suggestions are dropped (the next update suggests again)."""

REVISIT_INTERVAL = 10.0
REVISIT_BATCH = 4
"""Contacts dropped for silence pinged again, REVISIT_BATCH every
REVISIT_INTERVAL seconds (routing.MAX_DEPARTED are remembered): a healed
partition is noticed within seconds to a few minutes."""

HAVE_TIMEOUT = 3.0

STORE_TIMEOUT = MAX_STORE_TIMEOUT
"""Hard limit for one STORE_BLOCKS: up to 2 MiB to send, and the receiver
verifies and fsyncs before it answers. Each store waits less, by its
peer's round trip and store rate (:func:`.rtt.store_timeout`)."""

_STORED = StoreOutcome("stored")

NOT_FAILURES = frozenset({"busy", "full", "stale"})
"""Error codes that say "not now" or "not me", not "I am broken": the
routing table does not count them against the peer."""

UNREADABLE = (InvalidBlockError, BlockNotFoundError, RepositoryError)
"""Why a block held here may fail to be read for a peer (damaged, gone
meanwhile, the disk): it is not served, and the peer is pointed elsewhere."""


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
    (:class:`cas.store.StorageQuotaError` when the quota is full; how each
    is answered: :func:`cas.dht.responder.error_code`)."""

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
    :class:`InvalidRecordError` for a record it refuses
    (:class:`~cas.errors.StaleRecordError` for one not newer than the held
    one), :class:`~cas.errors.StorageQuotaError` when it has no room;
    it returns once the record is durable. How each is answered:
    :func:`cas.dht.responder.error_code`."""

    async def get_record(self, key: bytes) -> bytes | None: ...

    async def put_record(self, key: bytes, record: bytes, sender: bytes) -> None: ...


@dataclass(frozen=True)
class PeerStatus:
    """One contact of the routing table as ``cas peers`` shows it."""

    contact: Contact
    connected: bool
    last_seen: float | None
    failures: int


class DhtDriver:
    """One node's DHT on trio. ``await nursery.start(driver.run)`` first; it
    owns every connection task until cancelled.

    ``dialer`` opens streams to peers (:func:`~cas.dht.pool.tcp_dialer` from
    ``listen_host`` by default; tests pass memory streams)."""

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
        announce_host: str | None = None,
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
        dialer: Dialer | None = None,
    ) -> None:
        self.identity = identity
        self.network_key = network_key
        self.id_difficulty = id_difficulty
        """Work a peer's node ID must show (cas.net.identity.id_work): one
        that falls short is never put in the routing table and is refused
        every request."""
        self._on_refused = on_refused
        self.peer_lost: list[Callable[[int], None]] = []
        """Called with a contact's ID when the table drops it as failed, or
        as gone (its address refuses connections after it hung up)."""
        self.own_id = NodeID(int.from_bytes(identity.node_id, "big"))
        if table.own_id != self.own_id:
            raise ValueError("the routing table belongs to another node")
        self.table = table
        self.blocks = blocks
        self.keeper = keeper
        self.providers = ProviderRecords()
        """Who offered blocks this node refused (:mod:`.providers`)."""
        self.records = records
        self.listen_port = listen_port
        self.listen_host = listen_host
        """The address the node listens on; outbound connections are dialled
        from it when it is one address (:func:`source_address`).
        ``listen_port`` is the port hellos name: the announced one, if the
        node announces an address (``--announce``), whose host
        ``announce_host`` hellos name too, for peers to file this node
        under instead of the connection's source address."""
        self.k = k
        self.alpha = alpha
        self.request_timeout = request_timeout
        self.soft_timeout = soft_timeout
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.refresh_interval = refresh_interval
        self._rng = rng or random.Random()
        self._clock = clock
        self.pool = ConnectionPool(
            identity, self, dialer=dialer if dialer is not None else tcp_dialer(listen_host),
            listen_port=listen_port, announce_host=announce_host, network_key=network_key, admission=admission,
            request_timeout=request_timeout, handshake_timeout=handshake_timeout, idle_timeout=idle_timeout,
            frame_timeout=frame_timeout, frame_memory=frame_memory, clock=clock, on_refused=on_refused,
            on_gone=self._gone)
        self.admission = self.pool.admission
        self.admission.protected = self._good_contact
        self.frame_timeout = frame_timeout
        self.frame_budget: FrameBudget = self.pool.frame_budget
        self.responder = Responder(table, self.providers, k=k, id_difficulty=id_difficulty,
                                   keeps_blocks=keeper is not None, keeps_records=records is not None)
        self.rtts = RttTable(initial_rto=soft_timeout)
        """Every peer's round-trip estimate (:mod:`.rtt`): the lookups' soft timeouts."""
        self.lookups = Lookups(self.own_id, table, self.pool, self, k=k, alpha=alpha,
                               soft_timeout=soft_timeout, request_timeout=request_timeout, clock=clock,
                               rtts=self.rtts)
        self._pinging: set[int] = set()
        self._nursery: trio.Nursery | None = None
        self._batcher: StoreBatcher | None = None
        self._requests_sent = 0
        self.bad_blocks: Counter[int] = Counter()
        """Node ID → blocks it sent that did not match their CID (``cas peers``)."""

    # -- lifetime -------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the connection tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pool.run)
            self._nursery = nursery
            self._batcher = StoreBatcher(self.store_blocks, nursery)
            task_status.started()
            await trio.sleep_forever()

    def _now(self) -> float:
        return self._clock()

    # -- statistics -------------------------------------------------------------

    @property
    def messages_sent(self) -> int:
        """Requests sent: single ones and lookups' queries."""
        return self._requests_sent + self.lookups.messages_sent

    @property
    def handshakes_in(self) -> int:
        """Handshakes completed with peers that dialled us, since start."""
        return self.pool.handshakes_in

    @property
    def handshakes_out(self) -> int:
        """Handshakes completed with peers we dialled, since start."""
        return self.pool.handshakes_out

    @property
    def refused(self) -> Counter[str]:
        """Remote host → handshakes refused because it is on another network."""
        return self.pool.refused

    @property
    def short_of_work(self) -> int:
        """Requests refused because the requester's ID falls short of the work."""
        return self.responder.short_of_work

    # -- connections ----------------------------------------------------------

    async def handle_inbound(self, stream: trio.SocketStream) -> None:
        """Serve one accepted TCP stream (give this to ``trio.serve_listeners``);
        see :meth:`ConnectionPool.serve`."""
        try:
            host, port = stream.socket.getpeername()[:2]
        except OSError:
            await stream.aclose()
            return
        await self.pool.serve(stream, host, port)

    def connected(self, node_id: int) -> bool:
        return self.pool.connected(node_id)

    def _good_contact(self, peer: object) -> bool:
        """For the admission policy: a peer our routing table holds."""
        return peer in self.table

    def _gone(self, contact: Contact) -> None:
        """The pool's probe found nothing listening at ``contact``'s address."""
        if self.table.remove(contact.node_id):
            for hook in self.peer_lost:
                hook(contact.node_id)

    # -- what the wire proves, told to the table -----------------------------

    def seen(self, contact: Contact) -> None:
        """``contact`` proved itself just now: tell the table, and ping the
        bucket's oldest contact if the bucket is full. A node whose ID does
        not show the network's work never enters the table."""
        if not self.responder.shows_work(contact.node_id):
            return
        oldest = self.table.update(contact, self._now())
        if oldest is not None and oldest.node_id not in self._pinging \
                and len(self._pinging) < MAX_PINGS and self._nursery is not None:
            self._pinging.add(oldest.node_id)
            self._nursery.start_soon(self._ping_oldest, oldest)

    def served(self, node_id: int) -> None:
        """``node_id`` answered one of our requests (not a ping): useful,
        which the admission policy weighs."""
        self.admission.served(node_id)

    def failed(self, peer: Contact, error: BaseException) -> None:
        """A request to ``peer`` failed for good: a false contact is
        removed, an error code in NOT_FAILURES is not held against it,
        anything else is a failure."""
        if isinstance(error, PeerIdMismatchError):
            self.table.remove(peer.node_id)  # someone else answers at that address
        elif not (isinstance(error, RequestFailedError) and error.code in NOT_FAILURES):
            self._record_failure(peer.node_id)

    def answered_badly(self, peer: Contact, response: msg.Response) -> None:
        """``peer`` answered nonsense or a forged block: a failure."""
        self._record_failure(peer.node_id)
        if isinstance(response, msg.Block):
            self.bad_blocks[peer.node_id] += 1

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

    async def _ping_oldest(self, contact: Contact) -> None:
        try:
            await self.ping(contact)
        finally:
            self._pinging.discard(contact.node_id)

    # -- requests out ---------------------------------------------------------

    async def request(self, contact: Contact, request: msg.Request,
                      timeout: float | None = None) -> msg.Response:
        """Send ``request`` to ``contact`` (dialling if needed) and return its
        response, feeding the routing table either way. Raises
        :class:`CasError` subclasses on any failure."""
        timeout = self.request_timeout if timeout is None else timeout
        try:
            connection = self.pool.open_to(contact.node_id)
            if connection is None:
                with trio.fail_after(timeout):
                    connection = await self.pool.connect(contact)
            self._requests_sent += 1
            response = await connection.request(request, timeout=timeout)
        except trio.TooSlowError:
            self._record_failure(contact.node_id)
            raise RequestTimeoutError(f"no answer from {contact.host}:{contact.port} in time") from None
        except PeerError as exc:
            self.failed(contact, exc)
            raise
        self.seen(contact)
        if not isinstance(request, msg.Ping):  # a pong proves it alive, not useful
            self.served(contact.node_id)
        return response

    async def connect(self, contact: Contact, timeout: float | None = None) -> None:
        """Open (or join the opening of) the connection to ``contact``
        before requests go out on it, so a caller can tell the dial from
        the answers; failures feed the routing table as :meth:`request`'s
        do. Raises :class:`PeerError` subclasses."""
        try:
            with trio.fail_after(self.request_timeout if timeout is None else timeout):
                await self.pool.connect(contact)
        except trio.TooSlowError:
            self._record_failure(contact.node_id)
            raise RequestTimeoutError(f"no answer from {contact.host}:{contact.port} in time") from None
        except PeerError as exc:
            self.failed(contact, exc)
            raise

    # -- reachability (AutoNAT's check, reachability.py) -------------------------

    async def dial_back(self, requester: int, host: str, port: int) -> bool:
        """Whether a new connection to ``host:port`` reaches ``requester``
        (a handshake proving its ID); the connection is closed at once."""
        try:
            with trio.fail_after(self.handshake_timeout):
                connection, _ = await self.pool.dial(host, port, requester)
        except (PeerError, trio.TooSlowError):
            return False
        await connection.aclose()
        return True

    async def check_reachable(self, count: int = ASK) -> Reachability:
        """Ask up to ``count`` peers, at once, to dial this node back at its
        listening port (the announced address, if it announces one: each
        dials the host its hello names); the verdict of their answers. A
        DHT client (no listening port) has nothing to check."""
        port = self.pool.listen_port
        if port is None:
            return Reachability(False, 0, 0, 0)
        contacts = list(self.table.contacts())
        self._rng.shuffle(contacts)
        asked = contacts[:count]
        answers: list[bool] = []

        async def ask(contact: Contact) -> None:
            try:
                response = await self.request(contact, msg.DialBack(port),
                                              timeout=self.handshake_timeout + self.request_timeout)
            except PeerError:
                return  # no answer is no evidence either way
            if isinstance(response, msg.DialBackResult):
                answers.append(response.reachable)

        async with trio.open_nursery() as nursery:
            for contact in asked:
                nursery.start_soon(ask, contact)
        return Reachability(verdict(answers), len(asked), answers.count(True), answers.count(False))

    async def become_client(self) -> None:
        """From now on, name no listening port in hellos, and close the
        connections opened with one: each peer probes the address it filed
        this node under, finds nothing listening there, and drops the
        contact; they meet the node again as a client."""
        self.pool.listen_port = None
        self.pool.announce_host = None
        self.listen_port = None
        await self.pool.close_all()

    async def ping(self, contact: Contact) -> bool:
        try:
            await self.request(contact, msg.Ping())
            return True
        except PeerError:
            return False

    async def have(self, contact: Contact, cids: Sequence[CID], lease: int = 0) -> list[bool] | None:
        """Which of ``cids`` the peer holds (None if it did not answer);
        with a ``lease``, it keeps those at least that many seconds more."""
        try:
            response = await self.request(contact, msg.Have(tuple(cids), lease), timeout=HAVE_TIMEOUT)
        except PeerError:
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
        nbytes = sum(len(data) for _, data in blocks)
        timeout = self.rtts.store_timeout(contact.node_id, nbytes, dial=not self.pool.connected(contact.node_id))
        sent = self._now()
        outcomes = await self._ask_to_keep(contact, msg.StoreBlocks.of(blocks, leases), refusals=NOT_FAILURES,
                                           timeout=timeout)
        if isinstance(outcomes, StoreOutcome):
            return [outcomes] * len(blocks)
        self.rtts.sample_store(contact.node_id, nbytes, self._now() - sent)
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
        except PeerError as exc:
            return StoreOutcome("failed", str(exc))
        if isinstance(response, msg.Stored):  # the connection checked its length
            return [_STORED if code == "ok" else
                    StoreOutcome("refused" if code in refusals else "failed", f"{code}: {response.message}")
                    for code in response.codes]
        if not isinstance(response, msg.Ok):
            self._record_failure(contact.node_id)
            return StoreOutcome("failed", f"unexpected answer {response.TYPE}")
        return _STORED

    # -- requests in: the responder decides, the store I/O is done here -------

    def answer_now(self, requester: int, request: msg.Request) -> msg.Response | None:
        """The response to a request answered from memory (PING, FIND_NODE),
        or None for one that needs :meth:`answer`. The connection calls it
        from its read loop, so it must never wait."""
        return self.responder.answer_now(requester, request, self._now())

    async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
        """The response to a peer's DHT request (``contact``: where the
        requester listens, if known): :class:`Responder` decides, and this
        does the store work it asks for in between."""
        quick = self.answer_now(requester, request)
        if quick is not None:
            return quick
        responder = self.responder
        work = responder.start(requester, request, self._now())
        try:
            if isinstance(work, ReadBlock):
                return responder.read_block_done(requester, work, await self._read_block(work.cid), self._now())
            if isinstance(work, CheckPresence):
                return responder.check_presence_done(await self._presence(work))
            if isinstance(work, KeepBlocks):
                assert self.keeper is not None  # the responder refuses STORE_BLOCKS without
                outcomes = await self.keeper.keep_many(work.blocks, work.sender, work.leases)
                return responder.keep_blocks_done(work, outcomes, contact, self._now())
            if isinstance(work, ReadRecord):
                held = await self.records.get_record(work.key) if self.records is not None else None
                return responder.read_record_done(requester, work, held)
            if isinstance(work, KeepRecord):
                return await self._keep_record(requester, work)
            if isinstance(work, DialRequester):
                if contact is None:
                    return msg.Error("refused", "dial_back needs the port you listen on in your hello")
                return responder.dial_back_done(await self.dial_back(requester, contact.host, work.port))
        except RemoteProtocolError:
            raise  # the peer's fault: the connection strikes it
        except CasError as exc:  # none of the failures the responder expects: ours
            return responder.error_done(exc)
        return work

    async def _read_block(self, cid: CID) -> bytes | None:
        """The block's bytes for a peer, or None if it is not held here or
        cannot be read (:data:`UNREADABLE`)."""
        if self.blocks is None:
            return None
        try:
            if await self.blocks.has(cid):
                return await self.blocks.get(cid)
        except UNREADABLE:
            pass  # a damaged block is not served; point elsewhere
        return None

    async def _presence(self, work: CheckPresence) -> list[bool]:
        if work.lease and isinstance(self.keeper, RenewsLeases):
            await self.keeper.renew(work.cids, work.lease)
        if isinstance(self.blocks, VerifiesPresence):
            return await self.blocks.have(work.cids)
        present = []
        for cid in work.cids:
            present.append(bool(self.blocks is not None and await self.blocks.has(cid)))
        return present

    async def _keep_record(self, requester: int, work: KeepRecord) -> msg.Response:
        """Let the keeper judge; a requester that sent an invalid record
        (malformed, forged or misfiled) is counted against."""
        assert self.records is not None  # the responder refuses PUT_RECORD without
        try:
            await self.records.put_record(work.key, work.record, work.sender)
        except CasError as exc:  # the responder classifies it by type
            response, at_fault = self.responder.keep_record_done(exc)
        else:
            response, at_fault = self.responder.keep_record_done(None)
        if at_fault:
            self._record_failure(requester)
        return response

    # -- lookups --------------------------------------------------------------

    async def find_node(self, target: int) -> FindResult:
        """The k nodes closest to ``target`` that answered (this node left out)."""
        return await self.lookups.find_node(target)

    async def find_block(self, cid: CID) -> FindResult:
        """Look for ``cid``'s block; ``block`` is set (verified) if a peer had it."""
        return await self.lookups.find_block(cid)

    async def find_records(self, key: bytes) -> tuple[FindResult, list[tuple[Contact, bytes]]]:
        """A lookup of the k nodes closest to record key ``key`` (GET_RECORD
        to each), and every record they answered with, unverified: the
        caller keeps the newest valid one."""
        return await self.lookups.find_records(key)

    async def block_from(self, contact: Contact, cid: CID, timeout: float | None = None) -> Block | None:
        """Ask one peer for ``cid`` with a single FIND_BLOCK (no lookup): the
        verified block, or None if it has not got it, did not answer, or
        lied (counted against it, as in a lookup)."""
        try:
            response = await self.request(contact, msg.FindBlock(cid), timeout=timeout)
        except PeerError:
            return None
        if not isinstance(response, msg.Block):
            return None
        try:
            return Block(cid, response.data)  # verified: the one hash of a block from a peer
        except InvalidBlockError:
            self.answered_badly(contact, response)
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
                    connection, contact = await self.pool.dial(host, port, None)
                    if contact.node_id == self.own_id:
                        raise PeerUnreachableError(f"{host}:{port} is this node itself")
                    self.pool.keep(contact.node_id, connection)
                    await connection.request(msg.Ping(), timeout=self.request_timeout)
            except trio.TooSlowError:
                problems.append(f"{host}:{port}: no answer within {self.request_timeout:g} s")
                continue
            except PeerError as exc:
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

    async def revisit_loop(self, every: float = REVISIT_INTERVAL) -> None:
        """Every ``every`` seconds, ping a few contacts dropped for silence
        (:meth:`RoutingTable.revisit`); if one answers, it is back in the
        table, and a lookup of this node's own ID learns its side of the
        network again: how both halves of a partition find each other once
        it heals, without a restart."""
        while True:
            await trio.sleep(every)
            contacts = self.table.revisit(REVISIT_BATCH)
            if contacts and await self._any_answers(contacts):
                await self.find_node(self.own_id)

    async def _any_answers(self, contacts: Sequence[Contact]) -> bool:
        """Ping ``contacts`` at once; whether any answered."""
        back: list[Contact] = []

        async def ping(contact: Contact) -> None:
            if await self.ping(contact):
                back.append(contact)

        async with trio.open_nursery() as nursery:
            for contact in contacts:
                nursery.start_soon(ping, contact)
        return bool(back)

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
