"""Directory trees: the same entries give the same tree, edits stay local,
listings stream in order."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.blocks import MemoryBlockStore
from cas.cid import CID, RAW
from cas.names import dirtree
from cas.names.directory import DirEntry, IndexNode, decode_dir_node
from tests.formatsdoc import vectors

FILE = CID.for_data(RAW, b"content")


def entry(name: str, size: int = 1) -> DirEntry:
    return DirEntry(name, "file", size, 0o644, 0, cid=FILE)


class CountingStore(MemoryBlockStore):
    """Counts the bytes of blocks newly stored, as a disk would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.new_bytes = 0
        self.gets = 0

    def put(self, block):
        new = super().put(block)
        if new:
            self.new_bytes += len(block.data)
        return new

    def get(self, cid):
        self.gets += 1
        return super().get(cid)


def names(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"file-{rng.getrandbits(48):012x}" for _ in range(n)]


def test_a_small_directory_is_a_single_leaf():
    store = MemoryBlockStore()
    built = dirtree.build(store, [entry("a"), entry("b")])
    assert len(store) == 1
    assert [e.name for e in dirtree.iterate(store, built.cid)] == ["a", "b"]


def test_a_large_directory_is_an_index_over_leaves_and_lists_in_order():
    store = MemoryBlockStore()
    all_names = names(5000)
    built = dirtree.build(store, [entry(n, 3) for n in all_names])
    node = decode_dir_node(built.cid, store.get(built.cid))
    assert isinstance(node, IndexNode)
    assert (built.count, built.size) == (5000, 15000)
    assert [e.name for e in dirtree.iterate(store, built.cid)] == sorted(all_names)
    for name in all_names[:50]:
        assert dirtree.lookup(store, built.cid, name).name == name
    assert dirtree.lookup(store, built.cid, "not-there") is None
    assert dirtree.lookup(store, built.cid, "") is None


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(names(300, seed=2)), st.booleans()), max_size=60))
def test_edits_give_the_same_tree_as_building_the_result_directly(ops):
    store = MemoryBlockStore()
    current = {n: entry(n) for n in names(300, seed=2)[:200]}
    tree = dirtree.build(store, current.values())
    for name, add in ops:
        change = entry(name, 7) if add else None
        tree = dirtree.update(store, tree.cid, {name: change})
        if add:
            current[name] = change
        else:
            current.pop(name, None)
    assert tree.cid == dirtree.build(MemoryBlockStore(), current.values()).cid
    assert (tree.count, tree.size) == (len(current), sum(e.size for e in current.values()))


def test_insertion_order_does_not_change_the_cid():
    all_names = names(3000, seed=3)
    a = dirtree.build(MemoryBlockStore(), [entry(n) for n in all_names])
    shuffled = random.Random(4).sample(all_names, len(all_names))
    store = MemoryBlockStore()
    tree = dirtree.build(store, [entry(n) for n in shuffled[:2900]])
    for n in shuffled[2900:]:
        tree = dirtree.update(store, tree.cid, {n: entry(n)})
    assert tree.cid == a.cid


@pytest.mark.slow
def test_one_edit_in_a_directory_of_100000_entries_writes_under_64_kib():
    store = CountingStore()
    all_names = names(100_000, seed=5)
    tree = dirtree.build(store, [entry(n) for n in all_names])
    store.new_bytes = 0
    added = dirtree.update(store, tree.cid, {"new-entry": entry("new-entry")})
    assert 0 < store.new_bytes < 64 * 1024
    store.new_bytes = 0
    removed = dirtree.update(store, added.cid, {all_names[777]: None})
    assert 0 < store.new_bytes < 64 * 1024
    assert removed.count == 100_000


def test_forced_cuts_resynchronise_after_an_edit(monkeypatch):
    # With no natural boundaries every cut is a forced one, the worst case
    # for re-cutting after an insertion near the start.
    monkeypatch.setattr(dirtree, "_is_boundary", lambda level, name: False)
    monkeypatch.setattr(dirtree, "MAX_ITEMS", 16)
    all_names = [f"n{i:05d}" for i in range(200)]
    store = MemoryBlockStore()
    tree = dirtree.build(store, [entry(n) for n in all_names[1:]])
    tree = dirtree.update(store, tree.cid, {all_names[0]: entry(all_names[0])})
    assert tree.cid == dirtree.build(MemoryBlockStore(), [entry(n) for n in all_names]).cid
    assert [e.name for e in dirtree.iterate(store, tree.cid)] == all_names


def test_removing_every_entry_leaves_the_empty_directory():
    store = MemoryBlockStore()
    all_names = names(400, seed=6)
    tree = dirtree.build(store, [entry(n) for n in all_names])
    tree = dirtree.update(store, tree.cid, dict.fromkeys(all_names))
    assert tree.cid == dirtree.build(MemoryBlockStore(), []).cid and tree.count == 0


def test_published_tree_vector_matches():
    [v] = vectors("dirtree")
    store = MemoryBlockStore()
    entries = [
        DirEntry(f"file-{i:04d}", "file", 5, 0o644, 1_700_000_000_000_000_000, cid=CID.for_data(RAW, b"hello"))
        for i in range(300)
    ]
    built = dirtree.build(store, entries)
    assert (str(built.cid), built.count, built.size, len(store)) == (v["cid"], v["count"], v["size"], v["nodes"])
