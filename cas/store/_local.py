"""The local repository: a directory that one process owns.

Layout of a repository directory::

    config.json     format name and version; written once, at init
    lock            flock()ed by the owning process; holds its pid and command
    blocks/xx/CID   block bytes, one file each (see _blockfiles.py)
    tmp/            staging for atomic writes; emptied when the owner opens
    meta.sqlite     metadata in SQLite (WAL, synchronous=FULL): pins

Invariants this module keeps, and which ``verify`` checks:

* **Closed under references.** Every CID that a stored block links to, and
  every pinned CID, is itself stored. Writers keep it by the ordering rule
  (children, then ``barrier()``, then the parent or pin); deletion (gc) keeps
  it by removing parents before children.
* **Every block file holds the bytes of its name.** Files are written whole
  and renamed into place, so a crash leaves either no file or a complete one;
  bit rot or tampering is caught on every read and listed by ``verify``.
* **One owner.** The lock is taken on open and released by the OS when the
  owner exits, however it exits, so kill -9 never leaves a stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..cid import CID
from ..errors import (
    InvalidBlockError,
    RepositoryError,
    RepositoryLockedError,
)
from . import _links
from ._blockfiles import FileBlockStore, disk_error, fsync_dir

FORMAT_NAME = "cas-repository"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RepoStat:
    """What ``cas repo stat`` reports."""

    path: str
    blocks: int
    bytes: int
    pinned: int


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a repository, found by :meth:`LocalStore.verify`."""

    cid: str
    what: str


@dataclass
class VerifyReport:
    blocks_checked: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(path.parent)


class LocalStore:
    """An open, locked repository directory.

    Use :meth:`open` (creating the repository if needed) and :meth:`close`, or
    the object as a context manager. ``blocks`` is the block store.
    """

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self.blocks = FileBlockStore(path / "blocks", path / "tmp")
        # The owner may call in from a worker thread (AsyncRepository); calls are
        # never concurrent, which the owner's write lock guarantees.
        self._db = sqlite3.connect(
            path / "meta.sqlite", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pins (cid TEXT PRIMARY KEY, created_ns INTEGER NOT NULL)"
        )

    # -- opening --------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> LocalStore:
        """Open (and with ``create``, initialise) the repository at ``path``.

        Raises RepositoryLockedError if another process owns it, and
        RepositoryError if ``path`` is something other than a repository.
        """
        path = Path(path).expanduser().absolute()
        if not (path / "config.json").exists():
            if not create:
                raise RepositoryError(
                    f"no cas repository at {path}; create one with 'cas init --repo {path}'"
                )
            cls._initialise(path)
        cls._check_config(path)
        lock_fd = cls._lock(path)
        try:
            shutil.rmtree(path / "tmp", ignore_errors=True)
            (path / "tmp").mkdir(exist_ok=True)
            return cls(path, lock_fd)
        except sqlite3.Error as exc:
            os.close(lock_fd)
            raise RepositoryError(f"cannot open the metadata of {path}: {exc}") from None
        except BaseException:
            os.close(lock_fd)
            raise

    @staticmethod
    def _initialise(path: Path) -> None:
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RepositoryError(
                f"{path} exists and is not a cas repository; "
                "give --repo a new or empty directory"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            FileBlockStore.create_layout(path / "blocks")
            (path / "tmp").mkdir(exist_ok=True)
            config = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
            # config.json last: its presence marks a complete repository.
            _atomic_write(path / "config.json", json.dumps(config, indent=2).encode() + b"\n")
        except OSError as exc:
            raise disk_error(exc, "creating the repository", path) from None

    @staticmethod
    def _check_config(path: Path) -> None:
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

    @staticmethod
    def _lock(path: Path) -> int:
        try:
            fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RepositoryError(f"cannot open {path}/lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f" by {holder}" if holder else ""
                raise RepositoryLockedError(
                    f"repository {path} is in use{who}; wait for it to finish "
                    "(or stop it) and try again"
                ) from None
            raise RepositoryError(f"cannot lock {path}: {exc.strerror}") from None
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({command[:200]})\n".encode(), 0)
        return fd

    def close(self) -> None:
        if self._lock_fd < 0:
            return
        self._db.close()
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
        self.blocks.barrier()  # the ordering rule: bytes durable before the pin
        try:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO pins (cid, created_ns) VALUES (?, ?)",
                (cid.encode(), time.time_ns()),
            )
        except sqlite3.OperationalError as exc:
            raise RepositoryError(f"cannot record the pin in {self.path}: {exc}") from None
        return cur.rowcount == 1

    def unpin(self, cid: CID) -> bool:
        cur = self._db.execute("DELETE FROM pins WHERE cid = ?", (cid.encode(),))
        return cur.rowcount == 1

    def pins(self) -> list[CID]:
        rows = self._db.execute("SELECT cid FROM pins ORDER BY cid").fetchall()
        return [CID.parse(row[0]) for row in rows]

    def is_pinned(self, cid: CID) -> bool:
        row = self._db.execute("SELECT 1 FROM pins WHERE cid = ?", (cid.encode(),)).fetchone()
        return row is not None

    # -- reports --------------------------------------------------------------

    def stat(self) -> RepoStat:
        blocks, total = self.blocks.usage()
        (pinned,) = self._db.execute("SELECT count(*) FROM pins").fetchone()
        return RepoStat(path=str(self.path), blocks=blocks, bytes=total, pinned=pinned)

    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Re-hash every block and check every reference; never modifies.

        ``progress`` is called with the byte count of each block checked.
        """
        report = VerifyReport()
        for path in self.blocks.stray_files():
            report.problems.append(Problem(str(path), "stray file in the block directory"))
        for cid in self.blocks.iterate():
            try:
                data = self.blocks.get(cid)
            except InvalidBlockError:
                report.problems.append(Problem(cid.encode(), "corrupt: content does not match its hash"))
                continue
            except OSError as exc:
                report.problems.append(Problem(cid.encode(), f"unreadable: {exc}"))
                continue
            report.blocks_checked += 1
            report.bytes_checked += len(data)
            if progress is not None:
                progress(len(data))
            try:
                links = _links.links_of(cid, data)
            except InvalidBlockError as exc:
                report.problems.append(Problem(cid.encode(), f"malformed node: {exc}"))
                continue
            for child in links:
                if not self.blocks.has(child):
                    report.problems.append(
                        Problem(child.encode(), f"missing, but linked from {cid}")
                    )
        for cid in self.pins():
            if not self.blocks.has(cid):
                report.problems.append(Problem(cid.encode(), "missing, but pinned"))
        return report
