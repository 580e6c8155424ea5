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
from tests.nodeproc import Daemon, Daemons, replication_stats, wait_until

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


# -- leases: what nobody renews is reclaimed ----------------------------------------------

LEASE = ["--lease", "3s"]


def gc(daemon: Daemon) -> dict:
    return dict(json.loads(run_cas("gc", "--json", repo=daemon.repo).stdout))


def reclaimed(daemon: Daemon, freed: list[dict] | None = None) -> bool:
    """Run gc on ``daemon``; whether it now holds nothing for others."""
    report = gc(daemon)
    if freed is not None:
        freed.append(report)
    return replication_stats(daemon)["held_bytes"] == 0


def test_a_rogues_blocks_are_reclaimed_once_their_lease_runs_out(tmp_path: Path, daemons: Daemons) -> None:
    victim = daemons.start(tmp_path / "victim", extra=["--peer-quota", "8M", *LEASE])
    rogue = daemons.start(tmp_path / "rogue", bootstrap=[victim.address], extra=LEASE)
    junk(rogue, 30 * MiB, "a throwaway identity's junk")
    held = held_for(victim, rogue)
    assert 0 < held <= 8 * MiB  # cut off at its share
    daemons.stop(rogue)  # thrown away: nobody renews its blocks
    freed: list[dict] = []
    wait_until(lambda: reclaimed(victim, freed), 60, "the rogue's blocks reclaimed by gc after their lease")
    assert sum(r["expired_freed"] for r in freed) > 0
    assert sum(r["bytes_freed"] for r in freed) >= held


def test_an_owner_renews_its_blocks_leases_and_once_it_stops_they_expire_everywhere(
        tmp_path: Path, daemons: Daemons) -> None:
    fast = [*LEASE, "--repair-interval", "1"]
    owner = daemons.start(tmp_path / "owner", extra=fast)
    holders = [daemons.start(tmp_path / f"holder{i}", bootstrap=[owner.address], extra=fast) for i in range(3)]
    data = pseudo_random(2 * MiB, "a file its owner keeps")
    cid = run_cas("add", "-q", "-", repo=owner.repo, input=data, timeout=120).stdout.decode().strip()
    wait_until(lambda: sum(replication_stats(h)["held_bytes"] for h in holders) >= 2 * 2 * MiB, 30, "two more copies")
    # Three leases later, renewed every repair round, the copies are still leased: gc keeps them.
    rounds = replication_stats(owner)["repair_rounds"]
    wait_until(lambda: replication_stats(owner)["repair_rounds"] >= rounds + 9, 60, "nine of the owner's repair rounds")
    for h in holders:
        assert gc(h)["expired_freed"] == 0
    assert sum(replication_stats(h)["held_bytes"] for h in holders) >= 2 * 2 * MiB
    assert run_cas("cat", cid, repo=holders[0].repo).stdout == data
    daemons.stop(owner)
    # Nobody renews them now. The holders repair the copies the owner took
    # with it, but only for what is left of each lease: then every copy
    # expires, none is placed again, and gc takes them all.
    wait_until(lambda: all([reclaimed(h) for h in holders]), 60, "the copies reclaimed once nobody renewed them")
