"""A discrete-event simulator of the DHT, driving the real routing and lookup code.

Owns: a model network (node IDs, who is dead, message latency and loss), two
drivers for :class:`~cas.dht.lookup.Lookup` over it, the statistics of many
lookups, and the ``python -m cas.dht.sim`` command that prints them (with an
optional CSV and a PNG plot if matplotlib is installed).

Must never: reimplement routing or lookup logic. Every table is a
:class:`~cas.dht.routing.RoutingTable` and every lookup a
:class:`~cas.dht.lookup.Lookup`; the simulator only delivers their messages.

The model (docs/dht.md, "The simulator", says the same with its limits):

* **IDs.** Uniformly random 256-bit integers from the seeded generator. Real
  IDs are BLAKE3 outputs of public keys, which are uniform for this purpose.
* **Building the tables** (all nodes alive, no loss, no latency: the build only
  decides what the tables hold):

  - ``join``: nodes join one at a time, each through a random node that has
    already joined. The newcomer looks up its own ID, then refreshes every
    bucket beyond its nearest neighbour's that is not full (the paper's join).
    Every query also teaches the queried node about the newcomer, as a real
    request would. Exact, but a 100,000-node build costs tens of millions of
    messages.
  - ``oracle``: each bucket ``i`` of each node gets ``min(k, m)`` contacts
    drawn at random from the ``m`` nodes really in its range, from the global
    view. That is the state bucket refresh converges to in a stable network
    (it ignores the preference for long-lived contacts, which needs churn
    history to matter). Used for sizes where ``join`` is too slow.
  - ``auto``: ``join`` up to 20,000 nodes, ``oracle`` beyond.

* **Death.** After the build a fraction ``dead`` of the nodes, chosen at
  random, stop answering, and nobody has noticed yet: their contacts stay in
  every table. That is the worst moment of a mass failure, before any
  refresh or eviction. The tables stay frozen during the measured lookups
  (answers do not update them), so every lookup sees the same network and one
  build serves every dead fraction and the alpha=1 baseline.
* **Messages.** A query's round trip takes a log-normal time (median
  ``rtt_ms``, sigma 0.5, so p99 is about 3.2x the median). Nodes talk over
  TCP (DESIGN.md), so a lost packet is not a lost query: each direction loses
  a segment with probability ``loss`` (repeatedly, geometrically), and each
  loss adds :data:`RETRANSMIT_DELAY` plus half a round trip. A dead peer
  never answers. After ``timeout`` seconds without an answer the lookup gets
  ``on_timeout``, and a late answer is still delivered. Queries are
  independent (no congestion, no per-link latency, no NAT, no connection
  set-up cost: connections are assumed open).
* **Lookups.** From a random live node, for a random key. ``node`` mode is
  FIND_NODE; ``block`` mode is FIND_BLOCK for a value held by the
  ``replicas`` nearest live nodes (as if repair had already run).
* **Success.** ``node`` mode: the result contains the live node nearest the
  key (the one that must hold the block); ``exact k`` is the stricter share of
  lookups whose result is exactly the k nearest live nodes. ``block`` mode:
  the value was found.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import heapq
import math
import random
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from .ids import ID_BITS, NodeID, random_id_in_bucket
from .lookup import ALPHA, Lookup, LookupResult
from .routing import Contact, K, RoutingTable

JOIN_LIMIT = 20_000
"""Largest network ``--build auto`` builds by real joins."""

RETRANSMIT_DELAY = 0.2
"""Seconds a lost segment costs before TCP resends it: Linux's minimum
retransmission timeout (200 ms; RFC 6298 allows 1 s)."""

_RESPONSE, _TIMEOUT = 0, 1


@dataclass(frozen=True)
class SimConfig:
    """One simulated scenario."""

    nodes: int
    dead: float = 0.0
    loss: float = 0.0
    k: int = K
    alpha: int = ALPHA
    lookups: int = 200
    rtt_ms: float = 50.0
    timeout: float = 1.0
    mode: str = "node"
    replicas: int = 3
    seed: int = 1


@dataclass
class SimStats:
    """The figures of one scenario's measured lookups."""

    nodes: int
    dead: float
    loss: float
    alpha: int
    k: int
    mode: str
    build: str
    lookups: int
    hops_p50: int
    hops_p99: int
    hops_mean: float
    messages_mean: float
    messages_p99: int
    time_p50_ms: float
    time_p99_ms: float
    success: float
    exact_k: float
    table_mean: float
    table_min: int
    table_max: int
    build_seconds: float
    run_seconds: float
    hops: list[int] = field(default_factory=list, repr=False)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


class Network:
    """The simulated nodes, their tables, and the global view."""

    def __init__(self, n: int, *, k: int = K, alpha: int = ALPHA, seed: int = 1) -> None:
        if n < 2:
            raise ValueError("a network needs at least 2 nodes")
        rng = random.Random(f"ids-{seed}")
        ids: set[int] = set()
        while len(ids) < n:
            ids.add(rng.getrandbits(ID_BITS))
        self.ids = list(ids)
        rng.shuffle(self.ids)  # join order
        self.k = k
        self.alpha = alpha
        self.index_of = {node_id: i for i, node_id in enumerate(self.ids)}
        self.contacts = [
            Contact(NodeID(node_id), f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 4001)
            for i, node_id in enumerate(self.ids)
        ]
        self.tables: list[RoutingTable] = []
        self.alive = [True] * n
        self._live_sorted: list[int] | None = None
        self.build_messages = 0
        self.build_method = ""

    # -- building ---------------------------------------------------------

    def build(self, method: str = "auto", seed: int = 1) -> None:
        if method == "auto":
            method = "join" if len(self.ids) <= JOIN_LIMIT else "oracle"
        rng = random.Random(f"build-{seed}")
        if method == "join":
            self._build_by_joins(rng)
        elif method == "oracle":
            self._build_from_global_view(rng)
        else:
            raise ValueError(f"unknown build method {method!r}")
        self.build_method = method

    def _build_by_joins(self, rng: random.Random) -> None:
        k = self.k
        self.tables = [RoutingTable(node_id, k=k) for node_id in self.ids]
        for i in range(1, len(self.ids)):
            table = self.tables[i]
            table.update(self.contacts[rng.randrange(i)], 0.0)
            self._sync_lookup(i, self.ids[i])
            nearest = min(table.nonempty_buckets())
            for index in range(nearest + 1, ID_BITS):
                if len(table.bucket(index)) < k:
                    self._sync_lookup(i, random_id_in_bucket(self.ids[i], index, rng))

    def _sync_lookup(self, src: int, target: int) -> LookupResult:
        """A lookup during the build: every peer alive, answers in order, and
        both sides learn from each exchange as they would on the wire."""
        tables, contacts, index_of, k = self.tables, self.contacts, self.index_of, self.k
        table = tables[src]
        me = contacts[src]
        lookup = Lookup(target, table.closest(target, k), k=k, alpha=self.alpha, exclude=me.node_id)
        pending = deque(lookup.start())
        while pending:
            peer = pending.popleft().peer
            other = tables[index_of[peer.node_id]]
            other.update(me, 0.0)
            reply = other.closest(target, k, exclude=me.node_id)
            table.update(peer, 0.0)
            self.build_messages += 1
            pending.extend(lookup.on_response(peer, reply))
        return lookup.result

    def _build_from_global_view(self, rng: random.Random) -> None:
        k = self.k
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        sorted_ids = [self.ids[i] for i in order]
        contacts = [self.contacts[i] for i in order]
        self.tables = [None] * len(self.ids)  # type: ignore[list-item]  # each filled below before use
        for pos, node_id in enumerate(sorted_ids):
            table = RoutingTable(node_id, k=k)
            for index in range(ID_BITS - 1, -1, -1):
                # Bucket `index` is the range sharing our top bits above
                # `index` with bit `index` flipped.
                lo = ((node_id >> index) ^ 1) << index
                a = bisect.bisect_left(sorted_ids, lo)
                b = bisect.bisect_left(sorted_ids, lo + (1 << index), a)
                chosen = range(a, b) if b - a <= k else rng.sample(range(a, b), k)
                for j in chosen:
                    table.update(contacts[j], 0.0)
                # Stop once no other node shares our prefix down to `index`.
                own_lo = (node_id >> index) << index
                c = bisect.bisect_left(sorted_ids, own_lo)
                d = bisect.bisect_left(sorted_ids, own_lo + (1 << index), c)
                if d - c <= 1:
                    break
            self.tables[order[pos]] = table

    # -- failing ----------------------------------------------------------

    def kill(self, fraction: float, rng: random.Random) -> None:
        """Make ``fraction`` of the nodes dead (and revive the rest)."""
        n = len(self.ids)
        dead = set(rng.sample(range(n), round(fraction * n)))
        alive = [i not in dead for i in range(n)]
        if alive != self.alive:
            self.alive = alive
            self._live_sorted = None

    # -- global view ------------------------------------------------------

    def true_closest(self, key: int, n: int, exclude: int | None = None) -> list[int]:
        """IDs of the ``n`` live nodes nearest ``key``, nearest first, leaving
        out ``exclude`` (the searcher, who never appears in its own result).

        The IDs sharing ``key``'s top bits down to some bit form a contiguous
        range of the sorted IDs, and all of them are nearer ``key`` than any
        ID outside it; so the smallest such range holding ``n + 1`` live IDs
        holds the answer."""
        live = self._live_sorted
        if live is None:
            live = self._live_sorted = sorted(i for i, up in zip(self.ids, self.alive) if up)
        need = n + 1
        a, b = 0, len(live)
        for shift in range(ID_BITS + 1):
            lo = (key >> shift) << shift
            a = bisect.bisect_left(live, lo)
            b = bisect.bisect_left(live, lo + (1 << shift), a)
            if b - a >= need:
                break
        nearest = heapq.nsmallest(need, live[a:b], key=key.__xor__)
        return [node_id for node_id in nearest if node_id != exclude][:n]

    # -- measured lookups -------------------------------------------------

    def timed_lookup(
        self,
        src: int,
        target: int,
        rng: random.Random,
        config: SimConfig,
        holders: frozenset[int] = frozenset(),
    ) -> tuple[LookupResult, float]:
        """One lookup through the event queue. Returns the result and the
        simulated seconds it took. Tables are not changed."""
        tables, index_of, alive = self.tables, self.index_of, self.alive
        k, loss, timeout = self.k, config.loss, config.timeout
        mu = math.log(config.rtt_ms / 1000)
        me = self.ids[src]
        find_value = config.mode == "block"
        lookup = Lookup(
            target, tables[src].closest(target, k), k=k, alpha=config.alpha,
            find_value=find_value, exclude=me,
        )
        events: list[tuple[float, int, int, Contact, list[Contact] | None, object]] = []
        seq = 0
        now = 0.0

        def send(actions: list[Any], now: float) -> None:
            nonlocal seq
            for action in actions:
                peer = action.peer
                j = index_of[peer.node_id]
                seq += 1
                if not alive[j]:
                    heapq.heappush(events, (now + timeout, seq, _TIMEOUT, peer, None, None))
                    continue
                rtt = rng.lognormvariate(mu, 0.5)
                if loss:
                    # TCP: each lost segment, either way, is resent after an RTO.
                    for _direction in (0, 1):
                        while rng.random() < loss:
                            rtt += RETRANSMIT_DELAY + rng.lognormvariate(mu, 0.5) / 2
                reply = tables[j].closest(target, k, exclude=me)
                value = b"block" if find_value and j in holders else None
                heapq.heappush(events, (now + rtt, seq, _RESPONSE, peer, reply, value))
                if rtt > timeout:
                    seq += 1
                    heapq.heappush(events, (now + timeout, seq, _TIMEOUT, peer, None, None))

        send(lookup.start(), now)
        while events and not lookup.done:
            now, _, kind, peer, reply, value = heapq.heappop(events)
            if kind == _RESPONSE:
                send(lookup.on_response(peer, reply or (), value), now)
            else:
                send(lookup.on_timeout(peer), now)
        if not lookup.done:  # cannot happen: no events left means nothing in flight
            raise AssertionError("lookup stalled with no events pending")
        return lookup.result, now

    def run(self, config: SimConfig) -> SimStats:
        """Kill ``config.dead`` of the nodes and measure ``config.lookups``
        lookups."""
        started = time.perf_counter()
        # Separate generators: the dead set and the (source, target) pairs
        # depend only on the seed and the dead fraction, so runs that differ
        # in alpha measure the very same lookups.
        self.kill(config.dead, random.Random(f"dead-{config.seed}-{config.dead}"))
        pick = random.Random(f"lookups-{config.seed}-{config.dead}")
        rng = random.Random(f"wire-{config.seed}-{config.dead}-{config.alpha}")
        live = [i for i, up in enumerate(self.alive) if up]
        hops: list[int] = []
        messages: list[int] = []
        times: list[float] = []
        successes = exact = 0
        for _ in range(config.lookups):
            src = pick.choice(live)
            target = pick.getrandbits(ID_BITS)
            want = self.true_closest(target, max(self.k, config.replicas), exclude=self.ids[src])
            holders = frozenset(self.index_of[n] for n in want[: config.replicas])
            result, took = self.timed_lookup(src, target, rng, config, holders)
            hops.append(result.hops)
            messages.append(result.messages)
            times.append(took)
            found = [c.node_id for c in result.closest]
            if config.mode == "block":
                successes += result.value is not None
                exact += result.value is not None
            else:
                successes += bool(found) and found[0] == want[0]
                exact += found == want[: self.k]
        sizes = [len(t) for t in self.tables]
        lookups = config.lookups
        return SimStats(
            nodes=len(self.ids),
            dead=config.dead,
            loss=config.loss,
            alpha=config.alpha,
            k=self.k,
            mode=config.mode,
            build=self.build_method,
            lookups=lookups,
            hops_p50=int(percentile(hops, 50)),
            hops_p99=int(percentile(hops, 99)),
            hops_mean=sum(hops) / lookups,
            messages_mean=sum(messages) / lookups,
            messages_p99=int(percentile(messages, 99)),
            time_p50_ms=1000 * percentile(times, 50),
            time_p99_ms=1000 * percentile(times, 99),
            success=successes / lookups,
            exact_k=exact / lookups,
            table_mean=sum(sizes) / len(sizes),
            table_min=min(sizes),
            table_max=max(sizes),
            build_seconds=0.0,
            run_seconds=time.perf_counter() - started,
            hops=hops,
        )


def build_network(n: int, *, k: int = K, alpha: int = ALPHA, build: str = "auto", seed: int = 1) -> tuple[Network, float]:
    """Make and build a network; returns it and the wall-clock seconds taken."""
    started = time.perf_counter()
    net = Network(n, k=k, alpha=alpha, seed=seed)
    net.build(build, seed)
    return net, time.perf_counter() - started


# -- output ---------------------------------------------------------------

COLUMNS = [
    # attribute, title, width, format spec
    ("nodes", "nodes", 7, "d"),
    ("dead", "dead", 5, ".0%"),
    ("alpha", "α", 2, "d"),
    ("hops_p50", "hops p50", 8, "d"),
    ("hops_p99", "p99", 4, "d"),
    ("messages_mean", "msgs", 6, ".1f"),
    ("time_p50_ms", "ms p50", 7, ".0f"),
    ("time_p99_ms", "p99", 6, ".0f"),
    ("success", "success", 8, ".2%"),
    ("exact_k", "exact k", 8, ".2%"),
    ("table_mean", "table", 6, ".0f"),
]


def format_header() -> str:
    return " ".join(f"{title:>{width}}" for _, title, width, _ in COLUMNS)


def format_row(stats: SimStats) -> str:
    return " ".join(f"{getattr(stats, name):>{width}{spec}}" for name, _, width, spec in COLUMNS)


def write_csv(rows: Sequence[SimStats], path: str) -> None:
    with open(path, "w", newline="") as f:
        fields = [name for name in asdict(rows[0]) if name != "hops"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            record = asdict(row)
            del record["hops"]
            writer.writerow(record)


def write_plot(rows: Sequence[SimStats], path: str) -> bool:
    """Plot mean and p99 hops against network size on a log axis, one colour
    per dead fraction, for the largest alpha measured (cas's own). Returns
    False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    alpha = max(r.alpha for r in rows)
    series: dict[float, list[SimStats]] = {}
    for row in rows:
        if row.alpha == alpha:
            series.setdefault(row.dead, []).append(row)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dead, items in sorted(series.items()):
        items.sort(key=lambda r: r.nodes)
        xs = [r.nodes for r in items]
        line = ax.plot(xs, [r.hops_mean for r in items], marker="o", label=f"mean, {dead:.0%} dead")[0]
        ax.plot(xs, [r.hops_p99 for r in items], marker="^", linestyle="--",
                color=line.get_color(), label=f"p99, {dead:.0%} dead")
    for r in rows:
        if r.alpha == alpha and r.dead == min(series):
            ax.annotate(r.build, (r.nodes, r.hops_mean), textcoords="offset points",
                        xytext=(0, -14), ha="center", fontsize="x-small")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("nodes (log scale)")
    ax.set_ylabel("hops per lookup")
    ax.set_title(f"cas DHT lookups, simulated (k={rows[0].k}, α={alpha})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(rows: Sequence[SimStats], csv_path: str | None, plot_path: str | None) -> None:
    """The CSV and the plot, where asked for, each announced on stdout."""
    if csv_path:
        write_csv(rows, csv_path)
        print(f"wrote {csv_path}")
    if plot_path:
        if write_plot(rows, plot_path):
            print(f"wrote {plot_path}")
        else:
            print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cas.dht.sim",
        description="Simulate DHT lookups over the real routing and lookup code.",
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000])
    parser.add_argument("--dead", type=float, nargs="+", default=[0.0],
                        help="fractions of nodes dead after the build")
    parser.add_argument("--loss", type=float, default=0.0,
                        help="packet loss probability per direction (TCP resends: costs time, not the query)")
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--alpha", type=int, nargs="+", default=[ALPHA])
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="median round-trip time")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds before on_timeout")
    parser.add_argument("--mode", choices=["node", "block"], default="node")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--build", choices=["auto", "join", "oracle"], default="auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--csv", metavar="PATH")
    parser.add_argument("--plot", metavar="PATH", help="PNG of hops against size (needs matplotlib)")
    args = parser.parse_args(argv)
    if any(not 0 <= d < 1 for d in args.dead) or not 0 <= args.loss < 1:
        parser.error("--dead and --loss must be in [0, 1)")
    if min(args.nodes) < 2 or args.lookups < 1:
        parser.error("need at least 2 nodes and 1 lookup")

    rows = run_table(args.nodes, args.dead, args.alpha, args)
    write_outputs(rows, args.csv, args.plot)
    return 0


def run_table(sizes: Sequence[int], deads: Sequence[float], alphas: Sequence[int],
              args: argparse.Namespace, out: TextIO | None = None) -> list[SimStats]:
    """Build each size once and measure every (dead, alpha) on it, printing
    rows as they come."""
    out = out or sys.stdout
    rows: list[SimStats] = []
    print(format_header(), file=out, flush=True)
    for n in sizes:
        net, build_seconds = build_network(n, k=args.k, build=args.build, seed=args.seed)
        print(f"# {n} nodes built by {net.build_method} in {build_seconds:.1f} s"
              + (f" ({net.build_messages} messages)" if net.build_messages else ""),
              file=out, flush=True)
        for dead in deads:
            for alpha in alphas:
                config = SimConfig(
                    nodes=n, dead=dead, loss=args.loss, k=args.k, alpha=alpha,
                    lookups=args.lookups, rtt_ms=args.rtt_ms, timeout=args.timeout,
                    mode=args.mode, replicas=args.replicas, seed=args.seed,
                )
                stats = net.run(config)
                stats.build_seconds = build_seconds
                rows.append(stats)
                print(format_row(stats), file=out, flush=True)
        del net
    return rows


if __name__ == "__main__":
    sys.exit(main())
