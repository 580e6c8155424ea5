"""Run a POSIX conformance suite (pjdfstest) on the cas mount, bindfs and plain disk, in one run.

    python bench/conformance.py --suite /path/to/pjdfstest [--only chmod,rename] [--targets disk,bindfs,cas]

pjdfstest (https://github.com/pjd/pjdfstest) is not part of this project
and is in no Debian package: fetch and build it yourself (``autoreconf -ifs
&& ./configure && make pjdfstest``, or compile ``pjdfstest.c`` with a
``config.h`` for Linux), then point ``--suite`` at its checkout (the folder
holding the ``pjdfstest`` binary and ``tests/``). Needs root: the suite
changes owners and acts as other users.

Each target is a fresh directory: a plain one on the disk under ``--dir``,
a bindfs mount of one (``allow_other,dev,suid``: a C passthrough FUSE file
system, the issue's baseline) and a fresh cas repository mounted with
``cas mount --allow-other``. In each, ``prove -r`` of the suite's tests (or
of the folders ``--only`` names) runs with that directory as its working
directory, as pjdfstest's README says. Printed: every target's test points,
passed and failed, the failing files and points, and cas's passes as a
ratio of bindfs's. Mounts are always unmounted, repositories removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CAS = str(Path(sys.executable).with_name("cas"))

_TOTALS = re.compile(r"^Files=(\d+), Tests=(\d+)", re.MULTILINE)
_FAILED_FILE = re.compile(r"^(\S+\.t)\s+\(Wstat: \d+ Tests: \d+ Failed: (\d+)\)", re.MULTILINE)
_FAILED_POINTS = re.compile(r"^\s+Failed tests?:\s+(.+)$")


@dataclass
class Result:
    """What ``prove`` said of one target."""

    files: int = 0
    points: int = 0
    failed: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # test file -> its failed points, as prove lists them

    @property
    def passed(self) -> int:
        return self.points - self.failed


def parse_prove(output: str) -> Result:
    """The totals and failures of ``prove``'s summary."""
    totals = _TOTALS.search(output)
    if totals is None:
        raise RuntimeError("prove printed no summary (is the suite built?):\n" + output[-2000:])
    result = Result(files=int(totals.group(1)), points=int(totals.group(2)))
    lines = output.splitlines()
    for i, line in enumerate(lines):
        found = _FAILED_FILE.match(line)
        if found is None or found.group(2) == "0":
            continue  # (a file listed only for its "TODO passed" points)
        result.failed += int(found.group(2))
        points = [m.group(1) for m in map(_FAILED_POINTS.match, lines[i + 1:i + 2]) if m]
        test = Path(found.group(1))
        result.failures[f"{test.parent.name}/{test.name}"] = points[0] if points else "?"
    return result


def run_suite(suite: Path, where: Path, only: list[str], log: Path) -> Result:
    tests = [suite / "tests" / name for name in only] if only else [suite / "tests"]
    done = subprocess.run(["prove", "-r", *map(str, tests)], cwd=where, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    return parse_prove(done.stdout)


def on_disk(work: Path, suite: Path, only: list[str]) -> Result:
    where = work / "disk"
    where.mkdir()
    return run_suite(suite, where, only, work / "disk.log")


def on_bindfs(work: Path, suite: Path, only: list[str]) -> Result | None:
    bindfs = shutil.which("bindfs")
    if bindfs is None:
        print("bindfs is not installed (apt-get install bindfs): no bindfs column", flush=True)
        return None
    back, mnt = work / "bindfs-back", work / "bindfs-mnt"
    back.mkdir()
    mnt.mkdir()
    subprocess.run([bindfs, "-o", "allow_other,dev,suid", str(back), str(mnt)], check=True)
    try:
        return run_suite(suite, mnt, only, work / "bindfs.log")
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def on_cas(work: Path, suite: Path, only: list[str]) -> Result:
    repo, mnt = work / "cas-repo", work / "cas-mnt"
    mnt.mkdir()
    subprocess.run([CAS, "--repo", str(repo), "init"], check=True, capture_output=True)
    subprocess.run([CAS, "--repo", str(repo), "mount", "--allow-other", str(mnt)], check=True, capture_output=True)
    try:
        return run_suite(suite, mnt, only, work / "cas.log")
    finally:
        subprocess.run([CAS, "--repo", str(repo), "umount", str(mnt)], capture_output=True)
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        log = repo / "mount.log"
        if log.exists():
            shutil.copy(log, work / "cas-mount.log")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", type=Path, required=True, help="a built pjdfstest checkout")
    p.add_argument("--only", default="", help="comma-separated test folders (chmod,rename,...); default all")
    p.add_argument("--targets", default="disk,bindfs,cas")
    p.add_argument("--dir", type=Path, default=None, help="where to work (default: a temporary directory)")
    p.add_argument("--keep-logs", type=Path, default=None, help="copy prove's output per target here")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("pjdfstest must run as root (it changes owners and acts as other users)", file=sys.stderr)
        return 2
    suite = args.suite.resolve()
    if not (suite / "pjdfstest").is_file() or not (suite / "tests").is_dir():
        print(f"{suite} holds no built pjdfstest (the 'pjdfstest' binary and 'tests/'): see this file's docstring",
              file=sys.stderr)
        return 2
    if shutil.which("prove") is None:
        print("prove is not installed (it comes with perl)", file=sys.stderr)
        return 2
    only = [name for name in args.only.split(",") if name]
    targets = [name for name in args.targets.split(",") if name]
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="cas-conformance-", dir=args.dir) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # the suite's other users must reach the targets
        runners = {"disk": on_disk, "bindfs": on_bindfs, "cas": on_cas}
        for name in targets:
            print(f"{name}: running pjdfstest ...", flush=True)
            result = runners[name](work, suite, only)
            if result is not None:
                results[name] = result
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)
    print(f"\n{'target':8} {'files':>6} {'points':>7} {'passed':>7} {'failed':>7}")
    for name, result in results.items():
        print(f"{name:8} {result.files:6} {result.points:7} {result.passed:7} {result.failed:7}")
    for name, result in results.items():
        for test, points in sorted(result.failures.items()):
            print(f"  {name} failed {test}: {points}")
    if "cas" in results and "bindfs" in results:
        cas, bindfs = results["cas"], results["bindfs"]
        print(f"cas passed {cas.passed} of {cas.points}, bindfs {bindfs.passed} of {bindfs.points}: "
              f"{cas.passed / bindfs.passed:.3f}x bindfs's passes (issue 17's target: at least 0.98x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
