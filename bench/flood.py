"""Floods against a real daemon: its memory, and whether an honest node still joins.

For each flood a fresh ``cas daemon`` (the target, on 127.0.0.1) is started
and attacked from other loopback addresses by Python code in this process
(``tests/flooders.py``, trio on a thread; every socket closed at the end):

connections  600 fresh identities from 127.0.0.2, each completing the
             handshake and pinging once a second to keep its connection
half-open    TCP connections that never start the handshake, 32 from each
             of 127.0.0.2 … 127.0.0.17 (512, twice the handshake slots),
             each reopened as soon as the daemon closes it
stalled      500 connections from 127.0.0.2 … 127.0.0.21 that complete the
             handshake, announce a 2 MiB frame and send all of it but its
             last byte
handshakes   new connections from 127.0.0.2 as fast as they go (16 at a
             time), each a fresh identity's handshake, closed once done

Printed for each: the target's RSS before (VmRSS), its peak during the
flood (VmHWM, reset when the flood starts), and 0, 2 and 6 s after the
attackers have gone; how many connections the attackers held, how many
handshakes they completed and were refused, and the CPU time the target
spent from the flood's start until the honest node had joined; and the
**honest join**: a new daemon started during the flood with
``--bootstrap`` the target, timed from its start until it has the target in
its routing table (a successful request; 30 s at most). The baseline, in
the same run: an idle daemon's RSS, measured at the start and at the end,
and the same join with no flood.

Run:  .venv/bin/python bench/flood.py [--floods connections,half-open,stalled] [--dir DIR]
(after ``scripts/setup-env --test``: it uses the test suite's helpers).
The machine is shared and noisy: the RSS figures are steady, the times
are not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cas.control import ControlClient, socket_path
from tests.flooders import (
    Flood,
    Flooder,
    FloodStatus,
    connection_flood,
    half_open_flood,
    handshake_flood,
    stalled_frames,
    vm_hwm,
    vm_rss,
)
from tests.nodeproc import Daemon, Daemons

MiB = 1 << 20


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (``clear_refs`` 5, Linux ≥ 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def joined(newcomer: Daemon, target: Daemon) -> bool:
    try:
        with ControlClient(socket_path(newcomer.repo), timeout=5) as client:
            return any(p["id"] == target.node_id for p in client.call("peers"))
    except Exception:
        return False


def honest_join(daemons: Daemons, root: Path, name: str, target: Daemon) -> float | None:
    """Seconds from starting a daemon that bootstraps to ``target`` until it
    has ``target`` in its routing table; None if not within 30 s."""
    started = time.monotonic()
    newcomer = daemons.start(root / name, bootstrap=[target.address], wait=False)
    try:
        daemons.wait_ready(newcomer, timeout=30)
        while time.monotonic() - started < 30:
            if joined(newcomer, target):
                return time.monotonic() - started
            time.sleep(0.02)
        return None
    finally:
        daemons.stop(newcomer)


def after_leaving(pid: int, at: tuple[float, ...] = (0.0, 2.0, 6.0)) -> list[int]:
    """The RSS at each of ``at`` seconds after now (the attackers just left;
    the daemon gives memory back a second after a flood's end)."""
    started = time.monotonic()
    out = []
    for when in at:
        time.sleep(max(0.0, started + when - time.monotonic()))
        out.append(vm_rss(pid))
    return out


FLOODS: dict[str, tuple[str, Callable[[Daemon], Flooder], Callable[[FloodStatus], bool]]] = {
    "connections": (
        "600 identities from 127.0.0.2, pinging",
        lambda t: connection_flood(t.host, t.port, "127.0.0.2", 600),
        lambda s: s.handshakes + s.handshake_failures + s.connect_failures >= 600,
    ),
    "half-open": (
        "512 half-open from 127.0.0.2-.17",
        lambda t: half_open_flood(t.host, t.port, [f"127.0.0.{i}" for i in range(2, 18)], 32),
        lambda s: s.opened >= 512,
    ),
    "stalled": (
        "500 stalled 2 MiB frames from 127.0.0.2-.21",
        lambda t: stalled_frames(t.host, t.port, [f"127.0.0.{i}" for i in range(2, 22)], 500),
        lambda s: s.handshakes + s.handshake_failures + s.connect_failures >= 500,
    ),
    "handshakes": (
        "new connections from 127.0.0.2 as fast as they go, a handshake each",
        lambda t: handshake_flood(t.host, t.port, "127.0.0.2"),
        lambda s: s.handshakes + s.handshake_failures >= 2000,
    ),
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floods", default=",".join(FLOODS), help="which, comma-separated")
    parser.add_argument("--dir", default=None, help="where the repositories go (default: a temporary directory)")
    args = parser.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cas-flood-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        with Daemons() as daemons:
            idle = daemons.start(root / "idle")
            idle_before = vm_rss(idle.pid)
            print(f"flood: daemons on 127.0.0.1, attackers on 127.0.0.2+; idle daemon RSS {idle_before / MiB:.1f} MiB")
            quiet = daemons.start(root / "quiet")
            join = honest_join(daemons, root, "quiet-joiner", quiet)
            print(f"  no flood              honest join {fmt_join(join)}")
            daemons.stop(quiet)
            for name in args.floods.split(","):
                what, make, in_place = FLOODS[name]
                target = daemons.start(root / f"target-{name}")
                before = vm_rss(target.pid)
                reset_peak(target.pid)
                cpu_before, started = cpu_seconds(target.pid), time.monotonic()
                with Flood(make(target)) as flood:
                    flood.wait_for(in_place, 120, f"the {name} flood to be in place")
                    join = honest_join(daemons, root, f"joiner-{name}", target)
                    peak = vm_hwm(target.pid)
                    cpu, lasted = cpu_seconds(target.pid) - cpu_before, time.monotonic() - started
                    status = flood.status
                    held = status.alive
                after = after_leaving(target.pid)
                alive = target.proc.poll() is None
                print(f"  {name:<12} {what}")
                print(f"               RSS before {before / MiB:6.1f} MiB, peak during {peak / MiB:6.1f} MiB "
                      f"(+{(peak - before) / MiB:.1f}); after the attackers left: "
                      + ", ".join(f"{rss / MiB:.1f} MiB (+{(rss - before) / MiB:.1f})" for rss in after)
                      + " at 0, 2 and 6 s")
                print(f"               attackers: {status.opened} connections opened, {status.handshakes} "
                      f"handshakes, {held} open once the honest node had joined (or given up), "
                      f"{status.dropped} closed by the daemon; daemon {'still running' if alive else 'DIED'}")
                print(f"               the flood's first {lasted:.1f} s (until the honest node joined): "
                      f"{status.handshakes} handshakes completed, {status.handshake_failures} refused, "
                      f"target CPU {cpu:.2f} s ({cpu / lasted:.0%} of a core)")
                print(f"               honest join {fmt_join(join)}")
                daemons.stop(target)
            idle_after = vm_rss(idle.pid)
            print(f"  idle daemon RSS at the end {idle_after / MiB:.1f} MiB (start {idle_before / MiB:.1f})")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


def fmt_join(seconds: float | None) -> str:
    return "NOT within 30 s" if seconds is None else f"{seconds:.2f} s"


if __name__ == "__main__":
    main()
