"""One repair round, as a state machine with no I/O.

Theory of operation
===================

Every node that holds a block keeps it on the R nodes nearest its key
(:mod:`cas.dht.replication`). Nodes come and go, so every node runs a
*repair round* now and then (every ``REPAIR_INTERVAL``, and soon after a
peer is found dead) over every block it holds: Kademlia's republish, but
for blocks and without resending what is already there. This object is
that round and nothing else, shaped as rust-libp2p kad's jobs and our
:class:`~cas.dht.lookup.Lookup` are: the driver hands it *events* (what the
store holds, a lookup's answer, a HAVE's answer, how the stores went, the
time) and gets back *actions* (look this key up, ask this peer HAVE, copy
this block there, wait, record, drop). It never opens a socket, reads a
clock or touches the repository, so the node's trio driver
(:meth:`cas.dht.replicator.Replicator.repair`) and the churn simulator
(:mod:`cas.dht.sim_repair`) run the same round, and the tests drive it by
hand.

The round, in order:

1. **Sort.** The blocks held, each own (no lease: this node's user wants
   it) or held for the network with the seconds left of its lease. A held
   block with under a second left has run out (leases travel in whole
   seconds, rounded down, so copying one never adds time): nobody wants it
   kept, so it is not repaired but dropped at the end.
2. **Look up** each block's closest nodes: a FIND_NODE lookup of its key,
   at most ``LOOKUP_CONCURRENCY`` at a time, unless a lookup made earlier in
   this round provably covers it (:class:`~cas.dht.replication.Neighbourhood`,
   asked for 2R nodes so that refusals can move the window). A block whose
   lookup failed sits the round out.
3. **Ask** HAVE, one batch of at most ``HAVE_BATCH`` blocks per message and
   peer, about the blocks whose R nearest other nodes include that peer
   (:func:`~cas.dht.replication.have_batches`). A HAVE about own blocks
   carries the whole lease: every holder asked extends the block's lease,
   so an owner renews every round at no extra message. One about held
   blocks carries none (0). A HAVE that went unanswered, or answered with a
   different count, says nothing: the plan stores there, and a peer that
   had the block just acknowledges.
4. **Plan** each block: a :class:`~cas.dht.replication.Placement` seeded
   with the answers. Done: concluded. Else, if it **defers** (a holder
   nearer the key is known: it saw the same death and makes the copies),
   the block waits. Else its copies are made, in rounds: every store the
   plan asks for at once is one :class:`Copy`; the outcomes come back
   together and may ask for more (a refusal or a failure moves the window).
   Own blocks are stored for the whole lease, held ones for what is left of
   theirs (``None`` and whole seconds, as the wire has it).
5. **Defer.** Once every copy of step 4 is made, if blocks waited: wait
   ``REPAIR_DEFER``, ask them HAVE again (step 3), plan them again and make
   the copies still missing, this time without deferring. One copy travels,
   and a nearer holder that did not notice the death costs only the delay.
6. **Conclude** each block planned, as its copies end: a :class:`Record`
   of the placement set's members that hold it (the holder index's live
   count), with, for a held block still short of R, the time its lease
   runs out (until then the node's retry places it for what is left).
   A held block :func:`~cas.dht.replication.may_drop` releases, and every
   block whose lease ran out, go in one :class:`Drop` at the end.

Rules for this file:

1. No I/O, no clocks, no randomness: time comes in as ``now`` with every
   event, and the round asks to wait by a :class:`Wait` action.
2. Each :class:`LookUp`, :class:`AskHave`, :class:`Copy`, :class:`Wait`
   and :class:`Drop` is answered by exactly one event; :class:`Record` by
   none. Reports the round did not ask for (unsolicited, duplicate, late)
   are ignored and return no actions.
3. The placement rules are :mod:`cas.dht.replication`'s; this file only
   orders them into a round.
4. Bounded: at most ``LOOKUP_CONCURRENCY`` lookups are out at once; HAVEs
   and copies are as many as the blocks call for, and the driver bounds
   how many run at once (a block's bytes are the driver's, never here).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from ..cid import CID
from ..net.messages import MAX_LEASE
from .ids import key_for_digest
from .replication import (
    DEFAULT_REPLICAS,
    Neighbourhood,
    NeighbourhoodCache,
    Placement,
    Store,
    chunks,
    have_batches,
    may_drop,
)
from .routing import Contact

LOOKUP_CONCURRENCY = 4
"""Lookups in flight during a repair round."""

HAVE_BATCH = 32
"""CIDs asked about in one HAVE (the wire allows 1024). A node answers yes
only for copies it verified within its scrub period, and re-reads at most
16 MiB per HAVE to verify the others (``cas.node.config.HAVE_VERIFY_BYTES``);
past that it answers no, and the asker sends a copy it already has. Copies
placed minutes ago have not been re-read yet, so a repair round's batches
of 1024 were answered no past their first ~60 blocks and sent again:
bench/churn.py measured 3.2-6.4 times the bytes to restore. 32 blocks of
the 256 KiB average chunk are 8 MiB, within the answerer's budget even for
blocks twice that size; it costs one more small message per 32 blocks."""

REPAIR_DEFER = 5.0
"""Seconds a holder that knows of a nearer holder of a block waits, in a
repair round, before it asks again and makes the copies still missing: the
nearer one makes them first (measured before: every surviving holder sent
the same copy, 1.55-2.3x the bytes to restore at R = 3)."""

@dataclass
class RepairReport:
    """What one repair round did."""

    blocks: int = 0
    stores: int = 0
    dropped: int = 0
    short: int = 0
    expired: int = 0
    """Held blocks whose lease had run out: not repaired, dropped."""


# -- actions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LookUp:
    """Action: find the nodes closest to ``key`` (FIND_NODE), for ``cid``;
    report :meth:`RepairRound.on_lookup` or :meth:`RepairRound.on_lookup_failed`."""

    cid: CID
    key: int


@dataclass(frozen=True, slots=True)
class AskHave:
    """Action: ask ``peer`` HAVE about ``cids``, asking it to keep them
    ``lease`` more seconds (0: no renewal); report :meth:`RepairRound.on_have`."""

    peer: Contact
    cids: tuple[CID, ...]
    lease: int


@dataclass(frozen=True, slots=True)
class Copy:
    """Action: STORE_BLOCK ``cid`` on each of ``peers`` at once, for ``lease``
    seconds (None: the receiver's whole lease); report every outcome
    together with :meth:`RepairRound.on_copied`, or, if the block can no
    longer be read here, :meth:`RepairRound.on_unreadable`. Further copies
    of the same block may follow, once each round's outcomes are in."""

    cid: CID
    peers: tuple[Contact, ...]
    lease: int | None


@dataclass(frozen=True, slots=True)
class Wait:
    """Action: call :meth:`RepairRound.on_time` once the time is ``until``."""

    until: float


@dataclass(frozen=True, slots=True)
class Record:
    """Action (no report): ``cid``'s placement set members confirmed to hold
    it this round, nearest first (this node among them when it is a member):
    its live copy count. ``lease_end``: for a held block left short of R,
    when its lease runs out (the time of the round's first plans plus what
    was left of it), else None."""

    cid: CID
    holders: tuple[int, ...]
    own: bool
    lease_end: float | None


@dataclass(frozen=True, slots=True)
class Drop:
    """Action: drop the held copies ``cids`` here (those nothing else
    needs); ``expired`` among them ran out of lease and are to be forgotten
    by the holder index. Report :meth:`RepairRound.on_dropped`."""

    cids: tuple[CID, ...]
    expired: tuple[CID, ...]


Action = LookUp | AskHave | Copy | Wait | Record | Drop


class Phase(Enum):
    """Where a round is (each phase's events are ignored in the others)."""

    NEW = "new"
    LOOKING = "looking"
    ASKING = "asking"
    COPYING = "copying"
    DEFERRING = "deferring"  # waiting REPAIR_DEFER before asking again
    DROPPING = "dropping"
    DONE = "done"


@dataclass
class _Copying:
    plan: Placement
    sent: int


class RepairRound:
    """One repair round over the blocks a node holds; see the module docstring.

    ``blocks`` are every block stored here; ``leases`` those held for the
    network, each with the seconds left of its lease (every other block is
    own). ``lease`` is the network's lease, renewed on own blocks' holders.
    """

    def __init__(self, blocks: Iterable[CID], leases: Mapping[CID, float], *, own_id: int,
                 lease: float, replicas: int = DEFAULT_REPLICAS) -> None:
        self.own_id = own_id
        self.replicas = replicas
        self._leases = dict(leases)
        self._expired = [cid for cid, left in self._leases.items() if left < 1]
        self._blocks = [cid for cid in dict.fromkeys(blocks) if self._leases.get(cid, 1) >= 1]  # each once
        self._renewal = min(math.ceil(lease), MAX_LEASE)
        self.report = RepairReport(blocks=len(self._blocks), expired=len(self._expired))
        self.phase = Phase.NEW
        self._deferring = False  # the second pass: the deferred blocks, asked again
        self._queue = deque(self._blocks)
        self._looking: set[CID] = set()
        self._this_round = NeighbourhoodCache(ttl=math.inf, size=256)
        self._closest: dict[CID, list[Contact]] = {}
        self._asked: Counter[tuple[int, tuple[CID, ...]]] = Counter()  # HAVEs out: (peer, cids) → how many
        self._unanswered = 0
        self._answers: dict[CID, dict[int, bool]] = {}
        self._planned_at = 0.0
        self._copying: dict[CID, _Copying] = {}
        self._deferred: list[CID] = []
        self._wake_at = math.inf
        self._droppable: list[CID] = list(self._expired)

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    # -- events -------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Begin the round: the first lookups (or, with nothing to look up, what follows)."""
        if self.phase is not Phase.NEW:
            return []
        self.phase = Phase.LOOKING
        return self._look_up(now)

    def on_lookup(self, cid: CID, closest: Sequence[Contact], *, exhaustive: bool,
                  now: float) -> list[Action]:
        """The lookup of ``cid``'s key found ``closest`` (nearest first, this
        node left out); ``exhaustive``: it ran out of nodes to ask, so every
        reachable node is among them."""
        if cid not in self._looking:
            return []
        self._looking.discard(cid)
        self._this_round.add(Neighbourhood(key_for_digest(cid.routing_digest), tuple(closest), exhaustive), now)
        self._closest[cid] = list(closest)
        return self._look_up(now)

    def on_lookup_failed(self, cid: CID, *, now: float) -> list[Action]:
        """The lookup of ``cid``'s key failed: the block sits this round out."""
        if cid not in self._looking:
            return []
        self._looking.discard(cid)
        return self._look_up(now)

    def on_have(self, peer: Contact, cids: Sequence[CID], present: Sequence[bool] | None, *,
                now: float) -> list[Action]:
        """``peer`` answered HAVE about ``cids``: ``present`` per block, or
        None if it did not answer (then it is not known to hold any)."""
        asked = (peer.node_id, tuple(cids))
        if self.phase is not Phase.ASKING or not self._asked[asked]:
            return []
        self._asked[asked] -= 1
        self._unanswered -= 1
        if present is not None and len(present) == len(cids):
            for cid, has in zip(cids, present):
                self._answers.setdefault(cid, {})[peer.node_id] = has
        if self._unanswered:
            return []
        return self._plan(now)

    def on_copied(self, cid: CID, outcomes: Iterable[tuple[Contact, str]], *, now: float) -> list[Action]:
        """How each store of the last :class:`Copy` of ``cid`` went: ``stored``
        (acknowledged), ``refused`` (full, busy) or anything else (failed),
        as :class:`~cas.dht.store_batches.StoreOutcome` says."""
        copying = self._copying.get(cid)
        if copying is None:
            return []
        plan = copying.plan
        more: list[Store] = []
        for peer, status in outcomes:
            if status == "stored":
                more += plan.on_stored(peer)
            elif status == "refused":
                more += plan.on_refused(peer)
            else:
                more += plan.on_failed(peer)
        if more:
            copying.sent += len(more)
            return [Copy(cid, tuple(store.peer for store in more), self._copy_lease(cid))]
        del self._copying[cid]
        self.report.stores += copying.sent
        return [self._conclude(cid, plan), *self._copies_made(now)]

    def on_unreadable(self, cid: CID, *, now: float) -> list[Action]:
        """``cid`` is gone from this node (collected, dropped) before its
        copies were made: it is left out of the round."""
        if self._copying.pop(cid, None) is None:
            return []
        return self._copies_made(now)

    def on_time(self, now: float) -> list[Action]:
        """The time is ``now``: after ``REPAIR_DEFER``, the deferred blocks are asked about again."""
        if self.phase is not Phase.DEFERRING or now < self._wake_at:
            return []
        self._deferring = True
        return self._ask({cid: self._closest[cid] for cid in self._deferred}, now)

    def on_dropped(self, dropped: int, *, now: float) -> list[Action]:
        """The :class:`Drop` deleted ``dropped`` copies (some may be kept: pinned, being written)."""
        if self.phase is not Phase.DROPPING:
            return []
        self.report.dropped = dropped
        self.phase = Phase.DONE
        return []

    # -- the steps --------------------------------------------------------------------

    def _look_up(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while len(self._looking) < LOOKUP_CONCURRENCY and self._queue:
            cid = self._queue.popleft()
            key = key_for_digest(cid.routing_digest)
            # 2R, not R: the plan moves past refusals to the next closest.
            known = self._this_round.ranked_for(key, 2 * self.replicas, now)
            if known is not None:
                self._closest[cid] = known
            else:
                self._looking.add(cid)
                actions.append(LookUp(cid, key))
        if self._looking or self._queue:
            return actions
        return self._ask(self._closest, now)

    def _ask(self, closest: Mapping[CID, Sequence[Contact]], now: float) -> list[Action]:
        """HAVE, batched per peer, about each block's R nearest other nodes."""
        self.phase = Phase.ASKING
        windows = {cid: contacts[: self.replicas] for cid, contacts in closest.items()}
        contacts = {c.node_id: c for window in windows.values() for c in window}
        asks: list[AskHave] = []
        for lease, own in ((self._renewal, True), (0, False)):
            by_peer = have_batches({cid: w for cid, w in windows.items() if self._own(cid) is own}, HAVE_BATCH)
            for node_id, cids in by_peer.items():
                for batch in chunks(cids, HAVE_BATCH):
                    asks.append(AskHave(contacts[node_id], tuple(batch), lease))
        self._asked = Counter((ask.peer.node_id, ask.cids) for ask in asks)
        self._unanswered = len(asks)
        self._answers = {}
        if not asks:
            return self._plan(now)
        return list(asks)

    def _plan(self, now: float) -> list[Action]:
        self.phase = Phase.COPYING
        if self._deferring:
            cids = self._deferred
        else:
            self._planned_at = now
            cids = [cid for cid in self._blocks if cid in self._closest]
        actions: list[Action] = []
        for cid in cids:
            plan = Placement(key_for_digest(cid.routing_digest), self._closest[cid], own_id=self.own_id, local=True,
                             replicas=self.replicas, known=self._answers.get(cid, {}))
            if plan.done:
                actions.append(self._conclude(cid, plan))
            elif not self._deferring and plan.defers():
                self._deferred.append(cid)  # a nearer holder makes these copies; fill what it has not
            else:
                stores = plan.next_actions()
                self._copying[cid] = _Copying(plan, len(stores))
                actions.append(Copy(cid, tuple(store.peer for store in stores), self._copy_lease(cid)))
        return actions + self._copies_made(now)

    def _copies_made(self, now: float) -> list[Action]:
        """After a block's copies ended: the wait before the deferred blocks,
        or the drop, once the last copy of the pass is made."""
        if self._copying:
            return []
        if self._deferred and not self._deferring:
            self.phase = Phase.DEFERRING
            self._wake_at = now + REPAIR_DEFER
            return [Wait(self._wake_at)]
        if self._droppable:
            self.phase = Phase.DROPPING
            return [Drop(tuple(self._droppable), tuple(self._expired))]
        self.phase = Phase.DONE
        return []

    def _conclude(self, cid: CID, plan: Placement) -> Record:
        own = self._own(cid)
        lease_end = None
        if not plan.complete:
            self.report.short += 1
            if not own:  # retried for what is left of its lease
                lease_end = self._planned_at + self._leases[cid]
        if may_drop(plan, own=own):
            self._droppable.append(cid)
        return Record(cid, tuple(plan.holders()), own, lease_end)

    def _own(self, cid: CID) -> bool:
        return cid not in self._leases

    def _copy_lease(self, cid: CID) -> int | None:
        """Own: the whole lease (None); held: what is left of it, in whole seconds."""
        return None if self._own(cid) else min(math.floor(self._leases[cid]), MAX_LEASE)
