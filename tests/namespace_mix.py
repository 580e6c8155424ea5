"""Many ``cas`` clients changing one namespace at once, and what must survive.

Each client is a thread that runs ``cas`` commands one after another as a
user's script would (``add --to``, ``mkdir``, ``rm -r``, ``mv``), in its own
part of the namespace, until a deadline, and keeps a model of what it was
told succeeded: the files it added (path, bytes, CID), where its moved files
are, which directories it made and removed. Clients never touch each
other's paths, so every acknowledged change must still be there at the end:
the repository's namespace must equal the union of the models. Mount
writers do the same through a mount with ordinary file writes.

Used by tests/test_namespace_concurrency.py (through a daemon, offline,
with a mount) and bench/namespace.py's concurrent part.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import CAS, pseudo_random

Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[bytes]"]


def cas_runner(repo: Path, *global_options: str, timeout: float = 120) -> Run:
    """Run ``cas --repo REPO OPTIONS ARGS`` (no check: the caller counts failures)."""
    env = {k: v for k, v in os.environ.items() if k != "CAS_HOME"}

    def run(args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([CAS, "--repo", str(repo), *global_options, *args],
                              capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)

    return run


@dataclass
class Model:
    """What one client was told succeeded."""

    files: dict[str, bytes] = field(default_factory=dict)  # namespace path -> content
    cids: dict[str, str] = field(default_factory=dict)  # CID printed by add -> its content's path at add
    dirs: set[str] = field(default_factory=set)  # made and not removed
    removed: set[str] = field(default_factory=set)  # made, then removed
    commands: int = 0
    failures: list[str] = field(default_factory=list)  # "command: stderr", for the assertion message


MIN_ROUNDS = 3
"""Rounds every client makes whatever the clock says, so that a loaded
machine slows the run down instead of emptying it."""


def cli_client(k: int, run: Run, deadline: float, workdir: Path, model: Model) -> None:
    """Client ``k``: rounds of add --to, mkdir, mv (a flip), rm -r, mv into
    an archive directory, until ``deadline`` and at least MIN_ROUNDS."""
    workdir.mkdir(parents=True, exist_ok=True)
    base, flips = f"/c{k}", f"/m{k}"

    def cas(*args: str) -> subprocess.CompletedProcess[bytes] | None:
        result = run(args)
        model.commands += 1
        if result.returncode != 0:
            model.failures.append(f"cas {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
            return None
        return result

    def add(path: str, data: bytes) -> None:
        source = workdir / "input"
        source.write_bytes(data)
        result = cas("add", "-q", str(source), "--to", path)
        if result is not None:
            model.files[path] = data
            model.cids[result.stdout.decode().split()[-1]] = path

    add(f"{flips}/x", pseudo_random(2000, f"flip {k}"))
    if cas("mkdir", "-p", f"{base}/archive") is not None:
        model.dirs.add(f"{base}/archive")
    i = 0
    while i < MIN_ROUNDS or time.monotonic() < deadline:
        # Mostly small files; every fourth a multi-block one (~600 KiB).
        size = 600_000 if i % 4 == 3 else 1000 + 37 * i
        add(f"{base}/f{i}", pseudo_random(size, f"client {k} file {i}"))
        if cas("mkdir", f"{base}/d{i}") is not None:
            model.dirs.add(f"{base}/d{i}")
        here, there = (f"{flips}/x", f"{flips}/y") if f"{flips}/x" in model.files else (f"{flips}/y", f"{flips}/x")
        if cas("mv", here, there) is not None:
            model.files[there] = model.files.pop(here)
        if i % 2 and f"{base}/d{i - 1}" in model.dirs and cas("rm", "-r", f"{base}/d{i - 1}") is not None:
            model.dirs.discard(f"{base}/d{i - 1}")
            model.removed.add(f"{base}/d{i - 1}")
        if i % 3 == 2 and f"{base}/f{i}" in model.files and cas("mv", f"{base}/f{i}", f"{base}/archive/") is not None:
            model.files[f"{base}/archive/f{i}"] = model.files.pop(f"{base}/f{i}")
        i += 1


def gc_client(run: Run, deadline: float, model: Model) -> None:
    """``cas gc --history 1`` over and over while the others write (at least
    twice): it must never take a block that an acknowledged change refers to."""
    while model.commands < 2 or time.monotonic() < deadline:
        result = run(["gc", "--history", "1"])
        model.commands += 1
        if result.returncode != 0:
            model.failures.append(f"cas gc: {result.stderr.decode(errors='replace').strip()}")


def mount_writer(k: int, mnt: Path, deadline: float, model: Model) -> None:
    """Writer ``k`` through a mount: files written and closed, one after
    another, in ``/w{k}``; each counts once ``close`` returned."""
    try:
        os.makedirs(mnt / f"w{k}", exist_ok=True)
        model.dirs.add(f"/w{k}")
        i = 0
        while i < MIN_ROUNDS or time.monotonic() < deadline:
            data = pseudo_random(3000 + 101 * i, f"mount writer {k} file {i}")
            with open(mnt / f"w{k}" / f"f{i}", "wb") as f:
                f.write(data)
            model.files[f"/w{k}/f{i}"] = data
            model.commands += 1
            i += 1
    except OSError as exc:
        model.failures.append(f"mount writer {k}: {exc}")


def run_clients(targets: list[Callable[[], None]]) -> None:
    """Run each target in its own thread and wait for all of them."""
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
        assert not thread.is_alive(), "a client did not finish"


def missing_changes(repo: object, models: list[Model]) -> list[str]:
    """Every acknowledged change the repository (a ``cas.Repository``) does
    not show: files absent or with other bytes, directories absent, removed
    directories present."""
    from cas.errors import PathNotFoundError

    def exists(path: str) -> bool:
        try:
            repo.stat(path)  # type: ignore[attr-defined]
        except PathNotFoundError:
            return False
        return True

    lost = []
    for model in models:
        for path, data in model.files.items():
            if not exists(path):
                lost.append(f"{path}: missing")
            elif repo.read(path) != data:  # type: ignore[attr-defined]
                lost.append(f"{path}: other bytes")
        lost += [f"{path}: directory missing" for path in model.dirs if not exists(path)]
        lost += [f"{path}: removed, but there" for path in model.removed if exists(path)]
    return lost
