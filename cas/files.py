"""Files: a balanced Merkle tree of UnixFS dag-pb nodes over raw chunks.

This module owns the shape of a file in cas (docs/formats.md, "File DAG"),
building it and reading it back:

* **Leaves** are the chunks of :mod:`cas.chunker`, stored as raw blocks
  (codec 0x55), so the same bytes give the same leaf CIDs as any IPFS
  importer that uses raw leaves and BLAKE3.
* **Interior nodes** are UnixFS ``File`` nodes in dag-pb (codec 0x70): one
  link per child in order (``Name`` empty, ``Tsize`` the encoded size of
  the child's whole subtree), each child's byte count in ``blocksizes``,
  the node's byte count in ``filesize``, no inline data.
* **Balanced**: every leaf is at the same depth; a node has at most
  ``MAX_FANOUT`` (1024) children, which keeps it far below the 1 MiB block
  limit (about 48 KiB). A file of at most one chunk is that one raw block;
  the empty file is the empty raw block.

Building is sans-IO: :class:`FileBuilder` takes chunks and hands back the
blocks to store, bottom-up, so a parent always comes after its children and
memory holds one pending list of links per level (O(depth x fan-out)),
never the file. :func:`add_stream` drives it over a :class:`BlockStore`,
putting every block after the blocks it links to; the store keeps the
ordering rule of DESIGN.md from there (their bytes durable before the
node's). Whoever then references the root from outside the store, a pin or
a namespace root, calls ``barrier()`` first.

Reading is the walk of :mod:`cas.reader` (:class:`~cas.reader.FileWalk`,
sans-IO: it says which block it needs next and what it will need after,
and is fed verified bytes); this module holds its two drivers for the
library, one over a :class:`~cas.blocks.BlockSource` (sync: ``iter_file``,
``read_range``, ``write_file``, :class:`FileReader`, ``file_leaves``) and
one over an ``AsyncBlockStore`` (trio). The sync driver executes the walk's
read-ahead hint as the store can: index look-ups in a batch for a store
that :class:`~cas.blocks.LooksUpInBatches`, ``prefetch`` for one that
:class:`~cas.blocks.Prefetches`.

This module never chunks by itself (that is :mod:`cas.chunker`), never
encodes protobuf by hand (:mod:`cas.dagpb`), never knows about names or
directories, and never decides to hand a file to a daemon (that is the
library's choice, :mod:`cas.api`).
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import BinaryIO, NamedTuple, Protocol, cast

from .blocks import (
    AsyncBlockStore,
    Block,
    BlockSource,
    BlockStore,
    LooksUpInBatches,
    Prefetches,
)
from .chunker import Readable, chunk_bytes, chunk_stream
from .cid import CID, DAG_PB, MAX_BLOCK_SIZE, RAW
from .dagpb import TYPE_FILE, PBLink, PBNode, UnixFSData, encode_node, encode_unixfs
from .errors import InvalidInputError
from .reader import (
    MAX_DEPTH,
    READ_AHEAD_BLOCKS,
    FileWalk,
    LeafSpan,
    NeedBlock,
    NodeCache,
    PathCache,
    ReadAhead,
    WalkDone,
)

__all__ = ["MAX_DEPTH", "LeafSpan", "NodeCache", "ReadAhead"]  # the reader's, re-exported: cas.reader

MAX_FANOUT = 1024
"""Links per interior node (DESIGN.md: at most 1024, node at most 1 MiB).
kubo uses 174; more links per node means fewer levels, and with ~315 KiB
leaves two levels already cover 330 GB (1024**2 leaves)."""

LINK_NAME = ""
"""Every file link carries an empty Name, as kubo and helia write it, so a
node's bytes are the ones an IPFS importer makes for the same children."""


# -- building ---------------------------------------------------------------


class _Child(NamedTuple):
    """A finished subtree, waiting for its parent."""

    cid: CID
    size: int  # bytes of file content below it
    tsize: int  # encoded bytes of every block below it, itself included


class FileBuilder:
    """Sans-IO builder of one file's DAG from its chunks, in order.

    ``push`` each chunk and store the blocks it returns, in the order
    returned; then ``finish`` for the last blocks, the root CID and the file
    size. Interior (dag-pb) blocks in those lists only ever refer to blocks
    returned earlier.

    ``fanout`` exists so tests can build deep trees from little data; any
    value but the default gives CIDs no other cas node produces.
    """

    def __init__(self, *, fanout: int = MAX_FANOUT) -> None:
        if not 2 <= fanout <= MAX_FANOUT:
            raise ValueError(f"fanout must be between 2 and {MAX_FANOUT}")
        self._fanout = fanout
        # _levels[0] holds leaves waiting for a parent, _levels[1] nodes of
        # leaves, and so on. A level is sealed into a node the moment it is
        # full, so each list stays shorter than the fan-out.
        self._levels: list[list[_Child]] = [[]]
        self._size = 0
        self._finished = False

    def push(self, chunk: bytes) -> list[Block]:
        """Add the next chunk; return the blocks to store now."""
        if self._finished:
            raise RuntimeError("FileBuilder.push after finish")
        if not chunk:
            raise ValueError("a chunk must not be empty")
        if len(chunk) > MAX_BLOCK_SIZE:
            raise ValueError(f"a chunk must be at most {MAX_BLOCK_SIZE} bytes")
        leaf = Block.of(RAW, chunk)
        self._size += len(chunk)
        out = [leaf]
        level = 0
        self._levels[0].append(_Child(leaf.cid, len(chunk), len(chunk)))
        while len(self._levels[level]) == self._fanout:
            parent = self._seal(level, out)
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(parent)
            level += 1
        return out

    def copy(self) -> FileBuilder:
        """An independent builder in this one's state: finishing the copy
        gives the file of the chunks pushed so far, and pushing on to this
        one is unaffected (a file stored at an fsync whose writing goes on)."""
        if self._finished:
            raise RuntimeError("FileBuilder.copy after finish")
        twin = FileBuilder(fanout=self._fanout)
        twin._levels = [list(level) for level in self._levels]
        twin._size = self._size
        return twin

    def finish(self) -> tuple[list[Block], CID, int]:
        """Close the tree: (remaining blocks to store, root CID, file size)."""
        if self._finished:
            raise RuntimeError("FileBuilder.finish called twice")
        self._finished = True
        if not self._levels[0] and len(self._levels) == 1:
            empty = Block.of(RAW, b"")
            return [empty], empty.cid, 0
        out: list[Block] = []
        top = len(self._levels) - 1
        # Wrap every partial level, even a single child, so that all leaves
        # end at the same depth (the balance rule).
        for level in range(top):
            if self._levels[level]:
                self._levels[level + 1].append(self._seal(level, out))
        if len(self._levels[top]) == 1:
            root = self._levels[top][0]
        else:
            root = self._seal(top, out)
        return out, root.cid, self._size

    def _seal(self, level: int, out: list[Block]) -> _Child:
        children = self._levels[level]
        self._levels[level] = []
        size = sum(child.size for child in children)
        unixfs = UnixFSData(
            TYPE_FILE, filesize=size, blocksizes=tuple(child.size for child in children)
        )
        node = PBNode(
            links=tuple(PBLink(child.cid, LINK_NAME, child.tsize) for child in children),
            data=encode_unixfs(unixfs),
        )
        encoded = encode_node(node)
        # 1024 links of ~46 bytes each: far below the block limit, which
        # Block.of would enforce anyway.
        block = Block.of(DAG_PB, encoded)
        out.append(block)
        return _Child(block.cid, size, len(encoded) + sum(child.tsize for child in children))


class AddResult(NamedTuple):
    """What adding one file did."""

    cid: CID
    size: int  # bytes of file content
    blocks: int  # blocks in the file's DAG as written (leaves + nodes)
    new_blocks: int  # of those, how many the store did not have (a daemon pipelines puts: all count)
    new_bytes: int  # their total size


class BlockSink(Protocol):
    """All an add needs of a store: ``put``, True if the block was new."""

    def put(self, block: Block, /) -> bool: ...


class FileAdd:
    """One file's add, done in steps over a :class:`BlockStore`: each
    :meth:`step` consumes chunks until it has read ``max_bytes`` of content
    and stores the blocks they complete; the step that reaches the end
    stores the interior nodes too and sets :attr:`result`. A daemon runs
    one step at a time in its store thread and places the step's blocks on
    peers in between, so the add and the placement go on side by side."""

    def __init__(self, store: BlockSink, chunks: Iterable[bytes], *, fanout: int = MAX_FANOUT) -> None:
        self._store = store
        self._chunks = iter(chunks)
        self._builder = FileBuilder(fanout=fanout)
        self._blocks = 0
        self._new_blocks = 0
        self._new_bytes = 0
        self.result: AddResult | None = None

    def step(self, max_bytes: int) -> tuple[list[Block], int]:
        """Store the next blocks; return them and the content bytes read."""
        if self.result is not None:
            raise RuntimeError("FileAdd.step after the end")
        stored: list[Block] = []
        read = 0
        for chunk in self._chunks:
            self._store_all(self._builder.push(chunk), stored)
            read += len(chunk)
            if read >= max_bytes:
                return stored, read
        blocks, root, size = self._builder.finish()
        self._store_all(blocks, stored)
        self.result = AddResult(root, size, self._blocks, self._new_blocks, self._new_bytes)
        return stored, read

    def _store_all(self, blocks: list[Block], stored: list[Block]) -> None:
        for block in blocks:
            self._blocks += 1
            if self._store.put(block):
                self._new_blocks += 1
                self._new_bytes += len(block.data)
        stored.extend(blocks)


def _add_chunks(
    store: BlockStore,
    chunks: Iterable[bytes],
    progress: Callable[[int], object] | None,
    fanout: int,
) -> AddResult:
    add = FileAdd(store, chunks, fanout=fanout)
    while add.result is None:
        _, read = add.step(1)  # one chunk a step: progress as fine as the chunks
        if progress is not None and read:
            progress(read)
    return add.result


def add_stream(
    store: BlockStore,
    stream: Readable | BinaryIO,
    *,
    progress: Callable[[int], object] | None = None,
    fanout: int = MAX_FANOUT,
) -> AddResult:
    """Chunk ``stream`` to its end and store it as a file; memory stays bounded.

    ``progress``, if given, is called with the number of bytes consumed
    since its last call. ``fanout`` is for tests only (see FileBuilder).
    (Handing a regular file to a daemon instead is the library's choice:
    :meth:`cas.api.Repository.add_stream`.)
    """
    return _add_chunks(store, chunk_stream(stream), progress, fanout)  # type: ignore[arg-type]  # a BinaryIO has readinto too


def add_bytes(store: BlockStore, data: bytes, *, fanout: int = MAX_FANOUT) -> AddResult:
    """Store ``data`` as a file; the same CID as :func:`add_stream` gives."""
    return _add_chunks(store, chunk_bytes(data), None, fanout)


# -- reading -----------------------------------------------------------------


def _check_range(offset: int, length: int | None) -> None:
    if offset < 0:
        raise InvalidInputError(f"offset must not be negative (got {offset})")
    if length is not None and length < 0:
        raise InvalidInputError(f"length must not be negative (got {length})")


# -- reading: the synchronous driver ---------------------------------------


class _ReadAheadWindow:
    """Keeps the store's read-ahead ``READ_AHEAD_BLOCKS`` blocks in front of
    the walk, for stores that :class:`~cas.blocks.Prefetches` (the local
    store: disk read-ahead)."""

    WINDOW = READ_AHEAD_BLOCKS

    def __init__(self, store: Prefetches) -> None:
        self._store = store
        self._plan: tuple[CID, ...] = ()
        self._index: dict[CID, int] = {}
        self._advised = 0

    def plan(self, hint: ReadAhead) -> None:
        self._plan = hint.cids
        self._index = {cid: i for i, cid in enumerate(hint.cids)}
        self._advised = 0
        self._advance(0)

    def fetching(self, cid: CID) -> None:
        index = self._index.get(cid)
        if index is not None:
            self._advance(index + 1)

    def _advance(self, start: int) -> None:
        upto = min(len(self._plan), start + self.WINDOW)
        if upto > self._advised:
            self._store.prefetch(self._plan[max(start, self._advised) : upto])
            self._advised = upto


class _LeafLookups:
    """The index look-ups of the leaves the walk will ask for next, a batch
    at a time, for a store that :class:`~cas.blocks.LooksUpInBatches` (the
    local repository): one index query per ``BATCH`` leaves instead of one
    per leaf (and the store hints the kernel where the leaves jump). Each
    leaf's bytes are still read and verified only when the walk asks for
    it. Measured: a warm read of 256 MiB ~10% faster (bench/README.md).
    The next batch is looked up once the walk is half-way through the
    current one, so a store that fetches what it lacks from the network
    (the node's ``write_file``) always has half a batch or more wanted
    ahead of the walk, never a drained pipe at a batch's end."""

    BATCH = READ_AHEAD_BLOCKS

    def __init__(self, store: LooksUpInBatches) -> None:
        self._fetchers = store.fetchers
        self._plan: tuple[CID, ...] = ()
        self._next = 0  # index in the plan of the next leaf to look up
        self._found: deque[tuple[CID, Callable[[], bytes | None] | None]] = deque()

    def plan(self, cids: tuple[CID, ...]) -> None:
        """The walk's next blocks, in order (a ReadAhead)."""
        self._plan, self._next = cids, 0
        self._found.clear()

    def get(self, cid: CID) -> bytes | None:
        """``cid``'s verified bytes if it was looked up as planned, else None
        (then the caller asks the store)."""
        for _ in range(2):  # among those looked up, else among the next batch
            for index, (planned, fetch) in enumerate(self._found):
                if planned == cid:
                    for _ in range(index + 1):  # it, and those before it the walk had cached
                        self._found.popleft()
                    if len(self._found) < self.BATCH // 2 and self._next < len(self._plan):
                        self._look_up_next(keep=True)
                    return None if fetch is None else fetch()
            if self._next >= len(self._plan):
                return None
            self._look_up_next(keep=False)
        return None

    def _look_up_next(self, *, keep: bool) -> None:
        batch = self._plan[self._next : self._next + self.BATCH]
        self._next += len(batch)
        if not keep:
            self._found.clear()
        self._found.extend(zip(batch, self._fetchers(batch)))


class _Driver:
    """Runs walks over one store: answers their block requests, executes
    their read-ahead hints as the store can, passes the content on. What the
    store can do is asked once, here (an ``isinstance`` on a protocol costs
    more than a 4 KiB read from the cache)."""

    def __init__(self, store: BlockSource) -> None:
        self.store = store
        self._batched = store if isinstance(store, LooksUpInBatches) else None
        # A store that looks leaves up in batches hints the kernel itself.
        self._prefetches = store if self._batched is None and isinstance(store, Prefetches) else None

    def run(self, walk: FileWalk) -> Iterator[memoryview | LeafSpan]:
        store = self.store
        lookups: _LeafLookups | None = None
        window: _ReadAheadWindow | None = None
        while True:
            event = walk.next_event()
            if isinstance(event, NeedBlock):
                cid = event.cid
                data = None
                if window is not None:
                    window.fetching(cid)
                if lookups is not None:
                    data = lookups.get(cid)
                walk.feed(data if data is not None else store.get(cid))  # the store verifies the hash
            elif isinstance(event, ReadAhead):
                if self._batched is not None:
                    lookups = lookups or _LeafLookups(self._batched)
                    lookups.plan(event.cids)
                elif self._prefetches is not None:
                    window = window or _ReadAheadWindow(self._prefetches)
                    window.plan(event)
            elif isinstance(event, WalkDone):
                return
            else:
                yield event  # a memoryview, or a LeafSpan for a walk of leaves

    def content(self, walk: FileWalk) -> Iterator[memoryview]:
        """The content pieces of a walk of bytes (not of leaves)."""
        return cast(Iterator[memoryview], self.run(walk))

    def size(self, walk: FileWalk) -> int:
        """Run a walk that reads the root only; the file's size."""
        for _ in self.run(walk):
            pass
        assert walk.size is not None
        return walk.size


def file_size(store: BlockSource, cid: CID) -> int:
    """The size in bytes of file ``cid`` (reads its root block only)."""
    return _Driver(store).size(FileWalk(cid, 0, 0))


def iter_file(
    store: BlockSource, cid: CID, offset: int = 0, length: int | None = None
) -> Iterator[bytes]:
    """Stream bytes [offset, offset + length) of file ``cid`` (to its end if
    ``length`` is None), one leaf's worth at a time; memory stays bounded."""
    _check_range(offset, length)  # here, not at the first next()
    return (_as_bytes(piece) for piece in _Driver(store).content(FileWalk(cid, offset, length)))


def file_leaves(
    store: BlockSource, cid: CID, offset: int = 0, length: int | None = None,
    *, nodes: NodeCache | None = None,
) -> Iterator[LeafSpan]:
    """The leaves holding bytes [offset, offset + length) of file ``cid``, in
    order, fetching interior nodes only (never a leaf, except the root of a
    one-block file): what a reader will need next, for read-ahead."""
    _check_range(offset, length)
    return cast(Iterator[LeafSpan], _Driver(store).run(FileWalk(cid, offset, length, path=PathCache(nodes), leaves=True)))


def _as_bytes(piece: memoryview) -> bytes:
    """The piece as bytes, without a copy when it is a whole block."""
    whole = piece.obj
    if isinstance(whole, bytes) and len(whole) == len(piece):
        return whole
    return bytes(piece)


def write_file(
    store: BlockSource, cid: CID, fd: int, offset: int = 0, length: int | None = None,
    *, stopped: Callable[[], bool] | None = None, progress: Callable[[int], object] | None = None,
) -> int:
    """Write bytes [offset, offset + length) of file ``cid`` (to its end if
    ``length`` is None) to the open descriptor ``fd``, each piece once it is
    read and verified; return how many were written. ``progress``, if
    given, is called with the bytes written since its last call. A failed
    write raises its OSError (BrokenPipeError when a pipe's reader has
    gone), after the bytes before it.

    The copy asks ``stopped`` before each piece and ends early when it says
    so. (Handing the job to a daemon instead is the library's choice:
    :meth:`cas.api.Repository.write_to`.)"""
    _check_range(offset, length)
    written = 0
    for piece in _Driver(store).content(FileWalk(cid, offset, length)):
        if stopped is not None and stopped():
            break
        view = piece
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:  # a non-blocking descriptor, full for now
                import select

                select.select([], [fd], [])
        written += len(piece)
        if progress is not None:
            progress(len(piece))
    return written


def read_range(store: BlockSource, cid: CID, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of file ``cid``; shorter past its end."""
    _check_range(offset, length)
    return b"".join(_Driver(store).content(FileWalk(cid, offset, length)))


class FileReader(io.BufferedIOBase):
    """A read-only, seekable binary file over a file DAG.

    It keeps the interior nodes on the path to its position and the current
    leaf, so reading a file in small sequential steps fetches each block
    once; ``nodes``, a :class:`NodeCache` shared by many readers, keeps the
    other decoded nodes for reads that jump around. Not thread-safe (like
    any file object).
    """

    def __init__(self, store: BlockSource, cid: CID, *, nodes: NodeCache | None = None) -> None:
        super().__init__()
        self._driver = _Driver(store)
        self._cache = PathCache(nodes)
        self.cid = cid
        self.size: int = self._driver.size(FileWalk(cid, 0, 0, path=self._cache))
        self._pos = 0

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        length = None if size is None or size < 0 else size
        data = b"".join(self._driver.content(FileWalk(self.cid, self._pos, length, path=self._cache)))
        self._pos += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # writable buffers only, as io's readers take
        self._check_open()
        target = memoryview(buffer).cast("B")
        filled = 0
        walk = FileWalk(self.cid, self._pos, len(target), path=self._cache)
        for piece in self._driver.content(walk):
            target[filled : filled + len(piece)] = piece
            filled += len(piece)
        self._pos += filled
        return filled

    def readinto1(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # as readinto
        return self.readinto(buffer)

    def close(self) -> None:
        self._cache = PathCache()
        super().close()


def open_file(store: BlockSource, cid: CID) -> FileReader:
    """Open file ``cid`` for reading; raises NotAFileError for a directory."""
    return FileReader(store, cid)


# -- reading: the trio driver ----------------------------------------------


async def _arun(store: AsyncBlockStore, walk: FileWalk) -> AsyncIterator[memoryview]:
    """Drive a walk of bytes over ``store`` (read-ahead hints unused: an
    AsyncBlockStore has no way to take them yet)."""
    while True:
        event = walk.next_event()
        if isinstance(event, NeedBlock):
            walk.feed(await store.get(event.cid))
        elif isinstance(event, WalkDone):
            return
        elif not isinstance(event, ReadAhead):
            yield cast(memoryview, event)


async def afile_size(store: AsyncBlockStore, cid: CID) -> int:
    """Async twin of :func:`file_size`."""
    walk = FileWalk(cid, 0, 0)
    async for _ in _arun(store, walk):
        pass
    assert walk.size is not None
    return walk.size


async def aiter_file(
    store: AsyncBlockStore, cid: CID, offset: int = 0, length: int | None = None
) -> AsyncIterator[bytes]:
    """Async twin of :func:`iter_file`."""
    _check_range(offset, length)
    async for piece in _arun(store, FileWalk(cid, offset, length)):
        yield _as_bytes(piece)


async def aread_range(store: AsyncBlockStore, cid: CID, offset: int, length: int) -> bytes:
    """Async twin of :func:`read_range`."""
    _check_range(offset, length)
    return b"".join([piece async for piece in _arun(store, FileWalk(cid, offset, length))])
