"""The local repository: blocks on disk, the lock, pins, verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cas.blocks import Block
from cas.cid import DAG_CBOR, RAW, CID
from cas.errors import (
    BlockNotFoundError,
    InvalidBlockError,
    RepositoryError,
    RepositoryLockedError,
)
from cas.names.directory import DirEntry, encode_directory
from cas.store import LocalStore


@pytest.fixture
def store(tmp_path: Path):
    with LocalStore.open(tmp_path / "repo") as s:
        yield s


def test_a_put_block_reads_back_verified(store):
    block = Block.of(RAW, b"some bytes")
    assert store.blocks.put(block) is True
    assert store.blocks.put(block) is False  # idempotent
    assert store.blocks.has(block.cid)
    assert store.blocks.get(block.cid) == b"some bytes"
    assert list(store.blocks.iterate()) == [block.cid]


def test_a_missing_block_raises_not_found_naming_it(store):
    cid = CID.for_data(RAW, b"never stored")
    with pytest.raises(BlockNotFoundError, match=str(cid)):
        store.blocks.get(cid)


def test_a_block_changed_on_disk_fails_its_read_and_nothing_else(store):
    good = Block.of(RAW, b"good")
    bad = Block.of(RAW, b"will be damaged")
    store.blocks.put(good)
    store.blocks.put(bad)
    path = store.blocks.path_of(bad.cid)
    path.write_bytes(b"will be damagEd")
    with pytest.raises(InvalidBlockError, match=str(bad.cid)):
        store.blocks.get(bad.cid)
    assert store.blocks.get(good.cid) == b"good"
    report = store.verify()
    assert [p.cid for p in report.problems] == [str(bad.cid)]
    assert "corrupt" in report.problems[0].what


def test_delete_removes_only_that_block(store):
    a, b = Block.of(RAW, b"a"), Block.of(RAW, b"b")
    store.blocks.put(a)
    store.blocks.put(b)
    assert store.blocks.delete(a.cid) is True
    assert store.blocks.delete(a.cid) is False
    assert not store.blocks.has(a.cid) and store.blocks.has(b.cid)


def test_pins_are_kept_and_only_of_stored_blocks(store):
    block = Block.of(RAW, b"pinned")
    store.blocks.put(block)
    assert store.pin(block.cid) is True
    assert store.pin(block.cid) is False
    assert store.pins() == [block.cid]
    with pytest.raises(RepositoryError, match="not in the repository"):
        store.pin(CID.for_data(RAW, b"absent"))
    assert store.unpin(block.cid) is True
    assert store.pins() == []


def test_stat_counts_blocks_bytes_and_pins(store):
    for data in (b"x" * 10, b"y" * 20):
        store.blocks.put(Block.of(RAW, data))
    store.pin(CID.for_data(RAW, b"x" * 10))
    st = store.stat()
    assert (st.blocks, st.bytes, st.pinned) == (2, 30, 1)


def test_verify_reports_a_missing_child_and_a_missing_pin(store):
    child = Block.of(RAW, b"child")
    entry = DirEntry("f", "file", 5, 0o644, 0, cid=child.cid)
    parent = encode_directory([entry])
    store.blocks.put(child)
    store.blocks.put(parent)
    store.pin(parent.cid)
    assert store.verify().ok
    os.unlink(store.blocks.path_of(child.cid))
    problems = store.verify().problems
    assert [(p.cid, "linked from" in p.what) for p in problems] == [(str(child.cid), True)]
    os.unlink(store.blocks.path_of(parent.cid))
    problems = store.verify().problems
    assert [(p.cid, p.what) for p in problems] == [(str(parent.cid), "missing, but pinned")]


def test_verify_reports_stray_files(store):
    stray = store.blocks.blocks_dir / "00" / "not-a-cid"
    stray.write_bytes(b"?")
    assert [p.what for p in store.verify().problems] == ["stray file in the block directory"]


def test_leftover_temporary_files_are_removed_on_open(tmp_path):
    LocalStore.open(tmp_path / "repo").close()
    leftover = tmp_path / "repo" / "tmp" / "123-1.blk"
    leftover.write_bytes(b"half a block")
    with LocalStore.open(tmp_path / "repo"):
        assert not leftover.exists()


def test_a_second_owner_in_another_process_is_refused(tmp_path):
    repo = tmp_path / "repo"
    with LocalStore.open(repo):
        code = textwrap.dedent(
            f"""
            from cas.store import LocalStore
            from cas.errors import RepositoryLockedError
            try:
                LocalStore.open({str(repo)!r})
            except RepositoryLockedError as exc:
                print(exc)
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "is in use by process" in out.stdout, out.stderr
    assert str(os.getpid()) in out.stdout
    # Released with its owner:
    LocalStore.open(repo).close()


def test_a_second_owner_in_the_same_process_is_refused(tmp_path):
    with LocalStore.open(tmp_path / "repo"):
        with pytest.raises(RepositoryLockedError):
            LocalStore.open(tmp_path / "repo")


def test_a_non_empty_directory_is_not_made_into_a_repository(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file").write_text("mine")
    with pytest.raises(RepositoryError, match="not a cas repository"):
        LocalStore.open(tmp_path / "stuff")
    assert sorted(os.listdir(tmp_path / "stuff")) == ["file"]


def test_open_without_create_asks_for_init(tmp_path):
    with pytest.raises(RepositoryError, match="cas init"):
        LocalStore.open(tmp_path / "none", create=False)


def test_an_unknown_repository_version_is_refused(tmp_path):
    LocalStore.open(tmp_path / "repo").close()
    config = tmp_path / "repo" / "config.json"
    config.write_text(json.dumps({"format": "cas-repository", "version": 99}))
    with pytest.raises(RepositoryError, match="version 99"):
        LocalStore.open(tmp_path / "repo")


def test_directory_blocks_are_checked_by_codec_in_verify(store):
    bogus = Block.of(DAG_CBOR, b"\xa1\x01\x02")  # integer map key: not DAG-CBOR
    store.blocks.put(bogus)
    [problem] = store.verify().problems
    assert problem.cid == str(bogus.cid) and "malformed" in problem.what
