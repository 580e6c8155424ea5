"""Files: what goes in comes out, a range costs O(depth) blocks, bad trees fail loudly."""

from __future__ import annotations

import io
import os
import random
import tracemalloc
from collections.abc import Iterator

import blake3
import pytest
import trio

from cas import api, files
from cas.blocks import AsyncStoreAdapter, Block, verified
from cas.chunker import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_bytes
from cas.cid import CID, DAG_CBOR, DAG_PB, RAW
from cas.dagpb import (
    TYPE_DIRECTORY,
    TYPE_FILE,
    PBLink,
    PBNode,
    UnixFSData,
    decode_node,
    decode_unixfs,
    encode_node,
    encode_unixfs,
)
from cas.errors import BlockNotFoundError, InvalidBlockError, InvalidInputError, NotAFileError
from cas.files import FileBuilder
from tests.formatsdoc import vectors


def xof(seed: str, length: int, offset: int = 0) -> bytes:
    """Reproducible incompressible bytes (the docs' ``blake3-xof`` generator)."""
    return blake3.blake3(seed.encode()).digest(length=length, seek=offset)


class RecordingStore:
    """A BlockStore that counts gets and logs puts and barriers, in order.

    Written here rather than reusing MemoryBlockStore so that tests can also
    overwrite a block's bytes behind the store's back (a corrupt disk).
    """

    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}
        self.gets: list[CID] = []
        self.events: list[tuple[str, CID | None]] = []

    def has(self, cid: CID) -> bool:
        return cid in self.blocks

    def get(self, cid: CID) -> bytes:
        self.gets.append(cid)
        if cid not in self.blocks:
            raise BlockNotFoundError(cid, "the test store")
        return verified(cid, self.blocks[cid])

    def put(self, block: Block) -> bool:
        self.events.append(("put", block.cid))
        new = block.cid not in self.blocks
        self.blocks[block.cid] = block.data
        return new

    def delete(self, cid: CID) -> bool:
        return self.blocks.pop(cid, None) is not None

    def iterate(self) -> Iterator[CID]:
        return iter(list(self.blocks))

    def barrier(self) -> None:
        self.events.append(("barrier", None))

    def put_raw(self, codec: int, data: bytes) -> CID:
        """Store arbitrary (possibly malicious) bytes under their true CID."""
        block = Block.of(codec, data)
        self.blocks[block.cid] = block.data
        return block.cid


def build(store: RecordingStore, chunks: list[bytes], fanout: int) -> tuple[CID, int]:
    """Drive FileBuilder with hand-made chunks (tiny ones make deep trees cheap)."""
    builder = FileBuilder(fanout=fanout)
    for chunk in chunks:
        for block in builder.push(chunk):
            store.put(block)
    blocks, root, size = builder.finish()
    for block in blocks:
        store.put(block)
    return root, size


def leaf_depths(store: RecordingStore, cid: CID, depth: int = 0) -> list[int]:
    if cid.codec == RAW:
        return [depth]
    node = decode_node(store.blocks[cid])
    return [d for link in node.links for d in leaf_depths(store, link.hash, depth + 1)]


def interior_nodes(store: RecordingStore, root: CID) -> list[CID]:
    if root.codec == RAW:
        return []
    node = decode_node(store.blocks[root])
    return [root] + [c for link in node.links for c in interior_nodes(store, link.hash)]


def small_chunks(seed: str, count: int, size: int = 100) -> list[bytes]:
    data = xof(seed, count * size)
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"x",
        xof("one chunk", MIN_CHUNK_SIZE),
        bytes(MAX_CHUNK_SIZE),  # exactly one maximum chunk
        bytes(2 * MAX_CHUNK_SIZE),  # exactly two chunks: the boundary
        bytes(2 * MAX_CHUNK_SIZE + 1),  # one byte past it
        xof("several chunks", 3_000_000),
    ],
    ids=["empty", "1-byte", "min-chunk", "max-chunk", "two-max-chunks", "boundary+1", "3MB"],
)
def test_added_bytes_read_back_identically(data: bytes) -> None:
    store = RecordingStore()
    result = files.add_stream(store, io.BytesIO(data))
    assert result.size == len(data)
    assert files.add_bytes(RecordingStore(), data).cid == result.cid
    assert files.file_size(store, result.cid) == len(data)
    assert files.read_range(store, result.cid, 0, len(data) + 10) == data
    assert b"".join(files.iter_file(store, result.cid)) == data
    with files.open_file(store, result.cid) as f:
        assert f.size == len(data)
        assert f.read() == data


def test_empty_file_is_the_empty_raw_block() -> None:
    store = RecordingStore()
    result = files.add_bytes(store, b"")
    assert result.cid == CID.for_data(RAW, b"")
    assert (result.blocks, result.new_blocks, result.new_bytes) == (1, 1, 0)


@pytest.mark.parametrize("data", [b"x", bytes(MAX_CHUNK_SIZE)], ids=["1-byte", "1-MiB"])
def test_a_file_of_one_chunk_is_a_single_raw_block(data: bytes) -> None:
    store = RecordingStore()
    result = files.add_bytes(store, data)
    assert result.cid == CID.for_data(RAW, data)
    assert list(store.blocks) == [result.cid]


def test_two_chunks_make_one_interior_node_with_sizes_and_tsizes() -> None:
    store = RecordingStore()
    data = bytes(MAX_CHUNK_SIZE) + b"tail"
    result = files.add_bytes(store, data)
    assert result.cid.codec == DAG_PB
    node = decode_node(store.blocks[result.cid])
    unixfs = decode_unixfs(node.data)
    assert unixfs == UnixFSData(TYPE_FILE, filesize=len(data), blocksizes=(MAX_CHUNK_SIZE, 4))
    assert node.links == (
        PBLink(CID.for_data(RAW, bytes(MAX_CHUNK_SIZE)), "", MAX_CHUNK_SIZE),
        PBLink(CID.for_data(RAW, b"tail"), "", 4),
    )


@pytest.mark.parametrize("vector", vectors("files"), ids=lambda v: f"{v['length']}-fanout{v['fanout']}")
def test_file_cids_match_published_vectors(vector: dict) -> None:
    if vector["generator"] == "zeros":
        data = bytes(vector["length"])
    else:
        data = xof(vector["seed"], vector["length"])
    store = RecordingStore()
    result = files.add_bytes(store, data, fanout=vector["fanout"])
    assert str(result.cid) == vector["cid"]
    assert len(store.blocks) == vector["blocks"]


# -- tree shape ----------------------------------------------------------------


def test_default_fanout_is_1024() -> None:
    assert files.MAX_FANOUT == 1024
    store = RecordingStore()
    root, _ = build(store, small_chunks("fanout", 1025, size=1), files.MAX_FANOUT)
    assert [len(decode_node(store.blocks[c]).links) for c in interior_nodes(store, root)] == [
        2, 1024, 1
    ]


@pytest.mark.parametrize("leaves, fanout, depth", [
    (2, 3, 1), (3, 3, 1), (4, 3, 2), (9, 3, 2), (10, 3, 3), (27, 3, 3), (28, 3, 4), (50, 2, 6),
])
def test_trees_are_balanced_and_as_shallow_as_the_fanout_allows(leaves, fanout, depth) -> None:
    store = RecordingStore()
    chunks = small_chunks(f"shape {leaves}", leaves)
    root, size = build(store, chunks, fanout)
    assert size == 100 * leaves
    assert leaf_depths(store, root) == [depth] * leaves
    for cid in interior_nodes(store, root):
        assert 1 <= len(decode_node(store.blocks[cid]).links) <= fanout
    assert files.read_range(store, root, 0, size) == b"".join(chunks)


def test_sizes_and_tsizes_describe_each_subtree() -> None:
    store = RecordingStore()
    root, size = build(store, small_chunks("tsize", 20), fanout=3)

    def check(cid: CID) -> tuple[int, int]:  # (file bytes, encoded bytes) below cid
        data = store.blocks[cid]
        if cid.codec == RAW:
            return len(data), len(data)
        node = decode_node(data)
        unixfs = decode_unixfs(node.data)
        below = [check(link.hash) for link in node.links]
        assert list(unixfs.blocksizes) == [b for b, _ in below]
        assert [link.tsize for link in node.links] == [t for _, t in below]
        assert all(link.name == "" for link in node.links)
        assert unixfs.filesize == sum(unixfs.blocksizes)
        return unixfs.filesize, len(data) + sum(t for _, t in below)

    assert check(root)[0] == size


def test_builder_returns_children_before_the_nodes_that_link_them() -> None:
    store = RecordingStore()
    build(store, small_chunks("order", 30), fanout=2)
    seen: set[CID] = set()
    for _, cid in store.events:
        if cid.codec == DAG_PB:
            assert {link.hash for link in decode_node(store.blocks[cid]).links} <= seen
        seen.add(cid)


def test_a_copy_of_a_builder_finishes_the_file_so_far_and_leaves_the_original_going_on() -> None:
    chunks = [bytes([i]) * (i + 1) for i in range(40)]  # fan-out 3: a deep tree, levels in every state
    store = RecordingStore()
    builder = FileBuilder(fanout=3)
    for at, chunk in enumerate(chunks):
        if at in (1, 9, 27, 31):
            twin = builder.copy()
            blocks, root, size = twin.finish()
            for block in blocks:
                store.put(block)
            assert (root, size) == build(RecordingStore(), chunks[:at], 3)
        for block in builder.push(chunk):
            store.put(block)
    blocks, root, size = builder.finish()
    assert (root, size) == build(RecordingStore(), chunks, 3)
    with pytest.raises(RuntimeError):
        builder.copy()


def test_builder_refuses_empty_chunks_and_use_after_finish() -> None:
    builder = FileBuilder()
    with pytest.raises(ValueError):
        builder.push(b"")
    builder.push(b"a")
    builder.finish()
    with pytest.raises(RuntimeError):
        builder.push(b"b")
    with pytest.raises(ValueError):
        FileBuilder(fanout=1)
    with pytest.raises(ValueError):
        FileBuilder(fanout=1025)


# -- the add driver ------------------------------------------------------------


def test_every_interior_node_is_put_after_all_of_its_children() -> None:
    # Children first is the writer's half of the ordering rule; the store
    # makes them durable before the parent (tests/test_store.py).
    store = RecordingStore()
    result = files.add_bytes(store, xof("children first", 6_000_000), fanout=2)
    assert result.cid.codec == DAG_PB
    put_at: dict[CID, int] = {}
    nodes = 0
    for index, (kind, cid) in enumerate(store.events):
        if kind != "put":
            continue
        if cid.codec == DAG_PB:
            nodes += 1
            children = [link.hash for link in decode_node(store.blocks[cid]).links]
            assert all(put_at[child] < index for child in children)
        put_at.setdefault(cid, index)
    assert nodes >= 10


def test_progress_reports_deltas_that_add_up_to_the_size() -> None:
    deltas: list[int] = []
    data = xof("progress", 2_500_000)
    result = files.add_stream(RecordingStore(), io.BytesIO(data), progress=deltas.append)
    assert sum(deltas) == len(data) == result.size
    assert len(deltas) > 1 and all(d > 0 for d in deltas)


def test_adding_the_same_file_twice_stores_nothing_new() -> None:
    store = RecordingStore()
    data = xof("twice", 3_000_000)
    first = files.add_bytes(store, data)
    assert first.new_blocks == first.blocks == len(store.blocks)
    assert first.new_bytes == sum(len(b) for b in store.blocks.values())
    second = files.add_bytes(store, data)
    assert (second.cid, second.new_blocks, second.new_bytes) == (first.cid, 0, 0)


@pytest.mark.parametrize("step_bytes", [1, 300_000, 10 << 20])
def test_an_add_in_steps_stores_the_same_file_whatever_the_step(step_bytes: int) -> None:
    data = xof("steps", 3_000_000)
    store = RecordingStore()
    add = files.FileAdd(store, chunk_bytes(data))
    steps = []
    while add.result is None:
        steps.append(add.step(step_bytes))
    assert add.result == files.add_bytes(RecordingStore(), data)
    assert sum(read for _, read in steps) == len(data)
    assert [b.cid for blocks, _ in steps for b in blocks] == [cid for _, cid in store.events]
    assert steps[-1][0][-1].cid == add.result.cid  # the root comes last
    with pytest.raises(RuntimeError):
        add.step(1)


class FileAddingStore(RecordingStore):
    """A store that adds regular files itself, as a daemon's client does."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[tuple[int, int]] = []

    def add_file(self, fd: int, offset: int, progress) -> files.AddResult:
        self.handed.append((fd, offset))
        data = os.pread(fd, 1 << 30, offset)
        if progress is not None:
            progress(len(data))
        return files.add_bytes(self, data)


def test_a_regular_file_is_handed_whole_to_a_store_that_adds_files(tmp_path) -> None:
    data = xof("handed over", 1_500_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    store = FileAddingStore()
    with open(path, "rb") as f:
        f.read(1000)  # a buffered stream already part-read: its logical position counts
        deltas: list[int] = []
        result = api.add_file_to(store, f, deltas.append)
        assert store.handed == [(f.fileno(), 1000)]
        assert f.tell() == len(data) and f.read() == b""
    assert result == files.add_bytes(RecordingStore(), data[1000:])
    assert sum(deltas) == len(data) - 1000


def test_streams_that_are_not_regular_files_are_chunked_here() -> None:
    store = FileAddingStore()
    api.add_file_to(store, io.BytesIO(b"in memory"))
    read_end, write_end = os.pipe()
    with open(read_end, "rb") as pipe:
        os.write(write_end, b"through a pipe")
        os.close(write_end)
        result = api.add_file_to(store, pipe)
    assert store.handed == []
    assert result.size == len(b"through a pipe")


class XofStream(io.RawIOBase):
    """``length`` generated bytes, produced as they are read (never all in RAM)."""

    def __init__(self, seed: str, length: int) -> None:
        self._hasher = blake3.blake3(seed.encode())
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self._length - self._pos, 1 << 20)
        buffer[:n] = self._hasher.digest(length=n, seek=self._pos)
        self._pos += n
        return n


class CountingOnlyStore(RecordingStore):
    """Keeps CIDs, drops bytes: lets a test measure the adder's own memory."""

    def put(self, block: Block) -> bool:
        self.events.append(("put", block.cid))
        new = block.cid not in self.blocks
        self.blocks[block.cid] = b""
        return new


def test_adding_a_stream_keeps_memory_bounded() -> None:
    store = CountingOnlyStore()
    tracemalloc.start()
    try:
        result = files.add_stream(store, XofStream("memory", 48 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == 48 << 20
    # chunker buffer (2 MiB) + a chunk + a read: far below the 48 MiB input
    assert peak < 8 << 20


# -- reading ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def deep_file() -> tuple[RecordingStore, CID, bytes]:
    """A 4-level file of 3 MB with real chunk sizes (fan-out 2)."""
    store = RecordingStore()
    data = xof("deep", 3_000_000)
    result = files.add_bytes(store, data, fanout=2)
    assert set(leaf_depths(store, result.cid)) == {4}
    return store, result.cid, data


def test_range_reads_at_random_offsets_equal_slices(deep_file) -> None:
    store, cid, data = deep_file
    rng = random.Random(7)
    for _ in range(200):
        offset = rng.randrange(0, len(data) + 100)
        length = rng.choice([0, 1, 17, 4096, rng.randrange(0, 1_500_000)])
        assert files.read_range(store, cid, offset, length) == data[offset : offset + length]
        assert b"".join(files.iter_file(store, cid, offset, length)) == data[offset : offset + length]


def test_iter_file_streams_leaf_sized_pieces(deep_file) -> None:
    store, cid, data = deep_file
    pieces = list(files.iter_file(store, cid, 10))
    assert b"".join(pieces) == data[10:]
    assert len(pieces) > 5 and max(len(p) for p in pieces) <= MAX_CHUNK_SIZE


@pytest.mark.parametrize("offset", [0, 1, 999_999, 1_500_000, 2_999_999])
def test_a_one_byte_read_fetches_one_block_per_level(deep_file, offset: int) -> None:
    store, cid, data = deep_file
    store.gets.clear()
    assert files.read_range(store, cid, offset, 1) == data[offset : offset + 1]
    depth = 4
    assert len(store.gets) <= depth + 1
    assert sum(1 for c in store.gets if c.codec == RAW) == 1


def test_a_range_read_fetches_only_the_overlapping_leaves(deep_file) -> None:
    store, cid, data = deep_file
    store.gets.clear()
    files.read_range(store, cid, 1_000_000, 700_000)
    leaves = [c for c in store.gets if c.codec == RAW]
    assert 2 <= len(leaves) <= 1 + 700_000 // MIN_CHUNK_SIZE + 1
    assert len(leaves) == len(set(leaves))


def test_reader_seeks_reads_and_reads_into(deep_file) -> None:
    store, cid, data = deep_file
    f = files.open_file(store, cid)
    assert f.readable() and f.seekable() and f.size == len(data)
    assert f.seek(123_456) == 123_456
    assert f.read(10) == data[123_456:123_466]
    assert f.tell() == 123_466
    buffer = bytearray(5000)
    assert f.readinto(buffer) == 5000 and bytes(buffer) == data[123_466:128_466]
    assert f.seek(-3, io.SEEK_END) == len(data) - 3
    assert f.read() == data[-3:]
    assert f.read(10) == b""
    assert f.seek(10, io.SEEK_CUR) == len(data) + 10 and f.read(1) == b""
    with pytest.raises(ValueError):
        f.seek(-1)
    f.close()
    with pytest.raises(ValueError):
        f.read(1)


def test_reader_works_under_a_buffered_text_stack(deep_file) -> None:
    store, cid, data = deep_file
    assert io.BufferedReader(files.open_file(store, cid)).read(300_000) == data[:300_000]


def test_sequential_small_reads_fetch_each_block_once(deep_file) -> None:
    store, cid, data = deep_file
    f = files.open_file(store, cid)
    store.gets.clear()
    out = bytearray()
    while piece := f.read(4096):
        out += piece
    assert out == data
    assert len(store.gets) == len(set(store.gets)) == len(store.blocks) - 1  # root fetched at open


def test_file_leaves_lists_the_leaves_of_a_range_without_fetching_them(deep_file) -> None:
    store, cid, data = deep_file
    everything = list(files.file_leaves(store, cid))
    assert everything[0].offset == 0
    for before, after in zip(everything, everything[1:]):
        assert after.offset == before.offset + before.size
    assert everything[-1].offset + everything[-1].size == len(data)
    for span in everything[:5]:
        assert store.blocks[span.cid] == data[span.offset : span.offset + span.size]
    store.gets.clear()
    some = list(files.file_leaves(store, cid, 1_000_000, 700_000))
    assert not any(c.codec == RAW for c in store.gets)
    assert some[0].offset <= 1_000_000 < some[0].offset + some[0].size
    assert some[-1].offset < 1_700_000 <= some[-1].offset + some[-1].size
    assert some == [s for s in everything if s.offset < 1_700_000 and s.offset + s.size > 1_000_000]
    assert list(files.file_leaves(store, cid, len(data), 10)) == []


def test_file_leaves_of_a_one_block_file_is_its_root() -> None:
    store = RecordingStore()
    result = files.add_bytes(store, b"tiny")
    assert list(files.file_leaves(store, result.cid)) == [files.LeafSpan(result.cid, 0, 4)]


def test_readers_sharing_a_node_cache_decode_each_node_once(deep_file) -> None:
    store, cid, data = deep_file
    nodes = files.NodeCache()
    rng = random.Random(5)
    offsets = [rng.randrange(0, len(data)) for _ in range(50)]
    first = files.FileReader(store, cid, nodes=nodes)
    for offset in offsets:
        first.seek(offset)
        assert first.read(100) == data[offset : offset + 100]
    store.gets.clear()
    second = files.FileReader(store, cid, nodes=nodes)
    for offset in offsets:
        second.seek(offset)
        assert second.read(100) == data[offset : offset + 100]
    assert [c for c in store.gets if c.codec != RAW] == []


def test_node_cache_is_bounded_by_links() -> None:
    store = RecordingStore()
    root, _ = build(store, small_chunks("many", 64), fanout=4)
    nodes = files.NodeCache(max_links=12)
    reader = files.FileReader(store, root, nodes=nodes)
    assert reader.read() == b"".join(small_chunks("many", 64))
    assert nodes._links <= 12


def test_negative_ranges_are_refused(deep_file) -> None:
    store, cid, _ = deep_file
    with pytest.raises(InvalidInputError):
        files.read_range(store, cid, -1, 5)
    with pytest.raises(InvalidInputError):
        files.iter_file(store, cid, 0, -5)


def test_async_twins_read_the_same_bytes(deep_file) -> None:
    store, cid, data = deep_file
    astore = AsyncStoreAdapter(store)

    async def main() -> None:
        assert await files.afile_size(astore, cid) == len(data)
        assert await files.aread_range(astore, cid, 777_777, 333_333) == data[777_777:1_111_110]
        pieces = [p async for p in files.aiter_file(astore, cid, 5)]
        assert b"".join(pieces) == data[5:]

    trio.run(main)


# -- dedup -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_input() -> tuple[RecordingStore, set[CID], bytes]:
    data = xof("dedup", 64 << 20)
    store = RecordingStore()
    files.add_bytes(store, data)
    return store, set(store.blocks), data


def new_leaves(store: RecordingStore, before: set[CID], data: bytes) -> tuple[int, int]:
    """(new raw leaves, total leaves) when adding ``data`` on top of ``before``."""
    scratch = RecordingStore()
    scratch.blocks = {cid: store.blocks[cid] for cid in before}
    files.add_bytes(scratch, data)
    added = set(scratch.blocks) - before
    leaves = sum(1 for kind, cid in scratch.events if kind == "put" and cid.codec == RAW)
    return sum(1 for cid in added if cid.codec == RAW), leaves


def test_changing_one_byte_in_64_mib_adds_at_most_three_leaves(big_input) -> None:
    store, before, data = big_input
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0xFF
    new, total = new_leaves(store, before, bytes(changed))
    assert total > 200
    assert 1 <= new <= 3


def test_inserting_100_bytes_at_the_start_reuses_all_but_the_first_leaf(big_input) -> None:
    store, before, data = big_input
    new, total = new_leaves(store, before, b"\x00" * 100 + data)
    # The cut after the first chunk realigns: 214 of the 215 leaves are reused.
    assert (new, total) == (1, 215)


# -- untrusted trees -----------------------------------------------------------------


def file_node(children: list[tuple[CID, int]], *, filesize: int | None = None,
              blocksizes: tuple[int, ...] | None = None, kind: int = TYPE_FILE) -> bytes:
    sizes = tuple(s for _, s in children) if blocksizes is None else blocksizes
    unixfs = UnixFSData(kind, filesize=sum(sizes) if filesize is None else filesize,
                        blocksizes=sizes)
    return encode_node(PBNode(tuple(PBLink(c, "", s) for c, s in children), encode_unixfs(unixfs)))


def test_a_corrupt_block_on_disk_raises_naming_its_cid(deep_file) -> None:
    store, cid, data = deep_file
    victim = next(c for c in store.blocks if c.codec == RAW)
    original = store.blocks[victim]
    store.blocks[victim] = b"X" + original[1:]
    try:
        with pytest.raises(InvalidBlockError, match=str(victim)):
            b"".join(files.iter_file(store, cid))
    finally:
        store.blocks[victim] = original


@pytest.mark.parametrize("lie", [
    "links-vs-blocksizes", "filesize-vs-blocksizes", "leaf-shorter-than-claimed",
    "dag-cbor-child", "directory-inside-file", "no-filesize", "not-unixfs",
])
def test_lying_nodes_raise_invalid_block_naming_the_culprit(lie: str) -> None:
    store = RecordingStore()
    a = store.put_raw(RAW, b"a" * 10)
    b = store.put_raw(RAW, b"b" * 20)
    culprit = None  # the block the error must name; the root unless set
    if lie == "links-vs-blocksizes":
        data = file_node([(a, 10), (b, 20)], blocksizes=(10,), filesize=10)
    elif lie == "filesize-vs-blocksizes":
        data = file_node([(a, 10), (b, 20)], filesize=31)
    elif lie == "leaf-shorter-than-claimed":
        data = file_node([(a, 11), (b, 20)])
        culprit = a
    elif lie == "dag-cbor-child":
        data = file_node([(a, 10), (CID.for_data(DAG_CBOR, b"\xa0"), 1)])
    elif lie == "directory-inside-file":
        culprit = store.put_raw(DAG_PB, file_node([(a, 10)], kind=TYPE_DIRECTORY))
        data = file_node([(a, 10), (culprit, 10)])
    elif lie == "no-filesize":
        data = encode_node(PBNode((PBLink(a, "", 10),),
                                  encode_unixfs(UnixFSData(TYPE_FILE, blocksizes=(10,)))))
    else:
        data = encode_node(PBNode((PBLink(a, "", 10),), b"\x0a\x00\xff"))
    root = store.put_raw(DAG_PB, data)
    with pytest.raises(InvalidBlockError, match=str(culprit or root)):
        files.read_range(store, root, 0, 100)


def test_a_leaf_of_the_wrong_length_is_named_with_its_parent() -> None:
    store = RecordingStore()
    a = store.put_raw(RAW, b"a" * 10)
    root = store.put_raw(DAG_PB, file_node([(a, 12)]))
    with pytest.raises(InvalidBlockError, match=f"leaf {a} holds 10 bytes but its parent {root} claims 12"):
        files.read_range(store, root, 0, 12)


def test_trees_deeper_than_the_limit_are_refused() -> None:
    store = RecordingStore()
    cid = store.put_raw(RAW, b"deep")
    for _ in range(files.MAX_DEPTH + 2):
        cid = store.put_raw(DAG_PB, file_node([(cid, 4)]))
    with pytest.raises(InvalidBlockError, match="deeper than 10 levels"):
        files.read_range(store, cid, 0, 4)


def test_a_tree_at_the_depth_limit_is_read() -> None:
    store = RecordingStore()
    cid = store.put_raw(RAW, b"deep")
    for _ in range(files.MAX_DEPTH + 1):
        cid = store.put_raw(DAG_PB, file_node([(cid, 4)]))
    assert files.read_range(store, cid, 0, 4) == b"deep"


def test_a_dag_cbor_cid_is_not_a_file() -> None:
    store = RecordingStore()
    record = store.put_raw(DAG_CBOR, b"\xa0")
    with pytest.raises(NotAFileError, match="is a directory/record"):
        files.open_file(store, record)
    with pytest.raises(NotAFileError):
        files.read_range(store, record, 0, 1)
    with pytest.raises(NotAFileError):
        files.file_size(store, record)


def test_a_unixfs_directory_root_is_not_a_file() -> None:
    store = RecordingStore()
    directory = store.put_raw(DAG_PB, encode_node(PBNode((), encode_unixfs(UnixFSData(TYPE_DIRECTORY)))))
    with pytest.raises(NotAFileError, match="directory, not a file"):
        files.file_size(store, directory)


def test_inline_unixfs_data_written_by_other_importers_is_read() -> None:
    store = RecordingStore()
    tail = store.put_raw(RAW, b"world")
    node = PBNode((PBLink(tail, "", 5),), encode_unixfs(
        UnixFSData(TYPE_FILE, data=b"hello ", filesize=11, blocksizes=(5,))))
    root = store.put_raw(DAG_PB, encode_node(node))
    assert files.read_range(store, root, 0, 11) == b"hello world"
    assert files.read_range(store, root, 4, 4) == b"o wo"
    assert files.read_range(store, root, 7, 10) == b"orld"


def test_a_missing_block_surfaces_as_block_not_found(deep_file) -> None:
    store, cid, data = deep_file
    victim = next(c for c in store.blocks if c.codec == RAW)
    original = store.blocks.pop(victim)
    try:
        with pytest.raises(BlockNotFoundError):
            files.read_range(store, cid, 0, len(data))
    finally:
        store.blocks[victim] = original


# -- reading from the local repository (index look-ups in batches) ------------------------


@pytest.fixture(scope="module")
def repo_file(tmp_path_factory):
    """A 3-level file of ~5 MB (fan-out 4) in a real repository, whose store
    looks leaves up in batches; and a file whose leaves repeat."""
    from cas.store import LocalStore

    with LocalStore.open(tmp_path_factory.mktemp("batches") / "repo") as store:
        data = xof("batches", 5_000_000)
        cid = files.add_bytes(store.blocks, data, fanout=4).cid
        # Zeros chunk into identical 1 MiB leaves: the walker asks for a
        # repeated leaf once (it keeps the last one), not once per link.
        repeats = bytes(3 << 20) + xof("between", 700_000) + bytes(4 << 20)
        repeats_cid = files.add_bytes(store.blocks, repeats, fanout=4).cid
        store.blocks.barrier()
        yield store, cid, data, repeats_cid, repeats


def test_reading_from_the_repository_gives_the_same_bytes_for_any_range(repo_file, monkeypatch) -> None:
    store, cid, data, repeats_cid, repeats = repo_file
    rng = random.Random(5)
    for _ in range(30):
        offset = rng.randrange(0, len(data) + 100)
        length = rng.choice([None, 0, 1, 300_000, rng.randrange(0, len(data))])
        end = None if length is None else offset + length
        assert b"".join(files.iter_file(store.blocks, cid, offset, length)) == data[offset:end]
    assert b"".join(files.iter_file(store.blocks, repeats_cid)) == repeats
    assert b"".join(files.iter_file(store.blocks, repeats_cid, 5 << 20)) == repeats[5 << 20 :]
    # Batches smaller than the runs of repeated leaves: still every leaf from a batch.
    monkeypatch.setattr(files._LeafLookups, "BATCH", 2)
    asked: list[CID] = []
    monkeypatch.setattr(store.blocks, "get", lambda c, get=store.blocks.get: asked.append(c) or get(c))
    assert b"".join(files.iter_file(store.blocks, repeats_cid)) == repeats
    assert all(c.codec != RAW or store.blocks.locate(c) is None for c in asked)  # none in a pack


def test_a_corrupt_leaf_fails_after_every_byte_before_it_and_none_after(repo_file) -> None:
    store, cid, data, *_ = repo_file
    spans = list(files.file_leaves(store.blocks, cid))
    victim = spans[len(spans) // 2]
    where = store.blocks.locate(victim.cid)

    def flip() -> None:
        with open(where.path, "r+b") as f:
            f.seek(where.start + 5)
            byte = f.read(1)[0]
            f.seek(where.start + 5)
            f.write(bytes([byte ^ 1]))

    flip()
    try:
        got = bytearray()
        with pytest.raises(InvalidBlockError, match=str(victim.cid)):
            for piece in files.iter_file(store.blocks, cid):
                got += piece
        assert bytes(got) == data[: victim.offset]
    finally:
        flip()
