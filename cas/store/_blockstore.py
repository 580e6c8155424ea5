"""The repository's block store: large blocks in pack files, small ones in SQLite.

Blocks under ``SMALL_BLOCK_LIMIT`` (directory nodes, file tree nodes, small
files and file tails) live in the database's ``small_blocks`` table; the rest
(the chunked body of files, 64 KiB to 1 MiB each) are appended to pack files
(``_packs.py``) and indexed in the same database. Why small blocks in SQLite:
a namespace operation writes a handful of small nodes and a new root, and
they all become durable in one transaction, one fsync (bench/namespace.py).
Why packs for the large ones: a file's leaves lie contiguously, so a cold
read is sequential (bench/add_cat.py).

The ordering rule (DESIGN.md) needs no work from writers beyond putting
children before parents: every block, small or large, becomes stored by a
row of the database's open transaction, and ``barrier()`` fsyncs the pack
bytes appended since the last barrier *then* commits (the database runs the
pack store's sync before every commit). A parent's row is in the same
transaction as its children's or a later one, so it is never durable before
them; nor is a pin or a root committed with it.

``WriteSession`` is how a writer tells garbage collection "I am about to
reference these": every block put through a session, new or already stored,
is protected from gc until the session closes (after its pin or root is
committed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Self

from ..blocks import Block, verified
from ..cid import CID, RAW
from ..errors import CorruptBlockError, InvalidBlockError
from ._database import Database
from ._packs import LOOKUP_BATCH, BlockLocation, PackStore

SMALL_BLOCK_LIMIT = 64 * 1024
"""Blocks shorter than this go to SQLite: the chunker's minimum, so every
full chunk of a file goes to a pack and every directory node to a row."""


class RepositoryBlockStore:
    """A :class:`cas.blocks.BlockStore` over the repository's two homes."""

    def __init__(self, packs: PackStore, db: Database) -> None:
        self.packs = packs
        self.db = db
        self._sessions: set[WriteSession] = set()

    # -- BlockStore -----------------------------------------------------------

    def has(self, cid: CID) -> bool:
        return self.db.has_block(bytes(cid)) or self.packs.has(cid)

    def get(self, cid: CID) -> bytes:
        if cid.codec == RAW:
            # Most raw blocks read are a file's leaves, in packs: look there
            # first (one index look-up per leaf instead of two).
            found = self.packs.find(cid)
            if found is not None:
                return found
        data = self.db.get_block(bytes(cid))
        if data is None:
            return self.packs.get(cid)
        return _small_verified(cid, data)

    def fetchers(
        self, cids: Sequence[CID], *, committed: bool = False
    ) -> list[Callable[[], bytes | None] | None]:
        """For a reader that knows which blocks it will want next (a file's
        leaves): the index look-ups of these blocks now, in one query, and
        for each large raw block a function that reads and verifies its
        bytes when called, returning None if they have moved since (then
        ask :meth:`get`). None for any other block: ask :meth:`get`
        (``PackStore.fetchers``). With ``committed``, safe from any thread,
        as :meth:`get_file_block` is: committed blocks only."""
        raw = [cid for cid in cids if cid.codec == RAW]
        found = iter(self.packs.fetchers(raw, committed=committed))
        return [next(found) if cid.codec == RAW else None for cid in cids]

    def get_file_block(self, cid: CID) -> bytes | None:
        """The verified bytes of ``cid`` if its row (a large block's in the
        pack index, a small block's with its bytes) is committed, else None
        (a block put since the last barrier, or no block at all); bytes
        that do not match the hash raise, as every read does.

        The one read that is safe from any thread, concurrently with every
        other operation: it reads the database through a read-only
        connection of its own thread and pack bytes that are never
        rewritten in place (``_packs.py``, rule 4), and touches no state of
        this object. Readers use it to read and hash blocks in several
        threads at once (the FUSE mount) and fall back to :meth:`get`, in
        the owner's store thread, when it answers None.
        """
        if cid.codec == RAW:
            found = self.packs.get_committed(cid)
            if found is not None:
                return found
        rows = self.packs.committed_rows("SELECT data FROM small_blocks WHERE cid = ?", (bytes(cid),))
        if not rows:
            return None if cid.codec == RAW else self.packs.get_committed(cid)
        return _small_verified(cid, bytes(rows[0][0]))

    def release_thread(self) -> None:
        """Close what :meth:`get_file_block` opened for the calling thread (a
        read-only connection to the index): for a thread done reading."""
        self.packs.release_reader()

    def put(self, block: Block) -> bool:
        if len(block.data) < SMALL_BLOCK_LIMIT:
            return self.db.put_block(bytes(block.cid), block.data)
        return self.packs.put(block)

    def delete(self, cid: CID) -> bool:
        return self.db.delete_block(bytes(cid)) or self.packs.delete(cid)

    def iterate(self) -> Iterator[CID]:
        for key in self.db.block_keys():
            yield CID.from_bytes(key)
        yield from self.packs.iterate()

    def page(self, after: CID | None, limit: int) -> list[tuple[CID, int]]:
        """Up to ``limit`` stored blocks after ``after`` in CID byte order,
        with their sizes: a walk over every block that holds no list of
        them all and survives blocks coming and going (the scrub's)."""
        start = bytes(after) if after is not None else b""
        rows = self.db.query(
            "SELECT cid, length(data) FROM small_blocks WHERE cid > ? ORDER BY cid LIMIT ?", (start, limit)
        ).fetchall()
        rows += self.db.query(
            "SELECT cid, length FROM pack_blocks WHERE cid > ? ORDER BY cid LIMIT ?", (start, limit)
        ).fetchall()
        rows.sort()
        return [(CID.from_bytes(bytes(key)), int(size)) for key, size in rows[:limit]]

    def barrier(self) -> None:
        # The database syncs the packs before it commits (PackStore.sync as
        # its before_commit): the bytes appended since the last barrier are
        # durable first, then the rows that point at them and whatever
        # refers to those; if the sync fails, the rows never commit.
        self.db.commit()

    # -- extras ------------------------------------------------------------------

    def prefetch(self, cids: Iterable[CID]) -> None:
        self.packs.prefetch(cids)

    def locate(self, cid: CID) -> BlockLocation | None:
        """Where a large block's bytes lie on disk (None for a small or a
        missing block): for messages, and for tests that damage a disk."""
        return self.packs.locate(cid)

    def sizes(self, cids: Sequence[CID]) -> dict[CID, int]:
        """The size of each of ``cids`` stored here (those not stored are
        left out), from the index alone: two queries per 500 CIDs, no block
        read."""
        keys = {bytes(cid): cid for cid in cids}
        batch = list(keys)
        out: dict[CID, int] = {}
        for start in range(0, len(batch), LOOKUP_BATCH):
            part = batch[start:start + LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            for sql in (f"SELECT cid, length(data) FROM small_blocks WHERE cid IN ({marks})",
                        f"SELECT cid, length FROM pack_blocks WHERE cid IN ({marks})"):
                for key, size in self.db.query(sql, tuple(part)):
                    out[keys[bytes(key)]] = int(size)
        return out

    def usage(self) -> tuple[int, int]:
        small_count, small_bytes = self.db.block_usage()
        pack_count, pack_bytes = self.packs.usage()
        return small_count + pack_count, small_bytes + pack_bytes

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _small_verified(cid: CID, data: bytes) -> bytes:
    """A small block's bytes from the database, checked against its CID."""
    try:
        return verified(cid, data)
    except InvalidBlockError:
        raise CorruptBlockError(
            cid, "the metadata database",
            f"block {cid} is corrupt in the repository's database: its bytes do not "
            "match its hash; run 'cas repo verify' to list all damage",
        ) from None
