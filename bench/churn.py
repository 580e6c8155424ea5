"""Repair after nodes die at once, on real local daemons: what it moves and how long it takes.

Owns: one run of this measurement and its printout; nothing here is used
by cas itself or by the tests.

Starts ``--nodes`` ``cas daemon`` processes (default 16), node i on
127.0.0.(10 + i), with ``--replicas R`` (default 3), no proof of work on
their IDs, and the periodic repair an hour off, so that every repair round
measured was started by a node finding a peer dead (docs/replication.md,
"Repair"). Then:

add      ``--size`` bytes of random data (default 64M) in ``--files`` files
         (default 4), each through another node; each add returns once
         every block is on its R closest nodes (``stored on R of R``).
kill     ``--kill`` nodes (default 4), drawn with ``--seed``, are sent
         SIGKILL in the same instant. Counted from every node's blocks
         (the ``iterate`` control op) just before: the copies that died
         with them, blocks lost outright (every copy on a killed node:
         nothing can repair those, and they are left out below), and the
         copies **to restore**: for each other block, those its R closest
         live nodes lack, the least any repair has to move.
repair   from the kill, every survivor's ``replication_stats`` and blocks
         are polled (``--poll``, default 0.25 s): the time of the first
         copy made by repair, and the time **every block is back on its R
         closest live nodes**; then, once the counters have been still for
         5 s, the bytes repair moved in all (``repair_bytes``: acknowledged
         STORE_BLOCK copies of repair rounds) and the CPU time the survivors
         spent from the kill.
baseline in the same run, twice (with the daemons idle, just before the
         kill and once repair is quiet): the same bytes as the copies to
         restore, sent over one loopback TCP connection by this process to
         a thread that writes them to a file and fsyncs it: moving and
         storing those bytes with nothing else to do.

Printed: those figures, each per GiB to restore, and the ratios: repair's
time to R over the baseline's (the faster of its two runs), and bytes moved
over bytes to restore.

Run:  .venv/bin/python bench/churn.py [--nodes 16] [--replicas 3] [--size 64M] [--files 4]
      [--kill 4] [--seed 1] [--dir DIR]
(after ``scripts/setup-env --test``: it uses the test suite's helpers). The
machine is shared and noisy: compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchutil import compile_cas, cpu_seconds, parse_size

from cas.cid import CID, parse_cid
from cas.control import ControlClient, socket_path
from cas.dht.ids import key_for_digest
from cas.store._links import links_of
from tests.conftest import CAS, pseudo_random_stream
from tests.nodeproc import Daemon, Daemons, start_network

MiB = 1 << 20
GiB = 1 << 30
QUIET = 5.0
"""Seconds the survivors' repair counters must stay still before the bytes
moved are read as final."""


def call(daemon: Daemon, op: str, **args: Any) -> Any:
    with ControlClient(socket_path(daemon.repo), timeout=120) as client:
        return client.call(op, **args)


def blocks_of(daemon: Daemon) -> set[CID]:
    """Every block ``daemon``'s repository holds (``iterate``: never fetching)."""
    with ControlClient(socket_path(daemon.repo), timeout=120) as client:
        return set(client.stream("iterate"))


def node_key(daemon: Daemon) -> int:
    return int(daemon.node_id, 16)


def closest(cid: CID, nodes: list[Daemon], replicas: int) -> list[Daemon]:
    key = key_for_digest(cid.digest)
    return sorted(nodes, key=lambda d: node_key(d) ^ key)[:replicas]


def add(daemon: Daemon, path: Path, replicas: int) -> CID:
    result = subprocess.run([CAS, "--repo", str(daemon.repo), "add", str(path)], capture_output=True,
                            timeout=1800, check=True)
    note = result.stderr.decode()
    if f"stored on {replicas} of {replicas} nodes" not in note:
        raise SystemExit(f"the add did not reach R copies: {note.strip()}")
    return parse_cid(result.stdout.decode().split()[-1])


def dag_sizes(daemon: Daemon, root: CID) -> dict[CID, int]:
    """Every block under ``root`` and its size, read through ``daemon``."""
    out: dict[CID, int] = {}
    stack = [root]
    with ControlClient(socket_path(daemon.repo), timeout=120) as client:
        while stack:
            cid = stack.pop()
            data = client.call("get", cid=cid)
            out[cid] = len(data)
            stack.extend(links_of(cid, data))
    return out


def tcp_copy(size: int, directory: Path) -> tuple[float, float]:
    """Seconds to send ``size`` bytes over one loopback TCP connection to a
    thread that writes them to a file and fsyncs it (the baseline), and
    the seconds of that the fsync took."""
    piece = bytes(os.urandom(MiB))
    target = directory / "baseline.bin"
    listener = socket.create_server(("127.0.0.1", 0))
    received = [0]
    fsync = [0.0]

    def receive() -> None:
        conn, _ = listener.accept()
        buffer = bytearray(MiB)
        with conn, open(target, "wb") as f:
            while n := conn.recv_into(buffer):
                f.write(memoryview(buffer)[:n])
                received[0] += n
            f.flush()
            start = time.perf_counter()
            os.fsync(f.fileno())
            fsync[0] = time.perf_counter() - start

    os.sync()
    thread = threading.Thread(target=receive)
    thread.start()
    start = time.perf_counter()
    with socket.create_connection(listener.getsockname()) as conn:
        left = size
        while left > 0:
            n = min(left, len(piece))
            conn.sendall(memoryview(piece)[:n])
            left -= n
    thread.join()
    elapsed = time.perf_counter() - start
    listener.close()
    target.unlink()
    assert received[0] == size
    return elapsed, fsync[0]


@dataclass
class Repair:
    """Seconds from the kill (None: not yet seen)."""

    first_copy: float | None = None
    """The first copy a repair round made was acknowledged (seen by a poll)."""
    at_r: float | None = None
    """A poll that ended then found every block on its R closest live nodes."""


def repair_totals(live: list[Daemon]) -> tuple[int, int]:
    """(bytes, copies) repair rounds on ``live`` have moved since they started."""
    stats = [call(d, "replication_stats") for d in live]
    return sum(s["repair_bytes"] for s in stats), sum(s["repair_stores"] for s in stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--size", type=parse_size, default=parse_size("64M"))
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--kill", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--poll", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=300, help="seconds repair may take at most")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    if not 0 < args.kill < args.nodes or args.nodes - args.kill < args.replicas:
        raise SystemExit("--kill must leave at least R nodes alive")
    if args.nodes > 200:
        raise SystemExit("--nodes: at most 200 (127.0.0.10 … 127.0.0.209)")

    compile_cas()
    base = Path(tempfile.mkdtemp(prefix="cas-churn-", dir=args.dir))
    R = args.replicas
    extra = ["--replicas", str(R), "--id-difficulty", "0", "--repair-interval", "3600"]
    try:
        with Daemons() as daemons:
            started = time.monotonic()
            nodes = start_network(daemons, base, args.nodes, extra)
            print(f"{args.nodes} daemons up and refreshed in {time.monotonic() - started:.1f} s "
                  f"(R = {R}, load average {os.getloadavg()[0]:.1f})")

            sizes: dict[CID, int] = {}
            per_file = args.size // args.files
            for n in range(args.files):
                path = base / f"file{n}"
                with open(path, "wb") as f:
                    f.writelines(pseudo_random_stream(per_file, f"bench churn {n} {time.time()}"))
                adder = nodes[n * args.nodes // args.files]
                root = add(adder, path, R)
                sizes.update(dag_sizes(adder, root))
                path.unlink()
            blocks = list(sizes)
            print(f"added {args.files * per_file / MiB:.1f} MiB in {args.files} files through {args.files} nodes: "
                  f"{len(blocks)} blocks, each on its {R} closest nodes")

            victims = random.Random(args.seed).sample(nodes, args.kill)
            live = [d for d in nodes if d not in victims]
            held = {d.node_id: blocks_of(d) & sizes.keys() for d in nodes}
            lost_copies = sum(len(held[d.node_id]) for d in victims)
            lost_bytes = sum(sizes[c] for d in victims for c in held[d.node_id])
            outright = [c for c in blocks if not any(c in held[d.node_id] for d in live)]
            recoverable = [c for c in blocks if c not in set(outright)]
            windows = {c: closest(c, live, R) for c in recoverable}
            to_restore = [(c, d) for c in recoverable for d in windows[c] if c not in held[d.node_id]]
            restore_bytes = sum(sizes[c] for c, _ in to_restore)
            print(f"killing {args.kill} of {args.nodes} at once (seed {args.seed}): {lost_copies} copies, "
                  f"{lost_bytes / MiB:.1f} MiB die with them; {len(outright)} block(s) lost outright "
                  f"(every copy on a killed node; left out below)")
            print(f"to restore: {len(to_restore)} copies, {restore_bytes / MiB:.1f} MiB "
                  f"(what the {R} closest live nodes of each block lack)")
            if not to_restore:
                raise SystemExit("nothing to restore: kill more nodes or choose another --seed")

            baseline_before = tcp_copy(restore_bytes, base)
            bytes0, copies0 = repair_totals(live)
            cpu0 = cpu_seconds([d.pid for d in live])

            for victim in victims:  # at once: no repair can run between two kills
                victim.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            for victim in victims:
                victim.proc.wait(10)

            result = Repair()
            polls: list[float] = []  # seconds each look at every survivor's blocks took
            last_change, last_totals = time.monotonic(), (bytes0, copies0)
            while True:
                now = time.monotonic()
                totals = repair_totals(live)
                if totals != last_totals:
                    last_change, last_totals = now, totals
                if result.first_copy is None and totals[1] > copies0:
                    result.first_copy = now - killed
                if result.at_r is None:
                    have = {d.node_id: blocks_of(d) for d in live}
                    if all(c in have[d.node_id] for c in recoverable for d in windows[c]):
                        result.at_r = time.monotonic() - killed
                        polls.append(time.monotonic() - now)
                        last_change = time.monotonic()  # quiet from here on, at least
                    else:
                        polls.append(time.monotonic() - now)
                elif now - last_change >= QUIET:
                    break
                if now - killed > args.timeout:
                    raise SystemExit(f"repair not done within {args.timeout:g} s")
                time.sleep(args.poll)
            cpu = cpu_seconds([d.pid for d in live]) - cpu0
            moved, copies = last_totals[0] - bytes0, last_totals[1] - copies0
            have = {d.node_id: blocks_of(d) for d in live}
            fewest = min(sum(c in have[d.node_id] for d in live) for c in recoverable)
            baseline_after = tcp_copy(restore_bytes, base)
            after_loss = sum(call(d, "replication_stats")["repair_rounds_after_loss"] > 0 for d in live)

        assert result.at_r is not None
        gib = restore_bytes / GiB
        baseline = min(baseline_before[0], baseline_after[0])
        copying = result.at_r - (result.first_copy or 0.0)
        print(f"repair: first copy {result.first_copy or 0:.2f} s after the kill, every block on its {R} closest "
              f"live nodes after {result.at_r:.2f} s (polled every {args.poll:g} s, a poll taking "
              f"{max(polls):.2f} s at most); {after_loss} of {len(live)} survivors ran a round started by the "
              f"loss; fewest live copies {fewest}")
        print(f"        moved {copies} copies, {moved / MiB:.1f} MiB in all; survivors' CPU {cpu:.1f} s")
        print(f"per GiB to restore: {result.at_r / gib:.1f} s to R ({copying / gib:.1f} s of it copying), "
              f"{moved / restore_bytes:.2f} GiB moved, {cpu / gib:.1f} CPU-s")
        print(f"baseline: the same {restore_bytes / MiB:.1f} MiB over loopback TCP into a file + fsync: "
              f"{baseline_before[0]:.3f} s before (fsync {baseline_before[1]:.3f} s of it), "
              f"{baseline_after[0]:.3f} s after (fsync {baseline_after[1]:.3f} s); "
              f"the faster, {baseline / gib:.2f} s per GiB")
        print(f"ratios: time to R / baseline {result.at_r / baseline:.1f}x, copying alone {copying / baseline:.1f}x; "
              f"bytes moved / bytes to restore {moved / restore_bytes:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
