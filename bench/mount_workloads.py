"""The small-operation workloads of ``bench/mount.py``: what programs do in
a mounted directory, timed on plain disk, through bindfs (a C passthrough
FUSE file system, from Debian) and through the cas mount, in one run.

Each workload is a function of a target directory (and a scratch directory
on plain disk for its inputs) returning seconds or a rate; the inputs are
generated from fixed seeds, so every target gets the same work:

* untar: a tar of 2,272 files in 242 directories (~61 MB);
* git: init, add 714 files, commit, then three more commits of changes;
* rsync -a of the untarred tree from plain disk;
* sqlite3: 5,455 rows in transactions of 100, DELETE journal, synchronous=FULL;
* fsx: 10,000 random writes, reads (checked against a model), truncates and
  appends on one file, reopened every 500 operations (our own, in the
  spirit of the fsx tool: it is not packaged for Debian);
* 4 KiB random writes: fio with verification if fio is installed, else our
  own loop (pwrite at random aligned offsets, then every block read back
  and checked); operations per second;
* ls -lR of the untarred tree, warm (the second of two runs).
"""

from __future__ import annotations

import io
import os
import random
import shutil
import sqlite3
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

MIB = 1024 * 1024


def make_tree_tar(scratch: Path, files: int = 2272, dirs: int = 242, seed: int = 16) -> Path:
    """The untar workload's input: ``files`` files of varied sizes (most
    small, a few of a few MiB; ~61 MB in all) in ``dirs`` directories."""
    path = scratch / "tree.tar"
    if path.exists():
        return path
    rng = random.Random(seed)
    noise = rng.randbytes(4 * MIB)
    names = [f"src/d{i // 12:02d}/sub{i % 12}" for i in range(dirs - 1)]
    with tarfile.open(path, "w") as tar:
        for name in ["src", *sorted({n.rsplit("/", 1)[0] for n in names}), *names]:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
        for i in range(files):
            size = min(int(rng.lognormvariate(8.7, 1.6)), 3 * MIB)
            start = rng.randrange(0, len(noise) - size) if size < len(noise) else 0
            info = tarfile.TarInfo(f"{rng.choice(names)}/file{i:04d}.dat")
            info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000 + i
            tar.addfile(info, io.BytesIO(noise[start:start + size]))
    return path


def untar(target: Path, tar: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["tar", "xf", str(tar), "-C", str(target)], check=True)
    return time.perf_counter() - start


def git(target: Path, files: int = 714, seed: int = 17) -> float:
    rng = random.Random(seed)
    repo = target / "gitwork"
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid"}

    def run(*argv: str) -> None:
        subprocess.run(["git", "-C", str(repo), *argv], check=True, env=env, capture_output=True)

    start = time.perf_counter()
    repo.mkdir()
    run("init", "-q")
    for i in range(files):
        sub = repo / f"pkg{i % 20}"
        sub.mkdir(exist_ok=True)
        (sub / f"m{i}.py").write_text(f"# module {i}\n" + "x = 1\n" * rng.randrange(5, 300))
    run("add", "-A")
    run("commit", "-qm", "first")
    for n in range(3):
        for i in rng.sample(range(files), 40):
            with open(repo / f"pkg{i % 20}" / f"m{i}.py", "a") as f:
                f.write(f"y{n} = {i}\n")
        run("commit", "-qam", f"change {n}")
    return time.perf_counter() - start


def rsync(target: Path, source: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["rsync", "-a", f"{source}/", str(target / "rsynced")], check=True)
    return time.perf_counter() - start


def sqlite(target: Path, rows: int = 5455, seed: int = 18) -> float:
    rng = random.Random(seed)
    start = time.perf_counter()
    db = sqlite3.connect(target / "bench.sqlite", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value BLOB)")
        for first in range(0, rows, 100):
            db.execute("BEGIN")
            db.executemany("INSERT INTO t VALUES (?, ?, ?)",
                           [(i, f"row {i}", rng.randbytes(rng.randrange(10, 400)))
                            for i in range(first, min(rows, first + 100))])
            db.execute("COMMIT")
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == rows
    finally:
        db.close()
    return time.perf_counter() - start


def fsx(target: Path, operations: int = 10_000, seed: int = 19, max_size: int = 256 * 1024) -> float:
    """Operations per second; raises AssertionError on the first read that
    differs from the model."""
    rng = random.Random(seed)
    path = target / "fsx.dat"
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    start = time.perf_counter()
    try:
        for n in range(operations):
            op = rng.random()
            if op < 0.4:  # write somewhere, perhaps past the end (a hole)
                off = rng.randrange(0, max_size)
                data = rng.randbytes(rng.randrange(1, 16 * 1024))
                os.pwrite(fd, data, off)
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off:off + len(data)] = data
            elif op < 0.8:  # read and check
                off = rng.randrange(0, max(1, len(model)))
                length = rng.randrange(1, 32 * 1024)
                got = os.pread(fd, length, off)
                want = bytes(model[off:off + length])
                assert got == want, f"fsx: operation {n}: read of {length} at {off} differs from the model"
            elif op < 0.9:  # truncate, shorter or longer
                size = rng.randrange(0, max_size)
                os.ftruncate(fd, size)
                model = model[:size] + bytearray(max(0, size - len(model)))
            else:  # append
                data = rng.randbytes(rng.randrange(1, 8 * 1024))
                os.lseek(fd, 0, os.SEEK_END)
                os.write(fd, data)
                model.extend(data)
            if n % 500 == 499:  # close (the mount commits) and open again
                os.close(fd)
                fd = os.open(path, os.O_RDWR)
        assert os.pread(fd, len(model) + 1, 0) == bytes(model), "fsx: the file differs from the model at the end"
    finally:
        os.close(fd)
    return operations / (time.perf_counter() - start)


def random_writes(target: Path, size: int = 64 * MIB, seconds: float = 10.0, seed: int = 20) -> tuple[float, str]:
    """4 KiB random writes per second, each block then read back and
    checked; (rate, what measured it)."""
    path = target / "random.dat"
    if shutil.which("fio"):
        out = subprocess.run(
            ["fio", "--name=randwrite", f"--filename={path}", "--rw=randwrite", "--bs=4k", f"--size={size}",
             "--ioengine=psync", f"--runtime={seconds:g}", "--time_based=0", "--verify=crc32c",
             "--do_verify=1", "--output-format=terse", "--terse-version=3", "--randrepeat=1",
             f"--randseed={seed}", "--verify_state_save=0"], check=True, capture_output=True, text=True).stdout
        fields = out.strip().splitlines()[-1].split(";")
        return float(fields[48]), "fio"  # terse v3: write IOPS
    rng = random.Random(seed)
    blocks = size // 4096
    with open(path, "wb") as f:
        f.truncate(size)
    fd = os.open(path, os.O_RDWR)
    written: dict[int, bytes] = {}
    try:
        start = time.perf_counter()
        deadline = start + seconds
        n = 0
        while n < blocks and time.perf_counter() < deadline:
            block = rng.randrange(blocks)
            data = rng.randbytes(4096)
            os.pwrite(fd, data, block * 4096)
            written[block] = data
            n += 1
        os.fsync(fd)
        elapsed = time.perf_counter() - start
        for block, data in written.items():
            assert os.pread(fd, 4096, block * 4096) == data, f"random writes: block {block} differs"
    finally:
        os.close(fd)
    return n / elapsed, "own loop (fio not installed)"


def ls_lr_warm(target: Path) -> float:
    def once() -> None:
        subprocess.run(["ls", "-lR", str(target)], check=True, stdout=subprocess.DEVNULL)

    once()
    start = time.perf_counter()
    once()
    return time.perf_counter() - start


def run_all(target: Path, scratch: Path, note: Callable[[str], None]) -> dict[str, float]:
    """Every workload on ``target``; the figures by name."""
    tar = make_tree_tar(scratch)
    source = scratch / "tree"
    if not source.exists():
        source.mkdir()
        subprocess.run(["tar", "xf", str(tar), "-C", str(source)], check=True)
    out: dict[str, float] = {}
    # Each workload starts with the disk's write-back queue empty (os.sync,
    # not timed): on these VMs what an earlier workload (or target) left to
    # write back slows the next one's writes by up to 3x, bindfs's and the
    # plain disk's most, since they write every file through at once.
    os.sync()
    out["untar_s"] = untar(target, tar)
    note(f"untar {out['untar_s']:.2f} s")
    os.sync()
    out["git_s"] = git(target)
    note(f"git {out['git_s']:.2f} s")
    os.sync()
    out["rsync_s"] = rsync(target, source)
    note(f"rsync {out['rsync_s']:.2f} s")
    os.sync()
    out["sqlite_s"] = sqlite(target)
    note(f"sqlite {out['sqlite_s']:.2f} s")
    os.sync()
    out["fsx_ops"] = fsx(target)
    note(f"fsx {out['fsx_ops']:.0f} ops/s")
    os.sync()
    out["random_iops"], how = random_writes(target)
    note(f"4 KiB random writes {out['random_iops']:.0f}/s ({how})")
    out["ls_lr_s"] = ls_lr_warm(target / "src")
    note(f"ls -lR warm {out['ls_lr_s']:.3f} s")
    return out
