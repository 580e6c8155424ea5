"""DHT lookup latency on real local nodes, beside the reference Python Kademlia.

What it measures, in one run:

1. **cas, 50 processes**: 50 ``cas daemon`` processes on 127.0.0.1 (one
   bootstraps the rest), each table refreshed once; then lookups of random
   node IDs, each asked of a random node through its control socket. The
   latency is the lookup's own time inside the daemon (FIND_NODE over
   Noise-encrypted, authenticated TCP, connections pooled), as the daemon
   reports it; messages are the queries the lookup sent.
2. **cas, 50 nodes in one process**: the same DHT driver, 50 nodes in one
   trio run (one core), the same number of lookups: the like-for-like
   comparison with (3).
3. **kademlia** (PyPI ``kademlia``, bmuller's, asyncio over UDP, no
   encryption): 50 ``Server`` nodes in one process, bootstrapped the same
   way, the same number of lookups of random keys with its
   ``NodeSpiderCrawl`` (what its ``get``/``set`` run), k = 20, alpha = 3.
4. **ceilings**: one trio TCP round trip on loopback (64 bytes echoed), and
   one cas PING round trip over an established secure channel.

Each lookup set is preceded by a warm-up of the same size that is not
counted (connections, caches). Target (issue 5): cas p50 no worse than
kademlia's while every message is encrypted and authenticated.

Needs the ``kademlia`` package, which nothing else in cas uses and the tests
do not need::

    .venv/bin/pip install kademlia          # 2.2.3 measured
    .venv/bin/python bench/dht_lookup.py    # --nodes 50 --lookups 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

CAS = str(Path(sys.executable).with_name("cas"))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(name: str, latencies_ms: list[float], messages: list[int]) -> dict[str, float]:
    row = {
        "p50": percentile(latencies_ms, 50),
        "p99": percentile(latencies_ms, 99),
        "mean": statistics.fmean(latencies_ms),
        "messages": statistics.fmean(messages) if messages else float("nan"),
    }
    print(f"{name:32} p50 {row['p50']:8.2f} ms   p99 {row['p99']:8.2f} ms   "
          f"mean {row['mean']:8.2f} ms   messages/lookup {row['messages']:6.1f}", flush=True)
    return row


# -- 1. cas as processes ---------------------------------------------------------------


def _start(repo: Path, bootstrap: str | None) -> subprocess.Popen[bytes]:
    argv = [CAS, "--repo", str(repo), "daemon", "--listen", "127.0.0.1:0"]
    if bootstrap:
        argv += ["--bootstrap", bootstrap]
    env = {k: v for k, v in os.environ.items() if k != "CAS_HOME"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)


def _ready_line(proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise RuntimeError("a daemon did not start in time")
        chunk = os.read(proc.stdout.fileno(), 1)
        if not chunk:
            raise RuntimeError("a daemon exited at start")
        line += chunk
    return line.decode().split()[4]


def bench_cas_processes(nodes: int, lookups: int, rng: random.Random) -> dict[str, float]:
    from cas.control import ControlClient, socket_path

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="cas-dht-bench-") as tmp:
        try:
            repos = [Path(tmp) / f"n{i:02}" for i in range(nodes)]
            procs.append(_start(repos[0], None))
            first = _ready_line(procs[0])
            for repo in repos[1:]:
                procs.append(_start(repo, first))
            for proc in procs[1:]:
                _ready_line(proc)
            clients = [ControlClient(socket_path(r)) for r in repos]
            for client in clients:
                client.call("dht_refresh")
            latencies: list[float] = []
            messages: list[int] = []
            for phase in ("warm-up", "measured"):
                for _ in range(lookups):
                    client = rng.choice(clients)
                    result = client.call("dht_find", target=f"{rng.getrandbits(256):064x}")
                    if phase == "measured":
                        latencies.append(result["elapsed_us"] / 1000)
                        messages.append(result["messages"])
            for client in clients:
                client.close()
            return summary(f"cas, {nodes} processes", latencies, messages)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)


# -- 2. cas, many nodes in one trio process ----------------------------------------------


def bench_cas_one_process(nodes: int, lookups: int, seed: int) -> dict[str, float]:
    from cas.dht.driver import DhtDriver
    from cas.dht.ids import id_from_bytes
    from cas.dht.routing import RoutingTable
    from cas.net.identity import Identity

    rng = random.Random(seed)
    out: dict[str, float] = {}

    async def main() -> None:
        drivers: list[DhtDriver] = []
        async with trio.open_nursery() as nursery:
            for i in range(nodes):
                identity = Identity.generate()
                listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                port = listeners[0].socket.getsockname()[1]
                driver = DhtDriver(identity, RoutingTable(id_from_bytes(identity.node_id)),
                                   listen_port=port, rng=random.Random(i))
                await nursery.start(driver.run)
                nursery.start_soon(trio.serve_listeners, driver.handle_inbound, listeners)
                if drivers:
                    await driver.bootstrap([("127.0.0.1", drivers[0].listen_port or 0)])
                drivers.append(driver)
            for driver in drivers:
                await driver.refresh(force=True)
            latencies: list[float] = []
            messages: list[int] = []
            for phase in ("warm-up", "measured"):
                for _ in range(lookups):
                    driver = rng.choice(drivers)
                    found = await driver.find_node(rng.getrandbits(256))
                    if phase == "measured":
                        latencies.append(found.seconds * 1000)
                        messages.append(found.lookup.messages)
            out.update(summary(f"cas, {nodes} nodes in one process", latencies, messages))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return out


# -- 3. kademlia ---------------------------------------------------------------------------


def bench_kademlia(nodes: int, lookups: int, seed: int) -> dict[str, float] | None:
    try:
        from kademlia.crawling import NodeSpiderCrawl
        from kademlia.network import Server
        from kademlia.node import Node as KNode
        from kademlia.protocol import KademliaProtocol
    except ImportError:
        print("kademlia is not installed: .venv/bin/pip install kademlia (skipping its rows)")
        return None
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    rng = random.Random(seed)
    sent = [0]
    original = KademliaProtocol.call_find_node

    async def counted(self: KademliaProtocol, node_to_ask: KNode, node_to_find: KNode):  # type: ignore[no-untyped-def]
        sent[0] += 1
        return await original(self, node_to_ask, node_to_find)

    KademliaProtocol.call_find_node = counted  # type: ignore[method-assign]
    out: dict[str, float] = {}

    async def main() -> None:
        servers = []
        try:
            for i in range(nodes):
                server = Server(ksize=20, alpha=3, node_id=rng.getrandbits(160).to_bytes(20, "big"))
                await server.listen(0, interface="127.0.0.1")
                server.port = server.transport.get_extra_info("sockname")[1]  # type: ignore[attr-defined]
                if servers:
                    await server.bootstrap([("127.0.0.1", servers[0].port)])
                servers.append(server)
            for server in servers:  # the same refresh as cas's: every bucket, now
                for node_id in server.protocol.get_refresh_ids():
                    target = KNode(node_id)
                    await NodeSpiderCrawl(server.protocol, target,
                                          server.protocol.router.find_neighbors(target, server.alpha),
                                          server.ksize, server.alpha).find()
            latencies: list[float] = []
            messages: list[int] = []
            for phase in ("warm-up", "measured"):
                for _ in range(lookups):
                    server = rng.choice(servers)
                    target = KNode(rng.getrandbits(160).to_bytes(20, "big"))
                    nearest = server.protocol.router.find_neighbors(target)
                    before = sent[0]
                    started = time.perf_counter()
                    await NodeSpiderCrawl(server.protocol, target, nearest, server.ksize, server.alpha).find()
                    if phase == "measured":
                        latencies.append((time.perf_counter() - started) * 1000)
                        messages.append(sent[0] - before)
            out.update(summary(f"kademlia, {nodes} nodes in one process", latencies, messages))
        finally:
            for server in servers:
                server.stop()

    try:
        asyncio.run(main())
    finally:
        KademliaProtocol.call_find_node = original  # type: ignore[method-assign]
    return out


# -- 4. ceilings ---------------------------------------------------------------------------


def bench_round_trips(count: int) -> tuple[dict[str, float], dict[str, float]]:
    from cas.net import messages as msg
    from cas.net.connection import Connection, connect_tcp, open_channel
    from cas.net.identity import Identity

    out_tcp: dict[str, float] = {}
    out_ping: dict[str, float] = {}

    async def main() -> None:
        async def echo(stream: trio.SocketStream) -> None:
            async for data in stream:
                await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, echo, 0)
            port = listeners[0].socket.getsockname()[1]
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            payload = b"x" * 64
            times = []
            for _ in range(count):
                started = time.perf_counter()
                await stream.send_all(payload)
                got = 0
                while got < len(payload):
                    got += len(await stream.receive_some(4096))
                times.append((time.perf_counter() - started) * 1000)
            await stream.aclose()
            out_tcp.update(summary("trio TCP round trip (ceiling)", times, []))

            server_identity = Identity.generate()

            async def serve_ping(stream: trio.SocketStream) -> None:
                channel = await open_channel(stream, server_identity, initiator=False)

                async def handler(peer: object, request: msg.Request) -> msg.Response:
                    return msg.Pong()

                await Connection(channel, handler, rate=1e9, burst=1e9).run()

            ping_listeners = await nursery.start(trio.serve_tcp, serve_ping, 0)
            ping_port = ping_listeners[0].socket.getsockname()[1]
            channel = await connect_tcp("127.0.0.1", ping_port, Identity.generate())
            connection = Connection(channel)
            nursery.start_soon(connection.run)
            times = []
            for _ in range(count):
                started = time.perf_counter()
                await connection.request(msg.Ping())
                times.append((time.perf_counter() - started) * 1000)
            out_ping.update(summary("cas PING round trip (secure)", times, []))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return out_tcp, out_ping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    print(f"{args.nodes} nodes, {args.lookups} measured lookups each (after as many warm-up lookups)")
    rows: dict[str, dict[str, float] | None] = {}
    rows["tcp"], rows["ping"] = bench_round_trips(1000)
    rows["kademlia"] = bench_kademlia(args.nodes, args.lookups, args.seed)
    rows["cas_one"] = bench_cas_one_process(args.nodes, args.lookups, args.seed)
    rows["cas_proc"] = bench_cas_processes(args.nodes, args.lookups, random.Random(args.seed))
    kad = rows["kademlia"]
    print()
    for key, name in (("cas_one", "cas, one process"), ("cas_proc", "cas, processes")):
        row = rows[key]
        assert row is not None
        print(f"{name:18} p50 / trio round trip: {row['p50'] / rows['tcp']['p50']:6.1f}x   "
              f"p50 / cas PING: {row['p50'] / rows['ping']['p50']:5.1f}x", end="")
        if kad:
            print(f"   p50 / kademlia p50: {row['p50'] / kad['p50']:5.2f}   "
                  f"p99 / kademlia p99: {row['p99'] / kad['p99']:5.2f}   "
                  f"messages / kademlia's: {row['messages'] / kad['messages']:5.2f}")
        else:
            print()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
