"""The test network of hosts (``tests/testnet.py``) does what it says, and
cas nodes on it find each other and share files across real delay and loss.

Needs root, /dev/net/tun, ``ip`` and ``nft`` (CI has them: it runs as root
after ``scripts/setup-env --test``); elsewhere the tests skip.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cas.cid import parse_cid
from cas.control import ControlClient, socket_path
from cas.dht.ids import key_for_digest

from .conftest import CAS, pseudo_random_stream, run_cas, skip_unless_ci
from .nodeproc import Daemon, Daemons, dag_of
from .testnet import Link, Testnet, available, leftovers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _needs_namespaces() -> None:
    problem = available()
    if problem:
        skip_unless_ci(f"test network: {problem}")


def namespaces_of(net: Testnet) -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split(" ")[0] for line in listed.splitlines() if line.startswith(net.tag)}


def test_measured_round_trip_is_twice_both_links_delays_and_the_network_is_gone_after() -> None:
    with Testnet(2, links=[Link(delay=0.010), Link(delay=0.020)], seed=1) as net:
        assert len(namespaces_of(net)) == 2
        for host in net.hosts:  # nothing leads off the machine: one route, the test network's
            routes = subprocess.run(["ip", "-n", host.namespace, "route"], capture_output=True, text=True,
                                    check=True).stdout.splitlines()
            assert [r.split()[0] for r in routes] == ["10.77.0.0/24"], routes
        found = net.measure(0, 1, count=20)
        print(found.line())
        assert found.received == 20
        # Asked: 2 × (10 + 20) ms = 60 ms. The switch is one Python process on
        # a shared machine: a little late (more under load), never early.
        assert 0.058 <= found.rtt_p50 <= 0.100, found.line()
    assert namespaces_of(net) == set()


def test_measured_loss_is_what_the_links_were_asked_for() -> None:
    # 5 % per link crossing; an echo and its answer cross four links.
    with Testnet(2, Link(loss=0.05), seed=7) as net:
        found = net.measure(0, 1, count=300, interval=0.002, timeout=0.5)
        print(found.line())
        expected = 1 - 0.95 ** 4  # 18.5 %
        assert abs(found.loss - expected) < 0.07, found.line()


def test_a_partition_blocks_between_its_sides_only_and_heals() -> None:
    with Testnet(3, Link(delay=0.002)) as net:
        net.partition([0], [1, 2])
        assert net.measure(0, 1, count=5, timeout=0.3).received == 0
        assert net.measure(1, 2, count=5).received == 5
        net.heal()
        assert net.measure(0, 1, count=5).received == 5
        net.cut(2)
        assert net.measure(0, 2, count=5, timeout=0.3).received == 0
        assert net.measure(0, 1, count=5).received == 5
        net.heal()
        assert net.measure(1, 2, count=5).received == 5


def test_a_host_behind_nat_dials_out_but_cannot_be_dialled() -> None:
    with Testnet(1, Link(delay=0.002), nat_hosts=1) as net:
        public, hidden = net.hosts
        assert hidden.behind_nat and not hidden.address.startswith("10.77.")
        assert net.tcp_transfer(hidden.index, public.index, 1 << 20) > 0
        assert net.measure(hidden.index, public.index, count=5).received == 5
        # Its own address is routed nowhere; its router's public address
        # forwards nothing in (nothing listens there either).
        with pytest.raises(RuntimeError, match="unreachable"):
            net.tcp_transfer(public.index, hidden.index, 1 << 20, timeout=10)
        router = f"{net.tag}-nat0"
        probe = subprocess.run(
            [*public.prefix, sys.executable, "-c",
             "import socket,sys; s=socket.socket(); s.settimeout(3)\n"
             "try: s.connect((sys.argv[1], 4001)); print('open')\n"
             "except OSError as e: print(type(e).__name__)", "10.77.0.200"],
            capture_output=True, text=True, timeout=30)
        assert probe.stdout.strip() in {"ConnectionRefusedError", "TimeoutError"}, probe
        assert router in namespaces_of(net)


def test_cleanup_removes_what_a_killed_owner_left() -> None:
    owner = subprocess.Popen([sys.executable, "-m", "tests.testnet", "up", "--hosts", "2"],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert owner.stdout is not None
        deadline = time.monotonic() + 60
        while not owner.stdout.readline().startswith("up:"):
            assert time.monotonic() < deadline and owner.poll() is None, "scripts/testnet up did not come up"
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        if owner.stdout:
            owner.stdout.close()
    mine = [name for name in leftovers() if name.startswith(f"casnet-{owner.pid}-")]
    assert len(mine) == 2
    subprocess.run([sys.executable, "-m", "tests.testnet", "cleanup"], check=True, cwd=ROOT, timeout=60)
    assert not [name for name in leftovers(all_owners=True) if name.startswith(f"casnet-{owner.pid}-")]


# -- cas nodes on the test network ------------------------------------------


@dataclass
class SixNodes:
    net: Testnet
    nodes: list[Daemon]


@pytest.fixture(scope="module")
def six_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SixNodes]:
    """Six daemons, one per host. One-way delays 5..35 ms per host: round
    trips of 30 to 120 ms between them; 0.5 % loss per link crossing, 1 %
    per path. Joined through the first, then refreshed."""
    problem = available()
    if problem:
        skip_unless_ci(f"test network: {problem}")
    base = tmp_path_factory.mktemp("six")
    delays = [0.005, 0.010, 0.015, 0.020, 0.025, 0.035]
    with Testnet(6, links=[Link(delay=d, jitter=0.001, loss=0.005) for d in delays], seed=3) as net, \
            Daemons() as daemons:
        net.report(count=20)
        first = daemons.start(base / "h0", listen=f"{net.hosts[0].address}:0", prefix=net.hosts[0].prefix)
        rest = [daemons.start(base / f"h{h.index}", listen=f"{h.address}:0", bootstrap=[first.address],
                              prefix=h.prefix, wait=False) for h in net.hosts[1:]]
        for daemon in rest:
            daemons.wait_ready(daemon, timeout=60)
        nodes = [first, *rest]
        for daemon in nodes:
            run_cas("dht", "refresh", repo=daemon.repo, timeout=120)
        yield SixNodes(net, nodes)


def call(daemon: Daemon, op: str, **args: Any) -> Any:
    with ControlClient(socket_path(daemon.repo), timeout=60) as client:
        return client.call(op, **args)


@pytest.mark.slow
def test_six_nodes_across_delay_and_loss_join_and_a_file_added_on_one_reads_back_on_every_other(
        tmp_path: Path, six_nodes: SixNodes) -> None:
    nodes = six_nodes.nodes
    for daemon in nodes:
        peers = {p["id"] for p in json.loads(run_cas("peers", "--json", repo=daemon.repo).stdout)}
        assert peers == {d.node_id for d in nodes if d is not daemon}
    data = b"".join(pseudo_random_stream(3 << 20, seed="issue 20"))
    source = tmp_path / "file.bin"
    source.write_bytes(data)
    cid = run_cas("add", "-q", str(source), repo=nodes[3].repo, timeout=300).stdout.decode().strip()
    for daemon in nodes:
        if daemon is not nodes[3]:
            assert run_cas("cat", cid, repo=daemon.repo, timeout=300).stdout == data


@pytest.mark.slow
def test_a_host_whose_link_is_cut_costs_each_lookup_about_one_rto_and_a_read_passes_it_over(
        tmp_path: Path, six_nodes: SixNodes) -> None:
    net, nodes = six_nodes.net, six_nodes.nodes
    seeker, silent = nodes[0], nodes[3]
    data = b"".join(pseudo_random_stream(2 << 20, seed="read past a silent holder"))
    (tmp_path / "file.bin").write_bytes(data)
    cid = run_cas("add", "-q", str(tmp_path / "file.bin"), repo=nodes[1].repo, timeout=300).stdout.decode().strip()

    def lookups(count: int) -> list[float]:
        # The silent node's own ID: it is the closest, asked first every time.
        return [call(seeker, "dht_find", target=silent.node_id)["elapsed_us"] / 1e6 for _ in range(count)]

    healthy = lookups(5)
    net.cut(3)
    try:
        cut = lookups(5)
        rto = call(seeker, "net_stats")["rtt"]["rto_us"] / 1e6
    finally:
        net.heal()
    # A read whose first holder (the nearest to the file's root block, asked
    # for it first) is silent: the reader passes it over after one patience
    # and takes its blocks from their other holders.
    root = parse_cid(cid)
    reader = next(d for d in nodes[2:] if not call(d, "has", cid=root))  # one that must fetch the root
    key = key_for_digest(root.routing_digest)
    first = min((i for i, d in enumerate(nodes) if d is not reader), key=lambda i: int(nodes[i].node_id, 16) ^ key)
    net.cut(first)
    try:
        t0 = time.monotonic()
        assert run_cas("cat", cid, repo=reader.repo, timeout=300).stdout == data
        seconds = time.monotonic() - t0
    finally:
        net.heal()
    fetches = call(reader, "replication_stats")["fetches"]
    print(f"read of 2 MiB with its first holder silent: {seconds:.2f} s; fetches {fetches}")
    assert fetches["silent"] >= 1 and fetches["reasked"] >= 1 and fetches["given_up"] == 0
    extra = statistics.median(cut) - statistics.median(healthy)
    print(f"lookup p50 healthy {statistics.median(healthy) * 1000:.0f} ms, one host cut "
          f"{statistics.median(cut) * 1000:.0f} ms; the network's RTO {rto * 1000:.0f} ms")
    # About one RTO more (a few hundred ms here), never the old fixed
    # second; a loose bound, this is not a benchmark.
    assert extra < 1.0, (healthy, cut, rto)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("reachable", ["no", "auto"])
def test_a_node_behind_nat_as_a_dht_client_adds_and_reads_and_is_in_no_routing_table(
        tmp_path: Path, reachable: str) -> None:
    """``no``: told it is a client. ``auto``: it asks its peers to dial it
    back, none can, and it becomes one (an open node asking the same
    learns it is reachable); and a second node behind NAT, with a port
    forwarded to it and ``--announce ROUTER:PORT``, finds it is reachable
    and is filed at the announced address."""
    forwarded = 4719
    with Testnet(3, Link(delay=0.005), nat_hosts=2 if reachable == "auto" else 1) as net, \
            Daemons() as daemons:
        public, hidden = net.hosts[:3], net.hosts[3]
        first = daemons.start(tmp_path / "h0", listen=f"{public[0].address}:0", prefix=public[0].prefix)
        nodes = [first, *(daemons.start(tmp_path / f"h{h.index}", listen=f"{h.address}:0",
                                        bootstrap=[first.address], prefix=h.prefix,
                                        extra=["--reachable", reachable if reachable == "auto" else "yes"])
                       for h in public[1:])]
        client = daemons.start(tmp_path / "nat", listen=f"{hidden.address}:0", bootstrap=[first.address],
                               prefix=hidden.prefix, extra=["--reachable", reachable])
        servers = list(nodes)
        if reachable == "auto":
            behind = net.hosts[4]
            net.forward(4, forwarded)
            announced = daemons.start(tmp_path / "fwd", listen=f"{behind.address}:{forwarded}",
                                      bootstrap=[first.address], prefix=behind.prefix,
                                      extra=["--reachable", "auto", "--announce", f"{behind.outside}:{forwarded}"])
            wait_for(lambda: call(announced, "net_stats")["reachable"] == "yes", 60,
                     "the node behind a forwarded port to find it is reachable")
            servers.append(announced)
        wait_for(lambda: call(client, "net_stats")["reachable"] == "no", 60, "the NAT'd node to find out")
        wait_for(lambda: call(nodes[1], "net_stats")["reachable"] == "yes", 60, "an open node to find out")
        if reachable == "auto":
            def filed_at() -> set[tuple[str, int]]:
                return {(p["host"], p["port"]) for p in json.loads(run_cas("peers", "--json", repo=first.repo).stdout)
                        if p["id"] == announced.node_id}

            wait_for(lambda: filed_at() == {(behind.outside, forwarded)}, 30,
                     "the open node to file it at its announced address")

        def listed_anywhere() -> bool:
            return any(client.node_id in {p["id"] for p in json.loads(
                run_cas("peers", "--json", repo=d.repo).stdout)} for d in nodes)

        wait_for(lambda: not listed_anywhere(), 30, "the open nodes to forget the NAT'd node's address")
        for daemon in [*servers, client]:
            run_cas("dht", "refresh", repo=daemon.repo, timeout=120)
        mine = run_cas("add", "-q", "-", repo=client.repo, input=b"from behind the NAT").stdout.decode().strip()
        theirs = run_cas("add", "-q", "-", repo=nodes[1].repo, input=b"from the open").stdout.decode().strip()
        assert run_cas("cat", theirs, repo=client.repo).stdout == b"from the open"
        for daemon in nodes:
            assert run_cas("cat", mine, repo=daemon.repo).stdout == b"from behind the NAT"
            peers = {p["id"] for p in json.loads(run_cas("peers", "--json", repo=daemon.repo).stdout)}
            assert client.node_id not in peers and peers == {d.node_id for d in servers if d is not daemon}
        # Its blocks went to the nodes that can be dialled (R = 3 of the 3 or 4 there are).
        assert sum(call(daemon, "has", cid=parse_cid(mine)) for daemon in servers) >= 3


@pytest.mark.slow
def test_after_a_partition_heals_both_halves_find_each_other_and_every_block_is_back_at_r(tmp_path: Path) -> None:
    repair = 5  # seconds between repair rounds
    with Testnet(6, Link(delay=0.005)) as net, Daemons() as daemons:
        extra = ["--repair-interval", str(repair)]
        first = daemons.start(tmp_path / "h0", listen=f"{net.hosts[0].address}:0", prefix=net.hosts[0].prefix,
                              extra=extra)
        nodes = [first, *(daemons.start(tmp_path / f"h{h.index}", listen=f"{h.address}:0",
                                        bootstrap=[first.address], prefix=h.prefix, extra=extra)
                          for h in net.hosts[1:])]
        for daemon in nodes:
            run_cas("dht", "refresh", repo=daemon.repo, timeout=120)
        left, right = nodes[:3], nodes[3:]

        def peers(daemon: Daemon) -> set[str]:
            return {p["id"] for p in json.loads(run_cas("peers", "--json", repo=daemon.repo).stdout)}

        net.partition([0, 1, 2], [3, 4, 5])
        t0 = time.monotonic()
        files = {}
        adds = []
        for writer in (left[0], right[0]):  # one on each side, at once
            # A block or two: each block placed across the cut waits out one
            # store timeout on an unreachable node before it goes elsewhere
            # (its RTO, the peer's work and the transfer: ~4 s here, not 10).
            data = b"".join(pseudo_random_stream(200_000, seed=f"side {writer.node_id}"))
            proc = subprocess.Popen([CAS, "--repo", str(writer.repo), "add", "-q", "-"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            adds.append((proc, data))
        for proc, data in adds:
            out, err = proc.communicate(data, timeout=300)
            assert proc.returncode == 0, err
            files[out.decode().strip()] = data
        print("known across the cut:", [len(peers(d) - {n.node_id for n in (left if d in left else right)})
                                        for d in nodes])
        net.heal()
        print(f"partitioned for {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        everyone = {d.node_id for d in nodes}
        wait_for(lambda: all(peers(d) == everyone - {d.node_id} for d in nodes), 90,
                 "both halves back in every routing table")
        print(f"tables whole again after {time.monotonic() - t0:.1f} s")
        for cid, data in files.items():
            for daemon in nodes:
                assert run_cas("cat", cid, repo=daemon.repo, timeout=120).stdout == data

        def all_at_r() -> bool:
            for cid in files:
                for block in dag_of(nodes[0], parse_cid(cid)):
                    if sum(call(d, "has", cid=block) for d in nodes) < 3:
                        return False
            return True

        wait_for(all_at_r, 2 * repair + 30, "every block back at R = 3 copies")
        print(f"every block at R after {time.monotonic() - t0:.1f} s")
