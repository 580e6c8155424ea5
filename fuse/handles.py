"""Open files: readers over the file DAG, a shared block cache, staged writes.

Reading
=======

Every open file that reads keeps one :class:`cas.reader.PathCache` for as
long as it is open (kubo's mount rebuilt its reader on every read() and ran
60x slower than its CLI), so sequential reads fetch each block once. A read
is a :class:`cas.reader.FileWalk` driven by :func:`read_walk` on the trio
thread: each block the walk needs comes from the shared :class:`BlockCache`,
or, missing there, from :class:`BlockFetcher`, and is fed back; nothing is
retried. Readers share one :class:`cas.reader.NodeCache`, so interior nodes
are decoded once per mount, not once per jump between subtrees.

:class:`BlockFetcher` reads and hashes block files in a few worker threads
at once, outside the node's store thread: block files are immutable, so
this needs no lock (a store that :class:`cas.blocks.ReadsFromAnyThread`);
only small blocks, which live in SQLite, go through the store thread. A
block wanted by several readers at once is fetched once.

Read-ahead is the walk's hint (:class:`cas.reader.ReadAhead`): the blocks it
will need next, in order, as far ahead as ``READ_AHEAD_BYTES`` past a
sequential reader's read. The mount executes it (cas.fuse.operations) by
fetching the hinted blocks ``READ_AHEAD_PARALLEL`` at a time into the cache,
so the walk finds them there, or waits for the fetch already under way.
The cache is bounded in bytes (least recently used blocks go first).

Writing
=======

A file that is written is *staged*: its whole content lives in a temporary
file under ``<repo>/tmp/`` (on disk, never in RAM), with the old content
copied in on the first write unless it was truncated to nothing. Every open
handle of that inode, readers too, then reads the staged bytes, as on a
local disk. Committing (on flush, fsync and release) chunks the staged file
into blocks (a large one written in order is mostly chunked already:
cas.fuse.streaming) and links it at the inode's path *at that moment*
(cas.fuse.tree); the staged file is dropped when the last handle closes.

This module owns those objects. It never resolves paths, never commits
anything by itself, and never calls FUSE.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from ..blocks import ReadsFromAnyThread
from ..cid import CID
from ..names.directory import NO_META, Meta
from ..names.namespace import Node
from ..reader import FileWalk, NeedBlock, PathCache, ReadAhead, WalkDone
from ..store._disk import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    allocate_ahead,
    fallocate,
    give_back_ahead,
)
from ..store._modes import private_dir

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
"""Block cache of a mount; DESIGN.md caps the default at 256 MiB."""

READ_AHEAD_BYTES = 32 * 1024 * 1024
"""How far past a sequential reader's read the walk hints its blocks: ~100
average blocks, enough to keep the threads busy between FUSE requests
(bench/mount.py)."""

READ_AHEAD_PARALLEL = 3
"""Blocks one read-ahead has in flight at once: enough to keep the fetch
threads busy, few enough that a reader's own miss never queues long
behind them."""

FETCH_THREADS = 4
"""Worker threads reading and hashing block files at once (BLAKE3 and
os.read release the GIL, so they run in parallel with the FUSE loop)."""

COPY_PIECE = 1024 * 1024


class BlockCache:
    """Verified blocks by CID, least recently used dropped past ``max_bytes``.
    Thread-safe: filled from the store thread, read on the trio thread."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[CID, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, cid: CID) -> bytes | None:
        with self._lock:
            data = self._blocks.get(cid)
            if data is None:
                self.misses += 1
                return None
            self._blocks.move_to_end(cid)
            self.hits += 1
            return data

    def __contains__(self, cid: CID) -> bool:
        with self._lock:
            return cid in self._blocks

    def put(self, cid: CID, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if cid in self._blocks:
                self._blocks.move_to_end(cid)
                return
            self._blocks[cid] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, old = self._blocks.popitem(last=False)
                self._bytes -= len(old)

    def statistics(self) -> dict[str, int]:
        with self._lock:
            return {"blocks": len(self._blocks), "bytes": self._bytes, "hits": self.hits, "misses": self.misses}


class BlockFetcher:
    """Brings verified blocks into the cache (see the module docstring).

    ``blocks`` is the repository's block store; ``run_in_store`` runs a
    function in the node's store thread (``Node.in_store_thread``).
    ``parallel_get`` (default: the store's ``get_file_block``, if it
    :class:`~cas.blocks.ReadsFromAnyThread`) reads a block
    in a worker thread, several at once, outside the store thread; it
    returns None for a block only the store thread can read (one not
    committed yet, or damaged).
    """

    def __init__(
        self, cache: BlockCache, blocks: Any, run_in_store: Callable[..., Awaitable[Any]],
        *, threads: int = FETCH_THREADS, parallel_get: Callable[[CID], bytes | None] | None = None,
    ) -> None:
        self.cache = cache
        self._blocks = blocks
        self._run_in_store = run_in_store
        if parallel_get is None and isinstance(blocks, ReadsFromAnyThread):
            parallel_get = blocks.get_file_block
        self._get_file_block = parallel_get
        self._limiter = trio.CapacityLimiter(threads)
        self._pending: dict[CID, trio.Event] = {}

    def wanted(self, cid: CID) -> bool:
        """True unless ``cid`` is cached or being fetched."""
        return cid not in self._pending and cid not in self.cache

    async def get(self, cid: CID) -> bytes:
        """The verified bytes of ``cid``, from the cache or fetched into it."""
        data = self.cache.get(cid)
        while data is None and cid in self._pending:
            await self._pending[cid].wait()  # someone else is fetching it
            data = self.cache.get(cid)
        if data is not None:
            return data
        done = self._pending[cid] = trio.Event()
        try:
            found = None
            if self._get_file_block is not None:
                found = await trio.to_thread.run_sync(self._get_file_block, cid, limiter=self._limiter)
            if found is None:  # a small block (SQLite), or missing: ask the store
                found = await self._run_in_store(self._blocks.get, cid)
            data = bytes(found)
            self.cache.put(cid, data)
            return data
        finally:
            del self._pending[cid]
            done.set()


async def read_walk(walk: FileWalk, fetcher: BlockFetcher,
                    hint: Callable[[ReadAhead], None] | None = None) -> list[memoryview]:
    """Drive ``walk`` to its end over the cache: each block it needs comes
    from the cache or is fetched into it, and is fed back; each read-ahead
    hint goes to ``hint``. Returns the walk's range as views of the blocks'
    bytes, in order (the reply is gathered from them: no copy here)."""
    pieces: list[memoryview] = []
    while True:
        event = walk.next_event()
        if isinstance(event, NeedBlock):
            walk.feed(await fetcher.get(event.cid))  # no checkpoint when cached
        elif isinstance(event, ReadAhead):
            if hint is not None:
                hint(event)
        elif isinstance(event, WalkDone):
            return pieces
        elif isinstance(event, memoryview):
            pieces.append(event)


@dataclass
class ReadState:
    """One open file's reader of committed content, and its read-ahead."""

    cid: CID
    path: PathCache  # the nodes and leaf its last read walked through
    next_offset: int = 0  # where a sequential reader reads next
    sequential: int = 0  # consecutive sequential reads
    ahead: deque[CID] = field(default_factory=deque)  # the walk's latest hint, not yet fetched
    ahead_running: bool = False

    def note_read(self, offset: int, size: int) -> int:
        """Record a read of ``size`` bytes at ``offset``; return how far past
        it the walk should hint (0 unless the reads are sequential)."""
        self.sequential = self.sequential + 1 if offset == self.next_offset else 0
        self.next_offset = offset + size
        return READ_AHEAD_BYTES if self.sequential >= 2 else 0

    def plan(self, hint: ReadAhead) -> bool:
        """Take the walk's latest hint; True if read-ahead must be started."""
        self.ahead = deque(hint.cids)
        return not self.ahead_running


class Staging:
    """A file's whole content, staged while it is written: in memory while
    it is small (up to ``MEMORY_FILE`` bytes, and while all files staged in
    memory hold under ``MEMORY_TOTAL``), else in a temporary file.

    A small file, the common case, costs no temporary file and no disk I/O
    until it is stored. A temporary file is unlinked from the start where
    the OS allows, so a crash leaves nothing behind (the next owner of the
    repository empties ``tmp/`` anyway).
    """

    MEMORY_FILE = 1 << 20
    MEMORY_TOTAL = 64 << 20
    RESERVE = 4 << 20
    """Bytes of the disk left, beyond what is staged in memory, for what
    storing and committing it writes besides (pack headers, the metadata
    database, directory blocks)."""
    ALLOCATE_AHEAD = 64 << 20
    """Disk space taken ahead of a file written in order from empty
    (:attr:`sequential`), so that its appends need no allocation of their
    own: the kernel's write into a file's cache costs ~35 % less where the
    space is allocated already (fallocate; 0.11 against 0.17 s a GiB on
    this project's VMs)."""
    _in_memory = 0  # bytes held by every Staging in memory, in this process
    _lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._buffer: bytearray | None = bytearray()
        self._held = 0  # of _in_memory, this one's
        self._allocated = 0  # the disk space taken for the file reaches this far
        self.fd = -1
        self.size = 0
        self.sequential = False
        """Set while the file is written in order from empty (a follower
        stores it as it goes, cas.fuse.streaming): appends take disk space
        :data:`ALLOCATE_AHEAD` at a time."""

    def _hold(self, size: int) -> bool:
        """Whether the content may stay in memory at ``size`` bytes."""
        if size > self.MEMORY_FILE:
            return False
        with Staging._lock:
            if Staging._in_memory - self._held + size > self.MEMORY_TOTAL:
                return False
            Staging._in_memory += size - self._held
            self._held = size
        return True

    def _release(self) -> None:
        with Staging._lock:
            Staging._in_memory -= self._held
        self._held = 0

    def _spill(self) -> None:
        """Move the content to a temporary file, from now on."""
        private_dir(self._directory, parents=True)  # the repository's tmp/: 0700 (cas/store/_modes.py)
        fd, name = tempfile.mkstemp(prefix="fuse-", dir=self._directory)  # 0600, and unlinked at once
        os.unlink(name)
        assert self._buffer is not None
        try:
            os.pwrite(fd, self._buffer, 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd, self._buffer = fd, None
        self._release()

    def _check_room(self, before: int) -> None:
        """Raise ENOSPC (as a local disk does at write), back at ``before``
        bytes held, unless the disk can take everything staged in memory:
        it goes there when stored, and a write accepted now must not fail
        later, when no one is told."""
        if Staging._in_memory + self.RESERVE > self.disk_free():
            self._hold(before)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def disk_free(self) -> int:
        """Bytes free on the disk the staged content goes to."""
        st = os.statvfs(self._directory if self._directory.exists() else self._directory.parent)
        return st.f_bavail * st.f_frsize

    def write(self, offset: int, data: bytes | memoryview) -> int:
        end = offset + len(data)
        held = self._held
        if self._buffer is not None and not self._hold(max(self.size, end)):
            self._spill()
        if self._buffer is not None:
            if end > len(self._buffer):
                self._check_room(held)
            if offset > len(self._buffer):
                self._buffer.extend(bytes(offset - len(self._buffer)))  # a hole reads as zeros
            self._buffer[offset:end] = data
            self.size = len(self._buffer)
            return len(data)
        if self.sequential and offset == self.size and end > self._allocated:
            allocate_ahead(self.fd, offset, self.ALLOCATE_AHEAD)
            self._allocated = offset + self.ALLOCATE_AHEAD
        written = os.pwrite(self.fd, data, offset)
        self.size = max(self.size, offset + written)
        return written

    def give_back_ahead(self) -> None:
        """Free the disk space taken ahead of the end (the file is about to
        be stored: its blocks need the room); a later append takes it
        again."""
        if self.fd >= 0 and self._allocated > self.size:
            give_back_ahead(self.fd, self.size)
        self._allocated = self.size

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if self._buffer is not None:
            return bytes(self._buffer[offset:offset + length])
        return os.pread(self.fd, length, offset)

    def truncate(self, size: int) -> None:
        if self._buffer is not None and not self._hold(size):
            self._spill()
        if self._buffer is not None:
            if size < len(self._buffer):
                del self._buffer[size:]
            else:
                self._buffer.extend(bytes(size - len(self._buffer)))
        else:
            os.ftruncate(self.fd, size)
            self._allocated = min(self._allocated, size)  # a truncate frees what lies past the end
        self.size = size

    def zero(self, offset: int, length: int) -> None:
        """Bytes ``offset`` to ``offset + length`` (within the content) read
        as zeros from now on; the size stays."""
        end = min(offset + length, self.size)
        if end <= offset:
            return
        if self._buffer is not None:
            self._buffer[offset:end] = bytes(end - offset)
            return
        if _punch_hole(self.fd, offset, end - offset):
            return
        zeros = bytes(min(COPY_PIECE, end - offset))
        while offset < end:
            offset += os.pwrite(self.fd, zeros[:end - offset], offset)

    def fill(self, pieces: Iterable[bytes | memoryview]) -> None:
        """Copy in the committed content, its pieces in order."""
        offset = 0
        for piece in pieces:
            self.write(offset, piece)
            offset += len(piece)
        self.size = offset

    def blocks(self) -> int:
        """512-byte blocks the staged content takes (a hole takes none)."""
        if self._buffer is not None:
            return (self.size + 511) // 512
        return min(os.fstat(self.fd).st_blocks, (self.size + 511) // 512)  # not the space taken ahead

    def stream(self) -> Any:
        """A readable binary stream of the staged content from its start."""
        if self._buffer is not None:
            return io.BytesIO(self._buffer)
        fd = os.dup(self.fd)  # shares the offset, which nothing else here uses
        os.lseek(fd, 0, os.SEEK_SET)
        return os.fdopen(fd, "rb", buffering=COPY_PIECE, closefd=True)

    def close(self) -> None:
        if self._buffer is not None:
            self._buffer = None
            self._release()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a range of a file (it reads as zeros, its size stays);
    False where the file system cannot."""
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)


@dataclass
class FileState:
    """What is open of one file inode: its committed content, and the staged
    content while it is being written."""

    cid: CID | None
    size: int
    mode: int
    mtime: int
    meta: Meta = NO_META
    staging: Staging | None = None
    dirty: bool = False  # staged bytes not yet committed
    meta_dirty: bool = False  # mode, mtime or meta changed and not yet committed
    handles: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, node: Node) -> FileState:
        return cls(node.cid, node.size, node.mode, node.mtime, node.meta)

    def written(self, now: int) -> None:
        """Its content changed at ``now``: mtime and ctime move."""
        self.dirty, self.mtime = True, now
        if self.meta.ctime is not None:
            self.meta = replace(self.meta, ctime=None)  # unrecorded: the same as mtime

    def take_meta(self, mode: int | None, mtime: int | None, meta: Meta) -> None:
        """Its mode and mtime (None: as they are) and metadata are these now."""
        self.mode = self.mode if mode is None else mode
        self.mtime = self.mtime if mtime is None else mtime
        self.meta = meta

    def current_size(self) -> int:
        return self.staging.size if self.staging is not None else self.size


@dataclass
class Handle:
    """One open file (what the kernel calls ``fh``)."""

    fh: int
    ino: int
    writable: bool
    append: bool
    read: ReadState | None = None
    wrote: bool = False
