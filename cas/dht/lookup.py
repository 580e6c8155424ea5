"""The iterative Kademlia lookup, as a state machine with no I/O.

Theory of operation
===================

A lookup finds the ``k`` live nodes whose IDs are XOR-closest to a target
(FIND_NODE), or stops early at the first peer that has a value for the target
(FIND_BLOCK: the block itself, or a list of holders). No node knows the whole
network; each knows many peers near its own ID and exponentially fewer far
away. So the searcher asks the nearest peers it knows for the nearest peers
*they* know, and repeats with what it learns. Every answer can only move the
frontier closer, and each step at least halves the distance in expectation, so
a network of ``n`` nodes needs ``O(log n)`` steps; with ``k = 20`` contacts per
bucket each step gains about ``log2(k)`` bits, and in practice a lookup in
10,000 nodes is three or four round trips deep.

The object here holds that search and nothing else. It is h11-shaped: the
driver hands it *events* (a peer answered, a peer failed, a peer is slow) and
gets back *actions* (query this peer). It never opens a socket, reads a clock,
starts a thread or draws a random number, so the node's trio driver and the
discrete-event simulator run exactly the same code, and the tests drive it by
hand.

State. Every contact the lookup has heard of is a *candidate* in one of four
states: ``NEW`` (known, not asked), ``IN_FLIGHT`` (asked, waiting), ``RESPONDED``,
or ``LATE`` (asked, timed out, an answer is still welcome). Failed peers are
forgotten except for their IDs in the set of peers already asked. The
candidates are kept sorted by distance to the target; the *window* is the
first ``k`` of them that have not failed or timed out.

Rules.

1. At most ``alpha`` queries are in flight. Whenever a slot is free, the
   nearest ``NEW`` candidate inside the window is queried. Nothing outside the
   window is ever queried: a peer farther than ``k`` better candidates cannot
   improve the answer unless some of those fail, and then it enters the window.
2. A peer is queried at most once per lookup, whatever happens (the asked set
   outlives the candidate list's trimming).
3. The lookup is done when no candidate in the window is ``NEW`` or
   ``IN_FLIGHT``: the ``k`` closest seen have all answered, or failed and been
   replaced until none are left (the paper's termination rule). A FIND_BLOCK
   lookup is also done as soon as any peer returns a value.
4. A response counts only from a peer that was asked and has not answered or
   failed yet; anything else (unsolicited, duplicate, after failure, after the
   lookup ended) is ignored. Contacts in a response count only if they are
   well-formed :class:`~cas.dht.routing.Contact` objects; at most
   :data:`MAX_CONTACTS_PER_RESPONSE` are read from one response.
5. Timeouts are soft. ``on_timeout`` frees the peer's slot and takes it out of
   the window (so the search goes on around it), but if its answer arrives
   later it is used. ``on_failure`` is final. A value that fails verification
   is the driver's business: it reports that peer with ``on_failure``.
6. Memory is bounded: at most ``max_candidates`` candidates are kept (the
   farthest not-in-flight ones are dropped first), and at most
   ``max_queries`` queries are sent, after which the lookup finishes with
   what it has. A peer feeding fake far-away contacts therefore costs a
   bounded amount of work.

Hops. Each candidate carries a hop number: contacts handed in at the start
(from our own routing table) are hop 1, and a contact first learned from a hop
``h`` peer is hop ``h + 1`` (the smallest such number while it is still
``NEW``). A lookup's ``hops`` is the largest hop number among the contacts in
its result, or the hop of the peer that returned the value: the length of the
longest chain of round trips, each depending on the answer to the previous
one, that the result needed. Queries sent in parallel at the same depth do not
add hops; messages counts them instead.

What may live in this file: the lookup's bookkeeping, its events, actions and
result. Not here: message encoding, routing-table updates (the driver reports
answers and failures to the table itself), verification of values, timers.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

from .ids import NodeID, is_valid_id
from .routing import Contact, K, is_valid_contact

ALPHA = 3
"""Queries in flight per lookup (DESIGN.md; the paper's alpha = 3)."""

MAX_CONTACTS_PER_RESPONSE = K
"""Contacts read from one response: an honest peer returns at most k (the
wire layer's FIND_NODE limit follows the same number)."""

MAX_CANDIDATES_FACTOR = 4
"""Candidates kept: 4k (80). The window is k; the rest absorbs failures of
window members without re-learning them."""

MAX_QUERIES_FACTOR = 10
"""Queries per lookup: 10k (200). An honest lookup in 10^5 nodes with 30 %
dead peers sends well under half that (docs/dht.md); the cap only bounds how
much work lying peers can cause."""

NEW, IN_FLIGHT, RESPONDED, LATE = range(4)


@dataclass(frozen=True, slots=True)
class SendQuery:
    """Action: send the lookup's query (FIND_NODE or FIND_BLOCK for the target)
    to ``peer``, then report exactly one outcome back."""

    peer: Contact


@dataclass(frozen=True, slots=True)
class LookupResult:
    """What a finished lookup found."""

    target: NodeID
    closest: tuple[Contact, ...]
    """The nearest peers that answered, nearest first, at most k."""
    value: object | None
    """For FIND_BLOCK: what the first peer with a value returned (block or
    holders), unverified by the lookup. ``None`` if no peer had it."""
    value_from: Contact | None
    hops: int
    messages: int
    """Queries sent."""
    responses: int
    failures: int
    """Queries that failed or timed out without a late answer."""


@dataclass(frozen=True, slots=True)
class LookupStatistics:
    queries_sent: int
    in_flight: int
    responses: int
    failures: int
    timeouts: int
    candidates: int


class _Candidate:
    __slots__ = ("contact", "hop", "state")

    def __init__(self, contact: Contact, hop: int) -> None:
        self.contact = contact
        self.hop = hop
        self.state = NEW


class Lookup:
    """One iterative lookup for ``target``. See the module docstring."""

    def __init__(
        self,
        target: int,
        initial: Iterable[Contact],
        *,
        k: int = K,
        alpha: int = ALPHA,
        find_value: bool = False,
        exclude: int | None = None,
        max_candidates: int | None = None,
        max_queries: int | None = None,
    ) -> None:
        if not is_valid_id(target):
            raise ValueError(f"not a 256-bit ID: {target!r}")
        if k < 1 or alpha < 1:
            raise ValueError("k and alpha must be at least 1")
        self.target = NodeID(target)
        self.k = k
        self.alpha = alpha
        self.find_value = find_value
        self._exclude = exclude
        self._max_candidates = max(k, max_candidates or MAX_CANDIDATES_FACTOR * k)
        self._max_queries = max_queries or MAX_QUERIES_FACTOR * k
        self._dists: list[int] = []  # sorted distances of candidates
        self._cands: dict[int, _Candidate] = {}  # node_id -> candidate
        self._asked: set[int] = set()
        self._in_flight: set[int] = set()
        self._late: dict[int, _Candidate] = {}
        self._started = False
        self._done = False
        self._value: object | None = None
        self._value_from: Contact | None = None
        self._value_hop = 0
        self._responses = 0
        self._failures = 0
        self._timeouts = 0
        for contact in initial:
            self._learn(contact, 1)
        self._trim()

    # -- events -----------------------------------------------------------

    def start(self) -> list[SendQuery]:
        """Begin: the first (up to alpha) queries. Call once."""
        if self._started:
            raise RuntimeError("Lookup.start() called twice")
        self._started = True
        return self._advance()

    def on_response(
        self, peer: Contact, contacts: Iterable[Contact] = (), value: object | None = None
    ) -> list[SendQuery]:
        """``peer`` answered with ``contacts`` (and, for FIND_BLOCK, maybe a
        ``value``). Returns the queries to send next."""
        self._check_started()
        if self._done:
            return []
        node_id = getattr(peer, "node_id", None)
        if node_id in self._in_flight:
            self._in_flight.discard(node_id)
            cand = self._cands[node_id]
        elif node_id in self._late:
            cand = self._late.pop(node_id)
            self._timeouts -= 1
            self._insert(cand)
        else:
            return []  # not asked, already answered, or already failed
        cand.state = RESPONDED
        self._responses += 1
        if self.find_value and value is not None:
            self._value, self._value_from, self._value_hop = value, cand.contact, cand.hop
            self._done = True
            return []
        hop = cand.hop + 1
        try:
            received = list(islice(contacts, MAX_CONTACTS_PER_RESPONSE))
        except TypeError:
            received = []
        for contact in received:
            self._learn(contact, hop)
        self._trim()
        return self._advance()

    def on_failure(self, peer: Contact) -> list[SendQuery]:
        """``peer`` failed for good (refused, reset, malformed answer, bad
        value). Returns the queries to send next."""
        self._check_started()
        if self._done:
            return []
        node_id = getattr(peer, "node_id", None)
        if node_id in self._in_flight:
            self._in_flight.discard(node_id)
            self._remove(node_id)
        elif node_id in self._late:
            del self._late[node_id]
            self._timeouts -= 1
        else:
            return []
        self._failures += 1
        return self._advance()

    def on_timeout(self, peer: Contact) -> list[SendQuery]:
        """``peer`` is taking too long: free its slot and search around it; a
        late answer is still accepted (rule 5). Returns the queries to send next."""
        self._check_started()
        if self._done:
            return []
        node_id = getattr(peer, "node_id", None)
        if node_id not in self._in_flight:
            return []
        self._in_flight.discard(node_id)
        cand = self._remove(node_id)
        cand.state = LATE
        self._late[node_id] = cand
        self._timeouts += 1
        return self._advance()

    # -- state ------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    @property
    def in_flight(self) -> tuple[Contact, ...]:
        return tuple(self._cands[n].contact for n in self._in_flight)

    @property
    def result(self) -> LookupResult:
        """The outcome; only once :attr:`done` is true."""
        if not self._done:
            raise RuntimeError("the lookup has not finished")
        target = self.target
        closest = []
        hops = 0
        for dist in self._dists:
            cand = self._cands[dist ^ target]
            if cand.state == RESPONDED:
                closest.append(cand.contact)
                hops = max(hops, cand.hop)
                if len(closest) == self.k:
                    break
        if self._value_from is not None:
            hops = self._value_hop
        return LookupResult(
            target=target,
            closest=tuple(closest),
            value=self._value,
            value_from=self._value_from,
            hops=hops,
            messages=len(self._asked),
            responses=self._responses,
            failures=self._failures + self._timeouts,
        )

    def statistics(self) -> LookupStatistics:
        return LookupStatistics(
            queries_sent=len(self._asked),
            in_flight=len(self._in_flight),
            responses=self._responses,
            failures=self._failures,
            timeouts=self._timeouts,
            candidates=len(self._cands),
        )

    # -- internals --------------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("Lookup event before start()")

    def _learn(self, contact: object, hop: int) -> None:
        if type(contact) is not Contact:
            return
        node_id = contact.node_id
        cand = self._cands.get(node_id)
        if cand is not None:
            if cand.state == NEW and hop < cand.hop:
                cand.hop = hop
            return
        if node_id in self._asked or node_id == self._exclude:
            return  # failed, timed out, or trimmed after being asked: never again
        if not is_valid_contact(contact):
            return  # a Contact built by bypassing its constructor
        self._cands[node_id] = _Candidate(contact, hop)
        bisect.insort(self._dists, node_id ^ self.target)

    def _insert(self, cand: _Candidate) -> None:
        node_id = cand.contact.node_id
        self._cands[node_id] = cand
        bisect.insort(self._dists, node_id ^ self.target)

    def _remove(self, node_id: int) -> _Candidate:
        dists = self._dists
        del dists[bisect.bisect_left(dists, node_id ^ self.target)]
        return self._cands.pop(node_id)

    def _trim(self) -> None:
        dists, cands, target = self._dists, self._cands, self.target
        pos = len(dists) - 1
        while len(dists) > self._max_candidates and pos >= 0:
            node_id = dists[pos] ^ target
            if cands[node_id].state != IN_FLIGHT:
                del dists[pos]
                del cands[node_id]
            pos -= 1

    def _advance(self) -> list[SendQuery]:
        """Rule 1 and rule 3: fill free slots from the window, then see
        whether the window is settled."""
        if self._done:
            return []
        actions: list[SendQuery] = []
        unsettled = False
        budget = self._max_queries - len(self._asked)
        target, cands, in_flight = self.target, self._cands, self._in_flight
        for dist in self._dists[: self.k]:
            cand = cands[dist ^ target]
            state = cand.state
            if state == NEW:
                if len(in_flight) < self.alpha and budget > 0:
                    node_id = cand.contact.node_id
                    cand.state = IN_FLIGHT
                    in_flight.add(node_id)
                    self._asked.add(node_id)
                    budget -= 1
                    actions.append(SendQuery(cand.contact))
                    unsettled = True
                elif budget > 0:
                    unsettled = True
            elif state == IN_FLIGHT:
                unsettled = True
        if not unsettled:
            self._done = True
        return actions
