"""Blocks held for the network, in the store and on the wire: STORE_BLOCK is
verified before it is acknowledged, kept as held (not own), limited by a
quota (refused with a reason) and by a per-peer rate; gc keeps held blocks,
verify does not expect their children, own blocks are never dropped, and a
repository from before the held table opens and gains it."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from cas import dagcbor
from cas.blocks import Block, MemoryBlockStore
from cas.cid import DAG_CBOR, RAW
from cas.dht import driver as driver_module
from cas.dht.driver import DhtDriver
from cas.errors import StorageQuotaError
from cas.net import messages as msg
from cas.store import LocalStore
from cas.store._database import SCHEMA_VERSION
from tests.test_dht_driver import Net, network


def test_a_held_block_counts_against_the_quota_and_a_full_store_refuses(tmp_path: Path) -> None:
    with LocalStore.open(tmp_path / "r") as store:
        store.held.quota = 100
        assert store.held.accept(Block.of(RAW, b"x" * 60))
        assert store.held.bytes == 60 and len(store.held) == 1
        with pytest.raises(StorageQuotaError, match="full .60 of 100 bytes"):
            store.held.accept(Block.of(RAW, b"y" * 60))
        assert not store.held.accept(Block.of(RAW, b"x" * 60))  # already there: no change
    with LocalStore.open(tmp_path / "r") as store:  # durable, and the count reloads
        assert store.held.bytes == 60 and store.blocks.has(Block.of(RAW, b"x" * 60).cid)


def test_a_group_of_blocks_is_kept_in_one_commit_and_only_the_one_over_quota_refused(tmp_path: Path) -> None:
    a, b, c = (Block.of(RAW, bytes([i]) * 40) for i in range(3))
    with LocalStore.open(tmp_path / "r") as store:
        store.held.quota = 100
        outcomes = store.held.accept_many([a, b, a, c])
        assert outcomes[:3] == [True, True, False]  # a second copy of a is no change
        assert isinstance(outcomes[3], StorageQuotaError)
    with LocalStore.open(tmp_path / "r") as store:  # durable on return
        assert store.held.bytes == 80 and store.blocks.has(a.cid) and store.blocks.has(b.cid)
        assert not store.blocks.has(c.cid)


def test_a_block_a_local_client_puts_becomes_own_and_is_never_dropped(tmp_path: Path) -> None:
    with LocalStore.open(tmp_path / "r") as store:
        held, own = Block.of(RAW, b"for the network"), Block.of(RAW, b"mine")
        store.held.accept(held)
        store.blocks.put(own)
        store.blocks.barrier()
        assert store.drop_held([own.cid]) == []
        assert store.blocks.has(own.cid)
        store.held.accept(Block.of(RAW, b"claimed"))
        assert store.held.claim(Block.of(RAW, b"claimed").cid)
        assert store.drop_held([Block.of(RAW, b"claimed").cid]) == []
        assert store.drop_held([held.cid]) == [held.cid]
        assert not store.blocks.has(held.cid) and store.held.bytes == 0


def test_a_held_block_the_user_pins_is_kept_and_gc_keeps_held_blocks(tmp_path: Path) -> None:
    with LocalStore.open(tmp_path / "r") as store:
        a, b = Block.of(RAW, b"pinned later"), Block.of(RAW, b"just held")
        store.held.accept(a)
        store.held.accept(b)
        store.pin(a.cid)
        assert store.gc().blocks_freed == 0
        assert store.drop_held([a.cid, b.cid]) == [b.cid]
        assert store.blocks.has(a.cid)


def test_verify_does_not_expect_the_children_of_a_held_node(tmp_path: Path) -> None:
    child = Block.of(RAW, b"lives elsewhere")
    parent = Block.of(DAG_CBOR, dagcbor.encode({"child": child.cid}))
    with LocalStore.open(tmp_path / "r") as store:
        store.held.accept(parent)
        assert store.verify().ok


def test_a_repository_from_before_the_held_table_opens_and_gains_it(tmp_path: Path) -> None:
    with LocalStore.open(tmp_path / "r") as store:
        store.pin(store_block(store, b"old content"))
    db = sqlite3.connect(tmp_path / "r" / "meta.sqlite")
    db.execute("DROP TABLE held")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with LocalStore.open(tmp_path / "r") as store:
        assert len(store.pins()) == 1 and len(store.held) == 0
        store.held.accept(Block.of(RAW, b"new"))
    db = sqlite3.connect(tmp_path / "r" / "meta.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
    db.close()


def store_block(store: LocalStore, data: bytes):
    block = Block.of(RAW, data)
    store.blocks.put(block)
    store.blocks.barrier()
    return block.cid


# -- on the wire ------------------------------------------------------------------------


class MemoryKeeper:
    """A BlockKeeper over a MemoryBlockStore with a byte quota."""

    def __init__(self, store: MemoryBlockStore, quota: int) -> None:
        self.store, self.quota, self.used = store, quota, 0

    async def keep_many(self, blocks: list[Block], sender: bytes | None = None,
                        leases: Sequence[int] = ()) -> list[object]:
        outcomes: list[object] = []
        for block in blocks:
            if self.store.has(block.cid):
                outcomes.append(False)
            elif self.used + len(block.data) > self.quota:
                outcomes.append(StorageQuotaError(
                    f"storage for other nodes' blocks is full ({self.used} of {self.quota} bytes used)"))
            else:
                self.store.put(block)
                self.used += len(block.data)
                outcomes.append(True)
        return outcomes


async def keeper_and_sender(net: Net, quota: int = 1 << 20) -> tuple[DhtDriver, DhtDriver, MemoryBlockStore]:
    """A node keeping blocks for others in memory under ``quota``, and a node
    that knows it: (receiver, sender, the receiver's blocks)."""
    memory = MemoryBlockStore()
    receiver = await net.add(store=memory, keeper=MemoryKeeper(memory, quota=quota))
    sender = await net.add()
    await sender.bootstrap([("127.0.0.1", receiver.listen_port or 0)])
    return receiver, sender, memory


def test_store_block_is_verified_kept_and_refused_with_a_reason_when_full() -> None:
    async def main() -> None:
        async with network() as net:
            receiver, sender, memory = await keeper_and_sender(net, quota=100)
            to = net.contact(receiver)
            block = Block.of(RAW, b"a" * 60)
            assert (await sender.store_block(to, block.cid, block.data)).status == "stored"
            assert memory.has(block.cid)
            full = await sender.store_block(to, Block.of(RAW, b"b" * 60).cid, b"b" * 60)
            assert full.status == "refused" and "full" in full.reason and "60 of 100" in full.reason
            assert sender.table.failures(receiver.own_id) == 0  # full is not broken
            forged = await sender.store_block(to, Block.of(RAW, b"c").cid, b"not c")
            assert forged.status == "failed" and not memory.has(Block.of(RAW, b"c").cid)
            # A node without a keeper refuses politely.
            plain = await net.add()
            await sender.bootstrap([("127.0.0.1", plain.listen_port or 0)])
            refused = await sender.store_block(net.contact(plain), block.cid, block.data)
            assert refused.status == "failed" and "keeps no blocks" in refused.reason

    trio.run(main)


def test_store_block_is_rate_limited_per_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_module, "STORE_BURST", 3.0)
    monkeypatch.setattr(driver_module, "STORE_RATE", 0.001)

    async def main() -> None:
        async with network() as net:
            receiver, sender, memory = await keeper_and_sender(net)
            outcomes = []
            for i in range(5):
                block = Block.of(RAW, b"block %d" % i)
                outcomes.append((await sender.store_block(net.contact(receiver), block.cid, block.data)).status)
            assert outcomes == ["stored"] * 3 + ["refused"] * 2
            assert len(memory) == 3

    trio.run(main)


def test_blocks_stored_at_once_on_one_peer_share_messages() -> None:
    async def main() -> None:
        async with network() as net:
            receiver, sender, memory = await keeper_and_sender(net)
            to = net.contact(receiver)
            blocks = [Block.of(RAW, b"%d" % i * 1000) for i in range(40)]
            outcomes: list[str] = []

            async def store(block: Block) -> None:
                outcomes.append((await sender.store_block(to, block.cid, block.data)).status)

            before = sender.store_messages_sent
            async with trio.open_nursery() as nursery:
                for block in blocks:
                    nursery.start_soon(store, block)
            assert outcomes == ["stored"] * 40
            assert all(memory.has(b.cid) for b in blocks)
            # The first goes alone, at once; the rest wait for a free slot and share messages.
            assert sender.store_messages_sent - before <= 10

    trio.run(main)


def test_a_batch_is_refused_block_by_block_when_the_quota_fills_midway() -> None:
    async def main() -> None:
        async with network() as net:
            receiver, sender, memory = await keeper_and_sender(net, quota=250)
            blocks = [Block.of(RAW, bytes([i]) * 100) for i in range(3)]
            outcomes = await sender.store_blocks(net.contact(receiver), [(b.cid, b.data) for b in blocks])
            assert [o.status for o in outcomes] == ["stored", "stored", "refused"]
            assert "full" in outcomes[2].reason
            assert memory.has(blocks[1].cid) and not memory.has(blocks[2].cid)

    trio.run(main)


def test_a_batch_with_one_forged_block_is_refused_whole() -> None:
    async def main() -> None:
        async with network() as net:
            receiver, sender, memory = await keeper_and_sender(net)
            good = Block.of(RAW, b"good")
            outcomes = await sender.store_blocks(net.contact(receiver), [
                (good.cid, good.data), (Block.of(RAW, b"c").cid, b"not c")])
            assert [o.status for o in outcomes] == ["failed", "failed"]
            assert "does not match" in outcomes[0].reason
            assert len(memory) == 0  # nothing of a lying message is kept

    trio.run(main)


def test_store_blocks_messages_round_trip_and_check_their_sizes() -> None:
    blocks = [Block.of(RAW, b"wire"), Block.of(RAW, b"x" * 5000)]
    message = msg.StoreBlocks.of([(b.cid, b.data) for b in blocks])
    message = msg.with_request_id(message, 4)
    decoded = msg.decode(msg.encode(message))
    assert decoded == message
    assert isinstance(decoded, msg.StoreBlocks)
    assert decoded.blocks() == [(b.cid, b.data) for b in blocks]
    with pytest.raises(ValueError, match="one block per CID"):
        msg.StoreBlocks((blocks[0].cid,), ())
    with pytest.raises(ValueError, match="at most"):
        msg.StoreBlocks((blocks[0].cid,) * 3, (b"x" * msg.MAX_BLOCK_SIZE,) * 3)
    # A message whose CIDs and blocks differ in number is refused on the way in too.
    wire = msg.encode(msg.StoreBlocks((blocks[0].cid, blocks[1].cid), (b"ab", b"cd")))
    bad = wire.replace(b"\x82\x42ab\x42cd", b"\x81\x44abcd")
    assert bad != wire
    with pytest.raises(msg.MalformedMessageError, match="one block per CID"):
        msg.decode(bad)


def test_one_sender_is_held_only_up_to_its_share_and_others_still_fit(tmp_path: Path) -> None:
    rogue, honest = b"r" * 32, b"h" * 32
    with LocalStore.open(tmp_path / "r") as store:
        store.held.quota, store.held.peer_quota = 1000, 100
        junk = [Block.of(RAW, bytes([i]) * 40) for i in range(5)]
        outcomes = store.held.accept_many([(block, rogue) for block in junk])
        assert outcomes[:2] == [True, True]
        assert all(isinstance(o, StorageQuotaError) and "limit per node" in str(o) for o in outcomes[2:])
        assert store.held.held_for(rogue) == 80
        assert store.held.accept_many([(Block.of(RAW, b"good" * 10), honest)]) == [True]
        assert store.held.by_sender() == {rogue: (2, 80), honest: (1, 40)}


def test_blocks_for_others_never_take_the_disk_reserve(tmp_path: Path) -> None:
    from cas.store._held import DiskSpace

    with LocalStore.open(tmp_path / "r") as store:
        free = [1000]
        store.held._disk = lambda: DiskSpace(free[0], 4000)  # a disk of 4000 bytes, 1000 free
        store.held.reserve = 900
        outcomes = store.held.accept_many([(Block.of(RAW, bytes([i]) * 60), b"p" * 32) for i in range(3)])
        assert outcomes[0] is True  # 940 free after it
        assert isinstance(outcomes[1], StorageQuotaError) and "free for its owner" in str(outcomes[1])
        store.held.reserve = None  # the default: a quarter of the disk
        free[0] = 1100
        assert store.held.accept_many([(Block.of(RAW, b"q" * 60), b"p" * 32)]) == [True]
        free[0] = 1050
        assert isinstance(store.held.accept_many([(Block.of(RAW, b"z" * 60), b"p" * 32)])[0], StorageQuotaError)
