"""Nothing a user does corrupts the repository: kill -9 at any moment, a full
disk in the middle of an add."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from cas.store import LocalStore
from tests.conftest import CAS, pseudo_random, run_cas, tmpfs

MiB = 1 << 20


def pack_bytes(repo: Path) -> int:
    """Bytes in the repository's pack files: what a running add has appended."""
    packs = repo / "packs"
    total = 0
    for name in os.listdir(packs) if packs.exists() else ():
        try:
            total += os.stat(packs / name).st_size
        except FileNotFoundError:
            pass  # removed between the listing and the stat
    return total


def wait_for(condition, deadline: float, what: str) -> None:
    """Poll ``condition`` until true or the deadline passes."""
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


@pytest.mark.slow
def test_kill_9_during_add_never_corrupts_and_printed_cids_stay_readable(tmp_path):
    """25 adds, 22 of them killed at a random point: after each, verify
    passes, and every add that printed its CID reads back intact."""
    rng = random.Random(20261127)
    repo = tmp_path / "repo"
    run_cas("init", repo=repo)
    # Inputs share content so kills also land on dedup paths and re-adds.
    base = pseudo_random(16 * MiB, seed="crash base")
    completed: dict[str, bytes] = {}
    kills = 0
    for run in range(25):
        cut = rng.randrange(len(base))
        fresh = pseudo_random(rng.randrange(2 * MiB, 6 * MiB), seed=f"crash {run}")
        data = base[cut:] + fresh + base[:cut]
        src = tmp_path / "input"
        src.write_bytes(data)
        bytes_before = pack_bytes(repo)
        # Kill once the add has appended a random number of new blocks'
        # worth of bytes (at least 8 blocks of 64 KiB or more are new in
        # each input); three runs are left to finish.
        kill_after = 10**12 if run % 8 == 7 else rng.randrange(0, 8) * 64 * 1024
        proc = subprocess.Popen(
            [CAS, "--repo", str(repo), "add", str(src)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        wait_for(
            lambda: proc.poll() is not None or pack_bytes(repo) - bytes_before >= kill_after,  # noqa: B023 (called within this iteration)
            time.monotonic() + 120,
            "cas add to store blocks",
        )
        if proc.poll() is None:
            proc.kill()
            kills += 1
        out, err = proc.communicate(timeout=60)
        new_cid = out.decode().strip()
        if new_cid:
            completed[new_cid] = data
        elif proc.returncode == 0:
            raise AssertionError(f"add exited 0 without a CID: {err!r}")
        verify = run_cas("repo", "verify", repo=repo, check=False)
        assert verify.returncode == 0, (run, verify.stdout, verify.stderr)
        if new_cid:
            assert run_cas("cat", new_cid, repo=repo).stdout == data
    assert kills >= 20, f"only {kills} of 25 adds were killed mid-way"
    assert len(completed) >= 3
    for cid, expected in completed.items():  # still intact after all later kills
        assert run_cas("cat", cid, repo=repo).stdout == expected


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs mounted for the test (needs root, as in CI)."""
    with tmpfs(tmp_path / "disk", "32m") as mnt:
        yield mnt


def test_a_full_disk_fails_the_add_clearly_and_loses_nothing(small_disk, tmp_path):
    repo = small_disk / "repo"
    first = pseudo_random(6 * MiB, seed="fits")
    (tmp_path / "first").write_bytes(first)
    (tmp_path / "big").write_bytes(pseudo_random(48 * MiB, seed="too big"))
    first_cid = run_cas("add", str(tmp_path / "first"), repo=repo).stdout.decode().strip()

    result = run_cas("add", str(tmp_path / "big"), repo=repo, check=False)
    assert result.returncode == 1
    [line] = result.stderr.decode().strip().splitlines()
    assert "disk full" in line and str(repo) in line
    assert result.stdout == b""

    assert run_cas("repo", "verify", repo=repo).returncode == 0
    assert run_cas("cat", first_cid, repo=repo).stdout == first
    assert os.listdir(repo / "tmp") == []
    with LocalStore.open(repo) as store:  # the half-written record was given back, not left as garbage
        assert all(usage.dead == 0 for usage in store.blocks.packs.pack_usage())
