"""Storage that cannot be abused, with real daemons on 127.0.0.1: another
node (a throwaway identity) is held only up to its share, and blocks for
others never take the disk reserve, so the owner's own adds keep working.

The measured case of issue 14: a daemon on a 64 MiB disk was filled by a
peer in 0.8 s and its owner's next ``cas add`` failed with "disk full"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import pseudo_random, run_cas, tmpfs
from tests.nodeproc import Daemon, Daemons

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MiB = 1024 * 1024


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "64m") as mnt:
        yield mnt


def held_for(victim: Daemon, peer: Daemon) -> int:
    peers = json.loads(run_cas("peers", "--json", repo=victim.repo).stdout)
    return sum(p["held_bytes"] for p in peers if p["id"] == peer.node_id)


def junk(daemon: Daemon, size: int, seed: str) -> None:
    """An add of ``size`` bytes through ``daemon``, placed on its peers."""
    run_cas("add", "-q", "-", repo=daemon.repo, input=pseudo_random(size, seed), timeout=240)


def test_a_peer_is_held_only_up_to_its_share(tmp_path: Path, daemons: Daemons) -> None:
    victim = daemons.start(tmp_path / "victim", extra=["--peer-quota", "8M"])
    rogue = daemons.start(tmp_path / "rogue", bootstrap=[victim.address])
    other = daemons.start(tmp_path / "other", bootstrap=[victim.address])
    junk(rogue, 30 * MiB, "a throwaway identity's junk")
    assert 0 < held_for(victim, rogue) <= 8 * MiB  # cut off at its share
    junk(other, 3 * MiB, "an honest neighbour")
    assert held_for(victim, other) >= 2 * MiB  # others still fit


def test_blocks_for_others_never_take_the_disk_reserve_and_the_owner_can_still_add(
        small_disk: Path, tmp_path: Path, daemons: Daemons) -> None:
    victim = daemons.start(small_disk / "victim")  # the default reserve: a quarter of the disk, 16 MiB
    rogue = daemons.start(tmp_path / "rogue", bootstrap=[victim.address])
    junk(rogue, 80 * MiB, "fill the victim's disk")
    assert 0 < held_for(victim, rogue) <= 48 * MiB  # it stopped at the reserve
    own = pseudo_random(12 * MiB, "the owner's own file")
    cid = run_cas("add", "-q", "-", repo=victim.repo, input=own, timeout=120).stdout.decode().strip()
    assert run_cas("cat", cid, repo=victim.repo).stdout == own
