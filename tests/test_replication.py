"""Replication as real processes on 127.0.0.1: a file added through one
daemon is placed on the R = 3 nodes closest to each block (checked against
the global view of node IDs), the add says so, it survives its adder's
kill -9 and is read intact through another node, a full node refuses and
the copy goes to the next closest, and after a holder dies the repair loop
restores R copies within a deadline; the adder counts a killed holder's
blocks below R as soon as it finds it dead, and ``cas peers`` shows what
each peer holds of its blocks.

Daemons run with ``--repair-interval 1.5``, or 3600 where a test needs the
timer's rounds out of the way; every wait is a condition
polled with a deadline; every process is stopped by PID
(:class:`tests.nodeproc.Daemons`)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cas.blocks import Block
from cas.cid import CID, RAW, parse_cid
from cas.control import ControlClient, socket_path
from cas.dht.ids import key_for_digest
from tests.conftest import pseudo_random, run_cas
from tests.nodeproc import Daemon, Daemons, dag_of, has, replication_stats, wait_until

R = 3
NODES = 7
REPAIR = ["--repair-interval", "1.5"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


def start_network(tmp_path: Path, daemons: Daemons, extra: dict[int, list[str]] | None = None) -> list[Daemon]:
    extra = extra or {}
    first = daemons.start(tmp_path / "n0", extra=[*REPAIR, *extra.get(0, [])])
    rest = [daemons.start(tmp_path / f"n{i}", bootstrap=[first.address], wait=False,
                          extra=[*REPAIR, *extra.get(i, [])]) for i in range(1, NODES)]
    for daemon in rest:
        daemons.wait_ready(daemon, timeout=60)
    nodes = [first, *rest]
    for daemon in nodes:  # joins happened in any order: everyone knows everyone
        run_cas("dht", "refresh", repo=daemon.repo)
    return nodes


def node_id(daemon: Daemon) -> int:
    return int(daemon.node_id, 16)


def closest(cid: CID, nodes: list[Daemon], n: int = R) -> list[Daemon]:
    key = key_for_digest(cid.digest)
    return sorted(nodes, key=lambda d: node_id(d) ^ key)[:n]


def holders(cid: CID, nodes: list[Daemon]) -> set[str]:
    return {d.node_id for d in nodes if has(d, cid)}




def add(daemon: Daemon, data: bytes) -> tuple[CID, str]:
    result = run_cas("add", "-", repo=daemon.repo, input=data, timeout=120)
    return parse_cid(result.stdout.decode().strip()), result.stderr.decode()


def test_an_added_file_is_on_the_r_closest_nodes_survives_its_adder_and_is_repaired(
        tmp_path: Path, daemons: Daemons) -> None:
    nodes = start_network(tmp_path, daemons)
    assert node_id(nodes[1]) == int(json.loads(run_cas("id", "--json", repo=nodes[1].repo).stdout)["id"], 16)
    adder = nodes[1]
    data = pseudo_random(1_500_000, "replicated file")
    root, note = add(adder, data)
    assert "stored on 3 of 3 nodes" in note, note
    blocks = dag_of(adder, root)
    assert len(blocks) >= 4
    for cid in blocks:  # exactly the R closest hold a copy, besides the adder's own
        expected = {d.node_id for d in closest(cid, nodes)} | {adder.node_id}
        assert holders(cid, nodes) == expected, cid

    live = [d for d in nodes if d is not adder]
    reader = min(live, key=lambda d: sum(has(d, c) for c in blocks))  # reads the most from the network
    leaves = [c for c in blocks if c.codec == RAW]
    missing = [c for c in leaves if not has(reader, c)]
    root_missing = not has(reader, root)
    daemons.stop(adder, signal.SIGKILL)
    out = run_cas("cat", str(root), repo=reader.repo, timeout=60).stdout
    assert out == data
    if len(missing) >= 2 or (missing and root_missing):
        assert replication_stats(reader, timeout=10)["read_ahead"] >= 1  # leaves were fetched ahead of the reader

    # Repair: every block is back on the R closest live nodes, and the
    # reader's cached copies go once they are safe (unless it is responsible).
    def repaired() -> bool:
        for cid in blocks:
            got = holders(cid, live)
            want = {d.node_id for d in closest(cid, live)}
            if not want <= got:
                return False
            if reader.node_id not in want and reader.node_id in got:
                return False
        return True

    wait_until(repaired, timeout=45, what="R copies on the R closest live nodes", interval=0.5)


def test_a_full_node_refuses_and_the_next_closest_takes_the_copy_then_repair_replaces_a_dead_holder(
        tmp_path: Path, daemons: Daemons) -> None:
    full_index = 3
    nodes = start_network(tmp_path, daemons, extra={full_index: ["--quota", "1"]})
    full, adder = nodes[full_index], nodes[0]
    # A small file (one raw block) whose R nearest nodes include the full one.
    for i in range(20000):
        content = b"block for the full node %d" % i
        cid = Block.of(RAW, content).cid
        if full in closest(cid, nodes):
            break
    else:
        pytest.fail("no suitable content found")
    got, note = add(adder, content)
    assert got == cid
    assert "stored on 3 of 3 nodes" in note, note
    # The full node refused: the next closest took its place.
    window = closest(cid, [d for d in nodes if d is not full])
    assert holders(cid, nodes) == {d.node_id for d in window} | {adder.node_id}
    assert replication_stats(full, timeout=10)["held_bytes"] == 0

    victim = next(d for d in window if d is not adder)
    daemons.stop(victim, signal.SIGKILL)
    live = [d for d in nodes if d is not victim]
    want = {d.node_id for d in closest(cid, [d for d in live if d is not full], n=R)}
    wait_until(lambda: want <= holders(cid, live), timeout=30, what="a third copy after a holder died",
               interval=0.5)
    assert not has(full, cid)


def test_with_fewer_than_r_nodes_the_add_says_so_and_placement_completes_when_nodes_join(
        tmp_path: Path, daemons: Daemons) -> None:
    first = daemons.start(tmp_path / "a", extra=[*REPAIR])
    daemons.start(tmp_path / "b", bootstrap=[first.address], extra=[*REPAIR])
    root, note = add(first, b"too few nodes")
    assert "stored on 2 of 3 nodes (only 2 nodes reachable); retrying in the background" in note, note
    third = daemons.start(tmp_path / "c", bootstrap=[first.address], extra=[*REPAIR])
    run_cas("dht", "refresh", repo=first.repo)
    wait_until(lambda: has(third, root), timeout=30, what="the third copy once a third node joined",
               interval=0.5)


def test_repair_starts_when_a_holder_dies_not_on_the_timer(tmp_path: Path, daemons: Daemons) -> None:
    nodes = start_network(tmp_path, daemons, extra={i: ["--repair-interval", "3600"] for i in range(NODES)})
    adder = nodes[0]
    root, _ = add(adder, pseudo_random(600_000, "found dead"))
    blocks = dag_of(adder, root)
    victim = max(nodes[1:], key=lambda d: sum(has(d, c) for c in blocks))
    daemons.stop(victim, signal.SIGKILL)
    live = [d for d in nodes if d is not victim]

    def repaired() -> bool:
        # The nodes connected to it saw it hang up, found its address dead,
        # and repaired at once, an hour before their timers: nothing else
        # talks to the dead node.
        return all({d.node_id for d in closest(cid, live)} <= holders(cid, live) for cid in blocks)

    def a_round_started_by_the_loss() -> bool:
        return any(replication_stats(d, timeout=10)["repair_rounds_after_loss"] >= 1 for d in live)

    # Where the next closest live node already held each block (the adder
    # keeps its own), R copies stand before any round: wait on the round
    # itself, then on the copies.
    wait_until(a_round_started_by_the_loss, timeout=60, what="a repair round started by the holder's loss",
               interval=0.5)
    wait_until(repaired, timeout=60, what="R copies again after a holder was found dead", interval=0.5)


def _cas_json(daemon: Daemon, *args: str) -> Any:
    return json.loads(run_cas(*args, "--json", repo=daemon.repo, timeout=60).stdout)


def test_a_killed_holder_counts_its_blocks_below_r_at_once_and_peers_show_what_each_holds_of_ours(
        tmp_path: Path, daemons: Daemons) -> None:
    # Three nodes take copies and a fourth is full, all with an hour between
    # repair rounds: once a holder dies, only two can hold each block, so
    # its blocks stay below R (the round its loss starts cannot help) until
    # a fifth node joins.
    quiet = ["--repair-interval", "3600"]
    adder = daemons.start(tmp_path / "a", extra=quiet)
    others = [daemons.start(tmp_path / name, bootstrap=[adder.address], wait=False, extra=[*quiet, *more])
              for name, more in (("b", []), ("c", []), ("full", ["--quota", "1"]))]
    for daemon in others:
        daemons.wait_ready(daemon, timeout=60)
    for daemon in (adder, *others):
        run_cas("dht", "refresh", repo=daemon.repo)
    full = others[2]

    data = pseudo_random(1_200_000, "live counts")
    root, note = add(adder, data)
    assert "stored on 3 of 3 nodes" in note, note
    blocks = dag_of(adder, root)
    with ControlClient(socket_path(adder.repo), timeout=30) as client:
        sizes = {cid: len(client.call("get", cid=cid)) for cid in blocks}
    total = sum(sizes.values())

    # What we store with each peer: R - 1 copies of every block, the adder's own aside.
    peers = {p["id"]: p for p in _cas_json(adder, "peers")}
    held = {d.node_id: [c for c in blocks if has(d, c)] for d in others}
    assert not held[full.node_id]
    for daemon in others:
        assert peers[daemon.node_id]["ours_blocks"] == len(held[daemon.node_id])
        assert peers[daemon.node_id]["ours_bytes"] == sum(sizes[c] for c in held[daemon.node_id])
    assert sum(p["ours_bytes"] for p in peers.values()) == (R - 1) * total
    assert (R - 1) * len(data) <= (R - 1) * total < (R - 1) * len(data) * 1.01  # tree nodes are small
    assert "ours 1.1 MiB" in run_cas("peers", repo=adder.repo).stdout.decode()

    stat = _cas_json(adder, "repo", "stat")["replication"]
    assert (stat["short"], stat["tracked"], stat["copies_lost"]) == (0, len(blocks), 0)

    victim = others[0]
    had = held[victim.node_id]
    assert had
    daemons.stop(victim, signal.SIGKILL)

    def counted() -> Any:
        health = _cas_json(adder, "repo", "stat")["replication"]
        return health if health["short"] == len(had) else None

    health = wait_until(counted, timeout=30, what="the dead holder's blocks below R on the adder", interval=0.2)
    # Only the loss can have counted them (the timer's round is an hour away;
    # the round the loss starts finds the same): its copies went with it.
    assert health["copies_lost"] == len(had)  # type: ignore[index]
    assert f"below R     {len(had)} block(s) of {len(blocks)} tracked, counted live" in \
        run_cas("repo", "stat", repo=adder.repo).stdout.decode()
    assert victim.node_id not in {p["id"] for p in _cas_json(adder, "peers")}

    # A fifth node joins; a repair round copies to it and counts R again.
    newcomer = daemons.start(tmp_path / "e", bootstrap=[adder.address], extra=quiet)
    run_cas("dht", "refresh", repo=adder.repo)
    with ControlClient(socket_path(adder.repo), timeout=120) as client:
        report = client.call("replication_repair")
    assert report["short"] == 0, report
    assert _cas_json(adder, "repo", "stat")["replication"]["short"] == 0
    peers = {p["id"]: p for p in _cas_json(adder, "peers")}
    assert peers[newcomer.node_id]["ours_bytes"] == peers[others[1].node_id]["ours_bytes"] == total
