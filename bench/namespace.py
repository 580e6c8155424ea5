"""Namespace operations per second, against a plain local directory.

On a tree of 10,000 entries (100 directories of 100 small files), through
the library (each operation durable when it returns: one signed root
committed), and the same operations on a plain directory of this disk made
durable the usual way (fsync of the file and of the directory changed):

    mkdir          a new directory
    add --to       a 1 KiB file stored and linked
    mv             a file renamed into another directory
    stat           a path resolved (not durable: a read)
    ls             a 100-entry directory listed (a read)

It prints ops/s for both, the ratio cas / plain, and the bytes cas stored
per operation (new blocks; the directory nodes rewritten on the path).
Target (issue 3): >= 300 durable mv or mkdir operations per second.

Run:  .venv/bin/python bench/namespace.py [--ops 300] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import cas
from cas.store._disk import fsync_dir

DIRS, FILES_PER_DIR = 100, 100


def build_plain(root: Path) -> None:
    for d in range(DIRS):
        (root / f"d{d:03}").mkdir(parents=True)
        for f in range(FILES_PER_DIR):
            (root / f"d{d:03}" / f"f{f:03}").write_bytes(b"x" * 100)


def build_cas(repo: cas.Repository) -> None:
    from cas.names import dirtree
    from cas.names.directory import DirEntry
    from cas.names.namespace import Node

    content = repo.add_bytes(b"x" * 100, pin=False)
    subdirs = []
    for d in range(DIRS):
        entries = [DirEntry(f"f{f:03}", "file", 100, 0o644, 0, cid=content) for f in range(FILES_PER_DIR)]
        built = dirtree.build(repo.blocks, entries)
        subdirs.append(DirEntry(f"d{d:03}", "dir", built.size, 0o755, 0, cid=built.cid))
    top = dirtree.build(repo.blocks, subdirs)
    repo.namespace.link("/tree", Node("/tree", "tree", "dir", top.size, 0o755, 0, top.cid))


def timed(ops: int, fn) -> float:
    start = time.perf_counter()
    for i in range(ops):
        fn(i)
    return ops / (time.perf_counter() - start)


def bench_plain(root: Path, ops: int, rng: random.Random) -> dict[str, float]:
    tree = root / "tree"
    build_plain(tree)
    os.sync()
    r: dict[str, float] = {}

    def mkdir(i: int) -> None:
        (tree / f"new{i}").mkdir()
        fsync_dir(tree)

    def add(i: int) -> None:
        path = tree / f"d{i % DIRS:03}" / f"added{i}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"y" * 1024)
        os.fsync(fd)
        os.close(fd)
        fsync_dir(path.parent)

    def mv(i: int) -> None:
        src = tree / f"d{i % DIRS:03}" / f"f{i // DIRS:03}"
        dst_dir = tree / f"d{(i + 1) % DIRS:03}"
        os.rename(src, dst_dir / f"moved{i}")
        fsync_dir(src.parent)
        fsync_dir(dst_dir)

    def stat(i: int) -> None:
        os.stat(tree / f"d{rng.randrange(DIRS):03}" / f"f{rng.randrange(50, FILES_PER_DIR):03}")

    def ls(i: int) -> None:
        sorted(os.listdir(tree / f"d{rng.randrange(DIRS):03}"))

    for name, fn in (("mkdir", mkdir), ("add --to", add), ("mv", mv), ("stat", stat), ("ls", ls)):
        r[name] = timed(ops, fn)
    return r


def bench_cas(path: Path, ops: int, rng: random.Random) -> tuple[dict[str, float], dict[str, float]]:
    r: dict[str, float] = {}
    per_op: dict[str, float] = {}
    with cas.open_repository(path) as repo:
        build_cas(repo)

        def mkdir(i: int) -> None:
            repo.mkdir(f"/tree/new{i}")

        def add(i: int) -> None:
            repo.add_bytes(b"y" * 1024 + i.to_bytes(4, "big"), to=f"/tree/d{i % DIRS:03}/added{i}")

        def mv(i: int) -> None:
            repo.mv(f"/tree/d{i % DIRS:03}/f{i // DIRS:03}", f"/tree/d{(i + 1) % DIRS:03}/moved{i}")

        def stat(i: int) -> None:
            repo.stat(f"/tree/d{rng.randrange(DIRS):03}/f{rng.randrange(50, FILES_PER_DIR):03}")

        def ls(i: int) -> None:
            list(repo.ls(f"/tree/d{rng.randrange(DIRS):03}"))

        for name, fn in (("mkdir", mkdir), ("add --to", add), ("mv", mv), ("stat", stat), ("ls", ls)):
            before = repo.repo_stat().bytes
            r[name] = timed(ops, fn)
            per_op[name] = (repo.repo_stat().bytes - before) / ops
    return r, per_op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=300, help="operations of each kind (default 300)")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir under /var/tmp)")
    args = parser.parse_args()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cas-bench-ns-", dir="/var/tmp"))
    try:
        plain = bench_plain(base / "plain", args.ops, random.Random(1))
        ours, per_op = bench_cas(base / "repo", args.ops, random.Random(1))
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n== {DIRS * FILES_PER_DIR} entries, {args.ops} operations of each kind")
    print(f"  {'operation':<10} {'cas ops/s':>10} {'plain ops/s':>12} {'ratio':>7} {'cas bytes/op':>13}")
    for name in ours:
        print(
            f"  {name:<10} {ours[name]:>10.0f} {plain[name]:>12.0f} "
            f"{ours[name] / plain[name]:>7.2f} {per_op[name]:>13.0f}"
        )
    for name in ("mv", "mkdir"):
        verdict = "met" if ours[name] >= 300 else "MISSED"
        print(f"  durable {name}: {ours[name]:.0f} ops/s (target >= 300: {verdict})")


if __name__ == "__main__":
    main()
