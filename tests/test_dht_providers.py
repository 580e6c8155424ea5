"""Provider records (cas/dht/providers.py): a node that refuses a block
remembers who offered it, and a reader's FIND_BLOCK lookup learns of that
holder even when it lies outside the block's neighbourhood."""

from __future__ import annotations

import trio

from cas.blocks import Block, MemoryBlockStore
from cas.cid import RAW
from cas.dht.ids import key_for_digest
from cas.dht.providers import ProviderRecords
from cas.dht.routing import Contact
from tests.test_dht_driver import network
from tests.test_replication_store import MemoryKeeper

A, B, C = Contact(1, "127.0.0.1", 1), Contact(2, "127.0.0.2", 2), Contact(3, "127.0.0.3", 3)


def test_a_record_lasts_its_ttl_and_a_refresh_extends_it() -> None:
    records = ProviderRecords(ttl=10)
    assert records.add(b"x", A, now=0)
    assert records.providers(b"x", now=9) == [A]
    assert records.providers(b"x", now=10) == []
    records.add(b"x", A, now=5)  # refreshed
    assert records.providers(b"x", now=14) == [A]
    assert records.providers(b"y", now=0) == []


def test_records_are_bounded_per_block_per_provider_and_in_all() -> None:
    records = ProviderRecords(ttl=100, max_per_block=2, max_per_provider=2, max_records=3)
    records.add(b"x", A, 0)
    records.add(b"x", B, 1)
    records.add(b"x", C, 2)  # a third provider of x: the oldest of x goes
    assert records.providers(b"x", 3) == [C, B]
    records.add(b"y", C, 3)
    assert not records.add(b"z", C, 4)  # C has two records already
    records.add(b"z", A, 5)  # a fourth record: the oldest of all (x by B) goes
    assert records.providers(b"x", 6) == [C] and records.providers(b"z", 6) == [A]
    assert len(records) == 3
    records.add(b"w", A, 200)  # everything else has expired meanwhile
    assert len(records) == 1 and records.providers(b"w", 200) == [A]


def test_a_block_refused_by_its_neighbourhood_is_still_found_at_the_node_that_offered_it() -> None:
    async def main() -> None:
        async with network() as net:
            nodes = [await net.add(keeper=MemoryKeeper(MemoryBlockStore(), quota=0)) for _ in range(8)]
            first = nodes[0]
            adder_store = MemoryBlockStore()
            adder = await net.add(store=adder_store)
            for node in nodes[1:] + [adder]:
                await node.bootstrap([("127.0.0.1", first.listen_port or 0)])
            for node in net.nodes:
                await node.refresh(force=True)
            # A block whose key is far from the adder: the adder is the
            # farthest of all the nodes, so no lookup window holds it.
            ids = [n.own_id for n in net.nodes]
            block = next(b for b in (Block.of(RAW, b"far %d" % i) for i in range(10_000))
                         if max(ids, key=lambda i: i ^ key_for_digest(b.cid.digest)) == adder.own_id)
            adder_store.put(block)
            key = key_for_digest(block.cid.digest)
            closest = sorted(nodes, key=lambda n: n.own_id ^ key)[:4]
            reader = next(n for n in nodes if n not in closest)
            before = await reader.find_block(block.cid)
            assert before.block is None and before.providers == ()
            # The adder offers it to the closest nodes; each refuses (full)
            # and remembers who offered it.
            for holder in closest:
                outcome = await adder.store_block(net.contact(holder), block.cid, block.data)
                assert outcome.status == "refused"
            found = await reader.find_block(block.cid)
            assert found.block is None  # no copy where copies belong...
            assert [c.node_id for c in found.providers] == [adder.own_id]  # ...but who has one
            assert await reader.block_from(found.providers[0], block.cid) == block  # a verified Block

    trio.run(main)
