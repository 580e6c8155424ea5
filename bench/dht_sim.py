"""How many hops, messages and how much time a DHT lookup takes, by simulation.

For each network size (default 1,000, 10,000 and 100,000 nodes) the tables are
built once (by real joins up to 20,000 nodes, from the global view beyond:
see docs/dht.md), then for each dead fraction (0 %, 10 %, 30 %) the same
lookups run twice through cas.dht.sim's event queue:

cas        the lookup as cas runs it: alpha = 3 queries in flight
baseline   the same lookups, same sources and targets, with alpha = 1: plain
           sequential Kademlia

It prints the table, the ratio baseline / cas for hops, messages and
simulated time, and the targets at 10,000 nodes: p50 <= 4 hops, p99 <= 6,
success >= 99.9 % with none dead and >= 99 % with 30 % dead.

Run:  .venv/bin/python bench/dht_sim.py [--sizes 1000,10000,100000]
          [--lookups 1000] [--csv dht.csv] [--plot dht.png]
100,000 nodes needs about 3 GB of memory and a few minutes; --sizes
1000,10000 skips it. Figures are simulated, so they do not depend on the
machine's load; only the wall-clock build and run seconds do.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cas.dht.sim import (
    SimConfig,
    SimStats,
    build_network,
    format_header,
    format_row,
    write_outputs,
)

TARGET_SIZE = 10_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dead", default="0,0.1,0.3")
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--build", choices=["auto", "join", "oracle"], default="auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--csv")
    parser.add_argument("--plot")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    deads = [float(d) for d in args.dead.split(",")]

    started = time.perf_counter()
    rows: list[SimStats] = []
    pairs: list[tuple[SimStats, SimStats]] = []
    print(format_header(), flush=True)
    for n in sizes:
        net, build_seconds = build_network(n, build=args.build, seed=args.seed)
        sizes_ = [len(t) for t in net.tables]
        print(f"# {n} nodes built by {net.build_method} in {build_seconds:.1f} s; "
              f"routing table per node: mean {sum(sizes_) / n:.0f}, "
              f"min {min(sizes_)}, max {max(sizes_)} contacts", flush=True)
        for dead in deads:
            pair = []
            for alpha in (3, 1):
                config = SimConfig(nodes=n, dead=dead, loss=args.loss, alpha=alpha,
                                   lookups=args.lookups, seed=args.seed)
                stats = net.run(config)
                stats.build_seconds = build_seconds
                rows.append(stats)
                pair.append(stats)
                print(format_row(stats), flush=True)
            pairs.append((pair[0], pair[1]))
        del net

    print("\nbaseline (alpha=1) / cas (alpha=3), same lookups:")
    print(f"{'nodes':>7} {'dead':>5} {'hops p50':>9} {'msgs':>6} {'time p50':>9} {'time p99':>9}")
    for cas, base in pairs:
        print(f"{cas.nodes:>7} {cas.dead:>5.0%} "
              f"{base.hops_p50 / cas.hops_p50:>9.2f} {base.messages_mean / cas.messages_mean:>6.2f} "
              f"{base.time_p50_ms / cas.time_p50_ms:>9.2f} {base.time_p99_ms / cas.time_p99_ms:>9.2f}")

    at_target = [r for r in rows if r.nodes == TARGET_SIZE and r.alpha == 3]
    if at_target:
        print(f"\ntargets at {TARGET_SIZE} nodes (alpha=3):")
        for r in at_target:
            need = 0.999 if r.dead == 0 else 0.99 if r.dead >= 0.3 else None
            checks = [f"p50 {r.hops_p50} <= 4: {'ok' if r.hops_p50 <= 4 else 'MISSED'}",
                      f"p99 {r.hops_p99} <= 6: {'ok' if r.hops_p99 <= 6 else 'MISSED'}"]
            if need is not None:
                checks.append(f"success {r.success:.2%} >= {need:.1%}: "
                              f"{'ok' if r.success >= need else 'MISSED'}")
            print(f"  {r.dead:>4.0%} dead: " + "; ".join(checks))

    write_outputs(rows, args.csv, args.plot)
    print(f"\n{time.perf_counter() - started:.0f} s wall clock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
