"""How fast cas stores and reads files, against the ceilings of this machine.

For each size (default 256 MiB and 1 GiB of random bytes), in one run:

ceilings, measured on the same bytes
    blake3      BLAKE3-256 over the bytes in memory (one thread)
    chunker     FastCDC cut points over the bytes in memory
    write+fsync the bytes written to a new file, then one fsync
    read        the file read back, page cache warm (a memcpy: BLAKE3
                verification alone, at one core's hash speed, is slower)
    read cold   the file read back after dropping the page cache (needs
                root; the disk-bound ceiling cas cat is compared with)
    read evicted  the same after evicting only that file from the page
                cache (posix_fadvise DONTNEED): checks the eviction below
                gives what dropping every cache does

cas
    lib add     cas.Repository.add_path into a new repository
    lib cat     cas.Repository.iter_read of the whole file
    cli add     the `cas add FILE` process, into a new (initialised) repository
    cli cat     the `cas cat CID` process, stdout to /dev/null, warm
    cli cat cold  the same after dropping the page cache
    cli cat data cold  the same after evicting only the repository's files
                (packs and database): the data is cold, the interpreter and
                the cas code are warm, as for anyone who ran cas once; then
                again in 5 pairs (read evicted, cli cat data cold) run one
                right after the other, whose median ratio is the steadier
                figure on a loaded machine
    cli cat, daemon  the same while a `cas daemon` owns the repository (the
                command passes its standard output; the daemon writes into
                it), warm and data cold, beside the same without a daemon
    cli start cold  `cas cat` of a 1-byte file in that repository after
                dropping the page cache: the start-up every cold cas
                process pays (interpreter, imports, opening the repository)
    peak RSS    of the cas processes, from /proc/PID/status VmHWM

and the ratios the targets are set on: add / write+fsync (target >= 0.40),
cat cold / read cold (target >= 0.50), peak RSS at 1 GiB (target <= 150 MiB).
The cat target is printed twice: with everything cold (the process also
reads the interpreter and ~110 modules from disk, 0.08-0.13 s, most of
the time the ceiling takes to read all of 256 MiB), and with the data cold
only.
The warm ratio is printed too.

Run:  .venv/bin/python bench/add_cat.py [--sizes 256M,1G] [--dir DIR]
The machine is shared and noisy: compare ratios, not absolute figures.

The cas processes start from compiled bytecode, as an installed cas does
(pip compiles it): the bench compiles the package first, because with
PYTHONDONTWRITEBYTECODE set (as in some shells here) every process would
otherwise compile its modules from source, ~0.15 s per start.
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
from typing import Any

import blake3
import cas.cli
from benchutil import compile_cas, parse_size, timed

import cas
from cas import chunker

MiB = 1 << 20
CAS = str(Path(sys.executable).with_name("cas"))


def run_sampling_rss(argv: list[str], stdout) -> tuple[float, int, bytes]:
    """Run a process; return (seconds, peak RSS bytes from /proc, stdout)."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        try:
            proc.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            pass
    elapsed = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else b""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()}")
    return elapsed, peak, out


def drop_caches() -> bool:
    """Empty the page cache so the next reads come from disk (root only)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def evict(*paths: Path) -> None:
    """Drop these files (directories: every file under them) from the page
    cache, after writing back whatever is dirty; no root needed."""
    os.sync()
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


PAIRS = 5
"""Interleaved (ceiling, cat) pairs measured data cold."""


def cat_through_daemon(repo: Path, cid: str) -> tuple[float, float]:
    """Seconds of `cas cat` (warm, then data cold) while a daemon owns
    ``repo``: the command passes its standard output and the daemon writes
    the file into it. The daemon is stopped by its PID before returning."""
    daemon = subprocess.Popen([CAS, "--repo", str(repo), "daemon", "--listen", "127.0.0.1:0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (repo / "control.sock").exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"cas daemon did not start: {daemon.stderr.read().decode() if daemon.stderr else ''}")
            time.sleep(0.02)  # polling for the socket, not synchronising a test
        with open(os.devnull, "wb") as devnull:
            # One unmeasured first: a long-lived daemon's first request pays
            # for what it starts once (its worker thread, an index connection).
            run_sampling_rss([CAS, "--repo", str(repo), "cat", cid], devnull)
            warm, _, _ = run_sampling_rss([CAS, "--repo", str(repo), "cat", cid], devnull)
            evict(repo)
            cold, _, _ = run_sampling_rss([CAS, "--repo", str(repo), "cat", cid], devnull)
        return warm, cold
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def bench_size(size: int, workdir: Path) -> dict[str, Any]:
    data = os.urandom(size)
    src = workdir / "input.bin"
    results: dict[str, Any] = {}

    results["blake3"] = size / timed(lambda: blake3.blake3(data).digest())
    results["chunker"] = size / timed(lambda: chunker.cut_points(data))

    def write_fsync() -> None:
        with open(src, "wb") as f:
            view = memoryview(data)
            for i in range(0, size, 4 * MiB):
                f.write(view[i : i + 4 * MiB])
            f.flush()
            os.fsync(f.fileno())

    results["write+fsync"] = size / timed(write_fsync)
    data = b""  # the closures above are done with it: its memory back

    def read_back() -> None:
        with open(src, "rb", buffering=0) as f:
            while f.read(4 * MiB):
                pass

    results["read"] = size / timed(read_back)
    if drop_caches():
        results["read cold"] = size / timed(read_back)
    evict(src)
    results["read evicted"] = size / timed(read_back)

    lib_repo = workdir / "lib-repo"
    with cas.open_repository(lib_repo) as repo:
        holder: list[cas.CID] = []
        results["lib add"] = size / timed(lambda: holder.append(repo.add_path(src).cid))

        def lib_cat() -> None:
            for _ in repo.iter_read(holder[0]):
                pass

        results["lib cat"] = size / timed(lib_cat)
    shutil.rmtree(lib_repo)

    cli_repo = workdir / "cli-repo"
    subprocess.run([CAS, "--repo", str(cli_repo), "init"], check=True, capture_output=True)
    seconds, add_rss, out = run_sampling_rss([CAS, "--repo", str(cli_repo), "add", str(src)], subprocess.PIPE)
    results["cli add"] = size / seconds
    cid = out.decode().strip()
    with open(os.devnull, "wb") as devnull:
        seconds, cat_rss, _ = run_sampling_rss([CAS, "--repo", str(cli_repo), "cat", cid], devnull)
    results["cli cat"] = size / seconds
    evict(cli_repo)
    with open(os.devnull, "wb") as devnull:
        seconds, _, _ = run_sampling_rss([CAS, "--repo", str(cli_repo), "cat", cid], devnull)
    results["cli cat data cold"] = size / seconds
    # The same again, as pairs close in time: the ceiling's file evicted and
    # read, then the repository evicted and cat: on a shared machine one
    # sample of each can land in different weather; a pair rarely does.
    pairs = []
    for _ in range(PAIRS):
        evict(src)
        read_seconds = timed(read_back)
        evict(cli_repo)
        with open(os.devnull, "wb") as devnull:
            seconds, _, _ = run_sampling_rss([CAS, "--repo", str(cli_repo), "cat", cid], devnull)
        pairs.append(read_seconds / seconds)
    results["data cold pairs"] = pairs
    warm, cold = cat_through_daemon(cli_repo, cid)
    results["cli cat, daemon"], results["cli cat, daemon, data cold"] = size / warm, size / cold
    if drop_caches():
        with open(os.devnull, "wb") as devnull:
            seconds, cold_rss, _ = run_sampling_rss([CAS, "--repo", str(cli_repo), "cat", cid], devnull)
        results["cli cat cold"] = size / seconds
        cat_rss = max(cat_rss, cold_rss)
        tiny = subprocess.run([CAS, "--repo", str(cli_repo), "add", "-"], input=b"x",
                              check=True, capture_output=True).stdout.decode().strip()
        drop_caches()
        results["cli start cold"], _, _ = run_sampling_rss(
            [CAS, "--repo", str(cli_repo), "cat", tiny], subprocess.DEVNULL)
    results["peak rss"] = max(add_rss, cat_rss)
    shutil.rmtree(cli_repo)
    src.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256M,1G", help="comma-separated sizes (e.g. 256M,1G)")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir under /var/tmp)")
    args = parser.parse_args()
    compile_cas()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cas-bench-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        for size in [parse_size(s) for s in args.sizes.split(",")]:
            r = bench_size(size, base)
            print(f"\n== {size / MiB:.0f} MiB of random bytes")
            keys = ("blake3", "chunker", "write+fsync", "read", "read cold", "read evicted",
                    "lib add", "lib cat", "cli add", "cli cat", "cli cat cold", "cli cat data cold",
                    "cli cat, daemon", "cli cat, daemon, data cold")
            for key in keys:
                if key in r:
                    print(f"  {key:<13} {r[key] / 1e6:9.1f} MB/s")
            if "cli start cold" in r:
                print(f"  {'cli start cold':<13} {r['cli start cold']:9.2f} s")
            print(f"  {'peak RSS':<12} {r['peak rss'] / MiB:9.1f} MiB (cas add / cas cat processes)")
            add_ratio = r["cli add"] / r["write+fsync"]
            print(f"  cli add / write+fsync = {add_ratio:.2f}  (target >= 0.40: {'met' if add_ratio >= 0.4 else 'MISSED'})")
            if "cli cat cold" in r:
                cold_ratio = r["cli cat cold"] / r["read cold"]
                print(f"  cli cat cold / read cold = {cold_ratio:.2f}  (target >= 0.50: {'met' if cold_ratio >= 0.5 else 'MISSED'})")
                reading = size / r["cli cat cold"] - r["cli start cold"]
                if reading > 0:
                    print(f"  (the same without the cold start-up = {size / reading / r['read cold']:.2f})")
                else:  # the start-up measured longer than the whole cat: a disturbed run
                    print("  (the same without the cold start-up: n/a, the start-up took longer)")
            else:
                print("  (cold-cache figures need root to drop the page cache)")
            ceiling = r.get("read cold", r["read evicted"])
            data_cold = r["cli cat data cold"] / ceiling
            print(f"  cli cat data cold / read cold = {data_cold:.2f}  "
                  f"(target >= 0.50: {'met' if data_cold >= 0.5 else 'MISSED'})")
            pairs = sorted(r["data cold pairs"])
            print(f"  the same in {len(pairs)} pairs close in time: median {pairs[len(pairs) // 2]:.2f}  "
                  f"(all: {' '.join(f'{p:.2f}' for p in pairs)})")
            print(f"  cli cat / read (warm) = {r['cli cat'] / r['read']:.2f}")
            print(f"  cli cat through a daemon / without = {r['cli cat, daemon'] / r['cli cat']:.2f} warm, "
                  f"{r['cli cat, daemon, data cold'] / r['cli cat data cold']:.2f} data cold")
            print(f"  lib add / write+fsync = {r['lib add'] / r['write+fsync']:.2f}")
            print(f"  lib cat / read        = {r['lib cat'] / r['read']:.2f}")
            print(f"  cli add / blake3      = {r['cli add'] / r['blake3']:.2f}")
            rss_ok = r["peak rss"] <= 150 * MiB
            print(f"  peak RSS <= 150 MiB: {'met' if rss_ok else 'MISSED'}")
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
