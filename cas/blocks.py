"""Blocks and the stores that hold them.

A *block* is a CID and the bytes it names. This module defines the
``BlockStore`` protocol that every store (the local repository, the network,
a cache, a test double) implements, and the one rule they all keep:

    **every ``get`` verifies the hash.** No store, disk or peer can hand back
    bytes that do not match the CID asked for; a mismatch raises
    :class:`InvalidBlockError` naming the CID.

Two flavours of the protocol exist. ``BlockStore`` is synchronous: the local
repository is disk I/O, and a synchronous core lets the Python library read a
file in 4 KiB steps without paying for an event loop per call.
``AsyncBlockStore`` is the trio-facing form that the node, the network and the
FUSE driver use; :class:`AsyncStoreAdapter` lifts any synchronous store into
it. Code that must run against both (the file reader) is written sans-IO in
:mod:`cas.reader` and driven by either.

A store may offer more than the protocol; each extra ability is a named
protocol below (``Prefetches``, ``LooksUpInBatches``, ``ReadsFromAnyThread``,
``OpensSessions``, ``ProtectsBlocks``, ``AddsFiles``, ``WritesFiles``,
``ServedByDaemon``), and
code that uses one asks ``isinstance(store, TheAbility)``, never ``hasattr``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from .cid import BLAKE3, CID, MAX_BLOCK_SIZE
from .errors import BlockNotFoundError, InvalidBlockError

if TYPE_CHECKING:
    from .control import ControlClient
    from .files import AddResult


class _BlockFields(NamedTuple):
    cid: CID
    data: bytes


class Block(_BlockFields):
    """A CID and its bytes, checked against each other on construction."""

    def __new__(cls, cid: CID, data: bytes) -> Block:
        if len(data) > MAX_BLOCK_SIZE:
            raise InvalidBlockError(
                f"block {cid} is {len(data)} bytes, over the {MAX_BLOCK_SIZE}-byte limit"
            )
        if not cid.verify(data):
            raise InvalidBlockError(f"block {cid}: content does not match its hash")
        return tuple.__new__(cls, (cid, data))

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Block:  # type: ignore[override]  # checked, unlike the tuple's
        # The named tuple's own _make (and _replace, which calls it) builds
        # the tuple directly, past the checks above.
        return cls(*iterable)

    def __repr__(self) -> str:
        return f"Block(cid={self.cid!r}, {len(self.data)} bytes)"

    @classmethod
    def verified_elsewhere(cls, cid: CID, data: bytes) -> Block:
        """A block whose bytes the caller has already matched to ``cid``
        (the CAR import's second pass: to bytes its first pass verified),
        without hashing them again here. Nothing else may use it."""
        if len(data) > MAX_BLOCK_SIZE:
            raise InvalidBlockError(
                f"block {cid} is {len(data)} bytes, over the {MAX_BLOCK_SIZE}-byte limit"
            )
        return tuple.__new__(cls, (cid, data))

    @classmethod
    def of(cls, codec: int, data: bytes, hash_code: int = BLAKE3) -> Block:
        """Make a block by hashing ``data`` (no second check needed), with
        BLAKE3 unless ``hash_code`` says otherwise."""
        if len(data) > MAX_BLOCK_SIZE:
            raise InvalidBlockError(
                f"block of {len(data)} bytes is over the {MAX_BLOCK_SIZE}-byte limit"
            )
        return tuple.__new__(cls, (CID.for_data(codec, data, hash_code), bytes(data)))


def verified(cid: CID, data: bytes) -> bytes:
    """Return ``data`` if it hashes to ``cid``; raise InvalidBlockError if not."""
    if not cid.verify(data):
        raise InvalidBlockError(
            f"block {cid} is corrupt: its content does not match its hash"
        )
    return data


class BlockSource(Protocol):
    """All a reader needs of a store: ``get``, verified bytes or an error
    (:class:`BlockNotFoundError` / :class:`InvalidBlockError`)."""

    def get(self, cid: CID, /) -> bytes: ...


@runtime_checkable
class BlockStore(Protocol):
    """Synchronous block storage. ``get`` returns verified bytes or raises
    :class:`BlockNotFoundError` / :class:`InvalidBlockError`."""

    def has(self, cid: CID) -> bool: ...

    def get(self, cid: CID) -> bytes: ...

    def put(self, block: Block) -> bool:
        """Store ``block``; return True if it was new. Must be idempotent.

        Writers put children before parents; a durable store makes sure the
        blocks a node links to are durable before the node is (the ordering
        rule), so a crash never leaves a node whose children are missing.
        """
        ...

    def delete(self, cid: CID) -> bool:
        """Remove a block; return True if it was there."""
        ...

    def iterate(self) -> Iterator[CID]: ...

    def barrier(self) -> None:
        """Return once every block put so far is durable.

        The ordering rule (DESIGN.md): a block may be referenced by a parent,
        a pin or a root only after its own bytes are durable. The store keeps
        it between blocks (see ``put``); whoever records a reference outside
        the store's blocks calls this first. A store may batch its expensive
        part (directory fsyncs, a transaction commit) until here.
        """
        ...


@runtime_checkable
class AsyncBlockStore(Protocol):
    """The trio form of :class:`BlockStore`; every method is a checkpoint."""

    async def has(self, cid: CID) -> bool: ...

    async def get(self, cid: CID) -> bytes: ...

    async def put(self, block: Block) -> bool: ...

    async def delete(self, cid: CID) -> bool: ...

    def iterate(self) -> AsyncIterator[CID]: ...

    async def barrier(self) -> None: ...


# -- optional abilities of a store ---------------------------------------------


@runtime_checkable
class Prefetches(Protocol):
    """A store that can start reading blocks before they are asked for (the
    local repository: disk read-ahead); a hint, never needed for
    correctness."""

    def prefetch(self, cids: Iterable[CID]) -> None: ...


@runtime_checkable
class LooksUpInBatches(Protocol):
    """A store that looks many blocks up at once (the local repository: one
    index query): for each CID, a function that reads and verifies its
    bytes later (None if it is not found that way: then ask ``get``)."""

    def fetchers(self, cids: Sequence[CID]) -> list[Callable[[], bytes | None] | None]: ...


@runtime_checkable
class ReadsFromAnyThread(Protocol):
    """A store whose committed blocks any thread may read at once, past its
    owner's lock (the repository's): the verified bytes, or None for a
    block only the owning thread can read (or tell what is wrong with)."""

    def get_file_block(self, cid: CID) -> bytes | None: ...


@runtime_checkable
class ProtectsBlocks(Protocol):
    """A write session that keeps a block it did not put from gc until it
    ends (a block it will reference)."""

    def protect(self, cid: CID) -> None: ...


@runtime_checkable
class OpensSessions(Protocol):
    """A store whose writers open a write session: gc keeps what the session
    puts (and protects) until the session ends."""

    def open_session(self) -> AbstractContextManager[Any]: ...


@runtime_checkable
class AddsFiles(Protocol):
    """A store that adds a whole regular file itself, given its descriptor:
    a daemon's client (:class:`cas.control.RemoteBlockStore`) passes the
    descriptor over the control socket, so the file's bytes never cross it."""

    def add_file(self, fd: int, offset: int, progress: Callable[[int], object] | None) -> AddResult | None:
        """Add the file from ``offset`` to its end without moving the
        descriptor's position; None if this store cannot after all."""


@runtime_checkable
class WritesFiles(Protocol):
    """A store that writes a whole file to a descriptor itself: a daemon's
    client (:class:`cas.control.RemoteBlockStore`) passes the descriptor
    over the control socket, so the file's bytes never cross it."""

    def write_file(
        self, cid: CID, fd: int, offset: int, length: int | None, progress: Callable[[int], object] | None
    ) -> int | None:
        """Write the bytes to ``fd`` and return how many; None if this store
        cannot after all."""


@runtime_checkable
class ServedByDaemon(Protocol):
    """A repository store that is a daemon's, reached through its control
    socket (:class:`cas.control.RemoteStore`): ``client`` makes the calls."""

    @property
    def client(self) -> ControlClient: ...


class MemoryBlockStore:
    """A dict-backed :class:`BlockStore` for tests and scratch work."""

    def __init__(self) -> None:
        self._blocks: dict[CID, bytes] = {}

    def has(self, cid: CID) -> bool:
        return cid in self._blocks

    def get(self, cid: CID) -> bytes:
        try:
            data = self._blocks[cid]
        except KeyError:
            raise BlockNotFoundError(cid, "memory") from None
        return verified(cid, data)

    def put(self, block: Block) -> bool:
        if block.cid in self._blocks:
            return False
        self._blocks[block.cid] = block.data
        return True

    def delete(self, cid: CID) -> bool:
        return self._blocks.pop(cid, None) is not None

    def iterate(self) -> Iterator[CID]:
        return iter(list(self._blocks))

    def barrier(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._blocks)


async def _checkpoint() -> None:
    # trio is imported on first use, not at the top: it costs ~90 ms of start
    # up, and the synchronous command-line paths never need it.
    import trio

    await trio.lowlevel.checkpoint()


class AsyncStoreAdapter:
    """Present a synchronous store as an :class:`AsyncBlockStore`.

    Calls run on the trio thread: a local block is one small file, and moving
    each call to a worker thread costs more than the I/O. Each method still
    checkpoints, so a long loop of puts cannot starve other tasks.
    """

    def __init__(self, store: BlockStore) -> None:
        self.sync = store

    async def has(self, cid: CID) -> bool:
        await _checkpoint()
        return self.sync.has(cid)

    async def get(self, cid: CID) -> bytes:
        await _checkpoint()
        return self.sync.get(cid)

    async def put(self, block: Block) -> bool:
        await _checkpoint()
        return self.sync.put(block)

    async def delete(self, cid: CID) -> bool:
        await _checkpoint()
        return self.sync.delete(cid)

    async def barrier(self) -> None:
        await _checkpoint()
        self.sync.barrier()

    async def iterate(self) -> AsyncIterator[CID]:
        for cid in self.sync.iterate():
            await _checkpoint()
            yield cid
