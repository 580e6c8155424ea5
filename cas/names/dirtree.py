"""Directories of any size as trees of nodes, edited copy-on-write.

A directory's entries, sorted by name, are cut into leaves at *content-
defined* boundaries: an entry ends a leaf when the BLAKE3 hash of its name
(salted with the level) falls under 1/``AVG_FANOUT`` of the hash space, or
when the leaf reaches ``MAX_ITEMS`` entries. The leaves' references are cut
into index nodes by the same rule one level up, and so on until one node
remains: the directory's root node (see cas.names.directory for the bytes).
This is a "prolly tree": a B-tree whose shape depends only on its contents,
so the same entries give the same CID whatever order they were added in, and
a directory that fits one leaf is just that leaf.

Why it fits the namespace:

* **an edit rewrites O(log n) small nodes**: changing one entry rewrites its
  leaf (about ``AVG_FANOUT`` entries, a few KiB) and one node per level above
  it; every other node keeps its bytes and its CID, so nothing else is
  written (bytes a store already holds are never stored twice);
* **listing is sorted and streams**: a depth-first walk yields entries in
  name order holding one node per level;
* **lookup** descends by the children's first names: one node per level.

Edits re-chunk only the leaves that change: from the edited leaf onward
until the new cuts fall back onto an old leaf boundary (normally at once).
The index levels above are rebuilt from the list of leaf references, which
costs reading the index nodes (1/64 of the directory's size) but writes only
the nodes whose content changed. Writers put children before parents; the
store keeps the ordering rule (cas.blocks).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import blake3

from ..blocks import BlockStore
from ..cid import CID
from ..errors import InvalidBlockError, InvalidInputError
from .directory import (
    ChildRef,
    DirEntry,
    IndexNode,
    LeafNode,
    decode_dir_node,
    encode_index,
    encode_leaf,
    name_key,
)

AVG_FANOUT = 64
"""Expected entries per leaf and children per index node: a leaf of ~64
entries is 5-10 KiB, so an edit in a directory of 10^5 entries writes well
under 64 KiB in all."""

MAX_ITEMS = 1024
"""A node is cut here whatever the hashes say, so no node can outgrow a
block (1024 entries with 255-byte names is under 1 MiB)."""

_THRESHOLD = (1 << 32) // AVG_FANOUT

T = TypeVar("T")


@dataclass(frozen=True)
class DirSummary:
    """A directory's root node, and its entry count and total size."""

    cid: CID
    count: int
    size: int


@lru_cache(maxsize=1 << 16)
def _is_boundary(level: int, name: str) -> bool:
    digest = blake3.blake3(bytes((level,)) + name_key(name)).digest(length=4)
    return int.from_bytes(digest, "big") < _THRESHOLD


def _chunk(items: list[T], level: int, name_of: Callable[[T], str]) -> list[tuple[list[T], bool]]:
    """Cut ``items`` into nodes; each chunk comes with ``closed``: whether it
    ended at a cut (a boundary or the size limit) rather than at the end."""
    chunks: list[tuple[list[T], bool]] = []
    current: list[T] = []
    for item in items:
        current.append(item)
        if _is_boundary(level, name_of(item)) or len(current) == MAX_ITEMS:
            chunks.append((current, True))
            current = []
    if current:
        chunks.append((current, False))
    return chunks


# -- reading ------------------------------------------------------------------


class _NodeCache:
    """Decoded directory nodes by CID, least recently used out first.

    Safe to share between stores: a CID names one content forever, so a
    decoded node is right wherever it came from. Bounded by the number of
    entries and children held, not nodes, since nodes vary 1-1024 in size.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._nodes: OrderedDict[CID, LeafNode | IndexNode] = OrderedDict()
        self._held = 0

    @staticmethod
    def _weight(node: LeafNode | IndexNode) -> int:
        return 1 + (len(node.entries) if isinstance(node, LeafNode) else len(node.children))

    def get(self, store: BlockStore, cid: CID) -> LeafNode | IndexNode:
        node = self._nodes.get(cid)
        if node is not None:
            self._nodes.move_to_end(cid)
            return node
        node = decode_dir_node(cid, store.get(cid))
        self.add(cid, node)
        return node

    def add(self, cid: CID, node: LeafNode | IndexNode) -> None:
        """Remember a node this process just encoded (no need to decode it)."""
        if cid in self._nodes:
            return
        self._nodes[cid] = node
        self._held += self._weight(node)
        while self._held > self.budget:
            _, old = self._nodes.popitem(last=False)
            self._held -= self._weight(old)


_cache = _NodeCache(budget=200_000)  # ~40 MB of decoded entries at most


EMPTY_DIRECTORY: CID = encode_leaf([]).cid
"""The empty directory's CID. Read without a store (:func:`_node`), so a
namespace with no root yet reads as an empty directory in a repository
that is only read, where nothing may be stored."""

_EMPTY_LEAF = LeafNode(())


def _node(store: BlockStore, cid: CID) -> LeafNode | IndexNode:
    if cid == EMPTY_DIRECTORY:
        return _EMPTY_LEAF
    return _cache.get(store, cid)


def empty_directory(store: BlockStore) -> CID:
    """The empty directory's CID (stored, so it can be linked)."""
    block = encode_leaf([])
    if not store.has(block.cid):
        store.put(block)
    return block.cid


def summary(store: BlockStore, cid: CID) -> DirSummary:
    """Entry count and total size of directory ``cid`` (reads its root node)."""
    node = _node(store, cid)
    if isinstance(node, LeafNode):
        return DirSummary(cid, len(node.entries), sum(e.size for e in node.entries))
    return DirSummary(cid, sum(c.count for c in node.children), sum(c.size for c in node.children))


def iterate(store: BlockStore, cid: CID) -> Iterator[DirEntry]:
    """Every entry of directory ``cid`` in name order, streaming: memory holds
    one node per level, never the listing."""
    yield from _iterate(store, cid, None)


def _iterate(store: BlockStore, cid: CID, expect_level: int | None) -> Iterator[DirEntry]:
    node = _node(store, cid)
    if isinstance(node, LeafNode):
        if expect_level not in (None, 0):
            raise InvalidBlockError(f"directory node {cid} is a leaf where a level-{expect_level} index belongs")
        yield from node.entries
        return
    if expect_level is not None and node.level != expect_level:
        raise InvalidBlockError(f"directory index {cid} has level {node.level}, expected {expect_level}")
    for child in node.children:
        yield from _iterate(store, child.cid, node.level - 1)


def lookup(store: BlockStore, cid: CID, name: str) -> DirEntry | None:
    """The entry called ``name`` in directory ``cid``, or None."""
    key = name_key(name)
    node = _node(store, cid)
    while isinstance(node, IndexNode):
        firsts = [name_key(c.first) for c in node.children]
        index = bisect_right(firsts, key) - 1
        if index < 0:
            return None
        node = _node(store, node.children[index].cid)
    keys = [name_key(e.name) for e in node.entries]
    index = bisect_right(keys, key) - 1
    if index >= 0 and node.entries[index].name == name:
        return node.entries[index]
    return None


# -- writing ------------------------------------------------------------------


def _put_leaf(store: BlockStore, entries: list[DirEntry]) -> ChildRef:
    block = encode_leaf(entries)
    store.put(block)
    _cache.add(block.cid, LeafNode(tuple(entries)))
    return ChildRef(entries[0].name, block.cid, len(entries), sum(e.size for e in entries))


def _put_index(store: BlockStore, level: int, refs: list[ChildRef]) -> ChildRef:
    block = encode_index(level, refs)
    store.put(block)
    _cache.add(block.cid, IndexNode(level, tuple(refs)))
    return ChildRef(refs[0].first, block.cid, sum(r.count for r in refs), sum(r.size for r in refs))


def _build_index(store: BlockStore, leaves: list[ChildRef]) -> DirSummary:
    """The root over ``leaves`` (references to stored leaves, in order)."""
    if not leaves:
        block = encode_leaf([])
        store.put(block)
        return DirSummary(block.cid, 0, 0)
    refs, level = leaves, 1
    while len(refs) > 1:
        refs = [_put_index(store, level, chunk) for chunk, _ in _chunk(refs, level, lambda r: r.first)]
        level += 1
    return DirSummary(refs[0].cid, refs[0].count, refs[0].size)


def build(store: BlockStore, entries: Iterable[DirEntry]) -> DirSummary:
    """Store a directory of ``entries`` (any order, unique names)."""
    ordered = sorted(entries, key=lambda e: name_key(e.name))
    for a, b in zip(ordered, ordered[1:]):
        if a.name == b.name:
            raise InvalidInputError(f"duplicate name {a.name!r} in a directory")
    leaves = [_put_leaf(store, chunk) for chunk, _ in _chunk(ordered, 0, lambda e: e.name)]
    return _build_index(store, leaves)


def _leaf_refs(store: BlockStore, cid: CID) -> list[ChildRef]:
    """References to the leaves of directory ``cid``, in order."""
    node = _node(store, cid)
    if isinstance(node, LeafNode):
        if not node.entries:
            return []
        return [ChildRef(node.entries[0].name, cid, len(node.entries), sum(e.size for e in node.entries))]
    refs: list[ChildRef] = []
    for child in node.children:
        if node.level == 1:
            refs.append(child)
        else:
            refs.extend(_leaf_refs(store, child.cid))
    return refs


def update(store: BlockStore, cid: CID, changes: dict[str, DirEntry | None]) -> DirSummary:
    """Directory ``cid`` with ``changes`` applied: name -> new entry (added or
    replaced), or name -> None (removed; absent names are ignored). Returns
    the new directory; ``cid`` itself is untouched (copy-on-write)."""
    leaves = _leaf_refs(store, cid)
    for name, entry in sorted(changes.items(), key=lambda kv: name_key(kv[0])):
        assert entry is None or entry.name == name
        leaves = _edit_leaves(store, leaves, name, entry)
    return _build_index(store, leaves)


def _edit_leaves(
    store: BlockStore, leaves: list[ChildRef], name: str, entry: DirEntry | None
) -> list[ChildRef]:
    key = name_key(name)
    if not leaves:
        return [] if entry is None else [_put_leaf(store, [entry])]
    first = max(bisect_right([name_key(r.first) for r in leaves], key) - 1, 0)
    entries = list(_leaf_entries(store, leaves[first]))
    keys = [name_key(e.name) for e in entries]
    at = bisect_right(keys, key)
    present = at > 0 and entries[at - 1].name == name
    if entry is None:
        if not present:
            return leaves
        del entries[at - 1]
    elif present:
        entries[at - 1] = entry
    else:
        entries.insert(at, entry)
    # Re-cut from the start of the edited leaf (an old cut, so a fixed
    # point) until the new cuts land on an old leaf's end again.
    last = first
    while True:
        chunks = _chunk(entries, 0, lambda e: e.name)
        if not chunks or chunks[-1][1] or last + 1 == len(leaves):
            break
        last += 1
        entries.extend(_leaf_entries(store, leaves[last]))
    new = [_put_leaf(store, chunk) for chunk, _ in chunks]
    return leaves[:first] + new + leaves[last + 1 :]


def _leaf_entries(store: BlockStore, ref: ChildRef) -> tuple[DirEntry, ...]:
    node = _node(store, ref.cid)
    if not isinstance(node, LeafNode):
        raise InvalidBlockError(f"directory node {ref.cid} should be a leaf")
    return node.entries
