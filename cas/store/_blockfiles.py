"""Block bytes on disk: one immutable file per block.

Layout: ``blocks/<xx>/<cid>`` where ``xx`` is the first byte of the digest in
hex (256 shard directories, all created with the repository, so no directory
ever needs creating on the write path) and ``<cid>`` the CID's text form.

How a block becomes durable (the ordering rule of DESIGN.md):

1. its bytes are written to a fresh file under ``tmp/`` and fsynced;
2. the file is renamed to its final name (atomic: the name either does not
   exist or names complete bytes);
3. :meth:`barrier` fsyncs the shard directories touched since the last
   barrier, making the new names durable.

Callers (the file builder, pins, roots) call :meth:`barrier` before they write
anything that refers to these blocks, so after a crash every reference points
at a block that exists. A crash before step 3 can only lose blocks nothing
refers to yet; a crash before step 2 leaves a temporary file, which the next
open of the repository removes.

One file per block was chosen over pack files by measurement (bench
``add_cat.py``): with an fsync per block the add still reaches most of the
disk's fsync-write ceiling here, and it keeps delete (gc), verify and crash
recovery trivial.

This module never decides *what* to keep; that is the repository's job.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..blocks import MAX_BLOCK_SIZE, Block, verified
from ..cid import CID
from ..errors import BlockNotFoundError, InvalidBlockError, InvalidCIDError, RepositoryError

SHARDS = [f"{i:02x}" for i in range(256)]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_error(exc: OSError, doing: str, where: Path) -> RepositoryError:
    """Turn an OSError from the repository's disk into a user-facing error."""
    if exc.errno == errno.ENOSPC:
        return RepositoryError(
            f"disk full while {doing} in {where}; free some space and retry "
            "(content stored earlier is intact)"
        )
    if exc.errno == errno.EDQUOT:
        return RepositoryError(f"disk quota exceeded while {doing} in {where}")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return RepositoryError(f"cannot write to {where} while {doing}: {exc.strerror}")
    return RepositoryError(f"I/O error while {doing} in {where}: {exc.strerror or exc}")


class FileBlockStore:
    """A :class:`cas.blocks.BlockStore` over a directory of block files.

    Not safe for concurrent use by several processes: the repository's lock
    guarantees one owner. Within the owner, ``get``, ``has`` and ``prefetch``
    read only immutable files and no state of this object, so they may run
    in any thread at once; ``put``, ``delete`` and ``barrier`` share the
    set of shards to sync and stay in one thread at a time.
    """

    def __init__(self, blocks_dir: Path, tmp_dir: Path) -> None:
        self.blocks_dir = blocks_dir
        self.tmp_dir = tmp_dir
        self._blocks_str = str(blocks_dir)
        self._dirty_shards: set[str] = set()
        self._tmp_counter = 0

    @staticmethod
    def create_layout(blocks_dir: Path) -> None:
        blocks_dir.mkdir(exist_ok=True)
        for shard in SHARDS:
            (blocks_dir / shard).mkdir(exist_ok=True)
        for shard in SHARDS:
            fsync_dir(blocks_dir / shard)
        fsync_dir(blocks_dir)

    def path_of(self, cid: CID) -> Path:
        return Path(self._path_str(cid))

    def _path_str(self, cid: CID) -> str:
        # Plain strings: pathlib costs more than the I/O on the read path.
        return f"{self._blocks_str}/{cid.digest[:1].hex()}/{cid.encode()}"

    # -- BlockStore protocol ----------------------------------------------

    def has(self, cid: CID) -> bool:
        return os.path.exists(self._path_str(cid))

    def get(self, cid: CID) -> bytes:
        path = self._path_str(cid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlockNotFoundError(cid) from None
        except OSError as exc:
            raise RepositoryError(f"cannot read block {cid} at {path}: {exc.strerror}") from None
        try:
            # One read of the exact size; a file over the limit is corrupt,
            # and reading one byte past it is enough to find out.
            size = min(os.fstat(fd).st_size, MAX_BLOCK_SIZE) + 1
            data = os.read(fd, size)
            while len(data) < size - 1:
                more = os.read(fd, size - len(data))
                if not more:
                    break
                data += more
        except OSError as exc:
            raise RepositoryError(f"cannot read block {cid} at {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        try:
            return verified(cid, data)
        except InvalidBlockError:
            raise InvalidBlockError(
                f"block {cid} is corrupt on disk ({path}): its bytes do not match "
                "its hash; run 'cas repo verify' to list all damage"
            ) from None

    def size(self, cid: CID) -> int:
        try:
            return self.path_of(cid).stat().st_size
        except FileNotFoundError:
            raise BlockNotFoundError(cid) from None

    def put(self, block: Block) -> bool:
        final = self.path_of(block.cid)
        if final.exists():
            return False
        self._tmp_counter += 1
        tmp = self.tmp_dir / f"{os.getpid()}-{self._tmp_counter}.blk"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(block.data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise disk_error(exc, f"storing block {block.cid}", self.blocks_dir.parent) from None
        self._dirty_shards.add(final.parent.name)
        return True

    def delete(self, cid: CID) -> bool:
        path = self.path_of(cid)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        self._dirty_shards.add(path.parent.name)
        return True

    def iterate(self) -> Iterator[CID]:
        for shard in SHARDS:
            try:
                entries = os.scandir(self.blocks_dir / shard)
            except FileNotFoundError:
                continue
            with entries:
                names = sorted(e.name for e in entries)
            for name in names:
                try:
                    yield CID.parse(name)
                except InvalidCIDError:
                    continue  # not ours; verify reports stray files separately

    def barrier(self) -> None:
        try:
            for shard in sorted(self._dirty_shards):
                fsync_dir(self.blocks_dir / shard)
        except OSError as exc:
            raise disk_error(exc, "syncing blocks", self.blocks_dir.parent) from None
        self._dirty_shards.clear()

    def prefetch(self, cids: Iterable[CID]) -> None:
        """Ask the kernel to start reading these blocks now (read-ahead
        across block files, which the kernel cannot guess by itself)."""
        for cid in cids:
            try:
                fd = os.open(self._path_str(cid), os.O_RDONLY)
            except OSError:
                continue  # a missing block is reported when it is read
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    # -- maintenance --------------------------------------------------------

    def stray_files(self) -> Iterator[Path]:
        """Files in the block directories whose names are not valid CIDs or
        that sit in the wrong shard."""
        for shard in SHARDS:
            for entry in os.scandir(self.blocks_dir / shard):
                try:
                    cid = CID.parse(entry.name)
                except InvalidCIDError:
                    yield Path(entry.path)
                    continue
                if cid.digest[:1].hex() != shard:
                    yield Path(entry.path)

    def usage(self) -> tuple[int, int]:
        """(number of blocks, bytes of block content)."""
        count = 0
        total = 0
        for shard in SHARDS:
            with os.scandir(self.blocks_dir / shard) as entries:
                for entry in entries:
                    count += 1
                    total += entry.stat(follow_symlinks=False).st_size
        return count, total
