"""How ``cas log`` scales with the length of the history (issue 16).

Makes a repository of N namespace versions (default 10^6, signed and
committed straight through the store in large groups: tests/histories.py),
then measures, as processes, offline and through a running daemon:

* ``cas log -n 20``: the newest 20, whatever the history's length; the
  baseline is the same command on a repository of 20 versions, in the same
  run (ratio ≈ 1 when it reads only what it shows);
* ``cas log`` of everything, to /dev/null: its time, versions per second
  (each record's signature is checked: ~75 µs here), and peak RSS, which
  must not grow with N (the baseline: ``cas root``'s RSS);
* ``cas root``.

Run: ``.venv/bin/python bench/history.py [--versions 1000000]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchutil import compile_cas

from tests.conftest import CAS
from tests.histories import add_versions
from tests.nodeproc import Daemons


def run(repo: Path, *args: str) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of ``cas --repo REPO ARGS`` (stdout discarded)."""
    env = {k: v for k, v in os.environ.items() if k != "CAS_HOME"}
    start = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([CAS, "--repo", str(repo), *args], stdout=null, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"cas {' '.join(args)} failed: {err}")
    return took, usage.ru_maxrss / 1024


def history(path: Path, count: int) -> Path:
    now = time.time_ns()
    step = 30 * 86400 * 10**9 // count  # spread over the last 30 days
    start = time.perf_counter()
    for first in range(0, count, 100_000):  # in slices: the list of times stays small
        n = min(100_000, count - first)
        add_versions(path, [now - (count - first - i) * step for i in range(n)])
    print(f"made {count} versions in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def measure(label: str, big: Path, small: Path, count: int) -> None:
    run(big, "root")  # warm: the first command after the history was written reads a cold database
    run(small, "root")
    n20, rss20 = run(big, "log", "-n", "20")
    b20, _ = run(small, "log", "-n", "20")
    root, root_rss = run(big, "root")
    full, full_rss = run(big, "log")
    print(f"{label}: log -n 20 {n20 * 1000:.0f} ms (20 versions: {b20 * 1000:.0f} ms, ratio {n20 / b20:.2f}); "
          f"root {root * 1000:.0f} ms; log of all {count}: {full:.1f} s ({count / full:,.0f} versions/s), "
          f"peak RSS {full_rss:.0f} MiB (log -n 20 {rss20:.0f} MiB, root {root_rss:.0f} MiB)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=1_000_000)
    args = parser.parse_args()
    compile_cas()
    with tempfile.TemporaryDirectory(prefix="cas-bench-history-") as tmp:
        big = history(Path(tmp) / "big", args.versions)
        small = history(Path(tmp) / "small", 20)
        measure("offline", big, small, args.versions)
        with Daemons() as daemons:
            daemons.start(big, listen="127.0.0.1:0")
            daemons.start(small, listen="127.0.0.1:0")
            measure("through a daemon", big, small, args.versions)


if __name__ == "__main__":
    main()
