"""Replicator (in process, real sockets): a repair round's copies and counts."""

from __future__ import annotations

import trio

from cas.blocks import Block, MemoryBlockStore
from cas.cid import RAW
from cas.dht.replicator import Replicator
from tests.test_dht_driver import network
from tests.test_replication_busy import Source
from tests.test_replication_store import MemoryKeeper


def test_a_repair_round_copies_every_block_to_the_members_lacking_it_and_counts_each_copy() -> None:
    blocks = [Block.of(RAW, b"%d" % i * 3000) for i in range(40)]

    async def main() -> None:
        async with network() as net:
            memories = [MemoryBlockStore(), MemoryBlockStore()]
            receivers = [await net.add(store=m, keeper=MemoryKeeper(m, quota=1 << 24)) for m in memories]
            holder = await net.add()
            for receiver in receivers:
                await holder.bootstrap([("127.0.0.1", receiver.listen_port or 0)])
            replicator = Replicator(holder, Source(blocks), replicas=3, retry_interval=3600,
                                    repair_interval=3600)
            async with trio.open_nursery() as nursery:
                await nursery.start(replicator.run)
                report = await replicator.repair()
                nursery.cancel_scope.cancel()
            # Three nodes, R = 3: each block goes to both others, and every copy is counted.
            assert all(m.has(b.cid) for m in memories for b in blocks)
            assert (report.blocks, report.stores, report.short) == (40, 80, 0)
            assert replicator.stats.repair_stores == 80
            assert replicator.stats.repair_bytes == 2 * sum(len(b.data) for b in blocks)
            assert holder.store_messages_sent < 80  # copies to one peer share messages

    trio.run(main)
