"""cas.store._quarantine: a block that fails verification leaves the index,
is listed with where it lay, and comes back as what it was from a good copy."""

from __future__ import annotations

import sqlite3

import pytest

from cas.blocks import Block
from cas.cid import RAW
from cas.errors import CorruptBlockError
from cas.store import LocalStore
from tests.conftest import pseudo_random


@pytest.fixture
def store(tmp_path):
    with LocalStore.open(tmp_path / "repo") as s:
        yield s


def damage_pack_block(store: LocalStore, block: Block) -> None:
    where = store.blocks.locate(block.cid)
    assert where is not None
    with open(where.path, "r+b") as f:
        f.seek(where.start + 100)
        byte = f.read(1)
        f.seek(where.start + 100)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_corrupt_pack_block_is_named_with_its_place_then_quarantined(store):
    block = Block.of(RAW, pseudo_random(200_000, "rot"))
    store.blocks.put(block)
    store.blocks.barrier()
    damage_pack_block(store, block)
    with pytest.raises(CorruptBlockError) as caught:
        store.blocks.get(block.cid)
    assert caught.value.cid == block.cid and ".pack at offset" in caught.value.place
    assert store.quarantine.add(caught.value) is True
    assert store.quarantine.add(caught.value) is False  # logged once: the second is not new
    store.blocks.barrier()
    assert not store.blocks.has(block.cid)  # never claimed again
    [bad] = store.quarantine.list()
    assert bad.cid == block.cid and bad.place == caught.value.place and not bad.held
    report = store.verify()
    assert [p.what.split(":")[0] for p in report.problems] == ["quarantined"]
    assert store.quarantine.restore(block) is True  # a good copy from elsewhere
    assert store.blocks.get(block.cid) == block.data and len(store.quarantine) == 0
    assert store.verify().ok


def test_a_corrupt_small_block_in_the_database_is_quarantined_too(store):
    block = Block.of(RAW, b"small and rotten")
    store.blocks.put(block)
    store.blocks.barrier()
    db = sqlite3.connect(store.path / "meta.sqlite")
    db.execute("UPDATE small_blocks SET data = ? WHERE cid = ?", (b"small and r0tten", bytes(block.cid)))
    db.commit()
    db.close()
    with pytest.raises(CorruptBlockError) as caught:
        store.blocks.get(block.cid)
    assert caught.value.place == "the metadata database"
    store.quarantine.add(caught.value)
    store.blocks.barrier()
    assert not store.blocks.has(block.cid)


def test_a_held_block_comes_back_held_and_counted(store):
    block = Block.of(RAW, pseudo_random(150_000, "theirs"))
    store.held.accept(block)
    held_bytes = store.held.bytes
    damage_pack_block(store, block)
    with pytest.raises(CorruptBlockError) as caught:
        store.blocks.get(block.cid)
    store.quarantine.add(caught.value)
    store.blocks.barrier()
    assert store.held.bytes == held_bytes - len(block.data)  # bad bytes count for nobody
    assert store.quarantine.list()[0].held
    store.quarantine.restore(block)
    assert store.held.is_held(block.cid) and store.held.bytes == held_bytes


def test_quarantine_survives_reopening(tmp_path):
    block = Block.of(RAW, pseudo_random(100_000, "kept"))
    with LocalStore.open(tmp_path / "repo") as store:
        store.blocks.put(block)
        store.blocks.barrier()
        damage_pack_block(store, block)
        with pytest.raises(CorruptBlockError) as caught:
            store.blocks.get(block.cid)
        store.quarantine.add(caught.value)
        store.blocks.barrier()
    with LocalStore.open(tmp_path / "repo") as store:
        assert [q.cid for q in store.quarantine.list()] == [block.cid]
        assert not store.blocks.has(block.cid)


def test_a_stale_report_never_quarantines_the_good_copy_that_replaced_the_bad_one(store):
    block = Block.of(RAW, pseudo_random(120_000, "raced"))
    store.blocks.put(block)
    store.blocks.barrier()
    damage_pack_block(store, block)
    reports = []
    for _ in range(2):  # two readers met the same bad copy
        with pytest.raises(CorruptBlockError) as caught:
            store.blocks.get(block.cid)
        reports.append(caught.value)
    assert store.quarantine.add(reports[0]) is True
    store.quarantine.restore(block)
    assert store.quarantine.add(reports[1]) is False  # the second report comes late
    assert store.blocks.get(block.cid) == block.data and len(store.quarantine) == 0
