"""A discrete-time simulator of block placement and repair under churn.

Owns: a model network whose nodes are replaced at a steady rate (a node dies
with the blocks it held, a new one with a fresh ID joins), a set of blocks
kept on the R nodes nearest their keys, the repair rounds every node runs,
and the ``python -m cas.dht.sim_repair`` command that prints durability and
repair traffic over simulated months as a table.

Must never: reimplement the repair round or the placement rules. Every
node's round is a :class:`~cas.dht.repair_round.RepairRound`, the planner
the node runs, and this module is only its second driver: it answers the
round's lookups, HAVEs and stores from the model, and does the copies and
drops the round asks for.

The model (its limits are those of :mod:`cas.dht.sim` plus these):

* **Churn.** Each step (one repair interval, default 600 s), every live node
  is replaced with probability ``churn_per_day * interval / 86400``: it dies
  at once with everything it held, and a node with a new uniformly random ID
  joins. The network keeps ``nodes`` nodes.
* **Repair.** At the end of each step, every live holder of a block the
  step touched (a holder died, or a newcomer is nearer its key than one of
  its holders) runs a repair round over those blocks (over the others its
  HAVEs would find every copy in place and do nothing). The rounds start
  together, as they do after a death every holder sees, and their actions
  are performed in turn, first come first served: a lookup is answered
  with the ``K`` live nodes nearest the key (the global view stands in for
  the lookup, which finds them in a healthy network, see ``docs/dht.md``),
  a HAVE with what the peer holds at that moment, and every store
  succeeds. So a holder that knows of a nearer one defers, as in a node,
  and asks again ``REPAIR_DEFER`` later: one copy travels per missing
  copy. A holder outside the placement set drops its copy once the set
  holds R (``may_drop``). Leases are not modelled: every copy is held for
  the network, renewed by an owner off stage.
* **Loss.** A block whose every holder dies within one step is lost: no
  node is left to repair it from.
* **Traffic.** Each store moves one block of ``block_size`` bytes.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import heapq
import random
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ..cid import CID, RAW
from ..net.messages import MAX_LEASE
from .ids import NodeID, id_to_bytes
from .repair_round import Action, AskHave, Copy, Drop, LookUp, RepairRound, Wait
from .routing import Contact, K

DAY = 86400.0


@dataclass
class RepairStats:
    """One simulated run."""

    nodes: int
    replicas: int
    churn_per_day: float
    days: float
    blocks: int
    lost: int = 0
    stores: int = 0
    replaced: int = 0
    block_size: int = 256 * 1024

    @property
    def durability(self) -> float:
        return 1.0 - self.lost / self.blocks

    @property
    def traffic_bytes(self) -> int:
        return self.stores * self.block_size

    @property
    def mib_per_node_day(self) -> float:
        return self.traffic_bytes / (1 << 20) / self.nodes / self.days



def _distance(key: int, node_id: int) -> int:
    return node_id ^ key

def simulate(*, nodes: int = 200, blocks: int = 2000, replicas: int = 3, churn_per_day: float = 0.05,
             days: float = 90.0, interval: float = 600.0, block_size: int = 256 * 1024,
             seed: int = 1) -> RepairStats:
    """Run one network for ``days`` simulated days; see the module docstring."""
    rng = random.Random(seed)
    live: set[int] = {rng.getrandbits(256) for _ in range(nodes)}
    keys = [rng.getrandbits(256) for _ in range(blocks)]
    holders: list[set[int]] = [set(heapq.nsmallest(replicas, live, key=functools.partial(_distance, k)))
                               for k in keys]
    # The farthest holder's distance: a newcomer nearer than it takes part.
    reach = [max(n ^ k for n in h) for k, h in zip(keys, holders)]
    held_by: dict[int, set[int]] = {n: set() for n in live}
    for b, h in enumerate(holders):
        for n in h:
            held_by[n].add(b)
    stats = RepairStats(nodes, replicas, churn_per_day, days, blocks, block_size=block_size)
    world = _World(live, keys, holders, held_by, replicas, stats)
    alive = [True] * blocks
    p = churn_per_day * interval / DAY
    steps = int(days * DAY / interval)
    for step in range(steps):
        dirty: set[int] = set()
        dying = [n for n in live if rng.random() < p]
        for n in dying:
            live.discard(n)
            for b in held_by.pop(n):
                holders[b].discard(n)
                dirty.add(b)
        for _ in dying:
            x = rng.getrandbits(256)
            live.add(x)
            held_by[x] = set()
            for b, k in enumerate(keys):
                if alive[b] and k ^ x < reach[b]:
                    dirty.add(b)
        stats.replaced += len(dying)
        touched = []
        for b in dirty:
            if not alive[b]:
                continue
            if not holders[b]:
                alive[b] = False
                stats.lost += 1
                continue
            touched.append(b)
        world.repair(touched, step * interval)
        for b in touched:
            reach[b] = max(n ^ keys[b] for n in holders[b])
    return stats


class _World:
    """The model seen by the nodes' repair rounds: who is alive, who holds
    what. It answers each round's actions and applies its stores and drops."""

    def __init__(self, live: set[int], keys: list[int], holders: list[set[int]],
                 held_by: dict[int, set[int]], replicas: int, stats: RepairStats) -> None:
        self.live, self.keys, self.holders, self.held_by = live, keys, holders, held_by
        self.replicas, self.stats = replicas, stats
        self.cids = [CID(RAW, id_to_bytes(key)) for key in keys]  # a block's key is its digest
        self.block = {cid: b for b, cid in enumerate(self.cids)}
        self._contacts: dict[int, Contact] = {}
        self._ordered: list[int] = []  # the live IDs, sorted, during a step's rounds

    def repair(self, touched: Sequence[int], now: float) -> None:
        """Every live holder of a ``touched`` block runs a round over those it
        holds, all starting at ``now``; returns when every round is done."""
        mine: dict[int, list[CID]] = {}
        for b in touched:
            for n in self.holders[b]:
                mine.setdefault(n, []).append(self.cids[b])
        rounds = {n: RepairRound(cids, dict.fromkeys(cids, float(MAX_LEASE)), own_id=n, lease=MAX_LEASE,
                                 replicas=self.replicas) for n, cids in sorted(mine.items())}
        self._ordered = sorted(self.live)
        queue: deque[tuple[int, Action]] = deque()
        waiting: list[tuple[float, int]] = []  # (until, node), a heap
        for n, repair in rounds.items():
            queue.extend((n, action) for action in repair.start(now))
        while queue or waiting:
            if not queue:  # every round waits: on to the earliest, and those due with it
                now = waiting[0][0]
                while waiting and waiting[0][0] <= now:
                    n = heapq.heappop(waiting)[1]
                    queue.extend((n, action) for action in rounds[n].on_time(now))
                continue
            n, action = queue.popleft()
            if isinstance(action, Wait):
                heapq.heappush(waiting, (action.until, n))
            else:
                queue.extend((n, more) for more in self._perform(n, rounds[n], action, now))
        assert all(repair.done for repair in rounds.values())

    def _perform(self, n: int, repair: RepairRound, action: Action, now: float) -> list[Action]:
        if isinstance(action, LookUp):
            # The k nearest other nodes, as a lookup finds them (fewer: it ran
            # out of nodes to ask, and every node is in its answer).
            found = [self._contact(m) for m in self._nearest(action.key, K + 1) if m != n][:K]
            return repair.on_lookup(action.cid, found, exhaustive=len(found) < K, now=now)
        if isinstance(action, AskHave):
            held = self.held_by[action.peer.node_id]
            return repair.on_have(action.peer, action.cids, [self.block[c] in held for c in action.cids], now=now)
        if isinstance(action, Copy):
            b = self.block[action.cid]
            for peer in action.peers:
                self.stats.stores += 1
                self.holders[b].add(peer.node_id)
                self.held_by[peer.node_id].add(b)
            return repair.on_copied(action.cid, [(peer, "stored") for peer in action.peers], now=now)
        if isinstance(action, Drop):
            for cid in action.cids:
                self.holders[self.block[cid]].discard(n)
                self.held_by[n].discard(self.block[cid])
            return repair.on_dropped(len(action.cids), now=now)
        return []  # Record: the model's holder sets are its count

    def _nearest(self, key: int, count: int) -> list[int]:
        """The ``count`` live nodes nearest ``key``, nearest first. They lie in
        the smallest aligned range of IDs around the key that holds that
        many (every node outside it is farther than every node in it), a
        slice of the sorted IDs: found by bisection, then ranked."""
        ordered = self._ordered
        low, high = 0, 256  # the range's size is 2**shift, low <= shift <= high; 2**high holds enough
        if len(ordered) <= count:
            low = high
        while low < high:
            shift = (low + high) // 2
            start = (key >> shift) << shift
            if bisect.bisect_left(ordered, start + (1 << shift)) - bisect.bisect_left(ordered, start) >= count:
                high = shift
            else:
                low = shift + 1
        start = (key >> high) << high
        span = ordered[bisect.bisect_left(ordered, start):bisect.bisect_left(ordered, start + (1 << high))]
        return heapq.nsmallest(count, span, key=functools.partial(_distance, key))

    def _contact(self, node_id: int) -> Contact:
        contact = self._contacts.get(node_id)
        if contact is None:
            contact = self._contacts[node_id] = Contact(NodeID(node_id), "127.0.0.1", 1)
        return contact


@dataclass
class MassFailure:
    """What ``fraction`` of the nodes dying at once, before any repair,
    costs: blocks with no copy left, and files with at least one such block."""

    nodes: int
    replicas: int
    fraction: float
    blocks: int
    files: int
    lost_blocks: int = 0
    unreadable_files: int = 0
    networks_losing: int = 0  # trials in which at least one file became unreadable

    @property
    def readable(self) -> float:
        return 1.0 - self.unreadable_files / self.files


def mass_failure(*, nodes: int = 40, replicas: int = 3, fraction: float = 0.5, files: int = 200,
                 blocks_per_file: int = 128, trials: int = 20, seed: int = 1) -> MassFailure:
    """Place ``files`` files of ``blocks_per_file`` blocks on the R nodes
    nearest each block's key, kill ``fraction`` of the nodes at once,
    ``trials`` times with fresh IDs and keys, and count what is lost."""
    rng = random.Random(seed)
    result = MassFailure(nodes, replicas, fraction, files * blocks_per_file * trials, files * trials)
    for _ in range(trials):
        ids = [rng.getrandbits(256) for _ in range(nodes)]
        dead = set(rng.sample(ids, round(nodes * fraction)))
        before = result.unreadable_files
        for _file in range(files):
            lost = 0
            for _block in range(blocks_per_file):
                key = rng.getrandbits(256)
                if all(n in dead for n in heapq.nsmallest(replicas, ids, key=lambda n: n ^ key)):
                    lost += 1
            result.lost_blocks += lost
            result.unreadable_files += lost > 0
        result.networks_losing += result.unreadable_files > before
    return result


def format_header() -> str:
    return (f"{'nodes':>6} {'R':>3} {'churn/day':>9} {'days':>5} {'blocks':>7} {'lost':>6} "
            f"{'durability':>11} {'repair GiB':>10} {'MiB/node/day':>12} {'stores/block':>12}")


def format_row(s: RepairStats) -> str:
    return (f"{s.nodes:>6} {s.replicas:>3} {s.churn_per_day:>9.0%} {s.days:>5.0f} {s.blocks:>7} {s.lost:>6} "
            f"{s.durability:>11.5%} {s.traffic_bytes / (1 << 30):>10.2f} {s.mib_per_node_day:>12.1f} "
            f"{s.stores / s.blocks:>12.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cas.dht.sim_repair",
        description="Durability and repair traffic of R-way placement under churn, over simulated months.")
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--churn", type=float, nargs="+", default=[0.05, 0.20],
                        help="fractions of the nodes replaced per day")
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--interval", type=float, default=600.0, help="seconds between repair rounds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-at-once", type=float, default=None, metavar="FRACTION",
                        help="instead: kill this fraction of the nodes at once, before any repair, and "
                        "count the files left unreadable (files of 128 blocks, 32 MiB)")
    parser.add_argument("--files", type=int, default=200, help="with --kill-at-once: files per trial")
    parser.add_argument("--trials", type=int, default=20,
                        help="with --kill-at-once: networks tried, each with its own IDs, keys and dead half")
    args = parser.parse_args(argv)
    if args.kill_at_once is not None:
        if not 0 < args.kill_at_once < 1:
            parser.error("--kill-at-once is a fraction between 0 and 1")
        print(f"# {args.nodes} nodes, {args.kill_at_once:.0%} of them killed at once; "
              f"{args.files} files of 128 blocks in each of {args.trials} networks", flush=True)
        print(f"{'R':>3} {'blocks lost':>12} {'files readable':>15} {'networks losing a file':>23}", flush=True)
        for r in args.replicas:
            m = mass_failure(nodes=args.nodes, replicas=r, fraction=args.kill_at_once, files=args.files,
                             trials=args.trials, seed=args.seed)
            print(f"{r:>3} {m.lost_blocks / m.blocks:>12.4%} {m.readable:>15.2%} "
                  f"{m.networks_losing:>11} of {args.trials}", flush=True)
        return 0
    if args.nodes < max(args.replicas) or args.blocks < 1 or any(not 0 <= c < 1 for c in args.churn):
        parser.error("need nodes >= R, at least one block, and churn in [0, 1)")
    print(f"# repair every {args.interval:g} s; blocks of 256 KiB", flush=True)
    print(format_header(), flush=True)
    for churn in args.churn:
        for r in args.replicas:
            stats = simulate(nodes=args.nodes, blocks=args.blocks, replicas=r, churn_per_day=churn,
                             days=args.days, interval=args.interval, seed=args.seed)
            print(format_row(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
