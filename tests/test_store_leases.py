"""Leases on blocks held for the network (cas/store/_held.py): granted on
arrival, capped by the network's lease, renewed, expired, reclaimed by gc,
and given to blocks held before leases existed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.blocks import Block
from cas.cid import RAW
from cas.store import LocalStore, Placed
from cas.store._database import SCHEMA_VERSION
from cas.store._held import DEFAULT_LEASE

ALICE = b"a" * 32
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    s = LocalStore.open(tmp_path / "repo", create=True)
    s.held.clock = Clock()
    yield s
    s.close()


def clock(store: LocalStore) -> Clock:
    assert isinstance(store.held.clock, Clock)
    return store.held.clock


def test_a_placed_block_is_kept_for_the_lease_asked_and_no_longer_than_the_networks(store: LocalStore) -> None:
    store.held.set_lease(10 * DAY)
    short, long, fetched = (Block.of(RAW, b"short"), Block.of(RAW, b"long"), Block.of(RAW, b"fetched"))
    store.held.accept_many([Placed(short, ALICE, 60), Placed(long, ALICE, 365 * DAY), fetched])
    assert store.held.leases() == {short.cid: 60, long.cid: 10 * DAY, fetched.cid: 10 * DAY}
    clock(store).now += 61
    assert store.held.expired() == [short.cid]
    assert store.held.expired_among([short.cid, long.cid]) == {short.cid}


def test_a_renewal_extends_a_lease_and_never_shortens_one(store: LocalStore) -> None:
    store.held.set_lease(DAY)
    block, own = Block.of(RAW, b"held"), Block.of(RAW, b"own")
    store.blocks.put(own)
    store.held.accept(Placed(block, ALICE, 100))
    clock(store).now += 90
    store.held.renew([block.cid, own.cid], 3600)
    assert store.held.leases() == {block.cid: 3600}  # the own block needs no lease and gains none
    store.held.renew([block.cid], 10)  # shorter than what is left: left as it is
    assert store.held.leases()[block.cid] == 3600
    store.held.renew([block.cid], 10 * DAY)  # capped at the network's lease
    assert store.held.leases()[block.cid] == DAY


def test_the_same_block_arriving_again_renews_its_lease(store: LocalStore) -> None:
    block = Block.of(RAW, b"again")
    store.held.accept(Placed(block, ALICE, 100))
    clock(store).now += 200
    assert store.held.expired() == [block.cid]
    assert store.held.accept(Placed(block, ALICE, 100)) is False  # already stored
    assert store.held.expired() == [] and store.held.leases()[block.cid] == 100


def test_a_shorter_network_lease_shortens_leases_already_granted(store: LocalStore) -> None:
    block = Block.of(RAW, b"granted")
    store.held.accept(Placed(block, ALICE))
    assert store.held.leases()[block.cid] == DEFAULT_LEASE
    store.held.set_lease(3600)
    assert store.held.leases()[block.cid] == 3600
    with pytest.raises(ValueError):
        store.held.set_lease(0)


def test_gc_reclaims_expired_held_blocks_and_keeps_leased_and_pinned_ones(store: LocalStore) -> None:
    junk, leased, pinned = Block.of(RAW, b"junk" * 100), Block.of(RAW, b"leased"), Block.of(RAW, b"pinned")
    store.held.accept_many([Placed(junk, ALICE, 60), Placed(leased, ALICE, 3600), Placed(pinned, ALICE, 60)])
    store.pin(pinned.cid)
    store.blocks.barrier()
    assert store.gc().blocks_freed == 0  # nothing has expired yet
    clock(store).now += 120
    report = store.gc()
    assert (report.blocks_freed, report.expired_freed, report.bytes_freed) == (1, 1, 400)
    assert not store.blocks.has(junk.cid)
    assert store.blocks.has(leased.cid) and store.blocks.has(pinned.cid)
    assert len(store.held) == 2 and store.held.bytes == len(b"leased") + len(b"pinned")


def test_held_blocks_of_an_older_repository_get_the_default_lease(tmp_path: Path) -> None:
    with LocalStore.open(tmp_path / "r", create=True) as s:
        s.held.accept(Placed(Block.of(RAW, b"old"), ALICE))
    db = sqlite3.connect(tmp_path / "r" / "meta.sqlite")
    with db:  # as version 6 left it: no expires_ns column
        db.execute("ALTER TABLE held DROP COLUMN expires_ns")
        db.execute("PRAGMA user_version = 6")
    db.close()
    with LocalStore.open(tmp_path / "r") as s:
        left = list(s.held.leases().values())
        assert len(left) == 1 and DEFAULT_LEASE - 60 < left[0] <= DEFAULT_LEASE
        assert s.held.expired() == []
    db = sqlite3.connect(tmp_path / "r" / "meta.sqlite")
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()
