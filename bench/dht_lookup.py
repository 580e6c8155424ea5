"""DHT lookup latency on real local nodes, beside the reference Python Kademlia.

What it measures, in one run:

1. **cas, 50 processes**: 50 ``cas daemon`` processes on 127.0.0.1 (one
   bootstraps the rest), each table refreshed once; then lookups of random
   node IDs, each asked of a random node through its control socket. The
   latency is the lookup's own time inside the daemon (FIND_NODE over
   Noise-encrypted, authenticated TCP, connections pooled), as the daemon
   reports it; messages are the queries the lookup sent.
2. **cas, 50 nodes in one process**: the same DHT driver, 50 nodes in one
   trio run (one core): the like-for-like comparison with (3).
3. **kademlia** (PyPI ``kademlia``, bmuller's, asyncio over UDP, no
   encryption): 50 ``Server`` nodes in one process, bootstrapped the same
   way, lookups of random keys with its ``NodeSpiderCrawl`` (what its
   ``get``/``set`` run), k = 20, alpha = 3.
4. **kademlia, 50 processes**: the same kademlia node, one per OS process
   (bench/kademlia_node.py), bootstrapped and refreshed as in (3), asked
   through its stdin for a lookup of a random key (the same
   ``NodeSpiderCrawl``) and answering with the time that crawl took inside
   the node, and the queries it sent: measured as the daemons of (1) are,
   and so the like-for-like comparison with (1). 50 processes on a small
   machine cost both systems alike (each exchange wakes two processes),
   which (1) against (3) would charge to cas alone.
5. **ceilings**: one trio TCP round trip on loopback (64 bytes echoed), and
   one cas PING round trip over an established secure channel.

Each system's line also gives its CPU time per measured lookup: for the
in-process networks the CPU of the thread all 50 nodes run in, for the
process networks the user and system time of all 50 processes (from
/proc), which is where the two pairings differ most.

The four networks run at the same time (kademlia's asyncio loop and cas's
trio loop each in a thread of this process, the processes beside it), and the
measured lookups are taken in interleaved rounds, a block from each system
in turn, so that a burst of load on this shared machine falls on all of them
alike and the ratios stay meaningful; each system's lookups are pooled for
its percentiles. Only one system works at a time: the other loops are idle.
Before the rounds, every system does as many unmeasured warm-up lookups
(connections, caches), and then the garbage collector's view of the set-up is
frozen (``gc.freeze``): otherwise every full collection rescans the state of
100 nodes held in this one process, pauses of 0.1-0.4 s that land on
whichever lookup is running and say nothing about a node, which holds one.

Target (issue 5): cas p50 no worse than kademlia's while every message is
encrypted and authenticated; the pairings are (2) with (3) and (1) with (4).
Every process started is stopped by its PID at the end, also on an error or
Ctrl-C, and all traffic stays on 127.0.0.1.

Needs the ``kademlia`` package, which nothing else in cas uses and the tests
do not need::

    .venv/bin/pip install kademlia          # 2.2.3 measured
    .venv/bin/python bench/dht_lookup.py    # --nodes 50 --lookups 200 --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import queue
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

CAS = str(Path(sys.executable).with_name("cas"))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(name: str, latencies_ms: list[float], messages: list[int],
            cpu_seconds: float | None = None) -> dict[str, float]:
    row = {
        "p50": percentile(latencies_ms, 50),
        "p99": percentile(latencies_ms, 99),
        "mean": statistics.fmean(latencies_ms),
        "messages": statistics.fmean(messages) if messages else float("nan"),
        "cpu_ms": float("nan") if cpu_seconds is None else cpu_seconds * 1000 / len(latencies_ms),
    }
    cpu = f"   CPU/lookup {row['cpu_ms']:6.2f} ms" if cpu_seconds is not None else ""
    print(f"{name:32} p50 {row['p50']:8.2f} ms   p99 {row['p99']:8.2f} ms   "
          f"mean {row['mean']:8.2f} ms   messages/lookup {row['messages']:6.1f}{cpu}", flush=True)
    return row


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used, from /proc
    (Linux); 0 where it cannot be read."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


# -- 1. cas as processes ---------------------------------------------------------------


def _start(repo: Path, bootstrap: str | None) -> subprocess.Popen[bytes]:
    argv = [CAS, "--repo", str(repo), "daemon", "--listen", "127.0.0.1:0"]
    if bootstrap:
        argv += ["--bootstrap", bootstrap]
    env = {k: v for k, v in os.environ.items() if k != "CAS_HOME"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)


def _read_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    """One line from a child's stdout, or an error after ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    # poll, not select: the in-process networks hold thousands of descriptors.
    poller = select.poll()
    poller.register(proc.stdout, select.POLLIN)
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise RuntimeError(f"{what} did not answer in time")
        # a byte at a time: nothing past the newline may be taken from the pipe
        chunk = os.read(proc.stdout.fileno(), 1)
        if not chunk:
            raise RuntimeError(f"{what} exited")
        line += chunk
    return line.decode()


def _ready_line(proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    return _read_line(proc, timeout, "a daemon at start").split()[4]


def _stop_by_pid(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each child still running, by PID; SIGKILL any that lingers."""
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


class CasProcesses:
    """50 ``cas daemon`` processes, asked through their control sockets."""

    name = "cas, {nodes} processes"

    def __init__(self, nodes: int, seed: int) -> None:
        from cas.control import ControlClient, socket_path

        self.rng = random.Random(seed)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="cas-dht-bench-")
        self.clients = []
        try:
            repos = [Path(self._tmp.name) / f"n{i:02}" for i in range(nodes)]
            self.procs.append(_start(repos[0], None))
            first = _ready_line(self.procs[0])
            for repo in repos[1:]:
                self.procs.append(_start(repo, first))
            for proc in self.procs[1:]:
                _ready_line(proc)
            self.clients = [ControlClient(socket_path(r)) for r in repos]
            for client in self.clients:
                client.call("dht_refresh")
        except BaseException:
            self.close()
            raise

    def lookups(self, count: int) -> tuple[list[float], list[int], float]:
        latencies, messages = [], []
        pids = [proc.pid for proc in self.procs]
        cpu = cpu_of(pids)
        for _ in range(count):
            client = self.rng.choice(self.clients)
            result = client.call("dht_find", target=f"{self.rng.getrandbits(256):064x}")
            latencies.append(result["elapsed_us"] / 1000)
            messages.append(result["messages"])
        return latencies, messages, cpu_of(pids) - cpu

    def close(self) -> None:
        for client in self.clients:
            client.close()
        _stop_by_pid(self.procs)
        self._tmp.cleanup()


# -- 2. cas, many nodes in one trio process (in a thread) ---------------------------------


class CasOneProcess:
    """50 DHT drivers in one trio run, in a thread of its own; lookups are
    handed to it with ``trio.from_thread``."""

    name = "cas, {nodes} nodes in one process"

    def __init__(self, nodes: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self._ready: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=trio.run, args=(self._main, nodes), daemon=True)
        self._thread.start()
        started = self._ready.get()
        if isinstance(started, BaseException):
            raise started
        self._token = started

    async def _main(self, nodes: int) -> None:
        from cas.dht.driver import DhtDriver
        from cas.dht.ids import id_from_bytes
        from cas.dht.routing import RoutingTable
        from cas.net.identity import Identity

        self.drivers: list[DhtDriver] = []
        self._stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                for i in range(nodes):
                    identity = Identity.generate()
                    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                    port = listeners[0].socket.getsockname()[1]
                    driver = DhtDriver(identity, RoutingTable(id_from_bytes(identity.node_id)),
                                       listen_port=port, rng=random.Random(i))
                    await nursery.start(driver.run)
                    nursery.start_soon(trio.serve_listeners, driver.handle_inbound, listeners)
                    if self.drivers:
                        await driver.bootstrap([("127.0.0.1", self.drivers[0].listen_port or 0)])
                    self.drivers.append(driver)
                for driver in self.drivers:
                    await driver.refresh(force=True)
                self._ready.put(trio.lowlevel.current_trio_token())
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            self._ready.put(exc)
            raise

    async def _lookups(self, count: int) -> tuple[list[float], list[int], float]:
        latencies, messages = [], []
        cpu = time.thread_time()  # the trio thread's, where all 50 nodes run
        for _ in range(count):
            driver = self.rng.choice(self.drivers)
            found = await driver.find_node(self.rng.getrandbits(256))
            latencies.append(found.seconds * 1000)
            messages.append(found.lookup.messages)
        return latencies, messages, time.thread_time() - cpu

    def lookups(self, count: int) -> tuple[list[float], list[int], float]:
        return trio.from_thread.run(self._lookups, count, trio_token=self._token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


# -- 3. kademlia (its asyncio loop in a thread) ----------------------------------------------


class Kademlia:
    """bmuller's kademlia: 50 ``Server`` nodes on one asyncio loop in a thread."""

    name = "kademlia, {nodes} nodes in one process"

    def __init__(self, nodes: int, seed: int) -> None:
        from kademlia.protocol import KademliaProtocol

        logging.getLogger("kademlia").setLevel(logging.CRITICAL)
        logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
        self.rng = random.Random(seed)
        self.sent = 0
        original = self._original = KademliaProtocol.call_find_node
        bench = self

        async def counted(protocol: KademliaProtocol, node_to_ask, node_to_find):  # type: ignore[no-untyped-def]
            bench.sent += 1
            return await original(protocol, node_to_ask, node_to_find)

        KademliaProtocol.call_find_node = counted  # type: ignore[method-assign]
        self.servers: list = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self._run(self._setup(nodes))
        except BaseException:
            self.close()
            raise

    def _run(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _setup(self, nodes: int) -> None:
        from kademlia.crawling import NodeSpiderCrawl
        from kademlia.network import Server
        from kademlia.node import Node as KNode

        for _ in range(nodes):
            server = Server(ksize=20, alpha=3, node_id=self.rng.getrandbits(160).to_bytes(20, "big"))
            await server.listen(0, interface="127.0.0.1")
            server.port = server.transport.get_extra_info("sockname")[1]  # type: ignore[attr-defined]
            if self.servers:
                await server.bootstrap([("127.0.0.1", self.servers[0].port)])
            self.servers.append(server)
        for server in self.servers:  # the same refresh as cas's: every bucket, now
            for node_id in server.protocol.get_refresh_ids():
                target = KNode(node_id)
                await NodeSpiderCrawl(server.protocol, target,
                                      server.protocol.router.find_neighbors(target, server.alpha),
                                      server.ksize, server.alpha).find()

    async def _lookups(self, count: int) -> tuple[list[float], list[int]]:
        from kademlia.crawling import NodeSpiderCrawl
        from kademlia.node import Node as KNode

        latencies, messages = [], []
        cpu = time.thread_time()  # the asyncio thread's, where all 50 nodes run
        for _ in range(count):
            server = self.rng.choice(self.servers)
            target = KNode(self.rng.getrandbits(160).to_bytes(20, "big"))
            nearest = server.protocol.router.find_neighbors(target)
            before = self.sent
            started = time.perf_counter()
            await NodeSpiderCrawl(server.protocol, target, nearest, server.ksize, server.alpha).find()
            latencies.append((time.perf_counter() - started) * 1000)
            messages.append(self.sent - before)
        return latencies, messages, time.thread_time() - cpu

    def lookups(self, count: int) -> tuple[list[float], list[int], float]:
        return self._run(self._lookups(count))

    def close(self) -> None:
        from kademlia.protocol import KademliaProtocol

        async def stop() -> None:
            for server in self.servers:
                server.stop()

        try:
            self._run(stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            KademliaProtocol.call_find_node = self._original  # type: ignore[method-assign]


# -- 4. kademlia as processes -----------------------------------------------------------------

KADEMLIA_NODE = str(Path(__file__).with_name("kademlia_node.py"))


class KademliaProcesses:
    """bmuller's kademlia as 50 processes (bench/kademlia_node.py), one node
    each: the like-for-like pairing of the ``cas daemon`` processes. A lookup
    is asked of a random node over its stdin and timed inside that node."""

    name = "kademlia, {nodes} processes"

    def __init__(self, nodes: int, seed: int) -> None:
        import kademlia  # noqa: F401  -- fail here, as the in-process one does, if it is missing

        self.rng = random.Random(seed)
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            ids = [f"{self.rng.getrandbits(160):040x}" for _ in range(nodes)]
            self.procs.append(self._start(ids[0], None))
            first = int(_read_line(self.procs[0], 120, "a kademlia node at start").split()[2])
            # All join through the first at once, as the daemons do; the
            # refresh below, node by node as in-process, fills the tables.
            for node_id in ids[1:]:
                self.procs.append(self._start(node_id, first))
            for proc in self.procs[1:]:
                _read_line(proc, 120, "a kademlia node at start")
            for proc in self.procs:
                if self._ask(proc, "refresh") != "ok":
                    raise RuntimeError("a kademlia node failed its refresh")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _start(node_id: str, bootstrap: int | None) -> subprocess.Popen[bytes]:
        argv = [sys.executable, KADEMLIA_NODE, "--id", node_id]
        if bootstrap is not None:
            argv += ["--bootstrap", str(bootstrap)]
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    @staticmethod
    def _ask(proc: subprocess.Popen[bytes], command: str) -> str:
        assert proc.stdin is not None
        proc.stdin.write(command.encode() + b"\n")
        proc.stdin.flush()
        return _read_line(proc, 60, "a kademlia node").strip()

    def lookups(self, count: int) -> tuple[list[float], list[int], float]:
        latencies, messages = [], []
        pids = [proc.pid for proc in self.procs]
        cpu = cpu_of(pids)
        for _ in range(count):
            proc = self.rng.choice(self.procs)
            result = json.loads(self._ask(proc, f"find {self.rng.getrandbits(160):040x}"))
            latencies.append(result["elapsed_us"] / 1000)
            messages.append(result["messages"])
        return latencies, messages, cpu_of(pids) - cpu

    def close(self) -> None:
        for proc in self.procs:  # end of stdin asks each node to stop by itself...
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        _stop_by_pid(self.procs)  # ...and any still running is stopped by PID
        for proc in self.procs:
            if proc.stdout is not None:
                proc.stdout.close()


def measure(systems: dict[str, object], nodes: int, lookups: int, rounds: int) -> dict[str, dict[str, float]]:
    """Warm every system up, freeze the set-up for the collector, then take
    ``lookups`` measured lookups from each in ``rounds`` interleaved blocks."""
    for system in systems.values():
        system.lookups(lookups)  # type: ignore[attr-defined]
    gc.collect()
    gc.freeze()
    pooled: dict[str, tuple[list[float], list[int]]] = {key: ([], []) for key in systems}
    cpu: dict[str, float] = dict.fromkeys(systems, 0.0)
    keys = list(systems)
    for index in range(rounds):
        block = lookups // rounds + (1 if index < lookups % rounds else 0)
        for key in keys[index % len(keys):] + keys[:index % len(keys)]:  # rotate who goes first
            latencies, messages, seconds = systems[key].lookups(block)  # type: ignore[attr-defined]
            pooled[key][0].extend(latencies)
            pooled[key][1].extend(messages)
            cpu[key] += seconds
    gc.unfreeze()
    return {key: summary(systems[key].name.format(nodes=nodes), *pooled[key], cpu[key])  # type: ignore[attr-defined]
            for key in keys}


# -- 5. ceilings ---------------------------------------------------------------------------


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
    parser.add_argument("--lookups", type=int, default=200, help="measured lookups per system")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved blocks they are taken in")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-processes", action="store_true",
                        help="leave out the multi-process networks (cas daemons, kademlia processes)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    print(f"{args.nodes} nodes, {args.lookups} measured lookups per system in {args.rounds} "
          "interleaved rounds (after as many warm-up lookups)")
    rows: dict[str, dict[str, float] | None] = {}
    rows["tcp"], rows["ping"] = bench_round_trips(1000)
    systems: dict[str, object] = {}
    try:
        try:
            systems["kademlia"] = Kademlia(args.nodes, args.seed)
        except ImportError:
            print("kademlia is not installed: .venv/bin/pip install kademlia (skipping its rows)")
        systems["cas_one"] = CasOneProcess(args.nodes, args.seed)
        if not args.no_processes:
            systems["cas_proc"] = CasProcesses(args.nodes, args.seed)
            if "kademlia" in systems:
                systems["kad_proc"] = KademliaProcesses(args.nodes, args.seed)
        rows.update(measure(systems, args.nodes, args.lookups, args.rounds))
    finally:
        for system in reversed(systems.values()):
            system.close()  # type: ignore[attr-defined]
    kad = rows.get("kademlia")
    print()
    for key, name in (("cas_one", "cas, one process"), ("cas_proc", "cas, processes")):
        row = rows.get(key)
        if row is None:
            continue
        print(f"{name:18} p50 / trio round trip: {row['p50'] / rows['tcp']['p50']:6.1f}x   "
              f"p50 / cas PING: {row['p50'] / rows['ping']['p50']:5.1f}x", end="")
        if kad:
            print(f"   p50 / kademlia p50: {row['p50'] / kad['p50']:5.2f}   "
                  f"p99 / kademlia p99: {row['p99'] / kad['p99']:5.2f}   "
                  f"messages / kademlia's: {row['messages'] / kad['messages']:5.2f}", end="")
            print(f"   CPU / kademlia's: {row['cpu_ms'] / kad['cpu_ms']:5.2f}" if key == "cas_one" else "")
        else:
            print()
    # The like-for-like pairing of the daemons: kademlia as processes too.
    kad_proc, cas_proc = rows.get("kad_proc"), rows.get("cas_proc")
    if kad_proc and cas_proc:
        print(f"{'cas, processes':18} p50 / kademlia processes p50: {cas_proc['p50'] / kad_proc['p50']:5.2f}   "
              f"p99 / kademlia processes p99: {cas_proc['p99'] / kad_proc['p99']:5.2f}   "
              f"messages / kademlia's: {cas_proc['messages'] / kad_proc['messages']:5.2f}   "
              f"CPU / kademlia's: {cas_proc['cpu_ms'] / kad_proc['cpu_ms']:5.2f}")
    if kad_proc and kad:  # what 50 processes cost kademlia itself
        print(f"{'kademlia':18} processes p50 / one process p50: {kad_proc['p50'] / kad['p50']:5.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
