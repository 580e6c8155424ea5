"""The Python library: one object for everything a program does with cas.

``open_repository()`` gives a :class:`Repository` over the local repository
(the embedded default); every method is synchronous and safe to call from
ordinary code. :class:`AsyncRepository` is the trio-native form of the same
object, used by the node and the FUSE driver: reads run on the trio thread
through the sans-IO file reader, long writes run in a worker thread so the
event loop keeps serving.

Example::

    import cas

    with cas.open_repository() as repo:
        cid = repo.add_bytes(b"hello")
        assert repo.read(cid) == b"hello"
        with repo.open(cid) as f:
            f.seek(1)
            assert f.read(2) == b"el"
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import platformdirs

from . import files, trees
from .blocks import AsyncStoreAdapter, Block
from .cid import DAG_CBOR, RAW, CID, parse_cid
from .errors import InvalidInputError
from .names import dirtree
from .names.directory import DirEntry
from .store import LocalStore, RepoStat, VerifyReport

Progress = Callable[[int], None]


def default_repository_path() -> Path:
    """``$CAS_HOME`` if set, else the platform's per-user data directory."""
    env = os.environ.get("CAS_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("cas", appauthor=False))


@dataclass(frozen=True)
class Added:
    """The result of adding one input."""

    cid: CID
    kind: str  # "file" or "dir"
    size: int
    source: str  # the path added, or "-" for a stream


@dataclass(frozen=True)
class NodeInfo:
    """What a CID names: its kind, and its size in bytes of content."""

    cid: CID
    kind: str
    size: int


class Repository:
    """A local repository, opened and owned by this process.

    Adding pins what was added, so garbage collection keeps it.
    """

    def __init__(self, store: LocalStore) -> None:
        self._store = store
        self.blocks = store.blocks

    @property
    def path(self) -> Path:
        return self._store.path

    def close(self) -> None:
        """Release the repository (and its lock)."""
        self._store.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- adding ---------------------------------------------------------------

    def add_bytes(self, data: bytes, *, pin: bool = True) -> CID:
        """Store ``data`` as a file; return its CID."""
        return self.add_stream(io.BytesIO(data), pin=pin).cid

    def add_stream(
        self, stream: BinaryIO, *, pin: bool = True, progress: Progress | None = None
    ) -> Added:
        """Store everything read from ``stream`` (in bounded memory)."""
        result = files.add_stream(self.blocks, stream, progress=progress)
        self._finish_add(result.cid, pin)
        return Added(result.cid, "file", result.size, "-")

    def add_path(
        self,
        path: str | os.PathLike[str],
        *,
        recursive: bool = False,
        pin: bool = True,
        progress: Progress | None = None,
    ) -> Added:
        """Store a file, or with ``recursive`` a directory tree."""
        imported = trees.import_path(self.blocks, path, recursive=recursive, progress=progress)
        self._finish_add(imported.cid, pin)
        return Added(imported.cid, imported.kind, imported.size, os.fspath(path))

    def _finish_add(self, cid: CID, pin: bool) -> None:
        if pin:
            self._store.pin(cid)  # includes the barrier
        else:
            self.blocks.barrier()

    # -- reading --------------------------------------------------------------

    def open(self, cid: CID | str) -> files.FileReader:
        """A seekable, read-only binary file object over the file ``cid``."""
        return files.open_file(self.blocks, parse_cid(cid))

    def read(self, cid: CID | str, offset: int = 0, length: int | None = None) -> bytes:
        """The bytes of file ``cid`` (all, or ``length`` from ``offset``)."""
        cid = parse_cid(cid)
        _check_range(offset, length)
        if length is None:
            length = max(0, files.file_size(self.blocks, cid) - offset)
        return files.read_range(self.blocks, cid, offset, length)

    def iter_read(
        self, cid: CID | str, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """Stream file ``cid`` in pieces, in bounded memory."""
        _check_range(offset, length)
        return files.iter_file(self.blocks, parse_cid(cid), offset, length)

    def info(self, cid: CID | str) -> NodeInfo:
        """Kind and size of what ``cid`` names."""
        cid = parse_cid(cid)
        if cid.codec == DAG_CBOR:
            return NodeInfo(cid, "dir", dirtree.summary(self.blocks, cid).size)
        return NodeInfo(cid, "file", files.file_size(self.blocks, cid))

    def list_dir(self, cid: CID | str) -> Iterator[DirEntry]:
        """The entries of directory ``cid``, sorted by name, streamed."""
        return dirtree.iterate(self.blocks, parse_cid(cid))

    def get(
        self,
        cid: CID | str,
        out: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> str:
        """Write file or tree ``cid`` to the local path ``out``; return its kind."""
        return trees.export(self.blocks, parse_cid(cid), out, overwrite=overwrite, progress=progress)

    # -- blocks ---------------------------------------------------------------

    def put_block(self, data: bytes, codec: int = RAW) -> CID:
        """Store one block (≤ 1 MiB) as it is; return its CID. Not pinned."""
        block = Block.of(codec, data)
        self.blocks.put(block)
        self.blocks.barrier()
        return block.cid

    def get_block(self, cid: CID | str) -> bytes:
        """The verified bytes of one block."""
        return self.blocks.get(parse_cid(cid))

    def has_block(self, cid: CID | str) -> bool:
        return self.blocks.has(parse_cid(cid))

    # -- storage management ---------------------------------------------------

    def pin(self, cid: CID | str) -> bool:
        return self._store.pin(parse_cid(cid))

    def unpin(self, cid: CID | str) -> bool:
        return self._store.unpin(parse_cid(cid))

    def pins(self) -> list[CID]:
        return self._store.pins()

    def stat(self) -> RepoStat:
        """Blocks, bytes and pins in the repository."""
        return self._store.stat()

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Re-hash every block and check every reference."""
        return self._store.verify(progress)


def _check_range(offset: int, length: int | None) -> None:
    if offset < 0:
        raise InvalidInputError(f"offset must be 0 or more, not {offset}")
    if length is not None and length < 0:
        raise InvalidInputError(f"length must be 0 or more, not {length}")


def open_repository(path: str | os.PathLike[str] | None = None, *, create: bool = True) -> Repository:
    """Open the repository at ``path`` (default: :func:`default_repository_path`),
    creating it if needed (unless ``create`` is false).

    If a daemon owns the repository (it answers on ``<repo>/control.sock``),
    the repository is reached through it; a socket file nobody answers on is
    left by a daemon that died, and is ignored."""
    path = path if path is not None else default_repository_path()
    from .control import RemoteStore  # here: the common offline path stays light

    remote = RemoteStore.connect(path)
    if remote is not None:
        return Repository(remote)  # type: ignore[arg-type]
    return Repository(LocalStore.open(path, create=create))


class AsyncRepository:
    """The trio-native face of a :class:`Repository`.

    Reads go through the async file reader on the trio thread; adds run in a
    worker thread, one at a time, so the event loop stays responsive.
    """

    def __init__(self, repo: Repository) -> None:
        self.sync = repo
        self.blocks = AsyncStoreAdapter(repo.blocks)
        import trio  # here, not at the top: the sync API never pays for it

        self._write_lock = trio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str] | None = None) -> AsyncRepository:
        import trio

        return cls(await trio.to_thread.run_sync(open_repository, path))

    async def aclose(self) -> None:
        self.sync.close()

    async def add_path(self, path: str | os.PathLike[str], *, recursive: bool = False) -> Added:
        import trio

        async with self._write_lock:
            return await trio.to_thread.run_sync(
                lambda: self.sync.add_path(path, recursive=recursive)
            )

    async def add_bytes(self, data: bytes) -> CID:
        import trio

        async with self._write_lock:
            return await trio.to_thread.run_sync(self.sync.add_bytes, data)

    async def read(self, cid: CID | str, offset: int = 0, length: int | None = None) -> bytes:
        cid = parse_cid(cid)
        _check_range(offset, length)
        if length is None:
            length = max(0, await files.afile_size(self.blocks, cid) - offset)
        return await files.aread_range(self.blocks, cid, offset, length)

    async def iter_read(
        self, cid: CID | str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        _check_range(offset, length)
        async for piece in files.aiter_file(self.blocks, parse_cid(cid), offset, length):
            yield piece

    async def get_block(self, cid: CID | str) -> bytes:
        return await self.blocks.get(parse_cid(cid))
