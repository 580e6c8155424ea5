"""Replication on real local nodes: add, read from peers, repair, in one run.

Starts 5 ``cas daemon`` processes on 127.0.0.1 (R = 3; the periodic repair
is set far off so that the repair measured is the one this script starts),
then, on one file of random bytes (default 128 MiB):

add, in ``--pairs`` pairs (default 3), each on a new file of random bytes
    local add       ``cas add FILE`` into a new repository, no daemon: the
                    baseline, measured in the same run
    replicated add  ``cas add FILE`` through node A right after: the
                    process's wall time, which includes waiting until every
                    block is acknowledged by R nodes (``stored on 3 of 3
                    nodes``)
    The ratio of each pair is printed, and their median: the figure the
    target is judged on, steadier than one pair on a shared machine.
read
    local cat       ``cas cat CID`` on node A (every block local), stdout to
                    /dev/null
    peer cat        ``cas cat CID`` on a sixth node that joins after the add
                    and holds none of it: every block comes from the network
repair
    node B (a holder of some blocks) is killed with SIGKILL; then one repair
    round is run on every survivor at once (``replication_repair``, the same
    round the periodic loop runs). Reported: the wall time until every block
    again has R copies among the live nodes is the round's wall time (the
    copies are then counted with ``has`` on every survivor), with the copies
    made and the bytes moved.

private network (``--network-key``)
    a second cluster of 5 nodes is started on a private network (a key made
    by ``cas network init``, so every handshake is ``Noise_XXpsk0``), and
    each pair gets a third add: the same file through its node A. The two
    replicated adds of a pair run in alternating order (open first in odd
    pairs, private first in even ones), so drift on the shared machine
    falls on both alike. Two clusters write twice the bytes, and the
    kernel's writeback of one add, and the daemons' work after it, slowed
    whichever add came next (60 % iowait; either network by a third or
    more), so in this mode every replicated add starts after a ``sync``
    and once every daemon has been quiet for a quarter of a second.
    Printed: both rates, private / open per pair and the median; and the
    handshake itself, with and without the key, timed in this process
    (sans-IO, no sockets).

Ratios printed: replicated add / local add (target >= 0.3, and >= 60 MiB/s),
peer cat / local cat, and with ``--network-key`` private / open replicated
add (target: the PSK costs <= 5 %, a ratio >= 0.95).

Run:  .venv/bin/python bench/cluster.py [--size 128M] [--pairs 3] [--dir DIR] [--network-key]
The machine is shared and noisy: compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchutil import compile_cas, cpu_seconds, parse_size, timed

from cas.cid import CID, parse_cid
from cas.control import ControlClient, socket_path
from cas.store._links import links_of

MiB = 1 << 20
CAS = str(Path(sys.executable).with_name("cas"))
R = 3
NODES = 5


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CAS_HOME"}


class Daemon:
    """One ``cas daemon`` process, stopped by PID."""

    def __init__(self, repo: Path, bootstrap: list[str], extra: list[str] | None = None) -> None:
        self.repo = repo
        argv = [CAS, "--repo", str(repo), "daemon", "--listen", "127.0.0.1:0",
                "--repair-interval", "3600", *(extra or [])]
        for b in bootstrap:
            argv += ["--bootstrap", b]
        self.err = open(repo.parent / f"{repo.name}.err", "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, env=env())
        self.node_id = 0
        self.address = ""

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                raise SystemExit(f"daemon for {self.repo} not ready in {timeout:g} s")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                raise SystemExit(f"daemon for {self.repo} exited")
            line += chunk
        words = line.decode().split()
        self.node_id = int(words[1], 16)
        self.address = words[4]

    def call(self, op: str, timeout: float = 120, **args: Any) -> Any:
        with ControlClient(socket_path(self.repo), timeout=timeout) as client:
            return client.call(op, **args)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()


def cas(*args: str, repo: Path, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([CAS, "--repo", str(repo), *args], stdout=stdout, stderr=subprocess.PIPE,
                          env=env(), check=True, timeout=1800)


def dag(daemon: Daemon, root: CID) -> list[CID]:
    out, stack = [], [root]
    while stack:
        cid = stack.pop()
        out.append(cid)
        stack.extend(links_of(cid, daemon.call("get", cid=cid)))
    return out


def copies(blocks: list[CID], live: list[Daemon]) -> int:
    """The fewest live copies of any of ``blocks``."""
    counts = dict.fromkeys(blocks, 0)
    for d in live:
        with ControlClient(socket_path(d.repo), timeout=60) as client:
            for cid in blocks:
                counts[cid] += bool(client.call("has", cid=cid))
    return min(counts.values())


def profile(where: str | None, targets: dict[str, Daemon]) -> list[subprocess.Popen[bytes]]:
    """Start py-spy on each target daemon; stopped with SIGINT, it writes its collapsed stacks."""
    if where is None:
        return []
    Path(where).mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    return [subprocess.Popen([spy, "record", "--pid", str(d.proc.pid), "--rate", "400",
                              "--format", "raw", "-o", f"{where}/{name}.txt"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, d in targets.items()]


@dataclass(frozen=True)
class AddPair:
    """A local add and the replicated add of the same file right after it."""

    local: float
    replicated: float
    note: str
    cpu_daemons: float
    cpu_adder: float
    cpu_client: float
    stores: int
    messages: int
    refused: int
    failed: int
    acknowledged: int
    root: CID
    private: float | None = None
    """The same file's replicated add on the private cluster (``--network-key``)."""


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def start_cluster(base: Path, prefix: str, extra: list[str]) -> list[Daemon]:
    """NODES daemons joined through the first, their buckets refreshed."""
    first = Daemon(base / f"{prefix}0", [], extra)
    daemons = [first]
    try:
        first.wait_ready()
        for i in range(1, NODES):
            daemons.append(Daemon(base / f"{prefix}{i}", [first.address], extra))
        for d in daemons[1:]:
            d.wait_ready()
        for d in daemons:
            d.call("dht_refresh")
    except BaseException:
        for d in daemons:
            d.stop()
        raise
    return daemons


def quiesce(pids: list[int], timeout: float = 60.0) -> float:
    """Flush dirty pages, then wait until the processes ``pids`` use under
    2 % of a core for a quarter of a second (or ``timeout`` passes);
    returns the seconds waited."""
    start = time.monotonic()
    os.sync()
    before = cpu_seconds(pids)
    while time.monotonic() - start < timeout:
        time.sleep(0.25)
        now = cpu_seconds(pids)
        if now - before < 0.005:
            break
        before = now
    return time.monotonic() - start


def handshake_costs(rounds: int = 300) -> tuple[float, float]:
    """Seconds for one complete handshake (both ends, in this process),
    without and with a network key, timed alternately."""
    from psk import handshake_in_process

    from cas.net.identity import Identity
    from cas.net.network_key import NetworkKey

    alice, bob, key = Identity.generate(), Identity.generate(), NetworkKey.generate()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for private in (False, True):
            times[private].append(handshake_in_process(key if private else None, alice, bob))
    return statistics.median(times[False]), statistics.median(times[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="128M")
    parser.add_argument("--pairs", type=int, default=3, help="local and replicated adds, each on a new file")
    parser.add_argument("--dir", default=None, help="where the repositories go (default: a temporary directory)")
    parser.add_argument("--network-key", action="store_true",
                        help="also add each file on a second cluster on a private network "
                             "(Noise_XXpsk0) and print the replicated add with and without the key")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="record py-spy profiles (collapsed stacks) of every daemon during the "
                             "replicated add into DIR (needs py-spy installed)")
    opts = parser.parse_args()
    compile_cas()  # every cas process starts from bytecode, as an installed cas does
    size = parse_size(opts.size)
    base = Path(tempfile.mkdtemp(prefix="cas-cluster-", dir=opts.dir))
    daemons: list[Daemon] = []
    private: list[Daemon] = []
    try:
        daemons = start_cluster(base, "n", [])
        first = daemons[0]
        if opts.network_key:
            cas("network", "init", "--out", str(base / "network.key"), repo=base / "keygen")
            private = start_cluster(base, "p", ["--network-key", str(base / "network.key")])
        adder = daemons[0]
        pids = [d.proc.pid for d in daemons]

        pairs: list[AddPair] = []
        settled: list[float] = []
        for number in range(opts.pairs):
            source = base / f"file{number}.bin"
            write_random(source, size)
            local_repo = base / f"local{number}"
            cas("init", repo=local_repo)
            t_local_add = timed(lambda: cas("add", str(source), repo=local_repo))  # noqa: B023 (called within this iteration)
            stats_before = adder.call("replication_stats")
            cpu_before = cpu_seconds(pids), os.times()
            adder_before = cpu_seconds(pids[:1])
            last = number == opts.pairs - 1
            spies = profile(opts.profile, {f"n{i}": d for i, d in enumerate(daemons)}) if last else []
            result: list[subprocess.CompletedProcess[bytes]] = []
            t_private: float | None = None
            all_pids = pids + [d.proc.pid for d in private]
            if private:  # see the docstring: each add starts on a quiet machine
                settled.append(quiesce(all_pids))
            if private and number % 2 == 1:  # alternate which network goes first
                t_private = timed(lambda: cas("add", str(source), repo=private[0].repo))  # noqa: B023 (called within this iteration)
                settled.append(quiesce(all_pids))
            t_rep_add = timed(lambda: result.append(cas("add", str(source), repo=adder.repo)))  # noqa: B023 (called within this iteration)
            if private and number % 2 == 0:
                settled.append(quiesce(all_pids))
                t_private = timed(lambda: cas("add", str(source), repo=private[0].repo))  # noqa: B023 (called within this iteration)
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            after = os.times()
            stats = adder.call("replication_stats")
            pairs.append(AddPair(
                local=t_local_add, replicated=t_rep_add, note=result[0].stderr.decode().strip(),
                cpu_daemons=cpu_seconds(pids) - cpu_before[0], cpu_adder=cpu_seconds(pids[:1]) - adder_before,
                cpu_client=(after.children_user + after.children_system
                            - cpu_before[1].children_user - cpu_before[1].children_system),
                stores=stats["stores_sent"] - stats_before["stores_sent"],
                messages=stats["store_messages"] - stats_before["store_messages"],
                refused=stats["refusals"] - stats_before["refusals"],
                failed=stats["store_failures"] - stats_before["store_failures"],
                acknowledged=stats["placed_bytes"] - stats_before["placed_bytes"],
                root=parse_cid(result[0].stdout.decode().split()[-1]), private=t_private))

        root = pairs[-1].root  # the reads and the repair are measured on the last file

        t_local_cat = timed(lambda: cas("cat", str(root), repo=adder.repo, stdout=subprocess.DEVNULL))

        reader = Daemon(base / "reader", [first.address])
        reader.wait_ready()
        reader.call("dht_refresh")
        t_peer_cat = timed(lambda: cas("cat", str(root), repo=reader.repo, stdout=subprocess.DEVNULL))
        read_ahead = reader.call("replication_stats")["read_ahead"]
        reader.stop()  # its copies are a cache: leave it out of the repair measurement

        blocks = dag(adder, root)
        victim = daemons[1]
        held_by_victim = sum(bool(victim.call("has", cid=c)) for c in blocks)
        victim.stop(signal.SIGKILL)
        live = [d for d in daemons if d is not victim]
        before = {id(d): d.call("replication_stats")["repair_bytes"] for d in live}
        reports: list[dict[str, Any]] = []
        def repair_all() -> None:
            threads = [threading.Thread(target=lambda d=d: reports.append(d.call("replication_repair", timeout=600)))
                       for d in live]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        t_repair = timed(repair_all)
        fewest = copies(blocks, live)
        moved = sum(d.call("replication_stats")["repair_bytes"] - before[id(d)] for d in live)
        stores = sum(r["stores"] for r in reports)

        mib = size / MiB
        print(f"cluster: {NODES} nodes on 127.0.0.1, R={R}, file {mib:.0f} MiB "
              f"({len(blocks)} blocks), {os.cpu_count()} cores")
        for number, pair in enumerate(pairs, 1):
            print(f"  add {number} local (no daemon)   {pair.local:7.2f} s  {mib / pair.local:7.1f} MiB/s")
            print(f"        replicated (R=3)    {pair.replicated:7.2f} s  {mib / pair.replicated:7.1f} MiB/s   "
                  f"ratio {pair.local / pair.replicated:.2f}")
            print(f"        {pair.note}; {pair.stores} stores in {pair.messages} messages ({pair.refused} refused, "
                  f"{pair.failed} failed), {pair.acknowledged / MiB:.0f} MiB acknowledged by peers")
            print(f"        CPU during the replicated add: daemons {pair.cpu_daemons:.1f} s (the adder's "
                  f"{pair.cpu_adder:.1f} s), the cas add process {pair.cpu_client:.1f} s "
                  f"({(pair.cpu_daemons + pair.cpu_client) / pair.replicated:.2f} cores busy)")
        replicated = statistics.median(pair.replicated for pair in pairs)
        ratio = statistics.median(pair.local / pair.replicated for pair in pairs)
        print(f"  add   median of {len(pairs)}: replicated {mib / replicated:.1f} MiB/s, "
              f"ratio {ratio:.2f}  (targets: >= 60 MiB/s, >= 0.30)")
        if private:
            print(f"  private network (Noise_XXpsk0, a second cluster of {NODES}), the same files:")
            for number, pair in enumerate(pairs, 1):
                assert pair.private is not None
                first_one = "open" if number % 2 == 1 else "private"
                print(f"  add {number} open {mib / pair.replicated:7.1f} MiB/s   private "
                      f"{mib / pair.private:7.1f} MiB/s   private/open {pair.replicated / pair.private:.3f}"
                      f"   ({first_one} first)")
            private_ratio = statistics.median(pair.replicated / pair.private for pair in pairs
                                              if pair.private is not None)
            open_rate = statistics.median(mib / pair.replicated for pair in pairs)
            private_rate = statistics.median(mib / pair.private for pair in pairs if pair.private is not None)
            plain, psk = handshake_costs()
            print(f"  add   median of {len(pairs)}: open {open_rate:.1f} MiB/s, private {private_rate:.1f} "
                  f"MiB/s, private/open {private_ratio:.3f}  (target: >= 0.95)")
            print(f"  handshake (both ends, one process): XX {plain * 1e3:.2f} ms, XXpsk0 "
                  f"{psk * 1e3:.2f} ms, ratio {psk / plain:.3f}; once per connection")
            print(f"  (before each of these adds: sync, then the daemons quiet for "
                  f"{statistics.median(settled):.1f} s median, {max(settled):.1f} s at most)")
        print(f"  cat   local (node A)      {t_local_cat:7.2f} s  {mib / t_local_cat:7.1f} MiB/s")
        print(f"        from peers (new node) {t_peer_cat:5.2f} s  {mib / t_peer_cat:7.1f} MiB/s   "
              f"ratio {t_local_cat / t_peer_cat:.2f}  ({read_ahead} blocks read ahead)")
        print(f"  repair after kill -9 of a node holding {held_by_victim} of {len(blocks)} blocks: "
              f"one round on {len(live)} survivors {t_repair:.2f} s, {stores} copies made, "
              f"{moved / MiB:.1f} MiB moved; fewest live copies now {fewest} (R={R})")
    finally:
        for d in daemons + private:
            d.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
