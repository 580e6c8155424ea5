"""Replication planning: where a block's copies go, and when one may be dropped.

Theory of operation
===================

A block's *key* is its BLAKE3 digest (:func:`cas.dht.ids.key_for_digest`;
another hash's is derived from its multihash, ``CID.routing_digest``),
in the same space as node IDs. Its **placement set** is the ``R`` nodes
closest to the key that are willing and able to keep it: walk the nodes
nearest first (this node included, at its own distance), skip those that
refused (quota full) or failed, and take the first ``R``. Every node uses
the same rule, with the same input (a lookup's k closest), so they agree on
who is responsible without talking about it; a node is only ever asked to
*add* a copy, never told to delete one.

* **Placement** (an add, a repair round): :class:`Placement` is handed the
  ranked candidates and what is already known (this node's copy, HAVE
  answers). It asks for STORE_BLOCK to the window's members not known to
  have the block, moves the window past each refusal or failure to the next
  closest, and is done when every member of the window has the block or the
  candidates run out. ``copies`` is how many members have it.
* **Repair** is the same placement run periodically, for every block a node
  holds, after one batched HAVE per peer (:func:`have_batches`) — Kademlia's
  republish, but for blocks and without resending what is already there. A
  newcomer closer than a holder enters the window, answers HAVE with false
  and receives a copy: that is the handover.
* **One copier.** All the holders of a block repair it in the same round
  after a death (they all see it), and each would send the missing copy.
  So a holder that knows of a nearer one (:meth:`Placement.defers`) leaves
  the copies to it, asks again a little later, and fills only what is
  still missing: one copy travels, and a nearer holder that did not notice
  the death costs only the delay.
* **Dropping** (:func:`may_drop`): a node keeps a block it holds *for the
  network* only while it is in the placement set. Once it is not, it drops
  the block, but only after every member of the window has confirmed a copy
  (HAVE true or STORE acknowledged) in this very round, so a block is never
  left with fewer than ``R`` copies by its own holders. Own blocks (the
  user's: put locally, pinned, under the namespace) are never dropped; the
  caller passes ``own=True``.

Rules for this file (as h11's state module has):

1. No I/O, no clocks, no randomness: time comes in as arguments,
   answers come in as method calls.
2. A contact is reported at most once; reports about contacts the plan never
   asked are ignored (a late or duplicate answer cannot corrupt the plan).
3. Everything here is bounded by the candidates handed in (a lookup's k).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from .ids import NodeID
from .routing import Contact

DEFAULT_REPLICAS = 3
"""R: copies kept of every block on the nodes closest to it (DESIGN.md)."""

_T = TypeVar("_T")

MAX_STORES_IN_FLIGHT = DEFAULT_REPLICAS
"""STORE_BLOCK requests one placement has outstanding: one per window slot."""


class Slot(Enum):
    """What a placement knows about one candidate."""

    UNKNOWN = "unknown"  # not asked yet
    ASKED = "asked"  # STORE_BLOCK in flight
    HAS = "has"  # holds the block (HAVE true, STORE acknowledged, or this node's copy)
    REFUSED = "refused"  # said no (full, rate limited): the next closest takes its place
    FAILED = "failed"  # did not answer or broke the protocol


@dataclass(frozen=True)
class Store:
    """Action: send STORE_BLOCK for the plan's block to ``peer``."""

    peer: Contact


class Placement:
    """Where one block's R copies go. See the module docstring.

    ``candidates`` are the k closest contacts from a lookup (this node left
    out); ``own_id`` is this node, ranked among them by distance; ``local``
    says whether this node holds a copy (it then fills its own slot if it is
    close enough). ``known`` pre-loads HAVE answers: node ID → present.
    """

    def __init__(self, key: int, candidates: Sequence[Contact], *, own_id: int | None = None,
                 local: bool = False, replicas: int = DEFAULT_REPLICAS,
                 known: Mapping[int, bool] | None = None) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.key = key
        self.replicas = replicas
        self.own_id = own_id
        ranked: dict[int, Contact | None] = {}
        for contact in candidates:
            if contact.node_id != own_id:
                ranked.setdefault(contact.node_id, contact)
        if own_id is not None:
            ranked[own_id] = None  # None: this node
        self._order = sorted(ranked, key=lambda node_id: node_id ^ key)
        self._contacts = ranked
        self._state: dict[int, Slot] = dict.fromkeys(ranked, Slot.UNKNOWN)
        if own_id is not None:
            # This node never sends to itself: it has the block or it is not a candidate.
            self._state[own_id] = Slot.HAS if local else Slot.FAILED
        for node_id, present in (known or {}).items():
            if node_id in self._state and node_id != own_id and present:
                self._state[node_id] = Slot.HAS

    # -- the window -------------------------------------------------------------

    def window(self) -> list[int]:
        """The current placement set: the first R candidates, nearest first,
        that have not refused or failed."""
        out = []
        for node_id in self._order:
            if self._state[node_id] in (Slot.REFUSED, Slot.FAILED):
                continue
            out.append(node_id)
            if len(out) == self.replicas:
                break
        return out

    def next_actions(self) -> list[Store]:
        """STORE_BLOCK requests to send now (each peer at most once)."""
        actions = []
        for node_id in self.window():
            if self._state[node_id] is Slot.UNKNOWN:
                self._state[node_id] = Slot.ASKED
                contact = self._contacts[node_id]
                assert contact is not None  # this node is HAS or FAILED, never UNKNOWN
                actions.append(Store(contact))
        return actions

    # -- events -----------------------------------------------------------------

    def on_stored(self, peer: Contact) -> list[Store]:
        """``peer`` acknowledged STORE_BLOCK (it verified and kept the block)."""
        return self._settle(peer, Slot.HAS)

    def on_refused(self, peer: Contact) -> list[Store]:
        """``peer`` refused (full, rate limited): the next closest is asked."""
        return self._settle(peer, Slot.REFUSED)

    def on_failed(self, peer: Contact) -> list[Store]:
        """``peer`` did not answer or answered nonsense."""
        return self._settle(peer, Slot.FAILED)

    def _settle(self, peer: Contact, outcome: Slot) -> list[Store]:
        if self._state.get(peer.node_id) is not Slot.ASKED:
            return []  # never asked, or already settled: ignored (rule 2)
        self._state[peer.node_id] = outcome
        return self.next_actions()

    # -- results ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Nothing is in flight and nothing more can be asked."""
        return all(self._state[n] is not Slot.ASKED and self._state[n] is not Slot.UNKNOWN
                   for n in self.window())

    @property
    def copies(self) -> int:
        """Members of the placement set known to hold the block (this node
        included when it is one of them)."""
        return sum(1 for n in self.window() if self._state[n] is Slot.HAS)

    @property
    def complete(self) -> bool:
        """R members of the placement set hold the block."""
        return self.copies >= self.replicas

    def holders(self) -> list[int]:
        """Node IDs of the placement set that hold the block, nearest first."""
        return [n for n in self.window() if self._state[n] is Slot.HAS]

    def defers(self) -> bool:
        """Should this node leave the missing copies to another holder?
        True when a node nearer the key than this node is known to hold
        the block: every holder repairs the same block in the same round
        (they see the same death), and that one makes the copies; this
        node asks again a little later and fills only what is still
        missing (see ``REPAIR_DEFER`` in :mod:`cas.dht.repair_round`)."""
        for node_id in self._order:
            if self._state[node_id] is Slot.HAS:
                return node_id != self.own_id
        return False

    def responsible(self) -> bool:
        """Is this node in the placement set?"""
        return self.own_id is not None and self.own_id in self.window()

    def state(self, node_id: int) -> Slot | None:
        return self._state.get(node_id)


@dataclass(frozen=True)
class Neighbourhood:
    """A lookup's answer, reused for other keys it provably covers.

    ``closest`` are the k nodes closest to ``target`` that answered (this
    node left out); ``exhaustive`` says the lookup ran out of nodes to ask
    before it found k, so every node reachable is in it (a network of
    fewer than k+1 nodes).

    Why it can answer for another key: for any node N outside the set,
    d(N, target) > D, the distance of the set's farthest member. For a key
    with δ = d(key, target), d(N, key) = d(N, target) XOR δ keeps every bit
    of d(N, target) above δ's highest bit, so d(N, key) ≥ ((D + 1) >> b) << b
    with b = δ.bit_length(). Members of the set closer to the key than that
    bound are ranked correctly against every node outside it.
    """

    target: int
    closest: tuple[Contact, ...]
    exhaustive: bool

    def ranked_for(self, key: int, wanted: int) -> list[Contact] | None:
        """The members provably nearest to ``key``, nearest first, if there
        are at least ``wanted`` of them (or all of them, when the answer is
        exhaustive); else None: a lookup is needed."""
        if self.exhaustive:
            return sorted(self.closest, key=lambda c: c.node_id ^ key)  # there is no one else to rank
        if not self.closest:
            return None
        shift = (key ^ self.target).bit_length()
        bound = ((self._farthest + 1) >> shift) << shift
        if not bound:
            return None  # a key that far from the target: nothing is provable (checked first: it is the common case)
        provable = [c for c in self.closest if c.node_id ^ key < bound]
        return sorted(provable, key=lambda c: c.node_id ^ key) if len(provable) >= wanted else None

    @functools.cached_property
    def _farthest(self) -> int:
        return max(c.node_id ^ self.target for c in self.closest)


class NeighbourhoodCache:
    """Recent lookup answers, so that placing many blocks does not cost a
    lookup each when earlier answers already prove where they go (in a
    network of fewer than k nodes, one lookup answers for every key).
    Sans-IO: the caller passes ``now``. Entries expire after ``ttl``
    seconds, and :meth:`forget` drops every entry naming a peer that failed.
    """

    def __init__(self, *, ttl: float = 30.0, size: int = 64) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: list[tuple[float, Neighbourhood]] = []  # (expiry, answer), oldest first

    def add(self, answer: Neighbourhood, now: float) -> None:
        self._entries.append((now + self.ttl, answer))
        if len(self._entries) > self.size:
            del self._entries[0]

    def ranked_for(self, key: int, wanted: int, now: float) -> list[Contact] | None:
        """Candidates for ``key`` from the newest answer that covers it."""
        self._entries = [(t, a) for t, a in self._entries if t > now]
        for _, answer in reversed(self._entries):
            ranked = answer.ranked_for(key, wanted)
            if ranked is not None:
                return ranked
        return None

    def forget(self, node_id: int) -> None:
        self._entries = [(t, a) for t, a in self._entries
                         if all(c.node_id != node_id for c in a.closest)]


def may_drop(plan: Placement, *, own: bool) -> bool:
    """May this node delete its copy of the plan's block now?

    Only a copy held for the network (``own`` false), only once the plan is
    done, this node is not in the placement set, and all R members of it
    confirmed a copy in this round.
    """
    return (not own) and plan.done and not plan.responsible() and plan.complete


def have_batches(windows: Mapping[_T, Sequence[Contact]], limit: int) -> dict[NodeID, list[_T]]:
    """Group presence questions by peer: for each block (any hashable id,
    e.g. a CID) and the contacts to ask about it, the blocks to put in one
    HAVE per peer, at most ``limit`` per batch (further batches follow in
    order in the returned lists; the caller slices by ``limit``)."""
    out: dict[NodeID, list[_T]] = {}
    for block, contacts in windows.items():
        for contact in contacts:
            out.setdefault(contact.node_id, []).append(block)
    return out


def chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]

