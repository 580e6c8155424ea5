"""The walk as a state machine (cas.reader.FileWalk), driven by hand: what it
asks for, what it hints, what it gives back, and how it refuses misuse."""

from __future__ import annotations

import pytest

from cas import files
from cas.blocks import MemoryBlockStore
from cas.cid import CID, RAW
from cas.reader import FileWalk, LeafSpan, NeedBlock, PathCache, ReadAhead, WalkDone
from tests.conftest import pseudo_random


def drive(store: MemoryBlockStore, walk: FileWalk) -> tuple[list[CID], list[ReadAhead], bytes, list[LeafSpan]]:
    """Run ``walk`` over ``store``, recording every event."""
    needed: list[CID] = []
    hints: list[ReadAhead] = []
    content: list[bytes] = []
    spans: list[LeafSpan] = []
    while True:
        event = walk.next_event()
        if isinstance(event, NeedBlock):
            needed.append(event.cid)
            walk.feed(store.get(event.cid))
        elif isinstance(event, ReadAhead):
            hints.append(event)
        elif isinstance(event, LeafSpan):
            spans.append(event)
        elif isinstance(event, WalkDone):
            assert walk.next_event() == event  # the end stays the end
            return needed, hints, b"".join(content), spans
        else:
            content.append(bytes(event))


@pytest.fixture
def two_levels() -> tuple[MemoryBlockStore, CID, bytes]:
    store = MemoryBlockStore()
    data = pseudo_random(2_000_000, "two levels")
    return store, files.add_bytes(store, data, fanout=4).cid, data


def test_a_walk_asks_for_the_root_first_and_gives_the_range_in_order(two_levels) -> None:
    store, root, data = two_levels
    walk = FileWalk(root, 123_456, 1_000_000)
    assert walk.next_event() == NeedBlock(root)
    assert walk.needed == root
    walk.feed(store.get(root))
    needed, _, content, _ = drive(store, walk)
    assert walk.size == len(data)
    assert content == data[123_456:1_123_456]
    assert root not in needed  # fetched once


def test_a_size_walk_reads_the_root_only(two_levels) -> None:
    store, root, data = two_levels
    needed, hints, content, _ = drive(store, FileWalk(root, 0, 0))
    assert needed == [root] and hints == [] and content == b""


def test_the_hint_lists_the_blocks_of_the_range_and_ahead_widens_it(two_levels) -> None:
    store, root, data = two_levels
    _, narrow, _, _ = drive(store, FileWalk(root, 0, 400_000))
    _, wide, _, _ = drive(store, FileWalk(root, 0, 400_000, ahead=1_000_000))
    assert sum(len(h.cids) for h in wide) > sum(len(h.cids) for h in narrow)
    for hint in narrow:  # each hint begins with what the walk needs next
        assert len(hint.cids) > 1


def test_a_walk_of_leaves_lists_them_without_reading_them(two_levels) -> None:
    store, root, data = two_levels
    needed, _, content, spans = drive(store, FileWalk(root, leaves=True))
    assert content == b""
    assert {span.cid for span in spans}.isdisjoint(needed)
    assert sum(span.size for span in spans) == len(data)
    assert spans == list(files.file_leaves(store, root))


def test_a_path_cache_carries_blocks_from_one_walk_to_the_next(two_levels) -> None:
    store, root, data = two_levels
    path = PathCache()
    first, _, _, _ = drive(store, FileWalk(root, 1000, 10, path=path))
    again, _, content, _ = drive(store, FileWalk(root, 1010, 10, path=path))
    assert first and again == [] and content == data[1010:1020]


def test_misuse_is_refused() -> None:
    store = MemoryBlockStore()
    root = files.add_bytes(store, b"one block").cid
    walk = FileWalk(root)
    with pytest.raises(RuntimeError):
        walk.feed(b"not asked for")
    assert walk.next_event() == NeedBlock(root)
    with pytest.raises(RuntimeError):
        walk.next_event()  # the block first
    with pytest.raises(ValueError):
        FileWalk(root, -1)


def test_the_library_tells_a_store_that_prefetches_each_block_before_asking_for_it() -> None:
    class Prefetching(MemoryBlockStore):
        def __init__(self) -> None:
            super().__init__()
            self.told: set[CID] = set()
            self.batches: list[int] = []
            self.asked_untold: list[CID] = []

        def prefetch(self, cids) -> None:
            cids = list(cids)
            self.batches.append(len(cids))
            self.told.update(cids)

        def get(self, cid: CID) -> bytes:
            if cid.codec == RAW and cid not in self.told:
                self.asked_untold.append(cid)
            return super().get(cid)

    store = Prefetching()
    data = pseudo_random(3_000_000, "prefetched")
    root = files.add_bytes(store, data, fanout=200).cid
    assert files.read_range(store, root, 0, len(data)) == data
    assert store.asked_untold == []  # every leaf was hinted before it was read
    assert store.batches and max(store.batches) <= files._ReadAheadWindow.WINDOW
