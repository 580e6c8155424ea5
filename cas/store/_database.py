"""The repository's SQLite database: small blocks, the pack index, pins and
namespace roots.

One connection, owned by the repository's owner process, in WAL mode with
``synchronous=FULL`` so that a commit is durable when it returns.

The file is made mode 0600 before the first connection (``_modes.py``):
SQLite gives ``-wal``, ``-shm`` and ``-journal`` the main file's mode, so
they are private too, whatever the umask.

Writes are *group-committed*: inserts open a transaction lazily and
:meth:`Database.commit` ends it. Before it commits, ``commit`` runs the
``before_commit`` hook, which the pack store sets to fsync the pack files
appended to since the last commit (``_packs.py``): so everything in one
transaction (new pack index rows, directory nodes, a pin, a new root)
becomes durable in one step and only after the bytes it refers to, whoever
calls ``commit``. That is what makes a namespace operation one fsync instead
of one per node, and an add one fsync of its pack instead of one per block.

Schema (``PRAGMA user_version`` = 7)::

    small_blocks(cid BLOB PRIMARY KEY, data BLOB)   blocks under 64 KiB
    pins(cid BLOB PRIMARY KEY, created_ns INTEGER)
    roots(seq INTEGER PRIMARY KEY, root BLOB, time_ns INTEGER, record BLOB)
    held(cid BLOB PRIMARY KEY, size INTEGER, since_ns INTEGER, sender BLOB, expires_ns INTEGER)
                                    blocks held for the network (version 2);
                                    the node that placed each, NULL if none
                                    did (fetched to answer a read; held
                                    before version 6); when its lease runs
                                    out (version 7, ``_held.py``)
    records(key BLOB PRIMARY KEY, record BLOB, seq INTEGER, sender BLOB, since_ns INTEGER)
                                    namespace records held for the network (version 3)
    settings(name TEXT PRIMARY KEY, value)
                                    small node settings, e.g. publishing (version 3)
    pack_blocks(cid BLOB PRIMARY KEY, pack INTEGER, start INTEGER, length INTEGER)
                                    where each large block's bytes lie: pack
                                    file number, byte offset of the block's
                                    bytes in it, their length (version 4)
    quarantine(cid BLOB PRIMARY KEY, place TEXT, reason TEXT, held INTEGER, since_ns INTEGER)
                                    blocks that failed verification, taken
                                    out of the index until a good copy is
                                    fetched (``_quarantine.py``, version 5)

Migrations: version 1 (no ``held`` table) is upgraded in place on open by
creating the table, empty: every block of an old repository is its own.
Version 2 (no ``records``, no ``settings``) likewise gets both, empty.
Version 3 gets the empty ``pack_blocks`` table; its ``blocks/XX/CID`` files
are then moved into packs by the store (``_packs.migrate_block_files``).
Version 4 gets the empty ``quarantine`` table. Version 5 gets the
``sender`` column of ``held`` (NULL for what it held already). Version 6
gets the ``expires_ns`` column of ``held``: what it held already is given
the default lease from the upgrade (the node shortens it to its network's
on start).
A schema newer than this code understands is refused, never touched.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import RepositoryError
from ._disk import disk_error
from ._modes import open_private

SCHEMA_VERSION = 7

_SCHEMA = """
CREATE TABLE IF NOT EXISTS small_blocks (cid BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pins (cid BLOB PRIMARY KEY, created_ns INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roots (
    seq INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    time_ns INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS held (
    cid BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    since_ns INTEGER NOT NULL,
    sender BLOB,
    expires_ns INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    key BLOB PRIMARY KEY,
    record BLOB NOT NULL,
    seq INTEGER NOT NULL,
    sender BLOB NOT NULL,
    since_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pack_blocks (
    cid BLOB PRIMARY KEY,
    pack INTEGER NOT NULL,
    start INTEGER NOT NULL,
    length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pack_blocks_by_place ON pack_blocks (pack, start);
CREATE TABLE IF NOT EXISTS quarantine (
    cid BLOB PRIMARY KEY,
    place TEXT NOT NULL,
    reason TEXT NOT NULL,
    held INTEGER NOT NULL,
    since_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""
_KNOWN_VERSIONS = (0, 1, 2, 3, 4, 5, 6, SCHEMA_VERSION)
"""Versions opened (and upgraded to SCHEMA_VERSION): 0 is a new file, 1
lacks the ``held`` table, 2 the ``records`` and ``settings`` tables, 3 the
``pack_blocks`` table, 4 the ``quarantine`` table, which ``_SCHEMA`` creates;
5 the ``sender`` column of ``held`` and 6 its ``expires_ns``, which the
upgrade adds."""


def _db_error(exc: sqlite3.Error, path: Path) -> RepositoryError:
    text = str(exc)
    if "full" in text:
        return RepositoryError(
            f"disk full while writing metadata in {path.parent}; free some space and retry "
            "(content stored earlier is intact)"
        )
    return RepositoryError(f"metadata database {path} failed: {text}")


class Database:
    """The open metadata database of one repository."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Open the database; with ``read_only``, as a reader beside the
        owner: it writes nothing (``query_only``) and upgrades nothing
        (``current`` says whether the schema is this version's)."""
        self.path = path
        self.read_only = read_only
        self.current = True
        self._in_transaction = False
        self.before_commit: Callable[[], None] | None = None
        """Run before each commit of a transaction: the pack store's fsync
        of the bytes the transaction's rows point at (the ordering rule)."""
        try:
            os.close(open_private(path, os.O_RDONLY))  # 0600 before SQLite creates its companions
        except OSError as exc:
            raise disk_error(exc, "opening the metadata database", path.parent) from None
        try:
            # The owner may call in from a worker thread (AsyncRepository);
            # calls are never concurrent, which the owner guarantees.
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            if read_only:
                self._conn.execute("PRAGMA query_only = ON")
                self.current = self._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
                return
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in _KNOWN_VERSIONS:
                raise RepositoryError(
                    f"{path} has metadata schema {version}; this cas understands {SCHEMA_VERSION}"
                )
            if version != SCHEMA_VERSION:  # a write: only when there is something to upgrade
                self._conn.executescript(_SCHEMA)
                columns = {row[1] for row in self._conn.execute("PRAGMA table_info(held)")}
                if "sender" not in columns:  # versions 2-5: blocks held so far have no known sender
                    self._conn.execute("ALTER TABLE held ADD COLUMN sender BLOB")
                if "expires_ns" not in columns:
                    self._conn.execute("ALTER TABLE held ADD COLUMN expires_ns INTEGER NOT NULL DEFAULT 0")
                if version < 7:  # blocks held before leases: theirs start now (again, after a crash here)
                    from ._held import DEFAULT_LEASE

                    self._conn.execute("UPDATE held SET expires_ns = ? WHERE expires_ns = 0",
                                       (time.time_ns() + int(DEFAULT_LEASE * 1e9),))
                self._conn.execute("CREATE INDEX IF NOT EXISTS held_by_sender ON held (sender)")
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise _db_error(exc, path) from None

    def close(self) -> None:
        if self._in_transaction:
            self._conn.execute("ROLLBACK")  # never committed: nothing refers to it
            self._in_transaction = False
        self._conn.close()

    def open_reader(self) -> sqlite3.Connection:
        """A new read-only connection to the same database, for one other
        thread: it sees committed rows only (WAL readers never block the
        writer, nor it them)."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise _db_error(exc, self.path) from None
        return conn

    # -- transactions ---------------------------------------------------------

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Run a write inside the current group transaction (opened here)."""
        if self.read_only:
            raise RepositoryError(f"{self.path.parent} is open for reading only here (a bug: a write was tried)")
        try:
            if not self._in_transaction:
                self._conn.execute("BEGIN IMMEDIATE")
                self._in_transaction = True
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise _db_error(exc, self.path) from None

    def query(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """A read; sees this connection's uncommitted writes."""
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise _db_error(exc, self.path) from None

    def commit(self) -> None:
        """Make every write since the last commit durable, atomically."""
        if not self._in_transaction:
            return
        if self.before_commit is not None:
            try:
                self.before_commit()
            except BaseException:
                # The bytes these rows point at may not be on disk (and a
                # failed fsync is not reliably reported twice): the rows
                # must never commit. The operation fails as a whole.
                self._conn.execute("ROLLBACK")
                self._in_transaction = False
                raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _db_error(exc, self.path) from None
        finally:
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._in_transaction = False

    # -- small blocks ----------------------------------------------------------

    def has_block(self, key: bytes) -> bool:
        return self.query("SELECT 1 FROM small_blocks WHERE cid = ?", (key,)).fetchone() is not None

    def get_block(self, key: bytes) -> bytes | None:
        row = self.query("SELECT data FROM small_blocks WHERE cid = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_block(self, key: bytes, data: bytes) -> bool:
        cur = self.execute("INSERT OR IGNORE INTO small_blocks (cid, data) VALUES (?, ?)", (key, data))
        return cur.rowcount == 1

    def delete_block(self, key: bytes) -> bool:
        return self.execute("DELETE FROM small_blocks WHERE cid = ?", (key,)).rowcount == 1

    def block_keys(self) -> Iterator[bytes]:
        # fetchall: the caller may delete while iterating (gc)
        for (key,) in self.query("SELECT cid FROM small_blocks ORDER BY cid").fetchall():
            yield bytes(key)

    def block_usage(self) -> tuple[int, int]:
        count, total = self.query("SELECT count(*), coalesce(sum(length(data)), 0) FROM small_blocks").fetchone()
        return int(count), int(total)
