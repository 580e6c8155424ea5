"""The trio-native face of a :class:`~cas.api.Repository`.

:class:`AsyncRepository` has the same methods as ``Repository``, with the
same arguments, as coroutines: ``await repo.mkdir("/docs")``, ``await
repo.ls("/")`` (a list: the listing is made in the worker thread; ``log``
likewise, so give it a ``limit`` on a long history), ``async
with await AsyncRepository.open() as repo``. Reading file content runs on
the trio thread through the sans-IO file walk (``read``, ``iter_read``,
``get_block``); everything else, which touches the repository's database or
files at length, runs in a worker thread, one call at a time (a repository
is used by one thread at a time), so the event loop keeps serving.
``open_file`` gives an :class:`AsyncFile`, the async form of the seekable
file object ``Repository.open`` gives (``AsyncRepository.open`` opens the
repository, as ``cas.open_repository`` does). ``tests/test_api.py`` keeps the two surfaces the same.

It must never run repository work on the trio thread beyond a block read,
or two calls into the repository at once.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import trio

from . import files
from .api import Repository, _check_range, open_repository
from .blocks import AsyncStoreAdapter
from .cid import CID, parse_cid

if TYPE_CHECKING:
    from pathlib import Path

    from .control import ControlClient
    from .names.namespace import Namespace

P = ParamSpec("P")
R = TypeVar("R")


def _in_thread(method: Callable[Concatenate[Repository, P], R]) -> Callable[Concatenate[AsyncRepository, P], Awaitable[R]]:
    """``Repository.method`` as a coroutine run in the worker thread."""

    async def run(self: AsyncRepository, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._run(functools.partial(method, self.sync, *args, **kwargs))

    return _named_as(run, method)


def _listed(method: Callable[Concatenate[Repository, P], Iterator[R]]) -> Callable[Concatenate[AsyncRepository, P], Awaitable[list[R]]]:
    """A ``Repository`` method that streams (``ls``, ``list_dir``) as a
    coroutine that lists, in the worker thread."""

    async def run(self: AsyncRepository, /, *args: P.args, **kwargs: P.kwargs) -> list[R]:
        return await self._run(lambda: list(method(self.sync, *args, **kwargs)))

    return _named_as(run, method)


F = TypeVar("F", bound=Callable[..., Any])


def _named_as(function: F, method: Callable[..., Any]) -> F:
    """``function`` under ``method``'s name, docstring and signature (for
    help() and editors: inspect follows ``__wrapped__``)."""
    function.__name__ = method.__name__
    function.__qualname__ = f"AsyncRepository.{method.__name__}"
    function.__doc__ = method.__doc__
    function.__wrapped__ = method  # type: ignore[attr-defined]  # what functools.wraps sets
    return function


class AsyncRepository:
    """A :class:`~cas.api.Repository` for trio programs; see the module
    docstring. ``sync`` is the repository itself."""

    def __init__(self, repo: Repository) -> None:
        self.sync = repo
        self.blocks = AsyncStoreAdapter(repo.blocks)
        self._lock = trio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str] | None = None) -> AsyncRepository:
        """:func:`cas.open_repository` in a worker thread (it may wait for
        the repository's lock)."""
        return cls(await trio.to_thread.run_sync(open_repository, path))

    async def _run(self, call: Callable[[], R]) -> R:
        async with self._lock:
            return await trio.to_thread.run_sync(call)

    async def aclose(self) -> None:
        """Release the repository (and its lock)."""
        await self._run(self.sync.close)

    async def __aenter__(self) -> AsyncRepository:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def path(self) -> Path:
        return self.sync.path

    @property
    def through_daemon(self) -> bool:
        return self.sync.through_daemon

    @property
    def daemon(self) -> ControlClient | None:
        return self.sync.daemon

    @property
    def namespace(self) -> Namespace:
        """The sync namespace object: call it from a worker thread."""
        return self.sync.namespace

    # -- content, read on the trio thread -----------------------------------------

    async def read(self, ref: CID | str, offset: int = 0, length: int | None = None, *,
                   at: int | None = None) -> bytes:
        return b"".join([piece async for piece in self.iter_read(ref, offset, length, at=at)])

    async def iter_read(self, ref: CID | str, offset: int = 0, length: int | None = None, *,
                        at: int | None = None) -> AsyncIterator[bytes]:
        _check_range(offset, length)
        path = isinstance(ref, str) and ref.startswith("/")
        cid = await self.resolve(ref, at) if path or at is not None else parse_cid(ref)
        async for piece in files.aiter_file(self.blocks, cid, offset, length):
            yield piece

    async def get_block(self, cid: CID | str) -> bytes:
        return await self.blocks.get(parse_cid(cid))

    async def open_file(self, ref: CID | str, *, at: int | None = None) -> AsyncFile:
        """``Repository.open``: an async, seekable, read-only file object
        over a file (``open`` is taken by the constructor)."""
        return AsyncFile(self, await self._run(lambda: self.sync.open(ref, at=at)))

    # -- everything else, in the worker thread ------------------------------------

    resolve = _in_thread(Repository.resolve)
    info = _in_thread(Repository.info)
    write_to = _in_thread(Repository.write_to)
    get = _in_thread(Repository.get)
    add_bytes = _in_thread(Repository.add_bytes)
    add_stream = _in_thread(Repository.add_stream)
    add_path = _in_thread(Repository.add_path)
    namespace_for = _in_thread(Repository.namespace_for)
    remote_namespace = _in_thread(Repository.remote_namespace)
    list_dir = _listed(Repository.list_dir)
    ls = _listed(Repository.ls)
    stat = _in_thread(Repository.stat)
    mkdir = _in_thread(Repository.mkdir)
    mv = _in_thread(Repository.mv)
    cp = _in_thread(Repository.cp)
    rm = _in_thread(Repository.rm)
    root = _in_thread(Repository.root)
    log = _listed(Repository.log)
    put_block = _in_thread(Repository.put_block)
    has_block = _in_thread(Repository.has_block)
    pin = _in_thread(Repository.pin)
    unpin = _in_thread(Repository.unpin)
    pins = _in_thread(Repository.pins)
    gc = _in_thread(Repository.gc)
    prune = _in_thread(Repository.prune)
    repo_stat = _in_thread(Repository.repo_stat)
    verify = _in_thread(Repository.verify)
    export_car = _in_thread(Repository.export_car)
    import_car = _in_thread(Repository.import_car)


class AsyncFile:
    """The async form of :class:`cas.files.FileReader`: its reads and seeks
    run in the repository's worker thread."""

    def __init__(self, repo: AsyncRepository, reader: files.FileReader) -> None:
        self._repo = repo
        self._reader = reader

    async def read(self, size: int = -1) -> bytes:
        return await self._repo._run(lambda: self._reader.read(size))

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return await self._repo._run(lambda: self._reader.seek(offset, whence))

    def tell(self) -> int:
        return self._reader.tell()

    async def aclose(self) -> None:
        self._reader.close()

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
