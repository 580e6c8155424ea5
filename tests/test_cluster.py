"""The network as a whole: replication health in ``cas repo stat`` and
``cas peers``, a reader that meets a peer sending wrong bytes, a 64 MiB
file that outlives its adder's kill -9 on a network of 10 daemons (~75 s),
and churn: 20 daemons, 200 files, a third of the nodes killed one at a time
and replaced, with no loss (~120 s on 2 busy cores).

Multi-process tests are marked slow; every wait is a condition polled with
a deadline, and every process is stopped by PID
(:class:`tests.nodeproc.Daemons`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from cas.blocks import Block, MemoryBlockStore
from cas.cid import CID, RAW, parse_cid
from cas.control import ClientState, ControlClient, socket_path
from cas.control.schema import Get, Peers
from cas.dht.driver import DhtDriver
from cas.dht.ids import key_for_digest
from cas.dht.routing import Contact
from cas.net import messages as msg
from cas.node import Node, NodeConfig, control_ops
from tests.conftest import pseudo_random, run_cas
from tests.nodeproc import Daemon, Daemons, dag_of, has, replication_stats, wait_until
from tests.test_dht_driver import network

pytestmark = pytest.mark.timeout(240)

REPAIR = ["--repair-interval", "3"]


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


def cas_json(daemon: Daemon, *args: str, timeout: float = 60) -> object:
    return json.loads(run_cas(*args, "--json", repo=daemon.repo, timeout=timeout).stdout)


def test_repo_stat_without_a_daemon_reports_no_replication(tmp_path: Path) -> None:
    run_cas("init", repo=tmp_path / "r")
    doc = json.loads(run_cas("repo", "stat", "--json", repo=tmp_path / "r").stdout)
    assert doc["replication"] is None
    assert "below R" not in run_cas("repo", "stat", repo=tmp_path / "r").stdout.decode()


# -- a peer that sends wrong bytes --------------------------------------------------


class Liar(DhtDriver):
    """Answers every FIND_BLOCK at once with bytes that are not the block."""

    async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
        if isinstance(request, msg.FindBlock):
            return msg.Block(b"not the block you asked for")
        return await super().answer(requester, request, contact)


class SlowHolder(DhtDriver):
    """An honest holder that answers FIND_BLOCK after the liar has (so the
    reader always meets the lie first)."""

    async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
        if isinstance(request, msg.FindBlock):
            await trio.sleep(0.3)  # the peer's behaviour under test, not synchronisation
        return await super().answer(requester, request, contact)


def test_a_reader_given_wrong_bytes_fetches_from_another_holder_and_counts_it_against_the_liar(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with network() as net:
            memory = MemoryBlockStore()
            holder = await net.add(cls=SlowHolder, store=memory)
            liar = await net.add(cls=Liar)
            # A block nearer the liar than the holder: asked directly or by a
            # lookup, the liar is asked first.
            block = next(b for b in (Block.of(RAW, pseudo_random(200_000, f"wanted {i}")) for i in range(64))
                         if liar.own_id ^ key_for_digest(b.cid.digest) < holder.own_id ^ key_for_digest(b.cid.digest))
            memory.put(block)
            await liar.bootstrap([("127.0.0.1", holder.listen_port or 0)])
            # id_difficulty 0: this test's in-process peers (tests/test_dht_driver.py) make no work for their IDs
            node = Node(NodeConfig(repo=tmp_path / "reader", listen_host="127.0.0.1", listen_port=0, id_difficulty=0,
                                   bootstrap=[("127.0.0.1", liar.listen_port or 0),
                                              ("127.0.0.1", holder.listen_port or 0)],
                                   repair_interval=3600))
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                ops = control_ops(node)
                client = ClientState()
                data = await ops["get"].handler(Get(block.cid), client)  # type: ignore[misc]
                assert data == block.data
                peers = {p["id"]: p for p in await ops["peers"].handler(Peers(), client)}  # type: ignore[misc]
                liar_row = peers[liar.identity.node_id.hex()]
                assert liar_row["bad_blocks"] == 1
                assert peers[holder.identity.node_id.hex()]["bad_blocks"] == 0
                # Verified and kept (held for the network): a second read is local.
                assert node.store is not None and node.store.held.is_held(block.cid)
                node.stop()

    trio.run(main)


def test_a_reader_asks_the_nodes_placement_chose_directly_one_message_per_block(tmp_path: Path) -> None:
    blocks = [Block.of(RAW, pseudo_random(100_000, f"block {i}")) for i in range(3)]

    async def main() -> None:
        async with network() as net:
            stores = [MemoryBlockStore() for _ in range(8)]
            peers = [await net.add(store=store) for store in stores]
            for peer in peers[1:]:
                await peer.bootstrap([("127.0.0.1", peers[0].listen_port or 0)])
            for block in blocks:  # where placement puts it: the R = 3 nodes closest to its key
                key = key_for_digest(block.cid.digest)
                for i in sorted(range(8), key=lambda i: peers[i].own_id ^ key)[:3]:
                    stores[i].put(block)
            # id_difficulty 0: this test's in-process peers (tests/test_dht_driver.py) make no work for their IDs
            node = Node(NodeConfig(repo=tmp_path / "reader", listen_host="127.0.0.1", listen_port=0, id_difficulty=0,
                                   bootstrap=[("127.0.0.1", p.listen_port or 0) for p in peers],
                                   repair_interval=3600))
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                assert node.dht is not None
                ops, client = control_ops(node), ClientState()
                assert await ops["get"].handler(Get(blocks[0].cid), client) == blocks[0].data  # type: ignore[misc]
                for block in blocks[1:]:  # the first read's lookup answers for these keys too
                    before = node.dht.messages_sent
                    assert await ops["get"].handler(Get(block.cid), client) == block.data  # type: ignore[misc]
                    assert node.dht.messages_sent - before == 1  # a FIND_BLOCK lookup sends alpha = 3 at once
                node.stop()

    trio.run(main)


# -- a holder that stops answering ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.heavy
def test_a_reader_gets_every_block_while_holders_are_frozen(tmp_path: Path, daemons: Daemons) -> None:
    """Holders frozen with SIGSTOP (connected, silent: the slowest a peer
    can be) never stall a read: each block comes from a holder that answers."""
    first = daemons.start(tmp_path / "n0", extra=REPAIR)
    rest = [daemons.start(tmp_path / f"n{i}", bootstrap=[first.address], wait=False, extra=REPAIR)
            for i in range(1, 5)]
    for daemon in rest:
        daemons.wait_ready(daemon, timeout=60)
    for daemon in (first, *rest):
        run_cas("dht", "refresh", repo=daemon.repo)
    adder, others = first, rest
    data = pseudo_random(3 << 20, "read past a frozen holder")
    result = run_cas("add", "-", repo=adder.repo, input=data, timeout=120)
    root = parse_cid(result.stdout.decode().split()[-1])
    assert "stored on 3 of 3 nodes" in result.stderr.decode(), result.stderr
    blocks = dag_of(adder, root)
    holders = {cid: [d for d in others if has(d, cid)] for cid in blocks}
    # Freeze the adder and the peer holding most blocks: each block keeps a live holder.
    busiest = max(others, key=lambda d: sum(d in h for h in holders.values()))
    frozen = [adder, busiest]
    assert all(any(d not in frozen for d in h) for h in holders.values()), "a block has no live holder"
    assert any(busiest in h for h in holders.values())
    live = next(d for d in others if d is not busiest)
    reader = daemons.start(tmp_path / "reader", bootstrap=[live.address, adder.address, busiest.address])
    run_cas("dht", "refresh", repo=reader.repo)  # every node in its table, the frozen ones too
    for daemon in frozen:
        os.kill(daemon.pid, signal.SIGSTOP)
    try:
        out = run_cas("cat", str(root), repo=reader.repo, timeout=120).stdout
        assert out == data
    finally:
        for daemon in frozen:
            os.kill(daemon.pid, signal.SIGCONT)


# -- 10 daemons, 64 MiB, kill -9 of the adder ---------------------------------------


@pytest.mark.slow
@pytest.mark.heavy
def test_64_mib_added_on_one_node_of_ten_reads_back_from_every_other_after_kill_9(
        tmp_path: Path, daemons: Daemons) -> None:
    first = daemons.start(tmp_path / "n0", extra=REPAIR)
    rest = [daemons.start(tmp_path / f"n{i}", bootstrap=[first.address], wait=False, extra=REPAIR)
            for i in range(1, 10)]
    for daemon in rest:
        daemons.wait_ready(daemon, timeout=60)
    nodes = [first, *rest]
    for daemon in nodes:
        run_cas("dht", "refresh", repo=daemon.repo)

    adder = nodes[3]
    source = tmp_path / "big.bin"
    data = pseudo_random(64 << 20, "sixty-four mebibytes")
    source.write_bytes(data)
    digest = hashlib.sha256(data).digest()
    del data
    result = run_cas("add", str(source), repo=adder.repo, timeout=180)
    root = parse_cid(result.stdout.decode().split()[-1])
    assert "stored on 3 of 3 nodes" in result.stderr.decode(), result.stderr

    # Health as the adder sees it: nothing below R, the copies acknowledged,
    # and the peers that took them.
    stat = cas_json(adder, "repo", "stat")
    health = stat["replication"]  # type: ignore[index]
    assert health["short"] == 0 and health["replicas"] == 3
    assert health["placed_bytes"] >= 2 * (64 << 20)  # R copies, the adder's own among them or not
    peers = cas_json(adder, "peers")
    assert sum(p["stores"] for p in peers) >= health["placed"]  # type: ignore[union-attr]
    assert all(p["bad_blocks"] == 0 for p in peers)  # type: ignore[union-attr]
    text = run_cas("repo", "stat", repo=adder.repo).stdout.decode()
    assert "below R     0 block(s)" in text

    daemons.stop(adder, signal.SIGKILL)
    for reader in (d for d in nodes if d is not adder):
        out = tmp_path / f"read-{reader.node_id[:8]}"
        run_cas("get", str(root), "-o", str(out), repo=reader.repo, timeout=180)
        assert hashlib.sha256(out.read_bytes()).digest() == digest, reader.repo
        out.unlink()

    # Repair on the survivors: someone copied blocks to restore R.
    live = [d for d in nodes if d is not adder]

    def repaired() -> bool:
        stats = [replication_stats(d) for d in live]
        return sum(s["repair_stores"] for s in stats) > 0 and all(s["repair_rounds"] > 0 for s in stats)

    wait_until(repaired, timeout=60, what="repair traffic after the adder died", interval=1.0)
    text = run_cas("repo", "stat", repo=live[0].repo, timeout=60).stdout.decode()
    assert "repair " in text and "held " in text


# -- churn: 20 nodes, a third replaced one at a time ---------------------------------


CHURN_NODES = 20
CHURN_FILES = 200
CHURN_REPAIR = ["--repair-interval", "4"]
"""Shorter periods load 20 daemons on 2 cores so much that the test takes longer."""


def live_copies(blocks: list[CID], live: list[Daemon]) -> dict[CID, int]:
    counts = dict.fromkeys(blocks, 0)
    for d in live:
        with ControlClient(socket_path(d.repo), timeout=60) as client:
            for cid in blocks:
                counts[cid] += bool(client.call("has", cid=cid))
    return counts


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.timeout(420)
def test_churn_a_third_of_twenty_nodes_replaced_one_at_a_time_loses_nothing(
        tmp_path: Path, daemons: Daemons) -> None:
    first = daemons.start(tmp_path / "n0", extra=CHURN_REPAIR)
    rest = [daemons.start(tmp_path / f"n{i}", bootstrap=[first.address], wait=False, extra=CHURN_REPAIR)
            for i in range(1, CHURN_NODES)]
    for daemon in rest:
        daemons.wait_ready(daemon, timeout=90)
    live = [first, *rest]
    for daemon in live:
        run_cas("dht", "refresh", repo=daemon.repo)

    # 200 files of 4 KiB to 300 KiB (a few span two blocks), added as one tree.
    tree = tmp_path / "files"
    tree.mkdir()
    for i in range(CHURN_FILES):
        (tree / f"f{i:03}").write_bytes(pseudo_random(4096 + (i * 1543) % 300_000, f"churn {i}"))
    adder = live[5]
    result = run_cas("add", "-r", str(tree), repo=adder.repo, timeout=180)
    root = parse_cid(result.stdout.decode().split()[-1])
    blocks = dag_of(adder, root)
    assert len(blocks) > CHURN_FILES

    def rounds(d: Daemon) -> int:
        return int(replication_stats(d)["repair_rounds"])

    # Kill a third, one at a time (the adder first); after each, a node joins,
    # and every survivor completes a repair round that began after the kill.
    for n in range(CHURN_NODES // 3):
        victim = adder if n == 0 else live[(n * 7) % len(live)]
        daemons.stop(victim, signal.SIGKILL)
        live.remove(victim)
        joiner = daemons.start(tmp_path / f"new{n}", bootstrap=[live[0].address], extra=CHURN_REPAIR)
        live.append(joiner)
        before = {d.repo: rounds(d) for d in live}
        wait_until(lambda: all(rounds(d) >= before[d.repo] + 2 for d in live), timeout=60,  # noqa: B023 (called within this iteration)
                   what=f"a repair period after kill {n + 1}", interval=0.5)

    def all_at_r() -> bool:
        return min(live_copies(blocks, live).values()) >= 3

    wait_until(all_at_r, timeout=60, what="every block on >= R live nodes", interval=1.0)
    out = tmp_path / "read-back"
    run_cas("get", str(root), "-o", str(out), repo=live[-1].repo, timeout=120)
    for i in range(CHURN_FILES):
        assert (out / f"f{i:03}").read_bytes() == (tree / f"f{i:03}").read_bytes(), i
