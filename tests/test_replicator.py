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


def test_a_holder_found_dead_counts_its_blocks_below_r_at_once_and_a_round_counts_them_again() -> None:
    blocks = [Block.of(RAW, b"%d" % i * 3000) for i in range(30)]
    sizes = {b.cid: len(b.data) for b in blocks}

    async def main() -> None:
        async with network() as net:
            memories = [MemoryBlockStore() for _ in range(3)]
            receivers = [await net.add(store=m, keeper=MemoryKeeper(m, quota=1 << 24)) for m in memories]
            holder = await net.add()
            for receiver in receivers:
                await holder.bootstrap([("127.0.0.1", receiver.listen_port or 0)])
            source = Source(blocks)
            replicator = Replicator(holder, source, replicas=3, retry_interval=3600, repair_interval=3600)
            lost = trio.Event()
            holder.peer_lost.append(lambda node_id: lost.set())  # after the replicator's own hooks
            async with trio.open_nursery() as nursery:
                await nursery.start(replicator.run)
                await replicator.repair()
                assert replicator.short_blocks() == 0 and len(replicator.holders) == len(blocks)
                # What each peer holds of ours: every copy not on this node, with its bytes.
                for receiver, memory in zip(receivers, memories):
                    mine = [c for c in sizes if memory.has(c)]
                    assert replicator.holders.with_peer(receiver.own_id) == (len(mine), sum(sizes[c] for c in mine))

                victim, victim_memory = max(zip(receivers, memories),
                                            key=lambda pair: sum(pair[1].has(c) for c in sizes))
                had = {c for c in sizes if victim_memory.has(c)}
                rounds = replicator.stats.rounds
                net.kill(victim)
                with trio.fail_after(10):
                    await lost.wait()
                # Found dead: counted at once, no round since.
                assert replicator.stats.rounds == rounds
                assert set(replicator.holders.short_cids()) == had
                assert replicator.stats.copies_lost == len(had)
                assert all(replicator.copies(c) == 2 for c in had)
                assert replicator.holders.with_peer(victim.own_id) == (0, 0)

                # Three nodes left, R = 3: a round makes every copy good and counts it.
                await replicator.repair()
                assert replicator.short_blocks() == 0
                # A block collected meanwhile leaves the index at the end of the next round.
                gone = blocks[0].cid
                del source.blocks[gone]
                await replicator.repair()
                assert replicator.copies(gone) is None and len(replicator.holders) == len(blocks) - 1
                nursery.cancel_scope.cancel()

    trio.run(main)
