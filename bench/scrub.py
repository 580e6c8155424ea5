"""The scrub's speed, against a plain read of the same pack files.

A repository gets SIZE of files (``cas add``), then a daemon is started on
it with a rate limit far above the disk's (``--scrub-rate 4G``) and a tiny
period (so its first pass starts at once, not a minute after start), and
the time its first scrub pass takes to re-read and re-hash every stored block
is measured by polling ``replication_stats``. The baseline, in the same
run: reading every pack file once (``cat`` into nothing), page cache
dropped before each when run as root (cold), and again warm.

Run:  .venv/bin/python bench/scrub.py [--size 256M]
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAS = str(Path(sys.executable).with_name("cas"))
MiB = 1024 * 1024


def size_arg(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def drop_caches() -> bool:
    if os.geteuid() != 0:
        return False
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    return True


def plain_read(repo: Path) -> float:
    start = time.perf_counter()
    for pack in sorted((repo / "packs").glob("*.pack")):
        with open(pack, "rb", buffering=0) as f:
            while f.read(8 * MiB):
                pass
    return time.perf_counter() - start


def scrub_pass(repo: Path) -> tuple[float, int]:
    """(seconds for the daemon's first scrub pass, bytes it re-verified)."""
    proc = subprocess.Popen([CAS, "--repo", str(repo), "daemon", "--listen", "127.0.0.1:0",
                             "--scrub-rate", "4G", "--scrub-period", "0.001"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        if not ready or not proc.stdout.readline().startswith(b"node "):
            raise SystemExit("the daemon did not start")
        started = time.perf_counter()
        from cas.control import ControlClient, socket_path

        with ControlClient(socket_path(repo), timeout=30) as client:
            while True:
                stats = client.call("replication_stats")
                if stats["scrub_passes"] >= 1:
                    return time.perf_counter() - started, stats["scrubbed_bytes"]
                if time.perf_counter() - started > 600:
                    raise SystemExit("the scrub pass did not end within 10 minutes")
                time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=size_arg, default=256 * MiB, help="bytes of files (default 256M)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cas-bench-scrub-", dir="/var/tmp"))
    try:
        repo = base / "repo"
        data = base / "data"
        with open(data, "wb") as f:
            left = args.size
            while left:
                piece = os.urandom(min(left, 8 * MiB))
                f.write(piece)
                left -= len(piece)
        subprocess.run([CAS, "--repo", str(repo), "add", "-q", str(data)], check=True, capture_output=True)
        stored = sum(p.stat().st_size for p in (repo / "packs").glob("*.pack"))
        cold = drop_caches()
        read_s = plain_read(repo)
        warm_read_s = plain_read(repo)
        drop_caches()
        scrub_s, scrubbed = scrub_pass(repo)
        print(f"\n== scrub of {stored / MiB:.0f} MiB of packs (load {os.getloadavg()[0]:.1f}; "
              f"{'cold' if cold else 'warm: not root, page cache not dropped'})")
        print(f"  plain read of the packs   {stored / MiB / read_s:8.0f} MiB/s {'(cold)' if cold else ''}")
        print(f"  plain read, warm          {stored / MiB / warm_read_s:8.0f} MiB/s")
        # (the daemon may have begun a second pass by the time it is asked)
        print(f"  scrub pass (daemon)       {stored / MiB / scrub_s:8.0f} MiB/s, "
              f"{stored / MiB:.0f} MiB in {scrub_s:.2f} s ({scrubbed / MiB:.0f} MiB re-verified by then)")
        print(f"  scrub / plain read        {read_s / scrub_s:8.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
