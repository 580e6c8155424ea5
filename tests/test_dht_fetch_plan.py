"""The schedule of block fetches (``cas.dht.fetch_plan``): windows per
holder and in total, blocks spread over their holders, a silent holder
passed over after one patience; events and time passed in, no sockets.
Then against a model of a 100 ms, 100 Mbit/s path, and the last test
drives it with its trio driver (``cas.dht.fetcher``) over real connections."""

from __future__ import annotations

import heapq
from collections import Counter

import pytest
import trio

from cas.blocks import Block, MemoryBlockStore
from cas.cid import CID, RAW
from cas.dht.fetch_plan import TRANSFER_ALLOWANCE, Ask, FetchPlan, GiveUp
from cas.dht.fetcher import BlockFetcher
from cas.dht.ids import id_from_bytes
from cas.dht.routing import Contact
from cas.net.identity import Identity

from .test_dht_driver import Net, network

CIDS = [CID.for_data(RAW, b"block %d" % n) for n in range(200)]
INDEX = {c: n for n, c in enumerate(CIDS)}


def cid(n: int) -> CID:
    return CIDS[n]


def asks(actions: list[Ask | GiveUp]) -> list[tuple[int, int]]:
    return [(INDEX[a.cid], a.peer) for a in actions if isinstance(a, Ask)]


def test_blocks_are_spread_over_their_holders_up_to_the_per_peer_window() -> None:
    plan = FetchPlan(lambda peer: 0.2, per_peer=2, total=100)
    for n in range(8):
        plan.want(cid(n), [1, 2, 3], now=0.0)
    sent = asks(plan.poll(0.0))
    assert sent == [(0, 1), (1, 2), (2, 3), (3, 1), (4, 2), (5, 3)]  # 2 each; the rest wait
    assert plan.statistics().waiting == 2 and plan.statistics().in_flight == 6


def test_the_total_window_bounds_what_is_in_flight() -> None:
    plan = FetchPlan(lambda peer: 0.2, per_peer=8, total=3)
    for n in range(6):
        plan.want(cid(n), [n], now=0.0)
    assert [n for n, _ in asks(plan.poll(0.0))] == [0, 1, 2]
    plan.arrived(cid(1), 1, now=0.1)
    assert asks(plan.poll(0.1)) == [(3, 3)]


def test_an_arrival_frees_the_slot_for_the_next_block_in_the_order_wanted() -> None:
    plan = FetchPlan(lambda peer: 0.2, per_peer=1, total=10)
    for n in range(3):
        plan.want(cid(n), [7], now=0.0)
    assert asks(plan.poll(0.0)) == [(0, 7)]
    plan.arrived(cid(0), 7, now=0.05)
    assert asks(plan.poll(0.05)) == [(1, 7)]


def test_an_urgent_block_goes_before_those_fetched_ahead() -> None:
    plan = FetchPlan(lambda peer: 0.2, per_peer=1, total=10)
    for n in range(4):
        plan.want(cid(n), [7], now=0.0)
    plan.poll(0.0)
    plan.hurry(cid(3))
    plan.want(cid(9), [7], now=0.0, urgent=True)
    plan.arrived(cid(0), 7, now=0.05)
    assert asks(plan.poll(0.05)) == [(9, 7)]
    plan.arrived(cid(9), 7, now=0.06)
    assert asks(plan.poll(0.06)) == [(3, 7)]


def test_a_holder_without_the_block_passes_it_to_the_next_and_the_last_gives_up() -> None:
    plan = FetchPlan(lambda peer: 0.2)
    plan.want(cid(0), [1, 2], now=0.0)
    assert asks(plan.poll(0.0)) == [(0, 1)]
    plan.missing(cid(0), 1, now=0.1)
    assert asks(plan.poll(0.1)) == [(0, 2)]
    plan.missing(cid(0), 2, now=0.2)
    assert plan.poll(0.2) == [GiveUp(cid(0))]
    assert not plan.wanted(cid(0))


def test_a_silent_holder_loses_all_its_requests_after_one_patience() -> None:
    plan = FetchPlan(lambda peer: 0.3, per_peer=4, total=100)
    for n in range(8):
        plan.want(cid(n), [1, 2], now=0.0)
    plan.poll(0.0)  # 0, 2, 4, 6 to holder 1; 1, 3, 5, 7 to holder 2
    deadline = plan.next_deadline()
    assert deadline == pytest.approx(0.3 + TRANSFER_ALLOWANCE)
    plan.arrived(cid(1), 2, now=0.2)  # holder 2 delivers; holder 1 says nothing
    assert asks(plan.poll(0.2)) == []  # both windows still full
    moved = asks(plan.poll(deadline))
    assert [n for n, _ in moved] == [0] and plan.silent(1, deadline)
    # Holder 1's four go to holder 2 as its window allows, first wanted first.
    for n in (3, 5, 7, 0):
        plan.arrived(cid(n), 2, now=deadline + 0.1)
    assert [n for n, _ in asks(plan.poll(deadline + 0.1))] == [2, 4, 6]
    assert plan.statistics().reasked == 4 and plan.statistics().silent == 1


def test_a_holder_delivering_keeps_its_patience_however_long_its_queue() -> None:
    plan = FetchPlan(lambda peer: 0.2, per_peer=8, total=100)
    for n in range(40):
        plan.want(cid(n), [1], now=0.0)
    plan.poll(0.0)
    now, done = 0.0, 0
    while done < 40:  # one block every 0.5 s: slow, never silent
        now += 0.5
        plan.arrived(cid(done), 1, now)
        done += 1
        plan.poll(now)
        assert not plan.silent(1, now)


def test_a_late_block_from_a_silent_holder_is_used_and_clears_its_name() -> None:
    plan = FetchPlan(lambda peer: 0.2, per_peer=1, total=10)
    plan.want(cid(0), [1, 2], now=0.0)
    plan.want(cid(1), [1], now=0.0)
    plan.poll(0.0)
    plan.poll(1.0)  # holder 1 silent: block 0 to holder 2, block 1 has nobody left
    assert plan.silent(1, 1.0) and not plan.wanted(cid(1))
    plan.arrived(cid(0), 1, now=1.1)  # holder 1's answer, late
    assert not plan.wanted(cid(0)) and not plan.silent(1, 1.1)
    plan.arrived(cid(0), 2, now=1.2)  # the second copy: ignored
    assert plan.statistics().in_flight == 0 and plan.statistics().arrived == 1


def test_a_silent_holder_is_passed_over_by_later_blocks_until_its_time_is_up() -> None:
    plan = FetchPlan(lambda peer: 0.2, per_peer=8, total=100, silent_for=10.0)
    plan.want(cid(0), [1, 2], now=0.0)
    plan.poll(0.0)
    plan.poll(1.0)  # holder 1 silent; block 0 to holder 2, which gives it
    plan.arrived(cid(0), 2, now=1.1)
    plan.want(cid(1), [1, 2], now=2.0)
    assert asks(plan.poll(2.0)) == [(1, 2)]
    plan.arrived(cid(1), 2, now=2.1)
    plan.want(cid(2), [1], now=12.0)
    assert asks(plan.poll(12.0)) == [(2, 1)]


# -- against a model of a path: 100 ms round trip, 100 Mbit/s into the reader -------

RTT = 0.1
RATE = 100e6 / 8
BLOCK = 256 * 1024
BLOCKS = 128  # 32 MiB


def simulate(silent: set[int], holders: int = 5, replicas: int = 3) -> tuple[float, Counter[int]]:
    """Read BLOCKS blocks (each on ``replicas`` of ``holders``), all wanted
    at once as a read-ahead does; answers share the reader's downlink (one
    FIFO at RATE). Returns when the last block arrived, and the requests
    each holder got."""
    plan = FetchPlan(lambda peer: 2 * RTT)
    for n in range(BLOCKS):
        plan.want(cid(n), [(n + i) % holders for i in range(replicas)], now=0.0)
    events: list[tuple[float, int, int]] = []  # (time, block, holder): arrival at the reader
    link_free = 0.0
    asked: Counter[int] = Counter()
    now, last, arrived = 0.0, 0.0, 0
    while arrived < BLOCKS:
        for action in plan.poll(now):
            assert isinstance(action, Ask), "every block has a live holder"
            asked[action.peer] += 1
            if action.peer in silent:
                continue
            start = max(now + RTT / 2, link_free)  # the request reaches the holder, then waits its turn
            link_free = start + BLOCK / RATE
            heapq.heappush(events, (link_free + RTT / 2, INDEX[action.cid], action.peer))
        deadline = plan.next_deadline()
        if events and (deadline is None or events[0][0] <= deadline):
            now, index, peer = heapq.heappop(events)
            if plan.wanted(cid(index)):
                arrived += 1
                last = now
            plan.arrived(cid(index), peer, now)
        else:
            assert deadline is not None
            now = deadline
    return last, asked


def test_on_a_100_ms_path_the_windows_keep_the_link_at_least_four_fifths_busy() -> None:
    elapsed, asked = simulate(silent=set())
    ceiling = BLOCKS * BLOCK / RATE
    assert ceiling / elapsed >= 0.8
    assert sum(asked.values()) == BLOCKS  # nothing asked twice
    assert min(asked.values()) >= BLOCKS * 3 // 5 // 3 // 2  # spread over all five holders


def test_one_silent_holder_costs_a_read_well_under_half_its_healthy_time() -> None:
    healthy, _ = simulate(silent=set())
    degraded, asked = simulate(silent={0})
    assert degraded <= 1.5 * healthy
    assert asked[0] <= 8  # one window's worth, then passed over


# -- the trio driver, over real connections on 127.0.0.1 ------------------------------


def test_a_fetcher_takes_every_block_from_the_live_holders_when_one_holder_never_answers() -> None:
    """A holder whose port accepts connections and then says nothing (a
    frozen process): the fetcher judges it silent once and the other
    holders give every block."""
    async def main() -> None:
        stores = [MemoryBlockStore() for _ in range(3)]
        blocks = [Block.of(RAW, b"block %d " % n * 1000) for n in range(24)]
        for store in stores[1:]:
            for block in blocks:
                store.put(block)
        async with network() as net:
            nodes = [await net.add(store=store, soft_timeout=0.2) for store in stores]
            for node in nodes[1:]:
                await node.bootstrap([("127.0.0.1", nodes[0].listen_port or 0)])
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

            async def frozen(stream: trio.SocketStream) -> None:
                await trio.sleep_forever()

            net.nursery.start_soon(trio.serve_listeners, frozen, listeners)
            silent = Contact(id_from_bytes(Identity.generate().node_id), "127.0.0.1",
                             listeners[0].socket.getsockname()[1])
            fetcher = BlockFetcher(nodes[0])
            await net.nursery.start(fetcher.run)
            holders = [silent, Net.contact(nodes[1]), Net.contact(nodes[2])]
            got: dict[int, Block | None] = {}

            async def fetch(n: int) -> None:
                got[n] = await fetcher.fetch(blocks[n].cid, holders)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for n in range(len(blocks)):
                        nursery.start_soon(fetch, n)
            assert all(got[n] == blocks[n] for n in range(len(blocks)))
            stats = fetcher.statistics()
            assert stats.silent == 1 and stats.arrived == len(blocks) and stats.given_up == 0

    trio.run(main)
