"""Large blocks in append-only pack files, indexed in SQLite.

Why packs: a file's leaves (64 KiB to 1 MiB each) used to be one file each,
and a cold read of a GiB was ~4,000 small scattered reads. Appended one
after another to a pack, the leaves of a file lie contiguously on disk in
the order they are read, so ``cas cat`` is one sequential read and the
kernel's read-ahead works for it; and an add is one fsync of the pack at its
end instead of one per block (bench/add_cat.py).

Layout: ``packs/NNNNNNNN.pack`` (eight decimal digits, from 00000001). Each
file starts with the 8-byte magic ``CASPACK1`` and is followed by records::

    "CASB"  length (u32, big-endian)  cid_len (u8)  cid (binary)  bytes

A record is self-describing, so a pack can be scanned and checked without
the index (``check``). It carries no checksum of its own: the CID is one
for the bytes, and a damaged head shows by its magic, its bounds or a CID
that does not parse. The index, the ``pack_blocks`` table of the
repository's database (``_database.py``), maps each CID to (pack, start,
length), ``start`` being the offset of the block's bytes. The newest pack is
the *active* one; when a record would take it past ``pack_limit`` (1 GiB) a
new one is started.

The rules, which everything below keeps:

1. **Append only.** Bytes in a pack are never rewritten in place. The only
   changes to a pack besides appends are cutting an unindexed tail at open
   and removing the whole file once no index row points into it. (Disk
   space taken ahead of the end, ``ALLOCATE_AHEAD``, and given back when the
   pack is closed, changes no byte and no size.) So an
   offset read from the index stays valid for as long as the file exists,
   and an open descriptor reads the same bytes even after the file is gone.
2. **Bytes before rows.** ``put`` appends (no fsync) and inserts the index
   row into the database's open transaction. ``sync`` fsyncs the packs
   appended to since it last ran; the database runs it before every commit
   (``Database.before_commit``) and rolls the transaction back if it fails.
   So a row is never durable before the bytes it points at, nor is
   anything that refers to the block through the row (a node, a pin, a
   root), being in the same transaction or a later one.
   A new pack file is created, headed and fsynced with its directory
   before any row can point into it. (Every ``WRITE_BEHIND`` bytes the
   kernel is asked to start writing out, so that fsync has less to do;
   that is a hint, not a step of the rule.)
3. **A crash leaves only garbage, and open removes it.** Bytes past the
   last indexed end of a pack belong to a transaction that never committed:
   the next open cuts them off. A pack that no row points into, other than
   the newest, was emptied (by compaction, or gc of everything in it): the
   next open removes it.
4. **One writer, many readers.** Appends, deletes and compaction run in the
   owner's store thread (the repository lock makes the process the only
   writer). Other threads read through :meth:`PackStore.get_committed`: a
   read-only SQLite connection per thread (WAL: it sees committed rows and
   never blocks the writer) and a descriptor opened per read. A block whose
   row is not committed yet, or whose pack compaction just removed, answers
   None there, and the caller asks the owner's :meth:`get`.
5. **Space comes back by compaction.** gc deletes index rows only; the
   bytes become dead. :meth:`compact` rewrites every pack whose live bytes
   are under half of its records' bytes: it copies the live blocks to the
   active pack and moves their rows in one transaction (committed after the
   copies are fsynced, rule 2), then removes the old pack. A crash before
   the commit leaves the copies as an unindexed tail (rule 3), after it an
   old pack with no rows (rule 3 again).

Repositories of schema version 3 kept one file per large block under
``blocks/XX/CID``; :func:`migrate_block_files` moves them into packs on open
(each batch indexed and committed before its files are removed, so a crash
midway is finished by the next open).

This module never decides *what* to keep; that is the repository's job.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..blocks import Block, verified
from ..cid import CID, MAX_BLOCK_SIZE
from ..errors import BlockNotFoundError, CorruptBlockError, InvalidBlockError, InvalidCIDError, RepositoryError
from ._database import Database
from ._disk import allocate_ahead, disk_error, fsync_dir, give_back_ahead, start_writeback
from ._modes import open_private, private_dir

if TYPE_CHECKING:
    from ._reports import CompactReport

PACK_MAGIC = b"CASPACK1"
RECORD_MAGIC = b"CASB"
_RECORD_HEAD = struct.Struct(">4sIB")  # magic, length of the bytes, length of the CID
HEADER_SIZE = len(PACK_MAGIC)
PACK_LIMIT = 1 << 30
"""A pack is closed once the next record would take it past this: 1 GiB keeps
the file count of a large repository small and a compaction's copy bounded."""
COMPACT_BELOW = 0.5
"""Compact a pack when its live records are under this share of its records'
bytes: the copy then costs at most as much as it frees."""
MIGRATE_BATCH = 64 << 20
"""Bytes of old block files moved per transaction while migrating."""
WRITE_BEHIND = 16 << 20
"""Every this many bytes appended, the kernel is asked to start writing them
out (``sync_file_range``), so that the fsync at the next commit finds
little left to write: an add then overlaps its disk writes with its
chunking and hashing (measured: ~20% faster for 256 MiB here)."""
ALLOCATE_AHEAD = 64 << 20
"""Disk space the active pack takes ahead of its appends (fallocate, its
size unchanged), so that they need no allocation of their own: the
kernel's write into the pack's cache costs ~40 % less where the space is
allocated already (1 GiB of appends: 0.13 against 0.22 s of CPU on this
project's VMs; ``cas add`` of 1 GiB ~9 % faster). Given back when the pack
is rolled or the store closed; a crash leaves it to the next close."""
PREFETCH_GAP = 1 << 20
"""Ranges to prefetch closer than this in one pack are advised as one."""
PREFETCH_BATCH = 16
"""Blocks asked for one by one are looked up this many at a time."""
LOOKUP_BATCH = 500
"""CIDs in one index query at most (SQLite builds before 3.32 allow 999
parameters)."""


def pack_name(number: int) -> str:
    return f"{number:08d}.pack"


def record_head(cid: bytes, length: int) -> bytes:
    """The bytes in front of a block's bytes in a pack."""
    return _RECORD_HEAD.pack(RECORD_MAGIC, length, len(cid)) + cid


class BlockLocation(NamedTuple):
    """Where a block's bytes lie on disk: ``length`` bytes at ``start`` of
    the file ``path`` (pack number ``pack``)."""

    path: Path
    pack: int
    start: int
    length: int


class PackUsage(NamedTuple):
    """One pack file: its size and how much of it indexed records use."""

    pack: int
    size: int
    live: int
    blocks: int

    @property
    def dead(self) -> int:
        """Bytes of records no index row points at (gc'd blocks)."""
        return max(0, self.size - HEADER_SIZE - self.live)


class PackProblem(NamedTuple):
    """Damage found in a pack file by :meth:`PackStore.check`."""

    where: str
    what: str


class PackStore:
    """Large blocks in ``packs/``, indexed in ``db``.

    Not for use by several processes: the repository's lock guarantees one
    owner. Within it, :meth:`get_committed` and :meth:`prefetch` may run in
    any thread at any time; everything else runs in one thread at a time
    (the owner's store thread), like the database connection it shares.
    """

    def __init__(self, packs_dir: Path, db: Database, *, pack_limit: int = PACK_LIMIT, read_only: bool = False) -> None:
        self.dir = packs_dir
        self._dir_str = str(packs_dir)
        self.db = db
        self.pack_limit = pack_limit
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._asked: tuple[int, int] = (0, 0)  # (pack, end) of the last range asked for, see prefetch
        self._dirty = False  # the active pack appended to since the last sync
        self._rolled: list[int] = []  # packs closed since then, still to sync
        self._fd = -1
        self._active = self._end = self._written_out = 0
        self._allocated = 0  # the active pack's disk space reaches this far
        if read_only:  # a reader beside the owner: it reads committed blocks, never appends or recovers
            return
        try:
            if not packs_dir.exists():
                private_dir(packs_dir)
                fsync_dir(packs_dir.parent)
            self._active = self._recover()
            self._fd = os.open(self._path_str(self._active), os.O_RDWR)
            self._end = os.fstat(self._fd).st_size
            self._written_out = self._end  # where write-behind has got to
        except OSError as exc:
            raise disk_error(exc, "opening the pack files", packs_dir.parent) from None
        db.before_commit = self.sync

    def close(self) -> None:
        for fd in self._rolled:  # never committed: nothing points there
            os.close(fd)
        self._rolled.clear()
        if self._fd >= 0:
            if self._allocated > self._end:
                give_back_ahead(self._fd, self._end)
            os.close(self._fd)
            self._fd = -1
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def _path_str(self, number: int) -> str:
        # Plain strings: pathlib costs more than the I/O on the read path.
        return f"{self._dir_str}/{number:08d}.pack"

    def pack_numbers(self) -> list[int]:
        """The numbers of the pack files present, ascending."""
        numbers = []
        for name in os.listdir(self.dir):
            stem, dot, ext = name.partition(".")
            if ext == "pack" and len(stem) == 8 and stem.isdigit():
                numbers.append(int(stem))
        return sorted(numbers)

    # -- opening: rule 3 ----------------------------------------------------------

    def _recover(self) -> int:
        """Cut unindexed tails, remove emptied packs; return the active pack."""
        # Index seeks only (every command opens the store; a scan of the
        # index would cost a large repository dearly): the last record of a
        # pack is the one with the highest start, records never overlap.
        present = self.pack_numbers()
        (indexed_newest,) = self.db.query("SELECT coalesce(max(pack), 0) FROM pack_blocks").fetchone()
        newest = max([*present, int(indexed_newest)])
        for number in present:
            path = self._path_str(number)
            row = self.db.query(
                "SELECT start + length FROM pack_blocks WHERE pack = ? ORDER BY start DESC LIMIT 1", (number,)
            ).fetchone()
            end = None if row is None else int(row[0])
            if end is None and number != newest:
                os.unlink(path)  # emptied: nothing points into it
                continue
            size = os.stat(path).st_size
            if end is None:
                with open(path, "rb") as f:
                    headed = f.read(HEADER_SIZE) == PACK_MAGIC
                if not headed or size > HEADER_SIZE:
                    self._write_header(number)  # the newest, holding no block: start it afresh
            elif size > end:
                fd = os.open(path, os.O_RDWR)
                try:
                    os.ftruncate(fd, end)  # a transaction that never committed
                    os.fsync(fd)
                finally:
                    os.close(fd)
            # A pack shorter than its index says is damage: verify reports it.
        if newest == 0 or newest not in present:
            newest += 1  # a new repository, or the newest pack is lost: never append to a lost one
            self._write_header(newest)
        return newest

    def _write_header(self, number: int) -> None:
        fd = open_private(self._path_str(number), os.O_WRONLY | os.O_TRUNC)  # 0600 (_modes.py)
        try:
            os.write(fd, PACK_MAGIC)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.dir)  # the name durable before any row can point into it

    # -- writing --------------------------------------------------------------------

    def put(self, block: Block) -> bool:
        """Append ``block`` and index it in the open transaction; False if
        it is stored already."""
        key = bytes(block.cid)
        if self._lookup(key) is not None:
            return False
        self.put_bytes(key, block.data)
        return True

    def put_bytes(self, key: bytes, data: bytes) -> None:
        """Append ``data`` under the binary CID ``key`` and index it, unchecked
        (for the migration, which keeps damage where verify will see it)."""
        if self.db.read_only:
            raise RepositoryError(f"{self.dir.parent} is open for reading only here (a bug: a write was tried)")
        number, start = self._append(key, data)
        self.db.execute(
            "INSERT OR REPLACE INTO pack_blocks (cid, pack, start, length) VALUES (?, ?, ?, ?)",
            (key, number, start, len(data)),
        )

    def _append(self, key: bytes, data: bytes) -> tuple[int, int]:
        head = record_head(key, len(data))
        size = len(head) + len(data)
        if self._end + size > self.pack_limit and self._end > HEADER_SIZE:
            self._roll()
        at = self._end
        if at + size > self._allocated:
            allocate_ahead(self._fd, at, ALLOCATE_AHEAD)
            self._allocated = at + ALLOCATE_AHEAD
        try:
            written = os.pwritev(self._fd, [head, data], at)
            if written < size:  # a short write (rare: a signal, a nearly full disk)
                rest = memoryview(head + data)[written:]
                while rest:
                    n = os.pwrite(self._fd, rest, at + size - len(rest))
                    rest = rest[n:]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, at)  # give the space back; nothing points there
            except OSError:
                pass
            raise disk_error(exc, f"storing block {CID.from_bytes(key)}", self.dir.parent) from None
        self._end = at + size
        self._dirty = True
        if self._end - self._written_out >= WRITE_BEHIND:
            start_writeback(self._fd, self._written_out, self._end - self._written_out)
            self._written_out = self._end
        return self._active, at + len(head)

    def _roll(self) -> None:
        """Start the next pack; the last one is synced with the next commit."""
        try:
            self._write_header(self._active + 1)
            fd = os.open(self._path_str(self._active + 1), os.O_RDWR)
        except OSError as exc:
            raise disk_error(exc, "starting a new pack file", self.dir.parent) from None
        if self._allocated > self._end:
            give_back_ahead(self._fd, self._end)
        if self._dirty:
            self._rolled.append(self._fd)
        else:
            os.close(self._fd)
        self._fd = fd
        self._active += 1
        self._end = self._written_out = self._allocated = HEADER_SIZE
        self._dirty = False

    def sync(self) -> None:
        """Make every byte appended so far durable (rule 2: before a commit).

        If it raises, the database rolls the transaction back: the rows
        must not commit, and a second fsync cannot be trusted to report
        the same failure."""
        try:
            while self._rolled:
                os.fsync(self._rolled[0])
                os.close(self._rolled.pop(0))
            if self._dirty:
                os.fsync(self._fd)
                self._dirty = False
        except OSError as exc:
            raise disk_error(exc, "syncing a pack file", self.dir.parent) from None

    def delete(self, cid: CID) -> bool:
        """Forget ``cid`` (its bytes stay until compaction)."""
        return self.db.execute("DELETE FROM pack_blocks WHERE cid = ?", (bytes(cid),)).rowcount == 1

    # -- reading --------------------------------------------------------------------

    def _lookup(self, key: bytes) -> tuple[int, int, int] | None:
        row = self.db.query("SELECT pack, start, length FROM pack_blocks WHERE cid = ?", (key,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.db.open_reader()
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def release_reader(self) -> None:
        """Close the calling thread's read-only connection, if it has one:
        for a thread that is done with :meth:`get_committed` for now (a
        pooled worker thread, which may end without it)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._readers_lock:
                self._readers.remove(conn)
            conn.close()

    def has(self, cid: CID) -> bool:
        return self._lookup(bytes(cid)) is not None

    def locate(self, cid: CID) -> BlockLocation | None:
        """Where ``cid``'s bytes lie, or None if it is not in a pack."""
        found = self._lookup(bytes(cid))
        if found is None:
            return None
        number, start, length = found
        return BlockLocation(Path(self._path_str(number)), number, start, length)

    def get(self, cid: CID) -> bytes:
        data = self.find(cid)
        if data is None:
            raise BlockNotFoundError(cid)
        return data

    def find(self, cid: CID) -> bytes | None:
        """The verified bytes of ``cid``, or None if it is not in a pack."""
        found = self._lookup(bytes(cid))
        if found is None:
            return None
        data = self._read(cid, *found)
        if data is None:
            raise RepositoryError(
                f"cannot read block {cid}: its pack {self._path_str(found[0])} is missing; "
                "run 'cas repo verify' to list all damage"
            )
        return data

    def fetchers(
        self, cids: Sequence[CID], *, committed: bool = False
    ) -> list[Callable[[], bytes | None] | None]:
        """``find`` in two steps, for a reader that knows which blocks it
        will want next (a file's leaves): their index look-ups now, in one
        query, and for each block in a pack a function that reads and
        verifies its bytes when called (from any thread: it touches only
        pack bytes, never rewritten in place, rule 4); None for a block not
        in a pack. Such a function returns None if the pack has gone since
        (compacted away: look again with ``get``). Where the blocks jump,
        the kernel is asked to start reading them (see :meth:`prefetch`).

        With ``committed``, for any thread: the look-ups go through the
        thread's own read-only connection and see committed rows only, as
        :meth:`get_committed` does."""
        rows_of = self.committed_rows if committed else self._rows
        keys = [bytes(cid) for cid in cids]
        found: dict[bytes, tuple[int, int, int]] = {}
        for start in range(0, len(keys), LOOKUP_BATCH):
            part = keys[start : start + LOOKUP_BATCH]
            rows = rows_of(
                f"SELECT cid, pack, start, length FROM pack_blocks WHERE cid IN ({','.join('?' * len(part))})",
                part,
            )
            found.update((bytes(key), (pack, at, length)) for key, pack, at, length in rows)
        first = found.get(keys[0]) if keys else None
        if first is not None:
            # The caller reads the first of these next: the kernel's
            # read-ahead follows it from there, and a hint over the run it
            # starts only delays it (bench/README.md). Hints go where the
            # blocks jump after it.
            self._asked = (first[0], first[1])
        self._advise(sorted(found.values()))
        out: list[Callable[[], bytes | None] | None] = []
        for cid, key in zip(cids, keys):
            where = found.get(key)
            out.append(None if where is None else partial(self._read, cid, *where))
        return out

    def get_committed(self, cid: CID) -> bytes | None:
        """``get`` for any thread (rule 4): the verified bytes if ``cid``'s
        row is committed and its pack still there, else None."""
        row = self.committed_rows("SELECT pack, start, length FROM pack_blocks WHERE cid = ?", (bytes(cid),))
        if not row:
            return None
        return self._read(cid, *row[0])

    def _rows(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """A query's rows, read through the owner's connection."""
        return self.db.query(sql, tuple(params)).fetchall()

    def committed_rows(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """A query's rows, read through the calling thread's read-only
        connection (its errors, to the last row, as RepositoryError): for
        any thread, as :meth:`get_committed`; the small blocks' reader
        (``RepositoryBlockStore.get_file_block``) shares the connection."""
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise RepositoryError(f"metadata database {self.db.path} failed: {exc}") from None

    def _read(self, cid: CID, number: int, start: int, length: int) -> bytes | None:
        """The verified bytes at ``start``; None if the pack does not exist."""
        path = self._path_str(number)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RepositoryError(f"cannot read block {cid} in {path}: {exc.strerror}") from None
        try:
            data = os.pread(fd, length, start)
            while len(data) < length:
                more = os.pread(fd, length - len(data), start + len(data))
                if not more:
                    raise CorruptBlockError(
                        cid, f"{path} at offset {start}",
                        f"block {cid} is cut short in {path} (the file ends at {start + len(data)}); "
                        "run 'cas repo verify' to list all damage",
                    )
                data += more
        except OSError as exc:
            raise RepositoryError(f"cannot read block {cid} in {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        try:
            return verified(cid, data)
        except InvalidBlockError:
            raise CorruptBlockError(
                cid, f"{path} at offset {start}",
                f"block {cid} is corrupt on disk ({path} at offset {start}): its bytes do not "
                "match its hash; run 'cas repo verify' to list all damage",
            ) from None

    def prefetch(self, cids: Iterable[CID]) -> None:
        """Ask the kernel to start reading these blocks now, where it would
        not by itself. Any thread.

        A sequential reader asks, after each block it reads, for the one a
        few dozen blocks ahead. Blocks that continue the last range asked
        for in the same pack need no hint: the kernel's read-ahead follows
        a sequential read (8 MiB ahead on this machine's disk), and hints
        there were measured to slow the read down (each call blocks while
        it queues its reads). So only a run of blocks elsewhere (the start
        of a file, another pack, leaves shared with an older file) gets one
        ``posix_fadvise(WILLNEED)``. A race between threads here can only
        cost or save one hint.

        Single blocks asked for one at a time are looked up in batches of
        ``PREFETCH_BATCH`` (one index query instead of one per block; the
        reader is still dozens of blocks behind them)."""
        keys = [bytes(cid) for cid in cids]
        if len(keys) == 1:
            pending = getattr(self._local, "prefetch", None)
            if pending is None:
                pending = self._local.prefetch = []
            pending.append(keys[0])
            if len(pending) < PREFETCH_BATCH:
                return
            keys = pending[:]
            pending.clear()
        if not keys:
            return
        marks = ",".join("?" * len(keys))
        try:
            rows = self._reader().execute(
                f"SELECT pack, start, length FROM pack_blocks WHERE cid IN ({marks}) ORDER BY pack, start", keys
            ).fetchall()
        except sqlite3.Error:
            return  # only a hint
        self._advise(rows)

    def _advise(self, rows: Iterable[tuple[int, int, int]]) -> None:
        """``posix_fadvise(WILLNEED)`` for these (pack, start, length), in
        order, where they do not continue the last range asked for."""
        ranges: list[list[int]] = []
        for number, start, length in rows:
            if ranges and ranges[-1][0] == number and start - ranges[-1][2] <= PREFETCH_GAP:
                ranges[-1][2] = max(ranges[-1][2], start + length)
            else:
                ranges.append([number, start, start + length])
        for number, start, end in ranges:
            pack, asked = self._asked
            self._asked = (number, max(end, asked) if pack == number else end)
            if pack == number and asked - PREFETCH_GAP <= start <= asked + PREFETCH_GAP:
                continue  # reading on sequentially: the kernel's read-ahead has it
            try:
                fd = os.open(self._path_str(number), os.O_RDONLY)
            except OSError:
                continue  # a missing pack is reported when read
            try:
                os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def iterate(self) -> Iterator[CID]:
        """Every indexed CID, in the order of the bytes on disk."""
        for (key,) in self.db.query("SELECT cid FROM pack_blocks ORDER BY pack, start").fetchall():
            yield CID.from_bytes(key)

    # -- space ------------------------------------------------------------------------

    def usage(self) -> tuple[int, int]:
        """(blocks, bytes of block content) indexed."""
        count, total = self.db.query("SELECT count(*), coalesce(sum(length), 0) FROM pack_blocks").fetchone()
        return int(count), int(total)

    def pack_usage(self) -> list[PackUsage]:
        live = {
            number: (int(blocks), int(used))
            for number, blocks, used in self.db.query(
                # a record's bytes: its head (9 + CID) and the block's bytes
                "SELECT pack, count(*), sum(9 + length(cid) + length) FROM pack_blocks GROUP BY pack"
            ).fetchall()
        }
        out = []
        for number in self.pack_numbers():
            size = os.stat(self._path_str(number)).st_size
            blocks, used = live.get(number, (0, 0))
            out.append(PackUsage(number, size, used, blocks))
        return out

    def compact(self, below: float = COMPACT_BELOW) -> CompactReport:
        """Rewrite the packs whose live records are under ``below`` of their
        records' bytes (rule 5). Commits the open transaction."""
        from ._reports import CompactReport

        report = CompactReport()
        for usage in self.pack_usage():
            records = usage.size - HEADER_SIZE
            if usage.dead == 0 or usage.live >= below * records:
                continue
            if usage.pack == self._active:
                self._roll()  # never copy a pack into itself
            rows = self.db.query(
                "SELECT cid, start, length FROM pack_blocks WHERE pack = ? ORDER BY start", (usage.pack,)
            ).fetchall()
            damaged = False
            for key, start, length in rows:
                cid = CID.from_bytes(key)
                try:
                    data = self._read(cid, usage.pack, start, length)
                except (InvalidBlockError, RepositoryError):
                    data = None
                if data is None:
                    damaged = True  # leave it where it is, for verify to report
                    continue
                number, new_start = self._append(bytes(key), data)
                self.db.execute(
                    "UPDATE pack_blocks SET pack = ?, start = ? WHERE cid = ?", (number, new_start, key)
                )
                report.blocks_moved += 1
                report.bytes_moved += length
            self.db.commit()  # the copies fsynced, then the rows moved (rule 2)
            if damaged:
                continue
            try:
                os.unlink(self._path_str(usage.pack))
                fsync_dir(self.dir)
            except OSError as exc:
                raise disk_error(exc, "removing a compacted pack file", self.dir.parent) from None
            report.packs_removed += 1
            report.bytes_freed += usage.size
        return report

    # -- checking ---------------------------------------------------------------------

    def check(self) -> Iterator[PackProblem]:
        """Scan every pack's records without the index; yield what is damaged.

        Dead records (gc'd blocks) are not damage. Each block's bytes are
        checked against its hash by reading it through the index (verify)."""
        for name in sorted(os.listdir(self.dir)):
            stem, _, ext = name.partition(".")
            if not (ext == "pack" and len(stem) == 8 and stem.isdigit()):
                yield PackProblem(f"{self.dir}/{name}", "stray file in the pack directory")
        for number in self.pack_numbers():
            yield from self._check_pack(number)

    def _check_pack(self, number: int) -> Iterator[PackProblem]:
        path = self._path_str(number)
        indexed = {
            int(start): (bytes(key), int(length))
            for key, start, length in self.db.query(
                "SELECT cid, start, length FROM pack_blocks WHERE pack = ?", (number,)
            ).fetchall()
        }
        with open(path, "rb", buffering=0) as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            if os.pread(fd, HEADER_SIZE, 0) != PACK_MAGIC:
                yield PackProblem(path, "not a pack file: its header is damaged")
                return
            at = HEADER_SIZE
            while at < size:
                head = os.pread(fd, _RECORD_HEAD.size + 255, at)
                problem = None
                if len(head) < _RECORD_HEAD.size:
                    problem = "a record cut short (the file ends inside its header)"
                else:
                    magic, length, cid_len = _RECORD_HEAD.unpack_from(head)
                    key = head[_RECORD_HEAD.size : _RECORD_HEAD.size + cid_len]
                    start = at + _RECORD_HEAD.size + cid_len
                    if magic != RECORD_MAGIC or length > MAX_BLOCK_SIZE or len(key) < cid_len:
                        problem = "damaged record header"
                    elif start + length > size:
                        problem = f"a record cut short (it needs {start + length - size} more bytes)"
                    else:
                        try:
                            CID.from_bytes(key)
                        except InvalidCIDError:
                            problem = "damaged record header (not a CID)"
                if problem is not None:
                    # Without a trustworthy length the next record cannot be
                    # found; the blocks past here are still read (and hashed)
                    # through the index.
                    yield PackProblem(f"{path} at offset {at}", problem)
                    return
                row = indexed.get(start)
                if row is not None and row != (key, length):
                    yield PackProblem(
                        f"{path} at offset {at}",
                        f"the index says block {CID.from_bytes(row[0])} is here, the record holds {CID.from_bytes(key)}",
                    )
                at = start + length


def migrate_block_files(repo: Path, packs: PackStore) -> int:
    """Move the one-file-per-block store of schema version 3 (``blocks/XX/CID``)
    into packs; return the number of blocks moved.

    Crash-safe and resumable: a batch of files is appended and indexed, the
    transaction commits (after the pack's fsync), and only then are those
    files removed; a file whose CID is already indexed is just removed. The
    bytes are copied unchecked, so a damaged old file stays visible to
    ``cas repo verify`` under its CID. Files that are not blocks are left
    where they are (verify lists them) along with their directory.
    """
    old = repo / "blocks"
    if not old.is_dir():
        return 0
    moved = 0
    done: list[str] = []
    pending = 0

    def flush() -> None:
        packs.db.commit()
        for path in done:
            os.unlink(path)
        done.clear()

    try:
        for shard in sorted(os.listdir(old)):
            shard_dir = old / shard
            if not shard_dir.is_dir():
                continue
            for name in sorted(os.listdir(shard_dir)):
                path = f"{shard_dir}/{name}"
                try:
                    cid = CID.parse(name)
                except InvalidCIDError:
                    continue
                if not packs.has(cid):
                    with open(path, "rb") as f:
                        data = f.read(MAX_BLOCK_SIZE + 1)
                    if len(data) > MAX_BLOCK_SIZE:
                        continue  # not a block cas could have written: left for verify
                    packs.put_bytes(bytes(cid), data)
                    moved += 1
                    pending += len(data)
                done.append(path)
                if pending >= MIGRATE_BATCH:
                    flush()
                    pending = 0
            flush()
            try:
                shard_dir.rmdir()
            except OSError:
                pass  # not empty: stray files stay for verify to list
        try:
            old.rmdir()
        except OSError:
            pass
        fsync_dir(repo)
    except OSError as exc:
        raise disk_error(exc, "moving block files into packs", repo) from None
    return moved
