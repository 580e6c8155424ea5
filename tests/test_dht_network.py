"""The DHT as real processes: 30 daemons on 127.0.0.1 bootstrapped from one,
every lookup checked against the test's global view, then a third killed
with SIGKILL; and three nodes in separate network namespaces (as separate
hosts) where the machine allows it.

Each node's ID comes from ``cas id --json``; lookups go through ``cas dht
find`` (50 keys per invocation). Every process is stopped by PID, whatever
happens (:class:`tests.nodeproc.Daemons`)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cas, skip_unless_ci
from tests.nodeproc import Daemon, Daemons

K = 20
NODES = 30
KEYS = 50

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


def node_id_of(daemon: Daemon) -> int:
    return int(json.loads(run_cas("id", "--json", repo=daemon.repo).stdout)["id"], 16)


def find(daemon: Daemon, keys: list[int]) -> list[dict]:
    out = run_cas("dht", "find", "--json", *(f"{k:064x}" for k in keys), repo=daemon.repo, timeout=120).stdout
    result = json.loads(out)
    return result if isinstance(result, list) else [result]


def check_lookups(live: list[Daemon], ids: dict[int, int], rng: random.Random) -> None:
    """Every live node looks up KEYS random keys; each answer must be exactly
    the k nodes nearest the key among the other live nodes, nearest first."""
    live_ids = [ids[d.pid] for d in live]
    for daemon in live:
        keys = [rng.getrandbits(256) for _ in range(KEYS)]
        others = [i for i in live_ids if i != ids[daemon.pid]]
        for key, result in zip(keys, find(daemon, keys)):
            got = [int(c["id"], 16) for c in result["closest"]]
            expected = sorted(others, key=lambda i: i ^ key)[:K]
            assert got == expected, f"node {ids[daemon.pid]:x} looking up {key:x}"


@pytest.mark.heavy
def test_thirty_daemons_find_the_k_closest_live_nodes_before_and_after_a_third_die(
        tmp_path: Path, daemons: Daemons) -> None:
    rng = random.Random(30)
    first = daemons.start(tmp_path / "n00")
    rest = [daemons.start(tmp_path / f"n{i:02}", bootstrap=[first.address], wait=False)
            for i in range(1, NODES)]
    for daemon in rest:
        daemons.wait_ready(daemon, timeout=90)
    nodes = [first, *rest]
    ids = {d.pid: node_id_of(d) for d in nodes}
    assert len(set(ids.values())) == NODES
    assert all(f"{ids[d.pid]:064x}" == d.node_id for d in nodes)
    for daemon in nodes:  # joins happened in any order: let everyone refresh once
        run_cas("dht", "refresh", repo=daemon.repo)

    check_lookups(nodes, ids, rng)

    doomed = rng.sample(nodes, NODES // 3)
    for daemon in doomed:
        daemons.stop(daemon, signal.SIGKILL)
    live = [d for d in nodes if d not in doomed]
    live_ids = {ids[d.pid] for d in live}

    # Right after the deaths, before anyone has noticed: lookups still
    # succeed, and only nodes that answered can be in a result.
    for daemon in live[:5]:
        for result in find(daemon, [rng.getrandbits(256) for _ in range(5)]):
            got = {int(c["id"], 16) for c in result["closest"]}
            assert got and got <= live_ids

    for daemon in live:
        run_cas("dht", "refresh", repo=daemon.repo)
    check_lookups(live, ids, rng)


# -- separate hosts: network namespaces ---------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def namespaces() -> Iterator[list[tuple[str, str]]]:
    """Three network namespaces joined by a bridge: [(namespace, address)]."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        skip_unless_ci("network namespaces need root and iproute2")
    tag = f"{os.getpid() % 100000}"
    bridge = f"casbr{tag}"
    made: list[str] = []
    hosts: list[tuple[str, str]] = []
    try:
        try:
            _ip("link", "add", bridge, "type", "bridge")
        except subprocess.CalledProcessError as exc:
            skip_unless_ci(f"cannot create a bridge here: {exc.stderr.decode().strip()}")
        _ip("link", "set", bridge, "up")
        for i in range(3):
            ns = f"casns{tag}-{i}"
            _ip("netns", "add", ns)
            made.append(ns)
            inside, outside = f"cv{tag}{i}a", f"cv{tag}{i}b"
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", outside, "master", bridge, "up")
            _ip("link", "set", inside, "netns", ns)
            address = f"10.231.{i}.1"
            _ip("-n", ns, "addr", "add", f"{address}/16", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            hosts.append((ns, address))
        yield hosts
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=20)


def test_three_nodes_in_separate_network_namespaces_find_each_other(
        tmp_path: Path, daemons: Daemons, namespaces: list[tuple[str, str]]) -> None:
    nodes = []
    for i, (ns, address) in enumerate(namespaces):
        bootstrap = [nodes[0].address] if nodes else []
        nodes.append(daemons.start(tmp_path / f"h{i}", listen=f"{address}:0", bootstrap=bootstrap,
                                   prefix=["ip", "netns", "exec", ns]))
    assert [d.host for d in nodes] == [a for _, a in namespaces]
    for daemon in nodes:
        run_cas("dht", "refresh", repo=daemon.repo)
    for daemon in nodes:
        peers = json.loads(run_cas("peers", "--json", repo=daemon.repo).stdout)
        assert {(p["id"], p["host"]) for p in peers} == {
            (d.node_id, d.host) for d in nodes if d is not daemon}
    # A block added on one host is placed on the others (R = 3, three hosts).
    cid = run_cas("add", "-q", "-", repo=nodes[2].repo, input=b"across hosts").stdout.decode().strip()
    found = json.loads(run_cas("dht", "find", "--json", cid, repo=nodes[0].repo).stdout)
    holders = {c["id"] for c in found["closest"] if c["has"]}
    assert holders == {nodes[1].node_id, nodes[2].node_id} and found["local_has"] is True
