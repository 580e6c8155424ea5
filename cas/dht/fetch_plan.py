"""Which block to ask of which holder, and when a holder has gone silent:
the schedule of a node's block fetches. No I/O: events and the time are
passed in, requests to send come out.

Theory of operation
===================

A read from peers is a stream of blocks the walk wants in order, each held
by a few nodes (its R closest, or the providers a lookup named). Asking one
block at a time, or one holder at a time, makes every block pay a round
trip: across 100 ms a 256 KiB block then moves at 2.5 MiB/s whatever the
link. So several blocks are in flight to each holder (the per-peer window;
their answers queue behind each other on the one connection, which keeps
that connection's TCP window open), and the blocks are spread over their
holders (each goes to the holder of its set with the fewest in flight, the
nearest first on a tie), so one holder's uplink is not the read's ceiling.
A total bound keeps memory and the link's queue in check.

Silence is judged per peer, not per request: answers on one connection
arrive one after the other, so a holder that is alive keeps delivering
while it has requests, however many wait behind the first. A holder that
has had requests out for longer than its *patience* with nothing coming
back is declared silent: every request it holds is asked of the next
holder of that block at once, and it gets no new requests for
:data:`SILENT_FOR` seconds unless something it was asked arrives after
all (then it is trusted again). A silent holder thus costs a read one
patience, not one timeout per block. Patience is what the caller says a
peer's answer may take (its RTO, times the dial's round trips if it has no
connection yet, :mod:`.rtt`) plus a transfer allowance: the larger of
:data:`TRANSFER_ALLOWANCE` and :data:`GAP_FACTOR` times the smoothed time
between that peer's deliveries (a slow link's big blocks are not silence).

A block whose every named holder failed it (answered without it, or
failed hard) or is silent is given up (:class:`GiveUp`): the caller then
looks it up on the network, which finds whoever has it.

Rules of this file:

1. Never touches a socket, a timer or a clock: ``now`` is an argument.
2. Peers are node IDs (ints); what to send to them is the caller's.
3. Wanted blocks are asked in the order they were wanted, except urgent
   ones (a reader is blocked on them), which go first.
4. A late answer is never wasted: an arrival for a block still wanted
   settles it, whoever it came from.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..cid import CID

PER_PEER_WINDOW = 8
"""Blocks in flight to one holder at once: 8 average blocks (2 MiB) cover a
100 Mbit/s link's bandwidth-delay product at 100 ms (1.25 MB) with room for
the answers' own queueing (bench/testnet.py)."""
TOTAL_WINDOW = 32
"""Blocks in flight from all holders at once (at most 32 MiB of 1 MiB
blocks in memory; 8 MiB of average ones)."""
TRANSFER_ALLOWANCE = 0.5
"""Seconds a holder's answer may take beyond its round trip before it is
judged silent (a 1 MiB block at 16 Mbit/s)."""
GAP_FACTOR = 4.0
"""Patience in smoothed gaps between a holder's deliveries (a slow link)."""
GAP_GAIN = 1 / 4
"""The weight of a new gap in the smoothed one."""
SILENT_FOR = 30.0
"""Seconds a holder judged silent is passed over (unless it delivers)."""
MAX_PEERS = 4096
"""Holders remembered (their gaps, their silence); beyond, idle ones are forgotten."""


@dataclass(frozen=True)
class Ask:
    """Send ``peer`` a request for ``cid``."""

    cid: CID
    peer: int


@dataclass(frozen=True)
class GiveUp:
    """No named holder gave ``cid``: look for it some other way."""

    cid: CID


Action = Ask | GiveUp


class FetchStatistics(NamedTuple):
    """What ``replication_stats`` shows of the fetches."""

    waiting: int  # wanted, not asked yet
    in_flight: int
    asked: int  # requests sent, since the start
    arrived: int
    reasked: int  # requests moved off a silent holder
    silent: int  # holders judged silent, since the start
    given_up: int


@dataclass
class _Want:
    holders: list[int]  # nearest first
    tried: set[int] = field(default_factory=set)  # failed it, or were silent while asked
    asked: int | None = None  # the holder it is in flight to


@dataclass
class _Peer:
    in_flight: OrderedDict[CID, None] = field(default_factory=OrderedDict)
    since: float = 0.0  # last sign of life while it had requests
    gap: float | None = None  # smoothed seconds between deliveries
    silent_until: float = float("-inf")


class FetchPlan:
    """The schedule of block fetches (see the module docstring).

    ``patience(peer)``: seconds the caller expects ``peer``'s next answer
    to take (its RTO, more if it must be dialled first)."""

    def __init__(self, patience: Callable[[int], float], *, per_peer: int = PER_PEER_WINDOW,
                 total: int = TOTAL_WINDOW, silent_for: float = SILENT_FOR) -> None:
        if per_peer < 1 or total < 1:
            raise ValueError("fetch windows must be at least 1")
        self._patience = patience
        self.per_peer = per_peer
        self.total = total
        self.silent_for = silent_for
        self._wants: dict[CID, _Want] = {}
        self._queue: OrderedDict[CID, None] = OrderedDict()  # wanted, not in flight, in order
        self._peers: dict[int, _Peer] = {}
        self._in_flight = 0
        self._asked = self._arrived = self._reasked = self._silent = self._given_up = 0
        self._given: list[Action] = []  # GiveUps decided by events, handed out by poll

    # -- events in ----------------------------------------------------------------

    def want(self, cid: CID, holders: Sequence[int], now: float, *, urgent: bool = False) -> None:
        """``cid`` is wanted from ``holders`` (nearest first). Wanted
        already: the new holders are added, and ``urgent`` moves it first."""
        want = self._wants.get(cid)
        if want is None:
            want = self._wants[cid] = _Want([])
            self._queue[cid] = None
        want.holders.extend(h for h in holders if h not in want.holders)
        if urgent and cid in self._queue:
            self._queue.move_to_end(cid, last=False)

    def hurry(self, cid: CID) -> None:
        """A reader waits for ``cid``: ask it before the others waiting."""
        if cid in self._queue:
            self._queue.move_to_end(cid, last=False)

    def alive(self, peer: int, now: float) -> None:
        """``peer`` showed it is there (its connection opened)."""
        state = self._peers.get(peer)
        if state is not None and state.in_flight:
            state.since = now

    def arrived(self, cid: CID, peer: int, now: float) -> None:
        """``peer`` delivered ``cid`` (verified): it is no longer wanted."""
        state = self._peer(peer)
        if cid in state.in_flight:
            gap = now - state.since
            state.gap = gap if state.gap is None else (1 - GAP_GAIN) * state.gap + GAP_GAIN * gap
        state.since = now
        state.silent_until = float("-inf")
        want = self._wants.pop(cid, None)
        if want is None:
            self._release(cid, peer)
            return  # a second copy, or a block no longer wanted
        self._arrived += 1
        self._queue.pop(cid, None)
        if want.asked is not None:
            self._release(cid, want.asked)

    def missing(self, cid: CID, peer: int, now: float) -> None:
        """``peer`` did not give ``cid`` (it has not got it, lied, or its
        request failed): the block's next holder is asked."""
        want = self._wants.get(cid)
        if want is None or want.asked != peer:
            return
        self._release(cid, peer)
        want.asked = None
        want.tried.add(peer)
        self._requeue([cid])

    def drop(self, cid: CID) -> None:
        """``cid`` is no longer wanted (answers for it are ignored)."""
        want = self._wants.pop(cid, None)
        if want is not None:
            self._queue.pop(cid, None)
            if want.asked is not None:
                self._release(cid, want.asked)

    # -- actions out --------------------------------------------------------------

    def poll(self, now: float) -> list[Action]:
        """What to do now: holders silent past their patience lose their
        requests to the next holders; then requests go out to holders
        with room, in the order blocks are wanted."""
        for peer, state in self._peers.items():
            if state.in_flight and now >= state.since + self._allowed(peer, state):
                self._judge_silent(peer, state, now)
        actions, self._given = self._given, []
        for cid in list(self._queue):
            if self._in_flight >= self.total:
                break
            want = self._wants[cid]
            choice = self._choose(want, now)
            if choice is None:
                if not self._reachable(want, now):
                    del self._queue[cid], self._wants[cid]
                    self._given_up += 1
                    actions.append(GiveUp(cid))
                continue
            del self._queue[cid]
            want.asked = choice
            state = self._peer(choice)
            if not state.in_flight:
                state.since = now
            state.in_flight[cid] = None
            self._in_flight += 1
            self._asked += 1
            actions.append(Ask(cid, choice))
        return actions

    def next_deadline(self) -> float | None:
        """When :meth:`poll` should be called next if nothing happens
        before: the earliest moment a holder with requests out runs out of
        patience (None: none has any)."""
        deadlines = [state.since + self._allowed(peer, state)
                     for peer, state in self._peers.items() if state.in_flight]
        return min(deadlines, default=None)

    def statistics(self) -> FetchStatistics:
        return FetchStatistics(len(self._queue), self._in_flight, self._asked, self._arrived,
                               self._reasked, self._silent, self._given_up)

    def wanted(self, cid: CID) -> bool:
        return cid in self._wants

    def silent(self, peer: int, now: float) -> bool:
        state = self._peers.get(peer)
        return state is not None and now < state.silent_until

    # -- the rules ----------------------------------------------------------------

    def _allowed(self, peer: int, state: _Peer) -> float:
        transfer = TRANSFER_ALLOWANCE if state.gap is None else max(TRANSFER_ALLOWANCE, GAP_FACTOR * state.gap)
        return self._patience(peer) + transfer

    def _choose(self, want: _Want, now: float) -> int | None:
        """The holder with the fewest in flight among those with room, the
        nearest on a tie; None if none has room (or none is left)."""
        best: int | None = None
        best_load = self.per_peer
        for holder in want.holders:
            if holder in want.tried or self.silent(holder, now):
                continue
            state = self._peers.get(holder)
            load = 0 if state is None else len(state.in_flight)
            if load < best_load:
                best, best_load = holder, load
        return best

    def _reachable(self, want: _Want, now: float) -> bool:
        """Whether a holder may still give it (one not tried nor silent)."""
        return any(h not in want.tried and not self.silent(h, now) for h in want.holders)

    def _judge_silent(self, peer: int, state: _Peer, now: float) -> None:
        state.silent_until = now + self.silent_for
        self._silent += 1
        moved = list(state.in_flight)
        for cid in moved:
            want = self._wants[cid]
            want.asked = None
            want.tried.add(peer)
        self._in_flight -= len(moved)
        state.in_flight.clear()
        self._reasked += len(moved)
        self._requeue(moved)

    def _requeue(self, cids: list[CID]) -> None:
        """Put blocks that were in flight back at the head of the queue, in
        their order (they were wanted before anything still waiting)."""
        for cid in reversed(cids):
            self._queue[cid] = None
            self._queue.move_to_end(cid, last=False)

    def _release(self, cid: CID, peer: int) -> None:
        state = self._peers.get(peer)
        if state is not None and cid in state.in_flight:
            del state.in_flight[cid]
            self._in_flight -= 1

    def _peer(self, peer: int) -> _Peer:
        state = self._peers.get(peer)
        if state is None:
            if len(self._peers) >= MAX_PEERS:
                self._forget_idle()
            state = self._peers[peer] = _Peer()
        return state

    def _forget_idle(self) -> None:
        for peer in [p for p, s in self._peers.items() if not s.in_flight][: max(1, MAX_PEERS // 4)]:
            del self._peers[peer]
