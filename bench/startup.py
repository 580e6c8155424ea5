"""How long a short cas command takes, start to exit, warm.

A short command is most of what a person types (`cas ls`, `cas cat` of a
small file, `cas stat`), and what a script calling cas in a loop pays per
call. Each is run ``--runs`` times in a row on a small repository with the
page cache warm; printed are the median and the quartiles, and the ratio of
each median to the same run's baselines: the interpreter starting and
exiting (``python3 -c pass``, the floor any Python command pays) and
``/bin/cat`` of the same 1-byte file.

    .venv/bin/python bench/startup.py [--runs 41]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import compile_cas

CAS = str(Path(sys.executable).parent / "cas")


def times(argv: list[str], runs: int) -> list[float] | None:
    """Seconds per run, or None if this cas has no such command (an older
    one, run with this script to compare)."""
    if subprocess.run(argv, capture_output=True).returncode != 0:  # warm: imports and pages cached
        return None
    spent = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        spent.append(time.perf_counter() - start)
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=41)
    args = parser.parse_args(argv)
    compile_cas()
    with tempfile.TemporaryDirectory(prefix="cas-startup-") as tmp:
        repo = Path(tmp) / "repo"
        one = Path(tmp) / "one"
        one.write_bytes(b"x")
        cid = subprocess.run([CAS, "--repo", str(repo), "add", str(one)], check=True,
                             capture_output=True, text=True).stdout.strip()
        subprocess.run([CAS, "--repo", str(repo), "add", str(one), "--to", "/docs/one"], check=True,
                       capture_output=True)
        cases = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            "/bin/cat (1 B)": [shutil.which("cat") or "/bin/cat", str(one)],
            "cas --version": [CAS, "--version"],
            "cas cat CID (1 B)": [CAS, "--repo", str(repo), "cat", cid],
            "cas cat /docs/one": [CAS, "--repo", str(repo), "cat", "/docs/one"],
            "cas ls /docs": [CAS, "--repo", str(repo), "ls", "/docs"],
            "cas stat /docs/one": [CAS, "--repo", str(repo), "stat", "/docs/one"],
        }
        medians = {}
        print(f"{'command':<22} {'median':>8} {'q1':>8} {'q3':>8} {'/ python':>9} {'/ cat':>7}   ({args.runs} runs each)")
        for name, command in cases.items():
            spent = times(command, args.runs)
            if spent is None:
                print(f"{name:<22} (not in this cas)")
                continue
            q1, median, q3 = statistics.quantiles(spent, n=4)
            medians[name] = median
            python = medians["python3 -c pass"]
            cat = medians.get("/bin/cat (1 B)", median)
            print(f"{name:<22} {median * 1000:7.1f}ms {q1 * 1000:7.1f}ms {q3 * 1000:7.1f}ms "
                  f"{median / python:8.2f}x {median / cat:6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
