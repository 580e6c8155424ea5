"""The trio side of replication: placement queue, fetch, repair loop.

Owns: the bounded queue of blocks waiting to be placed and the worker tasks
that place them (a FIND_NODE lookup for the block's key, then the
STORE_BLOCK requests :class:`~cas.dht.replication.Placement` asks for), the
confirmed holders of every block placed or repaired (a
:class:`~cas.dht.holders.HolderIndex`, told at once when a holder is found
dead), the background retry of blocks short of R copies, fetching a block
the node lacks (FIND_BLOCK, verified by the driver), and the periodic
repair round's I/O: it performs what
:class:`~cas.dht.repair_round.RepairRound` asks (lookups, batched HAVEs,
stores, the wait before deferred blocks, drops) with the DHT driver and
the store, and feeds the answers back.

Must never: decide where copies go, whether one may be dropped or what a
repair round does next (the sans-IO planners in :mod:`cas.dht.replication`
and :mod:`cas.dht.repair_round` do), touch the repository other than
through the :class:`ReplicaStore` it is given (the node runs those calls
in its store thread), or let one block's failure stop the others.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..blocks import Block
from ..cid import CID
from ..errors import BlockNotFoundError, CasError, InvalidBlockError, PeerError
from ..net.messages import MAX_LEASE
from ..store import DEFAULT_LEASE
from .driver import DhtDriver
from .fetcher import BlockFetcher
from .holders import HolderIndex
from .ids import key_for_digest
from .repair_round import (
    LOOKUP_CONCURRENCY,
    Action,
    AskHave,
    Copy,
    Drop,
    LookUp,
    Record,
    RepairReport,
    RepairRound,
    Wait,
)
from .replication import DEFAULT_REPLICAS, Neighbourhood, NeighbourhoodCache, Placement
from .routing import Contact
from .store_batches import StoreOutcome

PLACEMENT_WORKERS = 64
"""Blocks placed at once. Each holds one lookup or up to R stores in
flight; the stores bound for one peer share STORE_BLOCKS messages
(:mod:`cas.dht.store_batches`), and 64 blocks (~16 MiB) in flight give
those messages several blocks each during an add."""

QUEUE_SIZE = 1024
"""Blocks waiting to be placed before a client's ``put`` waits (about
256 MiB of average blocks: the add runs ahead of placement by that much)."""

QUEUED_BYTES = 64 * 1024 * 1024
"""Bytes of queued blocks kept in memory with their place in the queue, so
a worker need not read them back from the store; past it, blocks are
queued by CID only (memory stays bounded whatever the add's pace)."""

RETRY_INTERVAL = 30.0
"""Seconds between retries of blocks placed on fewer than R nodes."""

REPAIR_INTERVAL = 600.0
"""Seconds between repair rounds over every block this node holds
(Kademlia republishes hourly; blocks are checked more often because a
missing copy costs more than a stale record). Tests use a second or two."""

REPAIR_AFTER_LOSS = 2.0
"""Seconds a repair round waits after a peer is found dead (the routing
table drops it) before it starts: the other losses of the same event (a
rack, a network split) arrive meanwhile and are repaired in one round.
Repair then starts on detected failure, not only on the timer."""

MIN_LOSS_ROUNDS_GAP = 10.0
"""Seconds at least between two rounds started by losses, so a flapping
peer cannot keep the node in repair."""

DIRECT_FETCH_TIMEOUT = 1.0
"""Seconds per replica a fetch's FIND_NODE lookup for a block's likely
holders may take (a node that knows fewer than k peers)."""

FETCH_LOOKUPS = 8
"""Lookups for blocks being fetched at once (holders unknown; those known
are asked through the :class:`~cas.dht.fetcher.BlockFetcher`, whose
windows bound them)."""

INDEX_CHECK_BATCH = 4096
"""Blocks of the holder index checked against the store in one store-thread
call after a repair round (a few milliseconds: the node's other store calls
run between them)."""

BUSY_PAUSES = (0.25, 0.5, 1.0, 2.0)
"""Seconds waited before asking a peer that answered ``busy`` (its rate
limit) again; after the last, the refusal stands and the placement moves on
to the next closest node."""


class ReplicaStore(Protocol):
    """What replication needs of the node's repository (the node runs each
    call in its store thread)."""

    async def get(self, cid: CID) -> bytes: ...

    async def leases(self) -> dict[CID, float]:
        """Blocks kept for the network (may be dropped when safe elsewhere),
        each with the seconds left of its lease (0 or less: expired). Every
        other block is the node's own, which it keeps leased elsewhere."""
        ...

    async def all_blocks(self) -> list[CID]: ...

    async def drop(self, cids: list[CID]) -> list[CID]:
        """Delete those held blocks that no pin, root or writer needs."""
        ...

    async def sizes(self, cids: list[CID]) -> dict[CID, int]:
        """The size of each of ``cids`` stored here; those not stored are left out."""
        ...


@dataclass
class ReplicationStats:
    """Counters since the node started (``replication_stats``, ``cas repo stat``)."""

    queued: int = 0
    placed: int = 0
    stores_sent: int = 0
    rounds: int = 0
    last_round: RepairReport = field(default_factory=RepairReport)
    placed_bytes: int = 0
    """Bytes of blocks other nodes acknowledged storing, placement and repair."""
    repair_stores: int = 0
    """Stores acknowledged during repair rounds (copies made good)."""
    repair_bytes: int = 0
    """Bytes those repair stores moved."""
    repair_dropped: int = 0
    """Held copies released by repair rounds."""
    rounds_after_loss: int = 0
    """Repair rounds started because a peer was found dead (not by the timer)."""
    copies_lost: int = 0
    """Copies known gone because their holder was found dead (each such
    block counted below R at once, until a placement or repair counts again)."""
    refusals: int = 0
    """Stores refused (``full``, or ``busy`` after every pause)."""
    last_failure: str = ""
    """Why the last failed store failed (for ``cas repo stat``)."""
    peer_stores: Counter[int] = field(default_factory=Counter)
    """Node ID → STORE_BLOCKs it acknowledged."""
    peer_store_failures: Counter[int] = field(default_factory=Counter)
    """Node ID → STORE_BLOCKs it failed (no answer, or a broken one; refusals
    such as ``full`` are not failures)."""


def with_table(found: Sequence[Contact], dht: DhtDriver, key: int, replicas: int) -> list[Contact]:
    """A lookup's closest nodes, topped up from the routing table when the
    lookup returned fewer than ``replicas`` (peers too slow to answer it, on
    a loaded machine): the placement then asks them to store the block, and
    a store that fails moves it on as usual."""
    if len(found) >= replicas:
        return list(found)
    seen = {c.node_id for c in found}
    return [*found, *(c for c in dht.table.closest(key, dht.k) if c.node_id not in seen)]


class Replicator:
    """Replication for one node. ``await nursery.start(replicator.run)``."""

    def __init__(self, dht: DhtDriver, store: ReplicaStore, *, replicas: int = DEFAULT_REPLICAS,
                 workers: int = PLACEMENT_WORKERS, queue_size: int = QUEUE_SIZE,
                 retry_interval: float = RETRY_INTERVAL, repair_interval: float = REPAIR_INTERVAL,
                 lease: float = DEFAULT_LEASE) -> None:
        self.dht = dht
        self.store = store
        self.replicas = replicas
        self.lease = lease
        """Seconds of the leases this node renews on its own blocks' holders
        every repair round (the network's lease)."""
        self.workers = workers
        self.retry_interval = retry_interval
        self.repair_interval = repair_interval
        self._send, self._receive = trio.open_memory_channel[tuple[CID, bytes | None, int | None]](queue_size)
        self._queued_bytes = 0
        self.neighbourhoods = NeighbourhoodCache()
        self._pending: set[CID] = set()
        self.holders = HolderIndex(dht.own_id, replicas)
        self._lease_ends: dict[CID, float] = {}  # held blocks short of R: when their lease runs out (trio time)
        self._changed = trio.Event()
        self._repair_lock = trio.Lock()
        self._peer_lost = trio.Event()
        self.fetcher = BlockFetcher(dht)
        self._fetch_lookups = trio.CapacityLimiter(FETCH_LOOKUPS)
        self.stats = ReplicationStats()
        dht.peer_lost.append(self.holder_lost)
        dht.peer_lost.append(self.repair_soon)

    # -- lifetime -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.workers):
                nursery.start_soon(self._worker)
            nursery.start_soon(self._retry_loop)
            nursery.start_soon(self._repair_loop)
            await nursery.start(self.fetcher.run)
            task_status.started()

    # -- placement --------------------------------------------------------------

    async def place(self, cid: CID, data: bytes | None = None, lease: int | None = None) -> None:
        """Queue ``cid`` for placement on the R closest nodes; waits only if
        the queue is full (the add runs at most QUEUE_SIZE blocks ahead).
        ``data``, the block's bytes if the caller has them, saves reading
        them back (kept while the queue holds under QUEUED_BYTES).
        ``lease``: seconds the copies are to be kept (None: the whole
        lease, for the node's own blocks)."""
        if cid in self._pending:
            return
        self._pending.add(cid)
        self.stats.queued += 1
        if data is not None and self._queued_bytes + len(data) > QUEUED_BYTES:
            data = None
        size = 0 if data is None else len(data)
        self._queued_bytes += size
        try:
            await self._send.send((cid, data, lease))
        except BaseException:  # cancelled while the queue was full: it was never queued
            self._queued_bytes -= size
            self._pending.discard(cid)
            raise

    def copies(self, cid: CID) -> int | None:
        """Members of the placement set known to hold ``cid`` now: those its
        last placement or repair confirmed, less those found dead since
        (None: never placed)."""
        return self.holders.copies(cid)

    def pending(self, cid: CID) -> bool:
        return cid in self._pending

    async def wait_settled(self, cids: Iterable[CID], timeout: float) -> bool:
        """Wait until none of ``cids`` is queued or being placed; False if
        ``timeout`` ran out first."""
        wanted = set(cids) & self._pending
        with trio.move_on_after(timeout):
            while wanted:
                await self._changed.wait()
                wanted &= self._pending  # shrinks as they settle: each wake-up costs what is left
            return True
        return False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _worker(self) -> None:
        async for cid, data, lease in self._receive:
            if data is not None:
                self._queued_bytes -= len(data)
            try:
                holders, size = await self._place_one(cid, data, lease)
            except CasError as exc:  # the placement worker's edge: counted, and the retry loop tries again
                self.stats.last_failure = f"placing {cid}: {exc}"
                holders, size = [self.dht.own_id], None  # the local copy; the retry loop tries again
            except Exception:
                self._pending.discard(cid)
                self._notify()
                raise
            self._record(cid, holders, size=size)
            self._pending.discard(cid)
            self.stats.placed += 1
            self._notify()

    def _record(self, cid: CID, holders: Sequence[int], *, size: int | None = None,
                own: bool | None = None) -> None:
        """A placement or repair of ``cid`` confirmed ``holders`` (this node
        among them when it is a member of the placement set): its copy count."""
        self.holders.record(cid, holders, size=size, own=own)
        if (self.holders.copies(cid) or 0) >= self.replicas:
            self._lease_ends.pop(cid, None)

    def _forget(self, cid: CID) -> None:
        """``cid`` is no longer this node's to place (its lease ran out)."""
        self.holders.forget([cid])
        self._lease_ends.pop(cid, None)

    async def _place_one(self, cid: CID, data: bytes | None = None,
                         lease: int | None = None) -> tuple[list[int], int | None]:
        """Place ``cid`` for ``lease`` seconds (None: the whole lease);
        returns the members of its placement set holding it and its size
        (None if unread)."""
        if not len(self.dht.table):
            # Alone: the local copy is all there is.
            return [self.dht.own_id], None if data is None else len(data)
        key = key_for_digest(cid.routing_digest)
        if data is None:
            data = await self.store.get(cid)
        known = self.neighbourhoods.ranked_for(key, self.replicas, trio.current_time())
        if known is not None:
            plan = Placement(key, known, own_id=self.dht.own_id, local=True, replicas=self.replicas)
            await self._execute(plan, cid, data, lease)
            if plan.complete:
                return plan.holders(), len(data)
            # Short of R with a remembered answer: ask the network afresh,
            # without sending again to those that took it.
            holders = {node_id: True for node_id in plan.holders()}
        else:
            holders = {}
        plan = Placement(key, await self._find_candidates(key), own_id=self.dht.own_id,
                         local=True, replicas=self.replicas, known=holders)
        await self._execute(plan, cid, data, lease)
        return plan.holders(), len(data)

    async def _find_candidates(self, key: int) -> list[Contact]:
        """A lookup's closest nodes for ``key`` (remembered for nearby keys)."""
        found = await self.dht.find_node(key)
        self._remember(found.lookup.closest, key, found.lookup.failures)
        return with_table(found.lookup.closest, self.dht, key, self.replicas)

    def _remember(self, closest: Sequence[Contact], key: int, failures: int) -> None:
        answer = Neighbourhood(key, tuple(closest), self._exhaustive(closest, failures))
        self.neighbourhoods.add(answer, trio.current_time())

    def _exhaustive(self, closest: Sequence[Contact], failures: int) -> bool:
        """A lookup that found fewer than k with no query failing ran out of
        nodes to ask: every reachable node is in its answer."""
        return len(closest) < self.dht.k and failures == 0

    async def _execute(self, plan: Placement, cid: CID, data: bytes, lease: int | None = None) -> None:
        """Send the stores ``plan`` asks for, each for ``lease`` seconds (None:
        the whole lease), until it is done.

        In rounds: every store the plan asks for at once goes out together
        (one wait for all their answers), then the plan is told each outcome
        and may ask for more (a refusal or failure moves its window)."""
        actions = plan.next_actions()
        while actions:
            peers = [action.peer for action in actions]
            outcomes = await self._store_round(peers, cid, data, lease)
            actions = []
            for peer, outcome in zip(peers, outcomes):
                if outcome.status == "stored":
                    actions += plan.on_stored(peer)
                elif outcome.status == "refused":
                    actions += plan.on_refused(peer)
                else:
                    actions += plan.on_failed(peer)

    async def _store_round(self, peers: list[Contact], cid: CID, data: bytes, lease: int | None, *,
                           repair: bool = False) -> list[StoreOutcome]:
        """STORE_BLOCK ``cid`` on every one of ``peers`` at once, for ``lease``
        seconds (None: the whole lease), and each one's final outcome (busy
        and dropped-connection stores retried, :meth:`_settle_stores`),
        counted in the stats; a peer that failed leaves the remembered
        lookup answers."""
        self.stats.stores_sent += len(peers)
        outcomes = await self.dht.store_block_on(peers, cid, data, lease)
        if any(outcome.status != "stored" for outcome in outcomes):
            outcomes = await self._settle_stores(peers, outcomes, cid, data, lease)
        for peer, outcome in zip(peers, outcomes):
            if outcome.status == "stored":
                self._count_store(peer, len(data), repair)
            elif outcome.status == "refused":
                self.stats.refusals += 1
            else:
                self.stats.peer_store_failures[peer.node_id] += 1
                self.neighbourhoods.forget(peer.node_id)
        return outcomes

    async def _settle_stores(self, peers: list[Contact], outcomes: list[StoreOutcome],
                             cid: CID, data: bytes, lease: int | None) -> list[StoreOutcome]:
        """The final outcome of each store that did not succeed at once,
        each retried on its own: a busy peer after its rate limit's pause,
        rather than moving on; a connection closed under the request (two
        nodes that dialled each other at once keep one) once more."""
        settled = list(outcomes)

        async def settle(index: int) -> None:
            peer, outcome = peers[index], outcomes[index]
            for pause in BUSY_PAUSES:
                if not (outcome.status == "refused" and outcome.reason.startswith("busy")):
                    break
                await trio.sleep(pause)
                outcome = await self.dht.store_block(peer, cid, data, lease)
            if outcome.status == "failed" and "connection" in outcome.reason:
                outcome = await self.dht.store_block(peer, cid, data, lease)
            if outcome.status == "failed":
                self.stats.last_failure = outcome.reason
            settled[index] = outcome

        async with trio.open_nursery() as nursery:
            for index, outcome in enumerate(outcomes):
                if outcome.status != "stored":
                    nursery.start_soon(settle, index)
        return settled

    def _count_store(self, peer: Contact, size: int, repair: bool) -> None:
        stats = self.stats
        stats.peer_stores[peer.node_id] += 1
        stats.placed_bytes += size
        if repair:
            stats.repair_stores += 1
            stats.repair_bytes += size

    def short_blocks(self) -> int:
        """Blocks known to have fewer than R copies now: as their last
        placement or repair round counted them, less the copies of holders
        found dead since."""
        return self.holders.short()

    def holder_lost(self, node_id: int) -> None:
        """A peer was found dead (the routing table dropped it): the copies
        it held are gone from the counts now, not at the next round."""
        self.stats.copies_lost += len(self.holders.lose(node_id))

    async def _check_index(self) -> None:
        """After a round: blocks no longer stored here (dropped, collected)
        leave the holder index, and the sizes it lacks are learnt, a slice
        at a time."""
        cids = self.holders.cids()
        for start in range(0, len(cids), INDEX_CHECK_BATCH):
            seen = self.holders.snapshot(cids[start:start + INDEX_CHECK_BATCH])
            sizes = await self.store.sizes([cid for cid, _ in seen])
            self.holders.reconcile(seen, sizes)

    async def _retry_loop(self) -> None:
        while True:
            await trio.sleep(self.retry_interval)
            for cid in self.holders.short_cids():
                if cid in self._pending:
                    continue
                end = self._lease_ends.get(cid)
                left = None if end is None else math.floor(end - trio.current_time())
                if left is None:
                    if self.holders.is_own(cid):
                        await self.place(cid)  # the whole lease
                    # else held, short since a holder died: the round that
                    # loss started places it, for what is left of its lease
                elif left >= 1:
                    await self.place(cid, lease=min(left, MAX_LEASE))
                else:  # held, and nobody renewed it: never placed again
                    self._forget(cid)

    # -- fetching -----------------------------------------------------------------

    async def fetch(self, cid: CID, *, urgent: bool = False) -> Block | None:
        """The block from the network (verified, by the driver: once), or None
        if no node has it.

        Its holders are the nodes placement chose, the R closest to its key:
        when a remembered lookup answer names them (see
        :class:`~cas.dht.replication.Neighbourhood`), the
        :class:`~cas.dht.fetcher.BlockFetcher` asks them, several blocks in
        flight per holder and spread over them, passing over a silent one
        after one patience (:mod:`.fetch_plan`); otherwise (or if none of
        them gives it) a FIND_BLOCK lookup looks for it. ``urgent``: a
        reader waits for it (it goes before blocks fetched ahead)."""
        if not len(self.dht.table):
            return None
        key = key_for_digest(cid.routing_digest)
        likely = self.neighbourhoods.ranked_for(key, self.replicas, trio.current_time())
        small = len(self.dht.table) < self.dht.k
        if likely is None and small:
            # A node that knows fewer than k peers knows (nearly) all of
            # them: the R closest of its table are asked at once, a lookup's
            # round trips saved (the first block of a read pays them).
            likely = self.dht.table.closest(key, self.replicas)
            block = await self.fetcher.fetch(cid, likely, urgent=urgent)
            if block is not None:
                return block
            # Not there: a FIND_NODE lookup costs what a FIND_BLOCK one
            # does, and its answer serves every key.
            with trio.move_on_after(DIRECT_FETCH_TIMEOUT * self.replicas):
                async with self._fetch_lookups:
                    likely = self.neighbourhoods.ranked_for(key, self.replicas, trio.current_time())
                    if likely is None:
                        likely = await self._find_candidates(key)
        if likely:
            block = await self.fetcher.fetch(cid, likely[: self.replicas], urgent=urgent)
            if block is not None:
                return block
        async with self._fetch_lookups:
            found = await self.dht.find_block(cid)
        if found.block is not None:
            return found.block
        # No copy where copies belong: ask those others know hold it (the
        # node that added it, while its copies are not placed).
        if found.providers:
            return await self.fetcher.fetch(cid, found.providers[: self.replicas], urgent=urgent)
        return None

    def fetch_ahead(self, cids: Sequence[CID]) -> None:
        """Want ``cids`` from their holders, in this order, where a
        remembered lookup answer names them (the :meth:`fetch` of each,
        which a reader's read-ahead starts next, then joins its want)."""
        now = trio.current_time()
        small = len(self.dht.table) < self.dht.k
        for cid in cids:
            key = key_for_digest(cid.routing_digest)
            likely = self.neighbourhoods.ranked_for(key, self.replicas, now)
            if likely is None and small:
                likely = self.dht.table.closest(key, self.replicas)
            if likely:
                self.fetcher.want(cid, likely[: self.replicas])

    def hurry(self, cid: CID) -> None:
        """A reader now waits for ``cid``, which is being fetched ahead of it."""
        self.fetcher.hurry(cid)

    # -- repair -------------------------------------------------------------------

    def repair_soon(self, node_id: int | None = None) -> None:
        """A peer was found dead: start a repair round soon (after
        REPAIR_AFTER_LOSS) instead of at the next interval."""
        self._peer_lost.set()

    async def _repair_loop(self) -> None:
        last_loss_round = -math.inf
        while True:
            with trio.move_on_after(self.repair_interval):
                await self._peer_lost.wait()
                await trio.sleep(max(REPAIR_AFTER_LOSS,
                                     last_loss_round + MIN_LOSS_ROUNDS_GAP - trio.current_time()))
                last_loss_round = trio.current_time()
                self.stats.rounds_after_loss += 1
            self._peer_lost = trio.Event()
            await self.repair()

    async def repair(self) -> RepairReport:
        """One round over every block this node holds (the steps and their
        rules are :class:`~cas.dht.repair_round.RepairRound`'s): this driver
        performs the round's actions as they come, concurrently (the round
        keeps ``LOOKUP_CONCURRENCY`` lookups out; here at most twice that
        many HAVEs and ``workers`` blocks' copies run at a time), records
        each block's holders and drops what the round releases."""
        async with self._repair_lock:
            if not len(self.dht.table):
                return RepairReport()
            leases = await self.store.leases()
            repair = RepairRound(await self.store.all_blocks(), leases, own_id=self.dht.own_id,
                                 replicas=self.replicas, lease=self.lease)
            await _RoundDriver(self, repair).run()
            await self._check_index()
            self.stats.rounds += 1
            self.stats.last_round = repair.report
            return repair.report


class _RoundDriver:
    """Performs one :class:`~cas.dht.repair_round.RepairRound`'s actions for
    a :class:`Replicator`, each in a task of its own as it comes, and feeds
    the answers back, until the round is done."""

    def __init__(self, replicator: Replicator, repair: RepairRound) -> None:
        self.replicator = replicator
        self.dht = replicator.dht
        self.repair = repair
        self.have_limit = trio.CapacityLimiter(LOOKUP_CONCURRENCY * 2)
        # Copies are made for many blocks at once, as an add's are, so that
        # the stores bound for one peer share messages; at most `workers`
        # blocks' bytes are in memory at a time.
        self.copy_limit = trio.CapacityLimiter(replicator.workers)
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as self._nursery:
            self.perform(self.repair.start(trio.current_time()))
        assert self.repair.done, self.repair.phase  # every action answered: nothing left to wait for

    def perform(self, actions: Iterable[Action]) -> None:
        assert self._nursery is not None
        for action in actions:
            if isinstance(action, Record):
                self.replicator._record(action.cid, action.holders, own=action.own)
                if action.lease_end is not None:  # retried for what is left of its lease
                    self.replicator._lease_ends[action.cid] = action.lease_end
            elif isinstance(action, LookUp):
                self._nursery.start_soon(self.look_up, action)
            elif isinstance(action, AskHave):
                self._nursery.start_soon(self.ask, action)
            elif isinstance(action, Copy):
                self._nursery.start_soon(self.copy, action)
            elif isinstance(action, Wait):
                self._nursery.start_soon(self.wait, action)
            else:
                self._nursery.start_soon(self.drop, action)

    async def look_up(self, action: LookUp) -> None:
        try:
            found = await self.dht.find_node(action.key)
        except PeerError:
            self.perform(self.repair.on_lookup_failed(action.cid, now=trio.current_time()))
            return
        closest, failures = found.lookup.closest, found.lookup.failures
        self.perform(self.repair.on_lookup(action.cid, closest, now=trio.current_time(),
                                           exhaustive=self.replicator._exhaustive(closest, failures)))

    async def ask(self, action: AskHave) -> None:
        async with self.have_limit:
            present = await self.dht.have(action.peer, action.cids, action.lease)
        self.perform(self.repair.on_have(action.peer, action.cids, present, now=trio.current_time()))

    async def copy(self, action: Copy) -> None:
        """One block's copies, round after round, its bytes read once."""
        async with self.copy_limit:
            try:
                data = await self.replicator.store.get(action.cid)
            except (BlockNotFoundError, InvalidBlockError):  # gone meanwhile (gc, a drop), or damaged
                self.perform(self.repair.on_unreadable(action.cid, now=trio.current_time()))
                return
            step: Copy | None = action
            while step is not None:
                peers = list(step.peers)
                outcomes = await self.replicator._store_round(peers, step.cid, data, step.lease, repair=True)
                answers = [(peer, outcome.status) for peer, outcome in zip(peers, outcomes)]
                actions = self.repair.on_copied(step.cid, answers, now=trio.current_time())
                step = next((a for a in actions if isinstance(a, Copy) and a.cid == action.cid), None)
                self.perform(a for a in actions if a is not step)

    async def wait(self, action: Wait) -> None:
        await trio.sleep_until(action.until)
        self.perform(self.repair.on_time(trio.current_time()))

    async def drop(self, action: Drop) -> None:
        for cid in action.expired:
            self.replicator._forget(cid)
        dropped = len(await self.replicator.store.drop(list(action.cids)))
        self.replicator.stats.repair_dropped += dropped
        self.perform(self.repair.on_dropped(dropped, now=trio.current_time()))
