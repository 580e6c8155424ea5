"""What a private network's key costs: a replicated add, the handshake and
bulk transport, each with and without the key (Noise XXpsk0 against XX).

The question (issue 14): does a replicated add on a private network cost
at most 5 % more than the same add on an open one? Whole adds on this
shared two-core machine vary by more than that from one minute to the next
(earlier runs of ``bench/cluster.py --network-key``: 0.96-1.12 by the
median of the pairs, single pairs 0.6-1.5), so this script measures it in
three ways, from the most direct to the most precise, and prints each
ratio (private / open: above 1 means the key costs something):

replicated add
    Two clusters of 5 daemons on 127.0.0.1 (R = 3), one open and one
    private, **with the same node identities** (the second cluster's
    repositories get copies of the first one's node keys), so the same file
    is placed on the same nodes in both and only the key differs; and in
    a crossover: cluster b holds the key for the first half of the pairs,
    then both restart and cluster a holds it for the second half, so
    whatever else differs between the two clusters cancels out. In each
    of ``--pairs`` pairs a new file of random bytes is added through both
    node A's, in ABBA order (open first in even pairs, private first in odd
    ones), each add after a ``sync`` and once every daemon is quiet. For
    each add: the wall time of ``cas add`` (which waits until R nodes hold
    every block), and the CPU time it cost (its cluster's five daemons plus
    the ``cas add`` process: CPU is what the key could add, and it is far
    less disturbed by other engineers' jobs than wall time); and how many
    connections the cluster dialled during it (``net_stats``: each one is a
    handshake, the only place the key does any work). Printed: medians,
    the per-pair ratios' median and interquartile range, a bootstrap 95 %
    confidence interval of the median ratio, and the geometric mean of the
    ratios with its 95 % t-interval.

    The daemons keep their connections to each other (pooled), so an add
    normally dials none and the key costs it nothing at all. ``--cold``
    runs the daemons with a 1 s idle timeout and starts each add only once
    every connection has closed: every add then dials its peers afresh and
    pays their handshakes, the worst case for the key. ``--aa`` starts the
    second cluster without the key as well (A/A): the ratio and intervals
    that a difference of nothing gives, with this method, on this machine.
handshake
    Both ends of one handshake in this process (sans-IO, no sockets), and a
    whole channel opened over loopback TCP (handshake and hellos, two trio
    tasks), alternating with and without the key, many times: medians,
    spread, the difference per connection.
transport
    Two channel pairs over loopback TCP in this process, one made with the
    key and one without, each sending 1 MiB blocks (``store_blocks``
    messages) to its other end, in alternating runs: MiB/s. The key changes
    only the handshake; after it both have the same AES-256-GCM keys' kind
    and the same frames, so this should be 1.00 within the noise.

Then the verdict, from the replicated add's CPU ratio (its confidence
interval's upper end against 1.05), checked against what the handshake
difference times the connections dialled per add can explain.

Run:  .venv/bin/python bench/psk.py [--size 32M] [--pairs 20] [--cold] [--dir DIR]
          [--skip-cluster] [--transport-mib 64] [--transport-runs 20]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from benchutil import compile_cas, parse_size
from cluster import NODES, Daemon, cas, cpu_seconds, quiesce, write_random

from cas.net import messages as msg
from cas.net.connection import SecureChannel, open_channel
from cas.net.identity import Identity
from cas.net.network_key import NetworkKey
from cas.net.noise import Handshake, Role

MiB = 1 << 20
KEY_PATH = Path("keys") / "node.key"  # cas.node.KEY_PATH, without importing the node


# -- statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    median: float
    q1: float
    q3: float
    low: float  # bootstrap 95 % interval of the median
    high: float
    n: int

    def text(self, fmt: str = "{:.3f}") -> str:
        f = fmt.format
        return (f"{f(self.median)} (IQR {f(self.q1)}-{f(self.q3)}, 95 % CI of the median "
                f"{f(self.low)}-{f(self.high)}, n={self.n})")


def spread(values: Sequence[float], resamples: int = 10_000, seed: int = 14) -> Spread:
    """Median, quartiles and a percentile-bootstrap 95 % interval of the median."""
    ordered = sorted(values)
    q1, _, q3 = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else (ordered[0],) * 3
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ordered, k=len(ordered))) for _ in range(resamples))
    return Spread(statistics.median(ordered), q1, q3, medians[int(0.025 * resamples)],
                  medians[int(0.975 * resamples) - 1], len(ordered))


# Student's t, two-sided 95 %, by degrees of freedom; between two rows the
# smaller df's (larger t) is used, so the interval errs wide.
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
        12: 2.18, 15: 2.13, 20: 2.09, 25: 2.06, 30: 2.04, 40: 2.02, 60: 2.00, 120: 1.98}


def geometric_mean(ratios: Sequence[float]) -> tuple[float, float, float]:
    """The geometric mean of ``ratios`` and its 95 % t-interval (on the logs)."""
    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), math.nan, math.nan
    t = _T95[max(d for d in _T95 if d <= len(logs) - 1)]
    half = t * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def alternating(rounds: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each of ``runs`` once per round, in an order that alternates
    (ABBA...), and collect what each returns."""
    names = list(runs)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            out[name].append(runs[name]())
    return out


# -- the handshake ----------------------------------------------------------------------


def handshake_in_process(key: NetworkKey | None, alice: Identity, bob: Identity) -> float:
    """Seconds for both ends of one handshake, sans-IO, ciphers split."""
    start = time.perf_counter()
    ends = [Handshake(alice, Role.INITIATOR, network_key=key), Handshake(bob, Role.RESPONDER, network_key=key)]
    turn = 0
    while not ends[1].complete:
        ends[1 - turn].receive_message(ends[turn].next_message())
        turn = 1 - turn
    ends[0].transport()
    ends[1].transport()
    return time.perf_counter() - start


async def tcp_pair(key: NetworkKey | None, alice: Identity, bob: Identity) -> tuple[SecureChannel, SecureChannel]:
    """A channel pair over loopback TCP, made with ``key`` (or none)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    result: dict[str, SecureChannel] = {}
    try:
        async with trio.open_nursery() as nursery:
            async def accept() -> None:
                stream = await listeners[0].accept()
                result["b"] = await open_channel(stream, bob, initiator=False, network_key=key)

            nursery.start_soon(accept)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            result["a"] = await open_channel(stream, alice, initiator=True, network_key=key)
    finally:
        await listeners[0].aclose()
    return result["a"], result["b"]


async def channel_open_times(rounds: int, key: NetworkKey) -> dict[str, list[float]]:
    alice, bob = Identity.generate(), Identity.generate()
    out: dict[str, list[float]] = {"open": [], "private": []}
    for i in range(rounds):
        for name in (("open", "private") if i % 2 == 0 else ("private", "open")):
            start = time.perf_counter()
            a, b = await tcp_pair(key if name == "private" else None, alice, bob)
            out[name].append(time.perf_counter() - start)
            await a.aclose()
            await b.aclose()
    return out


# -- bulk transport ---------------------------------------------------------------------


TRANSPORTS = ("open", "open again", "private")
"""The transport's three kinds of channel pair: the second open one is the
control (A/A), the spread a difference of nothing shows."""


async def transport_rates(rounds: int, mib: int, key: NetworkKey) -> dict[str, list[tuple[float, float]]]:
    """MiB/s of 1 MiB blocks through channel pairs made without the key
    (twice: the control) and with it, ``mib`` blocks per run; each round
    makes fresh pairs and runs the three in a rotating order. Per run, by
    wall time and by this process's CPU time (both ends are this process)."""
    alice, bob = Identity.generate(), Identity.generate()
    block = os.urandom(MiB)
    message = msg.StoreBlocks.of([(msg.CID.for_data(0x55, block), block)])

    async def run(name: str) -> tuple[float, float]:
        sender, receiver = await tcp_pair(key if name == "private" else None, alice, bob)
        start, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            async def send() -> None:
                for _ in range(mib):
                    await sender.send_message(message)

            nursery.start_soon(send)
            for _ in range(mib):
                got = await receiver.receive_message()
                assert isinstance(got, msg.StoreBlocks)
        rates = mib / (time.perf_counter() - start), mib / (time.process_time() - cpu)
        await sender.aclose()
        await receiver.aclose()
        return rates

    out: dict[str, list[tuple[float, float]]] = {name: [] for name in TRANSPORTS}
    for name in TRANSPORTS:  # warm the buffer pool and the allocator first
        await run(name)
    for i in range(rounds):
        for j in range(len(TRANSPORTS)):
            name = TRANSPORTS[(i + j) % len(TRANSPORTS)]
            out[name].append(await run(name))
    return out


# -- the replicated add -----------------------------------------------------------------


@dataclass(frozen=True)
class Add:
    wall: float
    cpu: float  # the cluster's daemons and the cas add process
    daemons_cpu: float  # the daemons' part of it (the cas add process never sees the key)
    dialled: int  # connections the cluster's daemons dialled during it
    replicated: bool  # every block on R nodes when cas add returned
    note: str  # what cas add said about it


def start_clusters(base: Path, keyed: str | None, key_file: Path, options: list[str]) -> dict[str, list[Daemon]]:
    """Clusters "a" (repositories n0...) and "b" (p0...) of NODES daemons
    each, with the same node identities (b's repositories get copies of a's
    node keys when they are made), each joined through its first node and
    refreshed; the one named ``keyed`` (if any) runs with the network key."""
    clusters: dict[str, list[Daemon]] = {"a": [], "b": []}
    try:
        for name, prefix in (("a", "n"), ("b", "p")):
            extra = [*options, "--network-key", str(key_file)] if name == keyed else options
            daemons = clusters[name]
            for i in range(NODES):
                repo = base / f"{prefix}{i}"
                if name == "b" and not repo.exists():  # a's node identity: the same placement
                    cas("init", repo=repo)
                    (repo / KEY_PATH).parent.mkdir(mode=0o700, exist_ok=True)
                    shutil.copy2(base / f"n{i}" / KEY_PATH, repo / KEY_PATH)
                daemons.append(Daemon(repo, [daemons[0].address] if i else [], extra))
                if i == 0:
                    daemons[0].wait_ready()
            for d in daemons[1:]:
                d.wait_ready()
            for d in daemons:
                d.call("dht_refresh")
        ids = [[d.node_id for d in clusters[name]] for name in clusters]
        assert ids[0] == ids[1], "the clusters' node identities differ"
    except BaseException:
        for daemons in clusters.values():
            for d in daemons:
                d.stop()
        raise
    return clusters


def dialled(daemons: list[Daemon]) -> int:
    return sum(d.call("net_stats")["handshakes_out"] for d in daemons)


def one_add(daemons: list[Daemon], source: Path) -> Add:
    pids = [d.proc.pid for d in daemons]
    before_cpu, before_children, before_dialled = cpu_seconds(pids), os.times(), dialled(daemons)
    start = time.perf_counter()
    done = cas("add", str(source), repo=daemons[0].repo)
    wall = time.perf_counter() - start
    after_children = os.times()
    note = done.stderr.decode()
    client = (after_children.children_user + after_children.children_system
              - before_children.children_user - before_children.children_system)
    daemons_cpu = cpu_seconds(pids) - before_cpu
    return Add(wall, daemons_cpu + client, daemons_cpu, dialled(daemons) - before_dialled,
               "stored on 3 of 3" in note, note.strip())


COLD_IDLE = 1.0
"""The daemons' idle timeout with ``--cold``: connections close 1 s after
the last message, so an add started after that dials every peer again."""


def connections_closed(daemons: list[Daemon]) -> bool:
    return all(d.call("net_stats")["connections"] == 0 and not any(p["connected"] for p in d.call("peers"))
               for d in daemons)


def replicated_adds(base: Path, size: int, pairs: int, cold: bool, aa: bool) -> dict[str, list[Add]]:
    """``pairs`` pairs of adds, open and private, in two halves: cluster b
    holds the key in the first and cluster a in the second (a crossover:
    whatever differs between the two clusters but the key falls on both
    sides alike). With ``aa`` neither holds it (the control)."""
    cas("network", "init", "--out", str(base / "network.key"), repo=base / "keygen")
    # Every holder keeps ~60 % of every file: past the default 1 GiB per
    # peer (~55 adds of 32 MiB) it would refuse the adder's blocks.
    options = ["--peer-quota", f"{2 * pairs * size // MiB + 1024}M", "--quota", f"{4 * pairs * size // MiB + 1024}M"]
    if cold:
        options += ["--idle-timeout", str(COLD_IDLE)]
    out: dict[str, list[Add]] = {"open": [], "private": []}
    number = 0
    for private, other, count in (("b", "a", pairs // 2), ("a", "b", pairs - pairs // 2)):
        clusters = start_clusters(base, None if aa else private, base / "network.key", options)
        roles = {"open": clusters[other], "private": clusters[private]}
        all_pids = [d.proc.pid for daemons in clusters.values() for d in daemons]
        print(f"  cluster {private} {'(no key: the control)' if aa else 'holds the key'}, cluster {other} is open",
              flush=True)
        try:
            for _ in range(count):
                number += 1
                source = base / f"file{number}.bin"
                write_random(source, size)
                for name in (("open", "private") if number % 2 == 1 else ("private", "open")):
                    quiesce(all_pids)
                    if cold:  # every connection of the cluster idled out: the add dials them all again
                        deadline = time.monotonic() + 30
                        while not connections_closed(roles[name]):
                            if time.monotonic() > deadline:
                                raise SystemExit("connections still open 30 s after the last add")
                            time.sleep(0.1)
                    out[name].append(one_add(roles[name], source))
                source.unlink()
                for name in ("open", "private"):
                    if not out[name][-1].replicated:
                        print(f"  pair {number:2d}: left out, the {name} add was not fully replicated: "
                              f"{out[name][-1].note}")
                o, p = out["open"][-1], out["private"][-1]
                print(f"  pair {number:2d}: open {o.wall:5.2f} s {o.cpu:5.2f} s CPU, "
                      f"private {p.wall:5.2f} s {p.cpu:5.2f} s CPU", flush=True)
        finally:
            for daemons in clusters.values():
                for d in daemons:
                    d.stop()
    return out


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="32M", help="each added file (default 32M)")
    parser.add_argument("--pairs", type=int, default=20, help="open and private adds, each pair a new file")
    parser.add_argument("--cold", action="store_true",
                        help="every add dials its peers afresh (the daemons idle out their connections)")
    parser.add_argument("--aa", action="store_true",
                        help="the control: the second cluster has no key either (\"private\" is open too)")
    parser.add_argument("--dir", default=None, help="where the repositories go (default: a temporary directory)")
    parser.add_argument("--skip-cluster", action="store_true", help="only the handshake and transport measures")
    parser.add_argument("--handshakes", type=int, default=2000, help="in-process handshakes of each kind")
    parser.add_argument("--channels", type=int, default=300, help="channels opened over TCP of each kind")
    parser.add_argument("--transport-mib", type=int, default=64, help="MiB per transport run")
    parser.add_argument("--transport-runs", type=int, default=20, help="transport runs of each kind")
    opts = parser.parse_args()
    key = NetworkKey.generate()
    print(f"psk: Noise_XXpsk0 (private) against Noise_XX (open); {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the start")

    alice, bob = Identity.generate(), Identity.generate()
    hs = alternating(opts.handshakes, {"open": lambda: handshake_in_process(None, alice, bob),
                                       "private": lambda: handshake_in_process(key, alice, bob)})
    hs_open, hs_private = spread(hs["open"]), spread(hs["private"])
    hs_ratio = spread([p / o for o, p in zip(hs["open"], hs["private"], strict=True)])
    print(f"handshake, both ends, in process: open {hs_open.median * 1e6:.0f} µs, private "
          f"{hs_private.median * 1e6:.0f} µs (+{(hs_private.median - hs_open.median) * 1e6:.0f} µs); "
          f"private / open {hs_ratio.text()}")
    ch = trio.run(channel_open_times, opts.channels, key)
    ch_open, ch_private = spread(ch["open"]), spread(ch["private"])
    ch_ratio = spread([p / o for o, p in zip(ch["open"], ch["private"], strict=True)])
    print(f"channel opened over loopback TCP (handshake + hellos): open {ch_open.median * 1e3:.2f} ms, "
          f"private {ch_private.median * 1e3:.2f} ms; private / open {ch_ratio.text()}")
    tr = trio.run(transport_rates, opts.transport_runs, opts.transport_mib, key)
    for i, what in enumerate(("wall", "CPU")):
        rates = {name: [run[i] for run in runs] for name, runs in tr.items()}
        print(f"transport, 1 MiB blocks over loopback TCP, by {what} time: "
              + ", ".join(f"{name} {statistics.median(rates[name]):.0f} MiB/s" for name in TRANSPORTS))
        for other in ("private", "open again"):  # ratios of times
            ratio = spread([o / p for o, p in zip(rates["open"], rates[other], strict=True)])
            print(f"  time {other} / open {ratio.text()}")
    if opts.skip_cluster:
        return

    compile_cas()
    size = parse_size(opts.size)
    base = Path(tempfile.mkdtemp(prefix="cas-psk-", dir=opts.dir))
    print(f"replicated add: {NODES} + {NODES} daemons (R = 3, the same node identities), "
          f"{size / MiB:.0f} MiB files, {opts.pairs} pairs in ABBA order"
          + (", cold: every add dials its peers afresh" if opts.cold else ", connections kept (pooled)")
          + ("; A/A CONTROL: the \"private\" cluster has no key" if opts.aa else ""))
    try:
        adds = replicated_adds(base, size, opts.pairs, opts.cold, opts.aa)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    every = list(zip(adds["open"], adds["private"], strict=True))
    pairs = [(o, p) for o, p in every if o.replicated and p.replicated]
    if len(pairs) < len(adds["open"]):
        print(f"  {len(adds['open']) - len(pairs)} of {len(adds['open'])} pairs left out: an add in each "
              "was not fully replicated when it returned")
    wall = spread([p.wall / o.wall for o, p in pairs])
    cpu = spread([p.cpu / o.cpu for o, p in pairs])
    for name in ("open", "private"):
        runs = [pair[name == "private"] for pair in pairs]
        print(f"  {name:<8} wall {statistics.median(a.wall for a in runs):.2f} s "
              f"({size / MiB / statistics.median(a.wall for a in runs):.0f} MiB/s), "
              f"CPU {statistics.median(a.cpu for a in runs):.2f} s; connections dialled during "
              f"the adds: {sum(a.dialled for a in runs)}")
    wall_mean = geometric_mean([p.wall / o.wall for o, p in pairs])
    cpu_mean = geometric_mean([p.cpu / o.cpu for o, p in pairs])
    daemons = spread([p.daemons_cpu / o.daemons_cpu for o, p in pairs])
    print(f"  private / open, wall time: {wall.text()}; geometric mean {wall_mean[0]:.3f} "
          f"(95 % CI {wall_mean[1]:.3f}-{wall_mean[2]:.3f})")
    print(f"  private / open, CPU time:  {cpu.text()}; geometric mean {cpu_mean[0]:.3f} "
          f"(95 % CI {cpu_mean[1]:.3f}-{cpu_mean[2]:.3f})")
    print(f"  private / open, the daemons' CPU time alone: {daemons.text()}")
    half = opts.pairs // 2
    for label, part in (("first half (cluster b keyed)", every[:half]), ("second half (cluster a keyed)", every[half:])):
        kept = [(o, p) for o, p in part if o.replicated and p.replicated]
        if kept:
            print(f"    {label}: CPU ratio median {statistics.median(p.cpu / o.cpu for o, p in kept):.3f}, "
                  f"wall {statistics.median(p.wall / o.wall for o, p in kept):.3f} (n={len(kept)})")
    extra = hs_private.median - hs_open.median
    dials = max(p.dialled for _, p in pairs)
    bound = dials * extra / statistics.median(o.cpu for o, _ in pairs)
    print(f"  what the key can add: {dials} handshakes at most per add x {extra * 1e6:.0f} µs "
          f"= {bound:.3%} of the add's CPU")
    if opts.aa:
        print("control (A/A): both clusters open, so the ratios above are what a difference of nothing gives")
        return
    upper = max(cpu.high, cpu_mean[2])  # both intervals must end under it
    verdict = "yes" if upper <= 1.05 else "NOT shown"
    print(f"verdict: the key costs <= 5 % of a replicated add: {verdict} (the CPU ratio's 95 % "
          f"intervals end at {cpu.high:.3f} (median) and {cpu_mean[2]:.3f} (geometric mean); "
          f"wall time's at {wall.high:.3f} and {wall_mean[2]:.3f})")


if __name__ == "__main__":
    main()
