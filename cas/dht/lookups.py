"""Lookups on the wire: the sans-IO :class:`~cas.dht.lookup.Lookup` driven
over the connection pool.

Owns: turning a lookup's :class:`~cas.dht.lookup.SendQuery` actions into
FIND_NODE / FIND_BLOCK / GET_RECORD requests and their answers back into
lookup events (:func:`interpret`), the per-query timers (a soft timeout
that lets the lookup search around a slow peer, one RTO of that peer's
round-trip estimate, :mod:`.rtt`; a hard one that gives up on it), timing
the answers that feed those estimates, and what the caller gets back (:class:`FindResult`: the closest nodes,
a block verified against the CID asked for, records, provider hints).

Must never: decide who to ask next or when a lookup is done (the
:class:`Lookup` does); feed the routing table itself (it only reads the
starting contacts and marks the bucket looked up; what each peer's answer
proves is told to the :class:`PeerNews` listener, the driver); or trust a
block or an address from a peer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..blocks import Block
from ..cid import CID
from ..errors import InvalidBlockError, PeerError, RequestTimeoutError
from ..net import messages as msg
from ..net.connection import Connection
from .ids import NodeID, id_from_bytes, id_to_bytes, key_for_digest
from .lookup import Lookup, LookupResult, SendQuery
from .pool import ConnectionPool
from .routing import Contact, RoutingTable
from .rtt import DIAL_ROUND_TRIPS, INITIAL_RTO, RttTable

SOFT_TIMEOUT = INITIAL_RTO
"""Before any round trip was measured, after this long a query stops
holding one of the lookup's alpha slots (``Lookup.on_timeout``); a late
answer is still used. Once answers have been timed, each peer's RTO
(:mod:`.rtt`) takes its place."""


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


class PeerNews(Protocol):
    """Who hears what a lookup's queries proved about the peers asked (the
    :class:`~cas.dht.driver.DhtDriver`, which tells the routing table)."""

    def seen(self, contact: Contact) -> None:
        """``contact`` answered (any answer)."""

    def served(self, node_id: int) -> None:
        """``node_id`` answered usefully."""

    def failed(self, peer: Contact, error: BaseException) -> None:
        """The query to ``peer`` failed for good."""

    def answered_badly(self, peer: Contact, response: msg.Response) -> None:
        """``peer`` answered nonsense, or a block that is not the one asked for."""


def peer_to_contact(peer: msg.PeerInfo) -> Contact | None:
    try:
        return Contact(id_from_bytes(peer.node_id), peer.host, peer.port)
    except ValueError:
        return None


_CONTACT_CACHE = 4096
"""Wire peers -> contacts remembered. Every FIND_NODE answer carries 20
peers, mostly the same few hundred over and over; converting (and
validating) each anew was a tenth of a lookup's CPU."""


class _Contacts:
    def __init__(self) -> None:
        self._remembered: dict[msg.PeerInfo, Contact | None] = {}

    def of(self, peers: Sequence[msg.PeerInfo]) -> list[Contact]:
        """The valid contacts among ``peers``, in order."""
        remembered, convert = self._remembered.get, self._convert
        return [c for p in peers if (c := remembered(p)) is not None or (c := convert(p)) is not None]

    def _convert(self, peer: msg.PeerInfo) -> Contact | None:
        try:
            return self._remembered[peer]
        except KeyError:
            if len(self._remembered) >= _CONTACT_CACHE:
                self._remembered.clear()
            found = self._remembered[peer] = peer_to_contact(peer)
            return found


@dataclass(frozen=True)
class HeldRecord:
    """A record a peer answered GET_RECORD with (not a lookup's value: a
    record lookup always runs to the k closest)."""

    data: bytes


@dataclass(frozen=True)
class Holders:
    """Providers a peer named for a block it lacks (not a lookup's value:
    the lookup goes on to the closest nodes, which should have the block;
    the providers are asked only if none has)."""

    contacts: tuple[Contact, ...]


def interpret(response: msg.Response, cid: CID | None,
              contacts: Callable[[Sequence[msg.PeerInfo]], list[Contact]]) -> tuple[list[Contact], Any] | None:
    """A lookup query's answer as the contacts it names and a value (a
    verified block, a :class:`HeldRecord`, :class:`Holders`, or None); None
    if it is nonsense or a forged block."""
    if isinstance(response, msg.Nodes):
        return contacts(response.peers), None
    if isinstance(response, msg.Record):
        return contacts(response.peers), None if response.record is None else HeldRecord(response.record)
    if isinstance(response, msg.Providers) and cid is not None:
        return contacts(response.peers), Holders(tuple(contacts(response.providers)))
    if isinstance(response, msg.Block) and cid is not None:
        try:
            return [], Block(cid, response.data)  # verified once, here
        except InvalidBlockError:
            return None  # a peer that lies about a block is a failed peer
    return None


class Lookups:
    """Runs one node's lookups: the pool reaches the peers, ``news`` hears
    how each did."""

    def __init__(self, own_id: NodeID, table: RoutingTable, pool: ConnectionPool, news: PeerNews, *,
                 k: int, alpha: int, soft_timeout: float, request_timeout: float,
                 clock: Callable[[], float] = trio.current_time, rtts: RttTable | None = None) -> None:
        self.own_id = own_id
        self.table = table
        self.pool = pool
        self.news = news
        self.k = k
        self.alpha = alpha
        self.soft_timeout = soft_timeout
        self.request_timeout = request_timeout
        self.rtts = RttTable(initial_rto=soft_timeout) if rtts is None else rtts
        self._clock = clock
        self.contacts = _Contacts()
        self.messages_sent = 0

    async def find_node(self, target: int) -> FindResult:
        """The k nodes closest to ``target`` that answered (this node left out)."""
        return await self.run(target, msg.FindNode(id_to_bytes(target)), find_value=False, cid=None)

    async def find_block(self, cid: CID) -> FindResult:
        """Look for ``cid``'s block; ``block`` is set (verified) if a peer had it."""
        return await self.run(key_for_digest(cid.routing_digest), msg.FindBlock(cid), find_value=True, cid=cid)

    async def find_records(self, key: bytes) -> tuple[FindResult, list[tuple[Contact, bytes]]]:
        """A lookup of the k nodes closest to record key ``key`` (GET_RECORD
        to each), and every record they answered with, unverified."""
        found: list[tuple[Contact, bytes]] = []
        result = await self.run(id_from_bytes(key), msg.GetRecord(key), find_value=False, cid=None,
                                records=found)
        return result, found

    async def run(self, target: int, request: msg.Request, *, find_value: bool,
                  cid: CID | None, records: list[tuple[Contact, bytes]] | None = None) -> FindResult:
        """One lookup of ``target``, asking each peer ``request``."""
        started = self._clock()
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
        return FindResult(result, self._clock() - started, block, result.value_from if block else None,
                          tuple(dict.fromkeys(run.providers)))


class _Query:
    """One query of a lookup on the wire, and the connection's
    :class:`~cas.net.connection.AnswerWaiter` for its answer."""

    __slots__ = ("connection", "hard", "peer", "request_id", "run", "sent", "soft")

    def __init__(self, run: _LookupRun, peer: Contact, soft: float, hard: float) -> None:
        self.run = run
        self.peer = peer
        self.soft = soft  # when it stops holding a slot (Lookup.on_timeout): one RTO
        self.hard = hard  # when it is given up (Lookup.on_failure)
        self.connection: Connection | None = None
        self.request_id: int | None = None
        self.sent: float | None = None  # when the request went out on an open connection

    async def answered(self, response: msg.Response) -> None:
        await self.run.answered(self, response)

    def failed(self, error: Exception) -> None:
        self.run.failed(self, error)


class _LookupRun:
    """Drives one :class:`Lookup` on the wire (the trio half of
    :meth:`Lookups.run`).

    Answers are fed to the lookup by the read loop of the connection they
    arrive on (:meth:`Connection.send_request`), which then sends the queries
    the answer opened itself: one trip through trio's scheduler per answer,
    no task and no cancel scope per query. The lookup's own task (``run``)
    only waits: for the end, for failures (told synchronously, so handled
    here), and for the next deadline. Every query gets the same hard
    timeout, so ``waiting`` is in deadline order; the soft ones are each
    peer's RTO, and the few queries ``holding`` a slot (at most alpha) are
    scanned for the nearest. One timer serves them all. A peer without an open connection is dialled by
    a task of its own. When the lookup ends, queries still unanswered are
    forgotten: a late answer is dropped without counting against the peer.
    """

    def __init__(self, lookups: Lookups, lookup: Lookup, request: msg.Request, cid: CID | None,
                 records: list[tuple[Contact, bytes]] | None, nursery: trio.Nursery) -> None:
        self.lookups = lookups
        self.lookup = lookup
        self.request = request
        self.cid = cid
        self.records = records
        self.providers: list[Contact] = []
        self.nursery = nursery
        self.waiting: dict[int, _Query] = {}  # node ID -> query not answered yet (hard deadline order)
        self.holding: dict[int, _Query] = {}  # node ID -> query still holding a slot
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
                if lookup.done:
                    break
                if query.soft <= now and self.holding.get(query.peer.node_id) is query:  # not answered meanwhile
                    del self.holding[query.peer.node_id]
                    await self.send(lookup.on_timeout(query.peer))
            for query in list(self.waiting.values()):
                if query.hard > now or lookup.done:
                    break
                await self.send(self.fail(query, RequestTimeoutError(
                    f"no answer from {query.peer.host}:{query.peer.port} in time")))

    def next_deadline(self) -> float:
        soft = min((query.soft for query in self.holding.values()), default=math.inf)
        hard = next(iter(self.waiting.values())).hard if self.waiting else math.inf
        return min(soft, hard)

    def wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup.set()

    async def send(self, actions: list[SendQuery]) -> None:
        """Ask each peer of ``actions`` (and of whatever a failure to send opens)."""
        lookups = self.lookups
        todo = list(actions)
        now = trio.current_time()
        while todo and not self.over:
            peer = todo.pop(0).peer
            connection = lookups.pool.open_to(peer.node_id)
            dial = connection is None or connection.send_would_wait()
            rto = lookups.rtts.rto(peer.node_id) * (DIAL_ROUND_TRIPS if dial else 1)
            query = _Query(self, peer, now + rto, now + lookups.request_timeout)
            self.waiting[peer.node_id] = self.holding[peer.node_id] = query
            timer = self.timer
            if timer is not None and query.soft < timer.deadline:
                timer.deadline = query.soft
            if connection is None or dial:
                self.dialling += 1
                self.nursery.start_soon(self.dial_and_send, query)
                continue
            lookups.messages_sent += 1
            try:
                await self.send_on(connection, query)
            except PeerError as exc:
                todo += self.fail(query, exc)
        if self.lookup.done:
            self.wake()

    async def send_on(self, connection: Connection, query: _Query) -> None:
        query.sent = trio.current_time()
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
        lookups = self.lookups
        try:
            with trio.fail_after(max(0.0, query.hard - trio.current_time())):
                connection = await lookups.pool.connect(query.peer)
            if self.waiting.get(query.peer.node_id) is not query:
                return
            lookups.messages_sent += 1
            await self.send_on(connection, query)
        except trio.TooSlowError:
            error: BaseException = RequestTimeoutError(
                f"no answer from {query.peer.host}:{query.peer.port} in time")
        except PeerError as exc:
            error = exc
        else:
            return
        await self.send(self.fail(query, error))

    def fail(self, query: _Query, error: BaseException) -> list[SendQuery]:
        """``query`` failed for good: tell the news and the lookup."""
        node_id = query.peer.node_id
        if self.waiting.get(node_id) is not query:
            return []
        del self.waiting[node_id]
        self.holding.pop(node_id, None)
        if query.connection is not None and query.request_id is not None:
            query.connection.forget(query.request_id)  # a timeout: a late answer is no fault
        self.lookups.news.failed(query.peer, error)
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
        lookups = self.lookups
        if query.sent is not None and not isinstance(response, msg.Block):  # a block's time is its transfer's
            lookups.rtts.sample(peer.node_id, trio.current_time() - query.sent)
        news = lookups.news
        news.seen(peer)
        outcome = interpret(response, self.cid, lookups.contacts.of)
        lookup = self.lookup
        if outcome is None:
            news.answered_badly(peer, response)
            actions = lookup.on_failure(peer)
        else:
            news.served(peer.node_id)
            contacts, value = outcome
            if isinstance(value, HeldRecord):
                if self.records is not None:
                    self.records.append((peer, value.data))
                value = None
            elif isinstance(value, Holders):  # asked after the lookup, if it finds no copy
                self.providers += [c for c in value.contacts if c.node_id != lookups.own_id]
                value = None
            actions = lookup.on_response(peer, contacts, value)
        if lookup.done:
            self.wake()
        elif actions:
            await self.send(actions)
