"""CAR export and import against ipfs-car, on the same files in the same run.

For each size, one file of pseudo-random bytes (and, with --tree, a
directory of 2,000 small files):

* **export**: ``cas car export CID -o F`` (the file already added) against
  ``ipfs-car pack --no-wrap FILE -o F`` (which chunks and hashes the file on
  its way to the CAR: ipfs-car has no store to export from, so this is the
  nearest thing an ipfs-car user runs to get a CAR of a file);
* **import**: ``cas car import`` of ipfs-car's CAR (sha2-256 blocks) into a
  fresh repository, two passes, every block verified, against ``ipfs-car
  unpack`` of the same CAR to a file (blocks verified, the file written);
  and ``cas car import`` of cas's own CAR (BLAKE3).

Every figure is MiB/s of the file's size, wall time of the whole process,
and its peak RSS (``wait4``). Ratios are cas / ipfs-car. Needs node and
``npm ci --prefix tests/js`` (the test set-up does it).

    .venv/bin/python bench/car.py                 # 256 MiB
    .venv/bin/python bench/car.py --sizes 64M,1G --tree
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3
from benchutil import compile_cas, parse_size

ROOT = Path(__file__).resolve().parent.parent
CAS = str(ROOT / ".venv" / "bin" / "cas")
IPFS_CAR = ROOT / "tests" / "js" / "node_modules" / "ipfs-car" / "bin.js"


def run(argv: list[str]) -> tuple[float, int, str]:
    """Seconds, peak RSS in MiB and stdout of ``argv``, which must succeed."""
    os.sync()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed: {err.read().decode(errors='replace')}")
        return seconds, usage.ru_maxrss // 1024, out.read().decode()


def write_random(path: Path, size: int) -> None:
    """``size`` bytes that repeat nowhere (BLAKE3's output stream, 1 MiB at a
    time): a repeated chunk would be stored and exported once by cas but
    packed again by ipfs-car, which would flatter cas."""
    with open(path, "wb") as f:
        for n, start in enumerate(range(0, size, 1 << 20)):
            f.write(blake3.blake3(n.to_bytes(8, "little")).digest(min(1 << 20, size - start)))


def bench(work: Path, source: Path, size: int, node: str, label: str) -> list[tuple[str, float, float]]:
    mib = size / (1 << 20)
    repo_a, repo_b, repo_c = work / "a", work / "b", work / "c"
    for repo in (repo_a, repo_b, repo_c):
        shutil.rmtree(repo, ignore_errors=True)
    add = [CAS, "--repo", str(repo_a), "add", "-q"] + (["-r"] if source.is_dir() else [])
    cid = run([*add, str(source)])[2].strip()
    results = []

    t_pack, rss_pack, _ = run([node, str(IPFS_CAR), "pack", "--no-wrap", str(source), "--output", str(work / "ipfs.car")])
    t_export, rss_export, _ = run([CAS, "--repo", str(repo_a), "car", "export", cid, "-o", str(work / "cas.car")])
    results.append((f"{label}: export", mib / t_export, mib / t_pack))
    print(f"  ipfs-car pack     {mib / t_pack:8.1f} MiB/s  {rss_pack:5d} MiB RSS")
    print(f"  cas car export    {mib / t_export:8.1f} MiB/s  {rss_export:5d} MiB RSS   ratio {t_pack / t_export:.2f}")

    out = work / "unpacked"
    shutil.rmtree(out, ignore_errors=True)
    if out.exists():
        out.unlink()
    t_unpack, rss_unpack, _ = run([node, str(IPFS_CAR), "unpack", str(work / "ipfs.car"), "--output", str(out)])
    t_import, rss_import, _ = run([CAS, "--repo", str(repo_b), "car", "import", str(work / "ipfs.car")])
    t_import_own, rss_own, _ = run([CAS, "--repo", str(repo_c), "car", "import", str(work / "cas.car")])
    results.append((f"{label}: import", mib / t_import, mib / t_unpack))
    print(f"  ipfs-car unpack   {mib / t_unpack:8.1f} MiB/s  {rss_unpack:5d} MiB RSS")
    print(f"  cas car import    {mib / t_import:8.1f} MiB/s  {rss_import:5d} MiB RSS   ratio {t_unpack / t_import:.2f}"
          "   (ipfs-car's CAR, sha2-256)")
    print(f"  cas car import    {mib / t_import_own:8.1f} MiB/s  {rss_own:5d} MiB RSS   ratio "
          f"{t_unpack / t_import_own:.2f}   (cas's CAR, BLAKE3)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256M", help="comma-separated file sizes (default 256M)")
    parser.add_argument("--tree", action="store_true", help="also a directory of 2,000 files of 4-60 KiB")
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None or not IPFS_CAR.exists():
        sys.exit("needs node and tests/js/node_modules: npm ci --prefix tests/js")
    compile_cas()
    summary = []
    with tempfile.TemporaryDirectory(prefix="cas-bench-car-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        work = Path(tmp)
        for text in args.sizes.split(","):
            size = parse_size(text)
            write_random(work / "file", size)
            print(f"{text} file:")
            summary += bench(work, work / "file", size, node, f"{text} file")
        if args.tree:
            tree = work / "tree"
            tree.mkdir()
            total = 0
            for i in range(2000):
                data = os.urandom(4096 + (i * 7919) % (56 * 1024))
                (tree / f"f{i:04}").write_bytes(data)
                total += len(data)
            print(f"tree of 2,000 files ({total / (1 << 20):.0f} MiB):")
            summary += bench(work, tree, total, node, "tree")
    print("\nratios (cas / ipfs-car, MiB/s):")
    for label, ours, theirs in summary:
        print(f"  {label:20s} {ours:8.1f} / {theirs:8.1f} = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
