"""The local repository: a directory that one process owns.

Layout of a repository directory (mode 0700, like every directory in it;
every file in it is 0600, whatever the umask: see _modes.py)::

    config.json     format name and version, written at init; and the
                    settings (`cas config`: history, the daemon's), each
                    written whole, atomically (``update_config``)
    config.lock     flock()ed by each writer of the settings in turn
    lock            flock()ed by the owning process; holds its pid and
                    command (see _lock.py)
    keys/           the namespace key; the node key (cas/node/daemon.py)
    packs/NNNNNNNN.pack
                    large blocks, appended to pack files (see _packs.py)
    tmp/            staging for atomic writes and the mount's open files;
                    emptied when the owner opens
    meta.sqlite     SQLite (WAL, synchronous=FULL): small blocks, the pack
                    index, pins, namespace roots (see _database.py)
    dht/, control.sock, mount.log
                    the node's routing table, its control socket, the
                    mount process's output (cas/node/, cas.fuse)

A repository from before packs (``blocks/xx/CID``, one file per large
block) is moved into packs when it is opened (``_packs.migrate_block_files``).

Invariants this module keeps, and which ``verify`` checks:

* **Closed under references.** Every CID that a stored block links to, and
  every pinned CID and kept root, is itself stored. Writers keep it by the
  ordering rule (children, then ``barrier()``, then the parent, pin or root);
  garbage collection keeps it by deleting in rounds, parents before children,
  with a barrier between rounds.
* **Every indexed block's bytes are complete and durable.** Pack bytes are
  fsynced before the transaction that indexes them commits, and a crash
  leaves only an unindexed tail, cut off on the next open (``_packs.py``);
  bit rot or tampering is caught on every read and listed by ``verify``.
* **One owner.** The lock is taken on open (waiting for it, if the caller
  asks, while another process holds it) and released by the OS when the
  owner exits, however it exits, so kill -9 never leaves a stale lock
  (``_lock.py``).
* **Private to its owner.** Everything here is created 0700 / 0600 by
  ``_modes.private_dir`` and ``_modes.open_private``, and an older
  repository with looser modes is tightened when it is opened, under the
  lock and before the database is (``_modes.tighten``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..cid import CID, RAW
from ..durable import write_atomically
from ..errors import (
    BlockNotFoundError,
    ConcurrentUpdateError,
    CorruptBlockError,
    InvalidBlockError,
    InvalidInputError,
    RepositoryError,
)
from . import _lock, _modes
from ._blockstore import RepositoryBlockStore
from ._database import Database
from ._disk import disk_error
from ._held import HeldBlocks, disk_space
from ._packs import PackStore, migrate_block_files
from ._quarantine import Quarantine
from ._records import HeldRecords

if TYPE_CHECKING:
    from ..keys import NamespaceKey
    from ._reports import GcReport, VerifyReport

FORMAT_NAME = "cas-repository"
FORMAT_VERSION = 1
DEFAULT_HISTORY: int | None = None
"""Past namespace roots gc keeps at most, besides the current one, unless
configured with "history" in config.json: no limit by count (which
versions stay is decided by age: cas.names.history, "history.keep")."""
NAMESPACE_KEY_FILE = "namespace.key"

INIT_ENTRIES = frozenset({_lock.LOCK_FILE, "packs", "tmp", "keys"})
"""What a repository holds before its config.json is written (last)."""

CONFIG_LOCK_FILE = "config.lock"
"""Taken by each writer of config.json's settings in turn (``update_config``)."""


class RepoStat(NamedTuple):
    """What ``cas repo stat`` reports."""

    path: str
    blocks: int
    bytes: int
    """Bytes of the blocks stored (live content; pack records' heads and the
    dead bytes of gc'd blocks not counted: see ``pack_bytes``)."""
    pinned: int
    pack_bytes: int = 0
    """Bytes of the pack files on disk: ``bytes`` of large blocks plus record
    heads plus dead bytes that compaction has not reclaimed yet."""
    dead_bytes: int = 0
    """Of ``pack_bytes``, the records of blocks gc deleted: compaction (at the
    end of ``cas gc``) frees them once a pack is under half live."""


class RootRow(NamedTuple):
    """One stored namespace root: its sequence number, CID, time and the
    signed record (checked by cas.names, not here)."""

    seq: int
    root: CID
    time_ns: int
    record: bytes


class LocalStore:
    """An open, locked repository directory.

    Use :meth:`open` (creating the repository if needed) and :meth:`close`, or
    the object as a context manager. ``blocks`` is the block store.
    """

    def __init__(self, path: Path, lock_fd: int, *, read_only: bool = False) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self.read_only = read_only
        """Opened by a reader beside the owner (``open(read_only=True)``)."""
        self._readers_excluded = -1  # the owner's exclusive hold on readers.lock, if it keeps one
        self.db = Database(path / "meta.sqlite", read_only=read_only)
        packs: PackStore | None = None
        try:
            packs = PackStore(path / "packs", self.db, read_only=read_only)
            if not read_only:
                migrate_block_files(path, packs)  # a repository from before packs
        except BaseException:
            if packs is not None:
                packs.close()
            self.db.close()
            raise
        self.blocks = RepositoryBlockStore(packs, self.db)
        self.held = HeldBlocks(self.db, self.blocks, disk=lambda: disk_space(path))  # blocks kept for the network (_held.py)
        self.records = HeldRecords(self.db, self.blocks.barrier)  # namespace records (_records.py)
        self.quarantine = Quarantine(self.db, self.blocks, self.held)  # blocks that failed verification
        self.config = self.check_config(path)
        self._namespace_key: NamespaceKey | None = None
        self._grouping_roots = False

    # -- opening --------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        wait: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
        read_only: bool = False,
    ) -> LocalStore:
        """Open (and with ``create``, initialise) the repository at ``path``.

        With ``read_only``, a command that only reads opens it beside its
        owner, without waiting for it (a long ``cas add`` does not hold up
        ``cas ls``): committed blocks and roots, through SQLite's WAL, and
        nothing it reads is deleted until it closes (``readers.lock``:
        gc waits for it). It writes nothing; a repository that needs
        creating or upgrading first is opened as by its owner instead.

        If another process owns it, wait up to ``wait`` seconds for it to
        let go, then raise RepositoryLockedError naming that process (at
        once if ``wait`` is 0, the default). After a second of waiting
        ``on_wait`` is called once with a phrase naming the owner ("in use
        by process 123 (cas add big.iso)"). Raises RepositoryError if
        ``path`` is something other than a repository.
        """
        path = Path(path).expanduser().absolute()
        if read_only and (path / "config.json").exists():
            store = cls._open_reader(path, wait)
            if store is not None:
                return store
        if (path / "config.json").exists():
            cls.check_config(path)
            lock_fd = _lock.acquire(path, wait=wait, on_wait=on_wait)
        elif not create:
            raise RepositoryError(f"no cas repository at {path}; create one with 'cas init --repo {path}'")
        else:
            lock_fd = cls._create(path, wait=wait, on_wait=on_wait)
        try:
            _modes.report(path, _modes.tighten(path))  # an older repository made private: _modes.py
            _empty_dir(path / "tmp")
            return cls(path, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _open_reader(cls, path: Path, wait: float) -> LocalStore | None:
        """The repository opened beside its owner, or None if it must be
        opened as by its owner: its schema is older (an upgrade writes)."""
        cls.check_config(path)
        readers_fd = _lock.acquire_shared(path, wait=wait)
        try:
            # Modes only, no data: made private by any command (_modes.py).
            _modes.report(path, _modes.tighten(path))
            store = cls(path, readers_fd, read_only=True)
        except BaseException:
            os.close(readers_fd)
            raise
        if store.db.current:
            return store
        store.close()
        return None

    @classmethod
    def _create(cls, path: Path, *, wait: float, on_wait: Callable[[str], None] | None) -> int:
        """Make the repository at ``path`` and return its lock, held.

        Several processes may make it at once (commands started together on
        a new machine): each takes the lock first, and the one that finds
        config.json still missing writes the repository while the others
        wait their turn, then open what it made. A directory holding only
        what a repository begins with (its lock, keys, packs, tmp: an init
        cut short by a crash) is made into one; anything else there is not
        ours, and is left untouched."""
        try:
            found = {entry.name for entry in os.scandir(path)} if path.is_dir() else None
        except OSError as exc:
            raise disk_error(exc, "reading", path) from None
        made_meanwhile = found is not None and "config.json" in found  # by a command started with this one
        if found is not None:  # config.json on its way in (write_atomically's temporary name)
            found = {name for name in found if not name.startswith(".config.json.tmp-")}
        if path.exists() and not made_meanwhile and (found is None or found - INIT_ENTRIES):
            raise RepositoryError(f"{path} exists and is not a cas repository; give --repo a new or empty directory")
        try:
            _modes.private_dir(path, parents=True)
            try:
                os.chmod(path, _modes.DIR_MODE)  # an empty directory given for it becomes the repository
            except PermissionError:
                pass  # another user's directory: open names it (_modes.py, rule 4)
        except OSError as exc:
            raise disk_error(exc, "creating the repository", path) from None
        lock_fd = _lock.acquire(path, wait=wait, on_wait=on_wait)
        try:
            if not (path / "config.json").exists():
                cls._initialise(path)
        except BaseException:
            os.close(lock_fd)
            raise
        return lock_fd

    @staticmethod
    def _initialise(path: Path) -> None:
        """Write a new repository's layout into ``path``, whose lock is held."""
        try:
            for name in ("packs", "tmp", "keys"):
                _modes.private_dir(path / name)
            from ..keys import NamespaceKey

            NamespaceKey.load_or_create(path / "keys" / NAMESPACE_KEY_FILE)
            config = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
            # config.json last: its presence marks a complete repository.
            write_atomically(path / "config.json", json.dumps(config, indent=2).encode() + b"\n")
        except OSError as exc:
            raise disk_error(exc, "creating the repository", path) from None

    @staticmethod
    def check_config(path: Path) -> dict[str, Any]:
        """The repository's config.json, checked; RepositoryError if ``path``
        is not a cas repository this version understands."""
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"{path}/config.json is unreadable: {exc}") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
            raise RepositoryError(f"{path} is not a cas repository (config.json says otherwise)")
        if config.get("version") != FORMAT_VERSION:
            raise RepositoryError(
                f"{path} has repository format version {config.get('version')!r}; "
                f"this cas understands version {FORMAT_VERSION}"
            )
        return config

    @classmethod
    def update_config(cls, path: str | os.PathLike[str], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply ``change`` to the settings in ``path``'s config.json and
        write it back atomically; return the new settings. Writers of the
        settings (``cas config``) take ``config.lock`` in turn, so none is
        lost; they need not own the repository (a running daemon does), as
        nothing else writes config.json after init and readers see the old
        file or the new. ``change`` may not touch the format or version."""
        path = Path(path).expanduser().absolute()
        cls.check_config(path)
        try:
            fd = _modes.open_private(path / CONFIG_LOCK_FILE, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise disk_error(exc, "locking the settings", path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            config = cls.check_config(path)
            kept = {key: config[key] for key in ("format", "version")}
            change(config)
            if {key: config.get(key) for key in kept} != kept:
                raise InvalidInputError("the repository's format and version are not settings")
            try:
                write_atomically(path / "config.json", json.dumps(config, indent=2, sort_keys=True).encode() + b"\n")
            except OSError as exc:
                raise disk_error(exc, "writing config.json", path) from None
            return config
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._lock_fd < 0:
            return
        self.blocks.packs.close()
        self.db.close()
        if self._readers_excluded >= 0:
            os.close(self._readers_excluded)
            self._readers_excluded = -1
        os.close(self._lock_fd)  # releases the flock
        self._lock_fd = -1

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pins -----------------------------------------------------------------

    def pin(self, cid: CID) -> bool:
        """Pin ``cid`` (which, with everything it links to, must be stored).
        Durable on return. Returns True if it was not pinned before."""
        if not self.blocks.has(cid):
            raise RepositoryError(f"cannot pin {cid}: it is not in the repository")
        cur = self.db.execute(
            "INSERT OR IGNORE INTO pins (cid, created_ns) VALUES (?, ?)", (bytes(cid), time.time_ns())
        )
        self.blocks.barrier()  # the blocks, then the pin, durable in that order
        return cur.rowcount == 1

    def unpin(self, cid: CID) -> bool:
        cur = self.db.execute("DELETE FROM pins WHERE cid = ?", (bytes(cid),))
        self.blocks.barrier()
        return cur.rowcount == 1

    def pins(self, limit: int | None = None, after: CID | None = None) -> list[CID]:
        """The pinned CIDs, sorted; with ``limit`` or ``after``, one page of
        them in the order of their binary form, those after ``after``
        (how a daemon hands out 10^5 pins: a page per message)."""
        if limit is None and after is None:
            rows = self.db.query("SELECT cid FROM pins").fetchall()
            return sorted(CID.from_bytes(row[0]) for row in rows)
        rows = self.db.query("SELECT cid FROM pins WHERE cid > ? ORDER BY cid LIMIT ?",
                             (b"" if after is None else bytes(after), -1 if limit is None else limit)).fetchall()
        return [CID.from_bytes(row[0]) for row in rows]

    def is_pinned(self, cid: CID) -> bool:
        return self.db.query("SELECT 1 FROM pins WHERE cid = ?", (bytes(cid),)).fetchone() is not None

    # -- namespace roots ---------------------------------------------------------

    @property
    def history_limit(self) -> int | None:
        """How many past roots (besides the current one) gc keeps at most;
        None for no limit by count."""
        value = self.config.get("history", DEFAULT_HISTORY)
        return value if isinstance(value, int) and value >= 0 else DEFAULT_HISTORY

    def namespace_key(self) -> NamespaceKey:
        """The key that signs this repository's namespace roots."""
        if self._namespace_key is None:
            from ..keys import NamespaceKey

            self._namespace_key = NamespaceKey.load_or_create(self.path / "keys" / NAMESPACE_KEY_FILE)
        return self._namespace_key

    def commit_root(self, seq: int, root: CID, time_ns: int, record: bytes) -> None:
        """Record root ``seq`` durably, in one step after the blocks it refers to
        (inside :meth:`grouped_roots`, durable at the end of the group).

        Compare-and-swap: raises ConcurrentUpdateError if a root numbered
        ``seq`` or higher exists already (another writer was first).
        """
        if not self.blocks.has(root):
            raise RepositoryError(f"cannot commit root {root}: it is not in the repository")
        (latest,) = self.db.query("SELECT coalesce(max(seq), 0) FROM roots").fetchone()
        if latest >= seq:
            raise ConcurrentUpdateError(
                f"the namespace changed while this operation ran (root {latest} exists); retry"
            )
        self.db.execute(
            "INSERT INTO roots (seq, root, time_ns, record) VALUES (?, ?, ?, ?)",
            (seq, bytes(root), time_ns, record),
        )
        if not self._grouping_roots:
            self.blocks.barrier()

    @contextlib.contextmanager
    def grouped_roots(self) -> Iterator[None]:
        """Within this block, :meth:`commit_root` leaves each root in the
        open transaction; on the way out one barrier makes them durable
        together (or none of them, if it fails: it raises). So a daemon
        commits many clients' namespace changes, each its own version, with
        one fsync. Whoever acknowledges a root must wait for the block to end.
        The barrier runs however the block ends: the transaction holds
        other writers' blocks too, and is never rolled back for one of them."""
        self._grouping_roots = True
        try:
            yield
        finally:
            self._grouping_roots = False
            self.blocks.barrier()

    def kept_roots(self) -> set[CID]:
        """The root CIDs of every kept version (what gc keeps reachable)."""
        return {CID.from_bytes(row[0]) for row in self.db.query("SELECT DISTINCT root FROM roots")}

    def drop_roots(self, seqs: list[int]) -> int:
        """Delete the root rows numbered ``seqs`` (a thinning of the history,
        cas.names.history), never the newest; durable on return. How many
        went. Their blocks stay until gc finds nothing else needs them."""
        (latest,) = self.db.query("SELECT coalesce(max(seq), 0) FROM roots").fetchone()
        dropped = 0
        for seq in seqs:
            if seq != latest:
                dropped += self.db.execute("DELETE FROM roots WHERE seq = ?", (seq,)).rowcount
        self.blocks.barrier()
        return dropped

    def roots(self, newest_first: bool = True, limit: int | None = None, after: int | None = None) -> list[RootRow]:
        """Stored root rows, all or the first ``limit`` (not verified: the
        namespace checks the records); with ``after``, only those past
        sequence number ``after`` in that order (below it newest first,
        above it oldest first): how a long history is read a page at a time."""
        order = "DESC" if newest_first else "ASC"
        sql = "SELECT seq, root, time_ns, record FROM roots"
        params: tuple[object, ...] = ()
        if after is not None:
            sql += " WHERE seq < ?" if newest_first else " WHERE seq > ?"
            params = (after,)
        sql += f" ORDER BY seq {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, limit)
        rows = self.db.query(sql, params).fetchall()
        return [RootRow(seq, CID.from_bytes(root), time_ns, bytes(record)) for seq, root, time_ns, record in rows]

    # -- reports ----------------------------------------------------------------

    def stat(self) -> RepoStat:
        blocks, total = self.blocks.usage()
        (pinned,) = self.db.query("SELECT count(*) FROM pins").fetchone()
        packs = self.blocks.packs.pack_usage()
        return RepoStat(path=str(self.path), blocks=blocks, bytes=total, pinned=pinned,
                        pack_bytes=sum(usage.size for usage in packs),
                        dead_bytes=sum(usage.dead for usage in packs))

    def verify(self, progress: Callable[[int], None] | None = None, *, repair: bool = False) -> VerifyReport:
        """Re-hash every block and check every reference; modifies nothing,
        unless ``repair``: then every block that fails verification is
        quarantined (``_quarantine.py``; a daemon then fetches good copies).

        ``progress`` is called with the byte count of each block checked.
        """
        from . import _links  # not at the top: reading a file needs no CBOR (cbor2)
        from ._reports import Problem, VerifyReport

        report = VerifyReport()
        for damage in self.blocks.packs.check():
            report.problems.append(Problem(damage.where, damage.what))
        old = self.path / "blocks"  # what the migration from one file per block left: not blocks
        if old.is_dir():
            for leftover in sorted(p for p in old.rglob("*") if not p.is_dir()):
                report.problems.append(Problem(str(leftover), "stray file in the old block directory"))
        for bad in self.quarantine.list():
            report.problems.append(Problem(bad.cid.encode(), f"quarantined: it failed verification in {bad.place} "
                                                             "and no good copy has been fetched yet"))
        for cid in self.blocks.iterate():
            try:
                data = self.blocks.get(cid)
            except CorruptBlockError as exc:
                report.problems.append(Problem(cid.encode(), "corrupt: content does not match its hash"))
                report.corrupt.append(exc)
                continue
            except InvalidBlockError:
                report.problems.append(Problem(cid.encode(), "corrupt: content does not match its hash"))
                continue
            except RepositoryError as exc:
                report.problems.append(Problem(cid.encode(), f"unreadable: {exc}"))
                continue
            report.blocks_checked += 1
            report.bytes_checked += len(data)
            if progress is not None:
                progress(len(data))
            if cid.codec != RAW and self.held.is_held(cid):
                continue  # held for the network: its children live on other nodes
            try:
                links = _links.links_of(cid, data)
            except InvalidBlockError as exc:
                report.problems.append(Problem(cid.encode(), f"malformed node: {exc}"))
                continue
            for child in links:
                if not self.blocks.has(child):
                    report.problems.append(Problem(child.encode(), f"missing, but linked from {cid}"))
        for cid in self.pins():
            if not self.blocks.has(cid):
                report.problems.append(Problem(cid.encode(), "missing, but pinned"))
        for row in self.roots():
            if not self.blocks.has(row.root):
                report.problems.append(Problem(row.root.encode(), f"missing, but namespace root {row.seq}"))
        if repair and report.corrupt:
            for damage in report.corrupt:
                self.quarantine.add(damage)
            self.blocks.barrier()
        return report

    # -- garbage collection ------------------------------------------------------

    def gc(self, *, history: int | None = None, on_wait: Callable[[str], None] | None = None) -> GcReport:
        """Delete every block not reachable from a pin, the current root or
        one of the ``history`` roots before it (default: the configured
        limit), and the root rows older than that. Blocks put through an
        open write session are kept, and so are blocks held for the network
        (``_held.py``) until their lease runs out. Readers beside the owner
        are waited for first, and kept out until it is done (``on_wait`` is
        told if that takes more than a second)."""
        with self._readers_kept_out(on_wait):
            return self._gc(history)

    @contextlib.contextmanager
    def _readers_kept_out(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """While the owner deletes what a reader could be reading: no reader
        beside it (those open are waited for)."""
        if self._readers_excluded >= 0:  # kept out already, for the owner's life
            yield
            return
        fd = _lock.exclusive_readers(self.path, on_wait)
        try:
            yield
        finally:
            os.close(fd)

    def keep_out_readers(self) -> bool:
        """For an owner that deletes at any time (the daemon: repair drops,
        quarantine): no reader opens beside it from now until it closes
        (commands go through it instead). False if readers are open now:
        the caller waits for them, and asks again."""
        if self._readers_excluded < 0:
            fd = _lock.try_exclusive_readers(self.path)
            if fd is None:
                return False
            self._readers_excluded = fd
        return True

    def _gc(self, history: int | None) -> GcReport:
        from . import _links  # not at the top: reading a file needs no CBOR (cbor2)
        from ._reports import GcReport

        keep = self.history_limit if history is None else history
        report = GcReport()
        if keep is not None:
            (cut,) = self.db.query("SELECT coalesce(min(seq), 0) FROM (SELECT seq FROM roots ORDER BY seq DESC "
                                   "LIMIT ?)", (keep + 1,)).fetchone()
            report.roots_dropped += self.db.execute("DELETE FROM roots WHERE seq < ?", (cut,)).rowcount
        self.blocks.barrier()
        live = self._reachable([*self.pins(), *self.kept_roots()])
        expired = self.held.expired()
        sizes = {cid: self._block_size(cid) for cid in expired}
        for cid in self.held.drop(expired, live | self.blocks.protected()):  # nobody renewed them
            report.blocks_freed += 1
            report.bytes_freed += sizes[cid]
            report.expired_freed += 1
        protected = self.blocks.protected() | set(self.held.cids())  # held, leased: the repair loop decides
        garbage = {cid for cid in self.blocks.iterate() if cid not in live and cid not in protected}
        # Delete parents before children, so that at every instant (a crash
        # included) each remaining block's links still resolve.
        parents_left: dict[CID, int] = dict.fromkeys(garbage, 0)
        children: dict[CID, list[CID]] = {}
        for cid in garbage:
            if cid.codec == RAW:
                continue
            try:
                kids = [c for c in _links.links_of(cid, self.blocks.get(cid)) if c in garbage]
            except (InvalidBlockError, RepositoryError):
                kids = []  # a damaged node: delete it; its children stay ordered by others
            children[cid] = kids
            for kid in kids:
                parents_left[kid] += 1
        ready = [cid for cid, n in parents_left.items() if n == 0]
        while ready:
            next_ready: list[CID] = []
            for cid in ready:
                size = self._block_size(cid)
                if self.blocks.delete(cid):
                    report.blocks_freed += 1
                    report.bytes_freed += size
                for kid in children.get(cid, ()):
                    parents_left[kid] -= 1
                    if parents_left[kid] == 0:
                        next_ready.append(kid)
            self.blocks.barrier()  # this round's deletions durable before the next
            ready = next_ready
        report.compaction = self.blocks.packs.compact()  # the dead bytes back to the disk
        return report

    def drop_held(self, cids: list[CID]) -> list[CID]:
        """Delete those of ``cids`` that are held for the network and that no
        pin, kept root or open write session needs (the replication decided
        they are safe elsewhere). Own blocks are never deleted here."""
        keep = self._reachable([*self.pins(), *self.kept_roots()]) | self.blocks.protected()
        return self.held.drop(cids, keep)

    def _block_size(self, cid: CID) -> int:
        row = self.db.query("SELECT length(data) FROM small_blocks WHERE cid = ?", (bytes(cid),)).fetchone()
        if row is not None:
            return int(row[0])
        where = self.blocks.locate(cid)
        return 0 if where is None else where.length

    def _reachable(self, roots: list[CID]) -> set[CID]:
        from . import _links  # not at the top: reading a file needs no CBOR (cbor2)
        live: set[CID] = set()
        stack = [cid for cid in roots]
        while stack:
            cid = stack.pop()
            if cid in live:
                continue
            live.add(cid)
            if cid.codec == RAW:
                continue  # leaves link to nothing; no need to read them
            try:
                stack.extend(_links.links_of(cid, self.blocks.get(cid)))
            except BlockNotFoundError:
                continue  # verify reports it; gc must not fail on it
        return live


def _empty_dir(path: Path) -> None:
    """Make ``path`` an empty directory: what a crashed process left in it
    goes. Usually it is empty already, and then nothing is written (a
    command that only reads leaves the repository's directories alone) and
    shutil (and the compression modules it imports, ~2 ms of every
    command's start) is not needed."""
    try:
        with os.scandir(path) as entries:
            if next(entries, None) is None:
                return
    except FileNotFoundError:
        _modes.private_dir(path)
        return
    except NotADirectoryError:
        path.unlink()
        _modes.private_dir(path)
        return
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    _modes.private_dir(path)
