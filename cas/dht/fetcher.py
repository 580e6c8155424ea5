"""The trio side of fetching blocks from their holders: the
:class:`~cas.dht.fetch_plan.FetchPlan` driven over the DHT driver.

Owns: one task that polls the plan (when an event arrives or its next
deadline passes) and starts one task per :class:`~cas.dht.fetch_plan.Ask`
(dial if needed, telling the plan once the connection is up; then one
FIND_BLOCK, verified by the driver), the contacts behind the plan's node
IDs, and handing each block (or None, when the plan gives up on its named
holders) to every caller waiting for it.

Must never: decide which holder is asked or when one is silent (the plan
does); cancel a request to a holder judged silent (it runs out its own hard
timeout, so the routing table hears of the failure, and a late block is
still used); keep a block once its callers have it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from ..blocks import Block
from ..cid import CID
from ..errors import PeerError
from .driver import DhtDriver
from .fetch_plan import Ask, FetchPlan, FetchStatistics, GiveUp
from .routing import Contact
from .rtt import DIAL_ROUND_TRIPS


@dataclass
class _Pending:
    contacts: dict[int, Contact] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)
    block: Block | None = None


class BlockFetcher:
    """Blocks from named holders, several in flight per holder (see the
    module docstring). ``await nursery.start(fetcher.run)``."""

    def __init__(self, dht: DhtDriver, plan: FetchPlan | None = None) -> None:
        self.dht = dht
        self.plan = plan if plan is not None else FetchPlan(self._patience)
        self._pending: dict[CID, _Pending] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None

    def _patience(self, peer: int) -> float:
        rto = self.dht.rtts.rto(peer)
        return rto if self.dht.pool.connected(peer) else rto * DIAL_ROUND_TRIPS

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                self._step(nursery)
                deadline = self.plan.next_deadline()
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    await self._wake.wait()
                self._wake = trio.Event()

    def _step(self, nursery: trio.Nursery) -> None:
        for action in self.plan.poll(trio.current_time()):
            if isinstance(action, Ask):
                pending = self._pending.get(action.cid)
                if pending is None:  # settled meanwhile
                    self.plan.drop(action.cid)
                else:
                    nursery.start_soon(self._ask, action.cid, pending.contacts[action.peer])
            elif isinstance(action, GiveUp):
                self._finish(action.cid, None)

    async def fetch(self, cid: CID, holders: Sequence[Contact], *, urgent: bool = False) -> Block | None:
        """``cid``'s block from one of ``holders`` (nearest first), or None
        if none of them gives it; a fetch of the same block already under
        way is joined (with ``holders`` added to its own)."""
        assert self._nursery is not None, "BlockFetcher.run() is not running"
        pending = self.want(cid, holders, urgent=urgent)
        await pending.done.wait()
        return pending.block

    def want(self, cid: CID, holders: Sequence[Contact], *, urgent: bool = False) -> _Pending:
        """Start fetching ``cid`` from ``holders`` (or add them to its fetch
        under way), without waiting for it; :meth:`fetch` joins it."""
        pending = self._pending.get(cid)
        if pending is None:
            pending = self._pending[cid] = _Pending()
        for contact in holders:
            pending.contacts.setdefault(contact.node_id, contact)
        self.plan.want(cid, [c.node_id for c in holders], trio.current_time(), urgent=urgent)
        self._wake.set()
        return pending

    def hurry(self, cid: CID) -> None:
        """A reader now waits for ``cid`` (being fetched ahead of it)."""
        self.plan.hurry(cid)
        self._wake.set()

    def statistics(self) -> FetchStatistics:
        return self.plan.statistics()

    def _finish(self, cid: CID, block: Block | None) -> None:
        pending = self._pending.pop(cid, None)
        if pending is not None:
            pending.block = block
            pending.done.set()

    async def _ask(self, cid: CID, contact: Contact) -> None:
        peer = contact.node_id
        if not self.dht.pool.connected(peer):
            try:
                await self.dht.connect(contact)
            except PeerError:
                self.plan.missing(cid, peer, trio.current_time())
                self._wake.set()
                return
            self.plan.alive(peer, trio.current_time())
        block = await self.dht.block_from(contact, cid)
        now = trio.current_time()
        if block is None:
            self.plan.missing(cid, peer, now)
        else:
            self.plan.arrived(cid, peer, now)
            self._finish(cid, block)
        self._wake.set()
