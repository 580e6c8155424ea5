"""Replicator (in process, real sockets): a repair round's copies and counts, and
the HAVE batches that let a real node confirm copies it got a moment ago."""

from __future__ import annotations

from pathlib import Path

import trio

from cas.blocks import Block, MemoryBlockStore
from cas.cid import RAW
from cas.dht.replicator import Replicator
from cas.node import HAVE_VERIFY_BYTES, Node, NodeConfig
from tests.conftest import pseudo_random
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
def test_copies_placed_on_a_node_moments_ago_are_confirmed_by_the_next_round_not_sent_again(
        tmp_path: Path) -> None:
    """A node answers HAVE yes only for copies it verified within its scrub
    period, re-reading at most HAVE_VERIFY_BYTES per HAVE; copies placed a
    moment ago have not been re-read. A round that asked about them 1024 at
    a time was told no past the first 16 MiB and sent them again (3.2-6.4
    times the bytes to restore in bench/churn.py); in batches of HAVE_BATCH
    each HAVE fits the budget and every copy is confirmed."""
    size = 512 * 1024
    blocks = [Block.of(RAW, pseudo_random(size, f"fresh copy {i}")) for i in range(HAVE_VERIFY_BYTES // size + 8)]

    async def main() -> None:
        async with network() as net:
            holder = await net.add()
            # id_difficulty 0: the in-process holder (tests/test_dht_driver.py) makes no work for its ID
            node = Node(NodeConfig(repo=tmp_path / "node", listen_host="127.0.0.1", listen_port=0, id_difficulty=0,
                                   bootstrap=[("127.0.0.1", holder.listen_port or 0)], repair_interval=3600))
            replicator = Replicator(holder, Source(blocks), replicas=2, retry_interval=3600, repair_interval=3600)
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                await nursery.start(replicator.run)
                first = await replicator.repair()  # the node lacks every block: each is copied once
                assert (first.stores, first.short) == (len(blocks), 0)
                again = await replicator.repair()  # at once: nothing re-read by a scrub yet
                assert (again.stores, again.short) == (0, 0)
                node.stop()
                nursery.cancel_scope.cancel()

    trio.run(main)
