"""The node's repository as its peers and its replicator reach it.

Owns :class:`PeerStore`: what the DHT driver answers peers from
(``has``, ``get`` for FIND_BLOCK, ``have`` for HAVE, ``renew`` for a
HAVE's lease, ``keep_many`` for STORE_BLOCKS) and what the repair round
reads (``leases``, ``all_blocks``, ``sizes``, ``drop``). A copy is vouched
for only once verified: one not checked within the scrub period is read
and hashed before HAVE claims it, and a damaged one is quarantined, healed
in the background and reported as not here.

Must never: touch the repository but through the node's store thread, or
claim a block whose lease ran out (nobody wants it kept; gc takes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..blocks import Block
from ..cid import CID
from ..errors import BlockNotFoundError, CorruptBlockError, InvalidBlockError, RepositoryError
from ..store import Placed
from .config import HAVE_VERIFY_BYTES

if TYPE_CHECKING:
    from .daemon import Node


class PeerStore:
    """The node's repository as its peers and its replicator reach it (see
    the module docstring)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def has(self, cid: CID) -> bool:
        return await self._node.blocks.has(cid)

    async def get(self, cid: CID) -> bytes:
        """A verified copy, for a peer (FIND_BLOCK) or the repair round; a
        stored copy that fails verification is quarantined, healed in the
        background, and reported as not here."""
        node = self._node
        assert node.store is not None
        try:
            data = bytes(await node.in_store_thread(node.store.blocks.get, cid))
        except CorruptBlockError as damage:
            await node.quarantine(damage)
            node.heal_soon(cid)
            raise BlockNotFoundError(cid) from None
        node.mark_verified(cid)
        return data

    async def have(self, cids: Sequence[CID]) -> list[bool]:
        """HAVE: for each CID, whether a copy here verified within the scrub
        period; one not checked that recently is read and hashed now, and a
        bad one quarantined (and healed in the background). A block held
        for the network whose lease ran out is not claimed: nobody wants
        it kept, and gc will take it."""
        node = self._node
        assert node.store is not None
        store = node.store
        recheck = {cid for cid in cids if not node.recently_verified(cid)}

        def check() -> tuple[list[bool], list[CID], list[CorruptBlockError]]:
            present: list[bool] = []
            read: list[CID] = []
            bad: list[CorruptBlockError] = []
            budget = HAVE_VERIFY_BYTES
            expired = store.held.expired_among(cids)
            for cid in cids:
                ok = store.blocks.has(cid) and cid not in expired
                if ok and cid in recheck:
                    if budget <= 0:
                        # Not verified in time for this answer, so not
                        # claimed: the asker sends a copy (kept as it is)
                        # or asks again, by when the scrub or a later HAVE
                        # has verified more.
                        present.append(False)
                        continue
                    try:
                        budget -= len(store.blocks.get(cid))
                        read.append(cid)
                    except CorruptBlockError as damage:
                        bad.append(damage)
                        ok = False
                    except (BlockNotFoundError, InvalidBlockError, RepositoryError):  # gone, or unreadable: not vouched for
                        ok = False
                present.append(ok)
            return present, read, bad

        present, read, bad = await node.in_store_thread(check)
        for cid in read:
            node.mark_verified(cid)
        for damage in bad:
            await node.quarantine(damage)
            node.heal_soon(damage.cid)
        return present

    async def leases(self) -> dict[CID, float]:
        assert self._node.store is not None
        return dict(await self._node.in_store_thread(self._node.store.held.leases))

    async def renew(self, cids: Sequence[CID], seconds: int) -> None:
        """A HAVE with a lease: keep those held here that much longer."""
        store = self._node.store
        assert store is not None

        def renew() -> None:
            store.held.renew(cids, seconds)
            store.blocks.barrier()

        await self._node.in_store_thread(renew)

    async def all_blocks(self) -> list[CID]:
        store = self._node.store
        assert store is not None
        return list(await self._node.in_store_thread(lambda: list(store.blocks.iterate())))

    async def drop(self, cids: list[CID]) -> list[CID]:
        assert self._node.store is not None
        return list(await self._node.in_store_thread(self._node.store.drop_held, cids))

    async def sizes(self, cids: list[CID]) -> dict[CID, int]:
        assert self._node.store is not None
        return dict(await self._node.in_store_thread(self._node.store.blocks.sizes, cids))

    async def keep_many(self, blocks: list[Block], sender: bytes | None = None,
                        leases: Sequence[int] = ()) -> list[object]:
        """Blocks a peer (``sender``) placed here (verified), each for its
        lease in seconds (none: the network's): held for the network, within
        the quota, the sender's share and the disk reserve, durable on
        return (group-committed with the others arriving at the same time);
        per block, True/False or the quota error that refused it."""
        assert self._node.group_commit is not None
        return await self._node.group_commit.keep_many(
            [Placed(block, sender, leases[i] if leases else None) for i, block in enumerate(blocks)])
