"""Who may receive a large frame now: the frame budget and its fair shares, sans-IO.

Theory of operation
===================

A frame body of 64 KiB or more (a block) is received in place, into a
buffer of its own (:mod:`.framing`), and only once the node's **frame
budget** grants its size: the budget bounds what all of a node's
connections hold in large bodies at once (:data:`FRAME_MEMORY`, ~32 MiB).
This module decides *whose* frames get that memory, and in which order.

First come, first served, as it was, let one source address with enough
connections take all of it: sixteen connections that announce a 2 MiB frame
and never finish it held the whole budget until their frame timeout, and
every honest block sent to the node meanwhile waited behind them (and timed
out like them). So the budget is shared by source address, grouped as the
admission policy groups them (:func:`~cas.net.admission.address_group`: an
IPv4 address, an IPv6 /64), by three rules:

1. **The total.** What is granted never exceeds ``limit``.
2. **A share per address.** One address holds at most ``per_address``
   bytes (:data:`FRAME_SHARE`: a quarter of the budget, four of the largest
   frames), whether or not anybody else wants the rest. Not "unless the
   others are quiet": memory once granted cannot be taken back before its
   frame completes or times out, so a flood let take the whole budget while
   the node was idle would still hold it when an honest frame came. With a
   hard share, three quarters of the budget are out of any one address's
   reach at all times. (This mirrors the connection limits: an address
   holds at most a quarter of the connection slots.)
3. **The address holding least goes first.** A frame that cannot be
   granted at once waits in its address's queue (first come, first served
   within an address). Whenever room frees, the waiting frame at the head
   of the queue of the address that holds the **least** is granted (ties:
   the one waiting longest); a frame held back only by its own address's
   share does not hold back anyone else; and the frame whose turn it is
   keeps the room that frees until enough has freed for it (no smaller
   frame from an address holding more overtakes it). A newcomer is granted
   at once only when nobody waiting would go before it.

A waiting frame holds nothing and a connection receives one large body at a
time, so nobody holds memory while waiting for more: the budget cannot
deadlock, and every wait ends when some frame completes, times out, or its
connection closes (the driver's frame timeout counts the wait).

What the shares do not do: enough addresses, each within its share, still
fill the budget between them (four at a quarter each; sixteen stalled
frames from sixteen addresses). An honest frame then goes first as soon as
room frees, which is at the latest when the oldest stalled frame times out;
taking memory back from a stalled frame (closing its connection, as the
handshake pool takes a slot) would be the next step.

Claims
------

Each connection holds a :class:`FrameClaim` (one per frame decoder): what
it holds, and its place in the queue. A frame granted while it waits is
reserved for it there and then (so nobody else takes that room) and the
claim's ``on_grant`` is called; the decoder's next
:meth:`FrameClaim.try_reserve` of that size takes it.

Rules for this file (as :mod:`.admission` has):

1. No I/O, no clocks, no tasks: requests and releases come in as calls,
   grants go out as return values and ``on_grant`` calls, which must not
   block (the driver wakes a task).
2. ``used`` is always the sum of what every address holds, and what an
   address holds the sum of its claims' ``held`` and ``granted``.
3. Everything is bounded: the queues by the connections, the work per
   decision by the number of addresses waiting.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LocalProtocolError
from .admission import address_group
from .messages import MAX_MESSAGE_SIZE
from .noise import sealed_size

LARGEST_FRAME = sealed_size(MAX_MESSAGE_SIZE)
"""The largest frame body there is (``framing.MAX_FRAME_SIZE``): a budget
and a share must each hold at least one."""

FRAME_MEMORY = 16 * LARGEST_FRAME
"""Bytes of large frame bodies being received at once, across every
connection sharing a :class:`FrameBudget` (a node's: ~32 MiB). Sixteen of
the largest frames: a replicated add keeps one in flight per connection on
each receiving node, so a node takes blocks from sixteen peers at once at
full speed, and 500 peers that each announce a 2 MiB frame and never finish
it hold 32 MiB, not 1 GiB."""

FRAME_SHARES = 4
"""One source address holds at most 1/FRAME_SHARES of the budget: four of
the largest frames at the default, as many as a quarter of the connection
slots carry (``MAX_CONNECTIONS_PER_ADDRESS``); a loopback network of
daemons, one address, still receives four blocks at once."""


def default_share(limit: int) -> int:
    """The per-address share of a budget of ``limit`` bytes: a quarter,
    but never less than one of the largest frames."""
    return min(limit, max(LARGEST_FRAME, limit // FRAME_SHARES))


class FrameClaim:
    """One connection's dealings with a :class:`FrameBudget`: what it holds,
    and the one frame it may be waiting for. Made by
    :meth:`FrameBudget.claim`."""

    __slots__ = ("address", "budget", "granted", "held", "on_grant", "seq", "wanted")

    def __init__(self, budget: FrameBudget, address: str) -> None:
        self.budget = budget
        self.address = address
        self.held = 0  # bytes reserved and taken by this claim's frames
        self.wanted = 0  # the size of the frame it waits for (0: not waiting)
        self.granted = 0  # bytes granted while it waited, not yet taken
        self.seq = 0  # when it began to wait (order within the budget)
        self.on_grant: Callable[[], None] | None = None
        """Called when a frame this claim waits for is granted (sync, must not block)."""

    def __repr__(self) -> str:
        return f"FrameClaim({self.address!r}, held={self.held}, wanted={self.wanted}, granted={self.granted})"

    @property
    def waiting(self) -> bool:
        return self.wanted > 0

    def try_reserve(self, size: int) -> bool:
        """Reserve ``size`` bytes for a frame body: True if it is this
        claim's now (granted at once, or while it waited), else False and
        the claim waits for it (asking again for the same size keeps its
        place). One frame at a time."""
        return self.budget._reserve(self, size)

    def release(self, size: int) -> None:
        """A body of ``size`` bytes this claim held is given back."""
        self.budget._release(self, size)

    def withdraw(self) -> None:
        """Stop waiting, and give back a grant not yet taken (its
        connection is gone). Idempotent; what it holds is released by
        :meth:`release`."""
        self.budget._withdraw(self)


@dataclass
class FrameBudgetStatistics:
    limit: int = 0
    per_address: int = 0
    used: int = 0  # bytes granted now
    peak: int = 0  # most bytes granted at once, ever
    waiting: int = 0  # frames waiting now
    addresses: int = 0  # addresses holding some now
    most_held: int = 0  # bytes held by the address holding most, now
    refusals: int = 0  # frames that had to wait, ever
    granted_after_waiting: int = 0  # of those, granted in the end, ever


class FrameBudget:
    """How many bytes of large frame bodies may be in flight at once, in
    total (``limit``) and per source address (``per_address``, by default
    :func:`default_share`), and whose frame goes next: see the module
    docstring. A connection deals with it through its :meth:`claim`."""

    def __init__(self, limit: int = FRAME_MEMORY, per_address: int | None = None) -> None:
        if limit < LARGEST_FRAME:
            raise ValueError(f"a frame budget must hold at least one frame ({LARGEST_FRAME} bytes)")
        share = default_share(limit) if per_address is None else per_address
        if not LARGEST_FRAME <= share <= limit:
            raise ValueError(f"a share of the frame budget must hold one frame ({LARGEST_FRAME} bytes) "
                             f"and at most the budget ({limit} bytes)")
        self.limit = limit
        self.per_address = share
        self.used = 0
        self.peak = 0
        self.refusals = 0
        """Frames that had to wait for room (refused at first)."""
        self.granted_after_waiting = 0
        self._held: dict[str, int] = {}  # address -> bytes held (taken or granted)
        self._queues: dict[str, deque[FrameClaim]] = {}  # address -> its waiting claims, oldest first
        self._order = itertools.count(1)

    def __repr__(self) -> str:
        return f"FrameBudget(used={self.used}, limit={self.limit}, per_address={self.per_address})"

    def claim(self, host: str) -> FrameClaim:
        """A new connection's claim, counted under ``host``'s address group."""
        return FrameClaim(self, address_group(host))

    def held(self, host: str) -> int:
        """Bytes held now by ``host``'s address group."""
        return self._held.get(address_group(host), 0)

    def held_by_address(self) -> dict[str, int]:
        """Bytes held now, by address group."""
        return dict(self._held)

    @property
    def waiting(self) -> int:
        """Frames waiting for room now."""
        return sum(len(queue) for queue in self._queues.values())

    def statistics(self) -> FrameBudgetStatistics:
        return FrameBudgetStatistics(
            limit=self.limit, per_address=self.per_address, used=self.used, peak=self.peak,
            waiting=self.waiting, addresses=len(self._held), most_held=max(self._held.values(), default=0),
            refusals=self.refusals, granted_after_waiting=self.granted_after_waiting)

    # -- the claims' calls ----------------------------------------------------------

    def _reserve(self, claim: FrameClaim, size: int) -> bool:
        if size <= 0:
            raise LocalProtocolError(f"a frame reservation of {size} bytes")
        if claim.granted:
            if claim.granted != size:
                raise LocalProtocolError(f"{claim!r} was granted {claim.granted} bytes, not {size}")
            claim.granted = 0
            claim.held += size
            return True
        if claim.wanted:
            if claim.wanted != size:
                raise LocalProtocolError(f"{claim!r} waits for {claim.wanted} bytes, not {size}")
            return False
        claim.wanted = size
        claim.seq = next(self._order)
        self._queues.setdefault(claim.address, deque()).append(claim)
        granted = self._grant()
        self._tell(granted, but=claim)
        if claim.granted:
            claim.granted = 0
            claim.held += size
            return True
        self.refusals += 1
        return False

    def _release(self, claim: FrameClaim, size: int) -> None:
        if not 0 < size <= claim.held:
            raise LocalProtocolError(f"released {size} bytes of {claim!r}")
        claim.held -= size
        self._give_back(claim.address, size)

    def _withdraw(self, claim: FrameClaim) -> None:
        if claim.wanted:
            queue = self._queues[claim.address]
            queue.remove(claim)
            if not queue:
                del self._queues[claim.address]
            claim.wanted = 0
            # Its leaving may let the next of its address go, or unblock
            # the order (it may have been the one whose turn it was).
            self._tell(self._grant())
        if claim.granted:
            size, claim.granted = claim.granted, 0
            self._give_back(claim.address, size)

    # -- the rules ------------------------------------------------------------------

    def _give_back(self, address: str, size: int) -> None:
        left = self._held[address] - size
        if left:
            self._held[address] = left
        else:
            del self._held[address]
        self.used -= size
        self._tell(self._grant())

    def _grant(self) -> list[FrameClaim]:
        """Grant waiting frames by rules 1-3 for as long as the next in
        turn fits; returns the claims granted."""
        granted: list[FrameClaim] = []
        while self._queues:
            turn: FrameClaim | None = None
            turn_key = (0, 0)
            for address, queue in self._queues.items():
                head = queue[0]
                held = self._held.get(address, 0)
                if held + head.wanted > self.per_address:
                    continue  # held back by its own address's share only
                key = (held, head.seq)
                if turn is None or key < turn_key:
                    turn, turn_key = head, key
            if turn is None or self.used + turn.wanted > self.limit:
                break  # nobody may go, or the one whose turn it is keeps the room
            queue = self._queues[turn.address]
            queue.popleft()
            if not queue:
                del self._queues[turn.address]
            size, turn.wanted = turn.wanted, 0
            turn.granted = size
            self._held[turn.address] = self._held.get(turn.address, 0) + size
            self.used += size
            self.peak = max(self.peak, self.used)
            granted.append(turn)
        return granted

    def _tell(self, granted: list[FrameClaim], but: FrameClaim | None = None) -> None:
        for claim in granted:
            if claim is but:
                continue
            self.granted_after_waiting += 1
            if claim.on_grant is not None:
                claim.on_grant()
