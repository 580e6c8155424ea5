"""The repository's block store: large blocks in files, small ones in SQLite.

Blocks under ``SMALL_BLOCK_LIMIT`` (directory nodes, file tree nodes, small
files and file tails) live in the database's ``small_blocks`` table; the rest
(the chunked body of files, 64 KiB to 1 MiB each) are one file each. Why:
a namespace operation writes a handful of small nodes and a new root, and
with every small block in SQLite they all become durable in one transaction,
one fsync, instead of two fsyncs per node (bench/namespace.py).

The ordering rule (DESIGN.md) is kept here, so writers only have to put
children before parents: before a node that can hold links is stored, the
files it may link to are made durable (and, for a node stored as a file,
the pending transaction too). ``barrier()`` makes everything durable: first
the shard directories of block files written since the last barrier are
fsynced, then the database transaction commits. So a small parent committed
with a root is never durable before the large children it links to.

``WriteSession`` is how a writer tells garbage collection "I am about to
reference these": every block put through a session, new or already stored,
is protected from gc until the session closes (after its pin or root is
committed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..blocks import Block, verified
from ..cid import RAW, CID
from ..errors import BlockNotFoundError, InvalidBlockError
from ._blockfiles import FileBlockStore
from ._database import Database

SMALL_BLOCK_LIMIT = 64 * 1024
"""Blocks shorter than this go to SQLite: the chunker's minimum, so every
full chunk of a file is a file and every directory node a row."""


class RepositoryBlockStore:
    """A :class:`cas.blocks.BlockStore` over the repository's two homes."""

    def __init__(self, files: FileBlockStore, db: Database) -> None:
        self.files = files
        self.db = db
        self._sessions: set[WriteSession] = set()

    # -- BlockStore -----------------------------------------------------------

    def has(self, cid: CID) -> bool:
        return self.db.has_block(bytes(cid)) or self.files.has(cid)

    def get(self, cid: CID) -> bytes:
        data = self.db.get_block(bytes(cid))
        if data is None:
            return self.files.get(cid)
        try:
            return verified(cid, data)
        except InvalidBlockError:
            raise InvalidBlockError(
                f"block {cid} is corrupt in the repository's database: its bytes do not "
                "match its hash; run 'cas repo verify' to list all damage"
            ) from None

    def get_file_block(self, cid: CID) -> bytes | None:
        """The verified bytes of ``cid`` if it is stored as a block file,
        else None (a small block, in the database, or no block at all).

        The one read that is safe from any thread, concurrently with every
        other operation: a block file is immutable once renamed into place
        (a reader sees the whole file or no file, and an open file survives
        its deletion by gc), and this touches neither the database (one
        connection, not for concurrent use) nor any state of this object.
        Readers use it to read and hash large blocks in several threads at
        once (the FUSE mount) and fall back to :meth:`get`, in the owner's
        store thread, when it answers None.
        """
        try:
            return self.files.get(cid)
        except BlockNotFoundError:
            return None

    def put(self, block: Block) -> bool:
        small = len(block.data) < SMALL_BLOCK_LIMIT
        if block.cid.codec != RAW:
            # The ordering rule, kept here so writers need not: whatever this
            # node may link to is durable before the node can be. A small
            # node commits in the same transaction as small children, so
            # only the large ones' file names must be synced first.
            if small:
                self.files.barrier()
            else:
                self.barrier()
        if small:
            return self.db.put_block(bytes(block.cid), block.data)
        return self.files.put(block)

    def delete(self, cid: CID) -> bool:
        return self.db.delete_block(bytes(cid)) or self.files.delete(cid)

    def iterate(self) -> Iterator[CID]:
        for key in self.db.block_keys():
            yield CID.from_bytes(key)
        yield from self.files.iterate()

    def barrier(self) -> None:
        self.files.barrier()  # block files' names durable first ...
        self.db.commit()  # ... then whatever in the database refers to them

    # -- extras ------------------------------------------------------------------

    def prefetch(self, cids: Iterable[CID]) -> None:
        self.files.prefetch(cids)

    def path_of(self, cid: CID):  # noqa: ANN201 - a Path, for tests and messages
        return self.files.path_of(cid)

    def usage(self) -> tuple[int, int]:
        small_count, small_bytes = self.db.block_usage()
        file_count, file_bytes = self.files.usage()
        return small_count + file_count, small_bytes + file_bytes

    # -- sessions ------------------------------------------------------------------

    def open_session(self) -> WriteSession:
        session = WriteSession(self)
        self._sessions.add(session)
        return session

    def protected(self) -> set[CID]:
        """Blocks that open write sessions have put: gc must keep them."""
        out: set[CID] = set()
        for session in self._sessions:
            out |= session.touched
        return out


class WriteSession:
    """A :class:`BlockStore` view that remembers what it put, for gc.

    Use one per writer (an add, a client connection of the node) and close
    it once the blocks are referenced by a pin or a root.
    """

    def __init__(self, store: RepositoryBlockStore) -> None:
        self._store = store
        self.touched: set[CID] = set()

    def has(self, cid: CID) -> bool:
        return self._store.has(cid)

    def get(self, cid: CID) -> bytes:
        return self._store.get(cid)

    def put(self, block: Block) -> bool:
        self.touched.add(block.cid)
        return self._store.put(block)

    def delete(self, cid: CID) -> bool:
        return self._store.delete(cid)

    def iterate(self) -> Iterator[CID]:
        return self._store.iterate()

    def barrier(self) -> None:
        self._store.barrier()

    def prefetch(self, cids: Iterable[CID]) -> None:
        self._store.prefetch(cids)

    def protect(self, cid: CID) -> None:
        """Keep ``cid`` from gc while this session is open (a block it will
        reference without putting it, e.g. the target of ``cas cp``)."""
        self.touched.add(cid)

    def close(self) -> None:
        self._store._sessions.discard(self)
        self.touched = set()

    def __enter__(self) -> WriteSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

