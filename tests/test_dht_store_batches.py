"""StoreBatcher: blocks bound for one peer share STORE_BLOCKS messages."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

import trio
import trio.lowlevel
import trio.testing

from cas.blocks import Block
from cas.cid import CID, RAW
from cas.dht.routing import Contact
from cas.dht.store_batches import StoreBatcher, StoreOutcome
from cas.net.messages import MAX_LEASE, MAX_STORE_BLOCKS


def trio_test(fn: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    @functools.wraps(fn)
    def run() -> None:
        async def bounded() -> None:
            with trio.fail_after(10):  # a hang is a failure, not a stuck suite
                await fn()

        trio.run(bounded)

    return run


PEER_A = Contact(1, "127.0.0.1", 4001)
PEER_B = Contact(2, "127.0.0.1", 4002)


STORED = StoreOutcome("stored")


class FakePeers:
    """A SendBatch whose answers the test releases one message at a time."""

    def __init__(self, outcome: StoreOutcome = STORED) -> None:
        self.sent: list[tuple[int, list[CID]]] = []
        self.leases: list[list[int]] = []
        self.release = trio.Semaphore(0)
        self.outcome = outcome
        self.fail_with: Exception | None = None

    async def send(self, contact: Contact, blocks: Sequence[tuple[CID, bytes]],
                   leases: Sequence[int]) -> list[StoreOutcome]:
        self.sent.append((contact.node_id, [cid for cid, _ in blocks]))
        self.leases.append(list(leases))
        await self.release.acquire()
        if self.fail_with is not None:
            raise self.fail_with
        return [self.outcome] * len(blocks)


def blocks(n: int, size: int = 100) -> list[Block]:
    return [Block.of(RAW, i.to_bytes(4, "big") * (size // 4)) for i in range(n)]


async def store_all(batcher: StoreBatcher, contact: Contact, items: list[Block],
                    outcomes: dict[CID, StoreOutcome]) -> None:
    async def one(block: Block) -> None:
        outcomes[block.cid] = await batcher.store(contact, block.cid, block.data)

    async with trio.open_nursery() as nursery:
        for block in items:
            nursery.start_soon(one, block)


async def release_until_done(peers: FakePeers, done: trio.Event) -> None:
    while not done.is_set():
        await trio.testing.wait_all_tasks_blocked()
        if done.is_set():
            return
        peers.release.release()


@trio_test
async def test_a_lone_block_is_sent_at_once_and_the_rest_share_messages() -> None:
    peers = FakePeers()
    items = blocks(12)
    outcomes: dict[CID, StoreOutcome] = {}
    async with trio.open_nursery() as nursery:
        batcher = StoreBatcher(peers.send, nursery, in_flight=1)
        nursery.start_soon(store_all, batcher, PEER_A, items[:1], outcomes)
        await trio.testing.wait_all_tasks_blocked()
        assert peers.sent == [(1, [items[0].cid])]  # nothing waited for company
        nursery.start_soon(store_all, batcher, PEER_A, items[1:], outcomes)
        await trio.testing.wait_all_tasks_blocked()
        assert len(peers.sent) == 1  # the slot is taken: the other 11 queue
        peers.release.release()
        await trio.testing.wait_all_tasks_blocked()
        assert peers.sent[1][0] == 1  # all 11 in the next message
        assert sorted(peers.sent[1][1]) == sorted(b.cid for b in items[1:])
        peers.release.release()
    assert outcomes == {b.cid: StoreOutcome("stored") for b in items}
    assert batcher.messages_sent == 2


@trio_test
async def test_messages_are_bounded_by_bytes_and_count_and_peers_are_apart() -> None:
    peers = FakePeers()
    small = blocks(MAX_STORE_BLOCKS + 5, size=8)
    big = blocks(3, size=600)
    outcomes: dict[CID, StoreOutcome] = {}
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        batcher = StoreBatcher(peers.send, nursery, batch_bytes=1000, in_flight=1)
        nursery.start_soon(release_until_done, peers, done)
        async with trio.open_nursery() as stores:
            stores.start_soon(store_all, batcher, PEER_A, small, outcomes)
            stores.start_soon(store_all, batcher, PEER_B, big, outcomes)
        done.set()
    assert len(outcomes) == len(small) + len(big)
    for node_id, cids in peers.sent:
        assert 1 <= len(cids) <= MAX_STORE_BLOCKS
        assert all(cid in {b.cid for b in (small if node_id == 1 else big)} for cid in cids)
        if node_id == 2:
            assert len(cids) == 1  # two of 600 bytes exceed 1000
    assert sorted(c for _, cids in peers.sent for c in cids) == sorted(b.cid for b in small + big)


@trio_test
async def test_at_most_in_flight_messages_per_peer() -> None:
    peers = FakePeers()
    items = blocks(10)
    outcomes: dict[CID, StoreOutcome] = {}
    async with trio.open_nursery() as nursery:
        batcher = StoreBatcher(peers.send, nursery, batch_bytes=100, in_flight=2)  # one block a message
        nursery.start_soon(store_all, batcher, PEER_A, items, outcomes)
        for sent in range(2, 11):
            await trio.testing.wait_all_tasks_blocked()
            assert len(peers.sent) == sent  # two outstanding, never three
            peers.release.release()
        await trio.testing.wait_all_tasks_blocked()
        peers.release.release()
    assert len(outcomes) == 10


@trio_test
async def test_a_second_message_goes_only_once_it_is_full() -> None:
    peers = FakePeers()
    items = blocks(12, size=100)
    outcomes: dict[CID, StoreOutcome] = {}
    async with trio.open_nursery() as nursery:
        batcher = StoreBatcher(peers.send, nursery, batch_bytes=1000, in_flight=2)
        nursery.start_soon(store_all, batcher, PEER_A, items[:1], outcomes)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(store_all, batcher, PEER_A, items[1:10], outcomes)
        await trio.testing.wait_all_tasks_blocked()
        assert len(peers.sent) == 1  # 900 bytes queued: not yet a full message
        nursery.start_soon(store_all, batcher, PEER_A, items[10:], outcomes)
        await trio.testing.wait_all_tasks_blocked()
        assert [len(cids) for _, cids in peers.sent] == [1, 10]  # full: sent beside the first
        for _ in range(3):
            peers.release.release()
            await trio.testing.wait_all_tasks_blocked()
    assert [len(cids) for _, cids in peers.sent] == [1, 10, 1]
    assert len(outcomes) == 12


@trio_test
async def test_a_failed_message_fails_every_block_it_carried() -> None:
    peers = FakePeers()
    peers.fail_with = RuntimeError("boom")
    items = blocks(3)
    outcomes: dict[CID, StoreOutcome] = {}
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        batcher = StoreBatcher(peers.send, nursery)
        nursery.start_soon(release_until_done, peers, done)
        await store_all(batcher, PEER_A, items, outcomes)
        done.set()
    assert {o.status for o in outcomes.values()} == {"failed"}
    assert all("boom" in o.reason for o in outcomes.values())


@trio_test
async def test_a_block_whose_caller_gives_up_before_it_is_sent_is_not_sent() -> None:
    peers = FakePeers()
    first, second = blocks(2)
    async with trio.open_nursery() as nursery:
        batcher = StoreBatcher(peers.send, nursery, in_flight=1)
        nursery.start_soon(batcher.store, PEER_A, first.cid, first.data)
        await trio.testing.wait_all_tasks_blocked()
        gave_up = trio.CancelScope()

        async def store_second() -> None:
            with gave_up:
                await batcher.store(PEER_A, second.cid, second.data)

        nursery.start_soon(store_second)
        await trio.testing.wait_all_tasks_blocked()
        gave_up.cancel()
        await trio.testing.wait_all_tasks_blocked()
        peers.release.release()
        await trio.testing.wait_all_tasks_blocked()
    assert peers.sent == [(1, [first.cid])]


class PerPeerOutcomes(FakePeers):
    """Answers every block at once, with an outcome chosen per peer."""

    def __init__(self, by_peer: dict[int, StoreOutcome]) -> None:
        super().__init__()
        self.by_peer = by_peer

    async def send(self, contact: Contact, blocks: Sequence[tuple[CID, bytes]],
                   leases: Sequence[int]) -> list[StoreOutcome]:
        self.sent.append((contact.node_id, [cid for cid, _ in blocks]))
        self.leases.append(list(leases))
        await trio.lowlevel.checkpoint()
        return [self.by_peer[contact.node_id]] * len(blocks)


PEER_C = Contact(3, "127.0.0.1", 4003)


@trio_test
async def test_one_block_stored_on_several_peers_at_once_gives_each_outcome_in_order() -> None:
    peers = PerPeerOutcomes({1: StoreOutcome("stored"), 2: StoreOutcome("refused", "full"),
                             3: StoreOutcome("failed", "timed out")})
    block = blocks(1)[0]
    async with trio.open_nursery() as nursery:
        batcher = StoreBatcher(peers.send, nursery)
        outcomes = await batcher.store_on([PEER_C, PEER_A, PEER_B], block.cid, block.data)
        nursery.cancel_scope.cancel()
    assert [o.status for o in outcomes] == ["failed", "stored", "refused"]
    assert sorted(peers.sent) == [(1, [block.cid]), (2, [block.cid]), (3, [block.cid])]


@trio_test
async def test_a_round_cancelled_before_its_stores_are_sent_leaves_nothing_queued() -> None:
    peers = FakePeers()
    first, second = blocks(2)
    async with trio.open_nursery() as nursery:
        batcher = StoreBatcher(peers.send, nursery, in_flight=1)
        nursery.start_soon(batcher.store, PEER_A, first.cid, first.data)  # PEER_A now busy
        await trio.testing.wait_all_tasks_blocked()
        round_scope = trio.CancelScope()

        async def store_round() -> None:
            with round_scope:
                await batcher.store_on([PEER_A, PEER_B], second.cid, second.data)

        nursery.start_soon(store_round)  # PEER_B's store goes; PEER_A's waits behind the first
        await trio.testing.wait_all_tasks_blocked()
        round_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert [sent for sent in peers.sent if sent[0] == 1] == [(1, [first.cid])]
        for _ in range(2):
            peers.release.release()
        await trio.testing.wait_all_tasks_blocked()
        assert [sent for sent in peers.sent if sent[0] == 1] == [(1, [first.cid])]  # never sent after
        nursery.cancel_scope.cancel()


@trio_test
async def test_each_block_travels_with_its_lease_and_whole_leases_are_left_to_the_receiver() -> None:
    peers = FakePeers()
    items = blocks(3)
    outcomes: dict[CID, StoreOutcome] = {}

    async def store(batcher: StoreBatcher, block: Block, lease: int | None) -> None:
        outcomes[block.cid] = await batcher.store(PEER_A, block.cid, block.data, lease)

    async with trio.open_nursery() as nursery:
        batcher = StoreBatcher(peers.send, nursery, in_flight=1)
        nursery.start_soon(store, batcher, items[0], None)  # alone, and the whole lease: no leases sent
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(store, batcher, items[1], 90)  # these two queue behind it and share a message
        nursery.start_soon(store, batcher, items[2], None)
        await trio.testing.wait_all_tasks_blocked()
        peers.release.release()
        await trio.testing.wait_all_tasks_blocked()
        peers.release.release()
    assert peers.leases[0] == []
    # a whole lease as the most the wire holds: the receiver caps it
    assert dict(zip(peers.sent[1][1], peers.leases[1])) == {items[1].cid: 90, items[2].cid: MAX_LEASE}
    assert outcomes == {b.cid: StoreOutcome("stored") for b in items}
