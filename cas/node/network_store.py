"""The node's blocks as its readers see them: the repository, and the
network behind it.

Owns :class:`NetworkBlockStore`, what every read through the node goes
through (the control ops ``get``, ``write_file`` and ``prefetch``; a
published mount): a block is read from the repository; a damaged copy is
quarantined and healed from the network before it is served; a block this
node lacks is fetched from the nodes that hold it (``Replicator.fetch``:
the DHT driver verifies it, once) and kept as held for the network if the
quota has room. Read-ahead is the reader's walk's hint (``prefetch``): the
disk is asked for what the repository has, and what it lacks is fetched in
the background, wanted in the walk's order from the replicator's fetcher
(several blocks in flight per holder, spread over the holders,
:mod:`cas.dht.fetch_plan`); a read of a block being fetched waits for that
fetch (and moves it to the front) instead of starting another.

Must never: serve bytes that were not verified, touch the repository but
through the node's store thread, or look a block up on the network for
``has`` (the namespace's writers call it before every put: an ``mv`` must
not wait for the network).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ..cid import CID
from ..errors import BlockNotFoundError, CasError, CorruptBlockError, StorageQuotaError
from ..store import LocalStore, Placed

if TYPE_CHECKING:
    from .daemon import Node


class NetworkBlockStore:
    """The async block store of a running node (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._fetching: dict[CID, trio.Event] = {}
        self.read_ahead_count = 0
        """Blocks fetched from the network ahead of a reader (``replication_stats``)."""

    @property
    def _store(self) -> LocalStore:
        store = self._node.store
        assert store is not None, "the node is not running"
        return store

    def _online(self) -> bool:
        dht = self._node.dht
        return dht is not None and len(dht.table) > 0

    async def has(self, cid: CID) -> bool:
        """Whether the repository has ``cid`` (never asks the network)."""
        return await self._node.in_store_thread(self._store.blocks.has, cid)

    async def get(self, cid: CID) -> bytes:
        """``cid``'s verified bytes: from the repository, healed if damaged,
        fetched from the network if missing (BlockNotFoundError if no node
        has it, or, alone, the repository's own)."""
        node, store = self._node, self._store
        try:
            return bytes(await node.in_store_thread(store.blocks.get, cid))
        except CorruptBlockError as damage:
            # A local read heals itself from the network instead of failing.
            await node.quarantine(damage)
            return await node.heal(cid)
        except BlockNotFoundError:
            if await node.in_store_thread(store.quarantine.is_quarantined, cid):
                return await node.heal(cid)  # kept as it was (own or held) when it comes back
            if not self._online():
                raise  # alone: the repository is all there is
            return await self.fetch(cid)

    async def prefetch(self, cids: Sequence[CID]) -> None:
        """A reader's read-ahead hint: the disk is asked to start reading
        what the repository has, and the rest is fetched in the background."""
        await self._node.in_store_thread(self._store.blocks.prefetch, list(cids))
        self.read_ahead(cids)

    def read_ahead(self, cids: Sequence[CID]) -> None:
        """Fetch from the network, in the background, those of ``cids`` this
        node lacks (a walk's read-ahead hint: blocks a reader wants next,
        in that order)."""
        nursery = self._node.nursery
        if nursery is None or not self._online():
            return
        fresh = list(dict.fromkeys(cid for cid in cids if cid not in self._fetching))
        for cid in fresh:
            self._fetching[cid] = trio.Event()
        if fresh:
            nursery.start_soon(self._read_ahead, fresh)

    async def fetch(self, cid: CID) -> bytes:
        """A block this node lacks, from the network (FIND_BLOCK; the driver
        verifies it and passes over peers that lie), kept as held for the
        network if the quota has room. Raises BlockNotFoundError if no node
        has it. A block being read ahead is waited for, not fetched twice."""
        pending = self._fetching.get(cid)
        if pending is not None:  # being read ahead: wait for it, then look again
            if self._node.replicator is not None:
                self._node.replicator.hurry(cid)
            await pending.wait()
            try:
                return bytes(await self._node.in_store_thread(self._store.blocks.get, cid))
            except BlockNotFoundError:
                pass  # not kept (quota): fetch it ourselves
        return await self._fetch_and_keep(cid, urgent=True)

    async def _read_ahead(self, cids: list[CID]) -> None:
        store = self._store

        def lacking() -> list[CID]:
            return [cid for cid in cids if not store.blocks.has(cid)]

        try:
            missing = await self._node.in_store_thread(lacking)
        except CasError:  # a background job's edge: the reader asks again and meets the error itself
            missing = []
        wanted = set(missing)
        for cid in cids:
            if cid not in wanted:
                self._fetching.pop(cid).set()
        replicator = self._node.replicator
        if replicator is not None:
            replicator.fetch_ahead(missing)  # wanted in the walk's order, before the tasks run
        async with trio.open_nursery() as nursery:
            for cid in missing:
                nursery.start_soon(self._read_ahead_one, cid)

    async def _read_ahead_one(self, cid: CID) -> None:
        try:
            await self._fetch_and_keep(cid)
            self.read_ahead_count += 1
        except CasError:  # a background job's edge: the reader asks again and meets the error itself
            pass
        finally:
            self._fetching.pop(cid).set()

    async def _fetch_and_keep(self, cid: CID, *, urgent: bool = False) -> bytes:
        replicator = self._node.replicator
        block = await replicator.fetch(cid, urgent=urgent) if replicator is not None else None
        if block is None:
            raise BlockNotFoundError(cid, "the repository nor on any node of the network")
        committer = self._node.group_commit
        assert committer is not None
        try:
            # Kept with the other blocks arriving meanwhile (read-ahead
            # fetches several at once): one barrier for them all.
            await committer.keep(Placed(block))
        except StorageQuotaError:
            pass  # served, not kept
        return block.data
