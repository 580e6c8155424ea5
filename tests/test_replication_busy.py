"""Placement against a peer's rate limit: a ``busy`` answer is waited out
and retried, not counted as a failure, and the block ends up stored."""

from __future__ import annotations

import pytest
import trio

from cas.blocks import Block
from cas.cid import CID, RAW
from cas.dht import responder as responder_module
from cas.dht.replicator import Replicator
from tests.test_dht_driver import network
from tests.test_replication_store import keeper_and_sender


class Source:
    """The adder's blocks, as the replicator reads them."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = {b.cid: b.data for b in blocks}

    async def get(self, cid: CID) -> bytes:
        return self.blocks[cid]

    async def leases(self) -> dict[CID, float]:
        return {}  # every block its own

    async def all_blocks(self) -> list[CID]:
        return list(self.blocks)

    async def drop(self, cids: list[CID]) -> list[CID]:
        return []

    async def sizes(self, cids: list[CID]) -> dict[CID, int]:
        return {cid: len(self.blocks[cid]) for cid in cids if cid in self.blocks}


def test_a_busy_peer_is_waited_for_and_its_copy_is_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(responder_module, "STORE_RATE", 8.0)
    monkeypatch.setattr(responder_module, "STORE_BURST", 1.0)
    blocks = [Block.of(RAW, b"block %d" % i) for i in range(4)]

    async def main() -> None:
        async with network() as net:
            receiver, sender, memory = await keeper_and_sender(net)
            replicator = Replicator(sender, Source(blocks), replicas=2, retry_interval=3600,
                                    repair_interval=3600)
            async with trio.open_nursery() as nursery:
                await nursery.start(replicator.run)
                for block in blocks:
                    await replicator.place(block.cid)
                assert await replicator.wait_settled([b.cid for b in blocks], timeout=30)
                nursery.cancel_scope.cancel()
            assert all(memory.has(b.cid) for b in blocks)
            assert replicator.stats.refusals == 0 and replicator.stats.peer_store_failures[receiver.own_id] == 0
            assert replicator.stats.peer_stores[receiver.own_id] == len(blocks)

    trio.run(main)
