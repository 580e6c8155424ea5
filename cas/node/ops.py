"""The daemon's control ops: what the CLI, the library and the mount ask a
running node through ``<repo>/control.sock``.

Owns the op table (:data:`HANDLERS`, bound to a node by
:func:`control_ops`): one small handler per op, each
``handler(request, ctx)`` taking the op's typed request
(:mod:`cas.control.schema`, where every op's arguments and result are
declared) and an :class:`~cas.node.ops_context.OpContext` (the node, the
connection). The store ops (blocks, files, pins, gc, verify) are here;
the node ops (identity, peers, the DHT, replication, network statistics)
are in :mod:`.ops_node`, the namespace and published-name ops in
:mod:`.ops_names`. A handler runs store work in the node's store thread
and returns the declared result; the schema turns it into plain values.

Must never: hold state of its own (the :class:`~cas.node.daemon.Node`
does), check an argument's shape (the schema has, before the handler
runs), or speak the control protocol's framing (cas.control does).
"""

from __future__ import annotations

import errno
import math
import os
import stat as stat_module
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ..blocks import Block
from ..chunker import chunk_stream
from ..cid import CID
from ..control import MAX_ITERATE_BATCH, ClientState, Op, OpTable
from ..control import schema as ops
from ..errors import (
    CorruptBlockError,
    InvalidInputError,
)
from ..files import FileAdd
from ..files import write_file as write_file_to  # the op below has the name
from ..store import GcReport, OwnBlocks, RepoStat, RootRow, VerifyReport
from . import ops_mount, ops_names, ops_node
from .config import ADD_STEP_BYTES, WRITE_REPORT_BYTES
from .ops_context import OpContext
from .ops_node import parse_target

if TYPE_CHECKING:
    from .daemon import Node


class _FileFrom:
    """A regular file read from ``offset`` with ``pread``: the descriptor's
    position, shared with the client that passed it, is never moved."""

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self._at = offset

    def readinto(self, buffer: memoryview) -> int:
        try:
            n = os.preadv(self._fd, [buffer], self._at)
        except OSError as exc:
            raise InvalidInputError(f"cannot read the file being added: {exc.strerror or exc}") from None
        self._at += n
        return n


class PackFirst:
    """What a worker thread reads a file through for the ``write_file`` op
    (a :class:`cas.blocks.BlockSource` that :class:`cas.blocks.LooksUpInBatches`):
    committed blocks straight from the repository, in that thread (the one
    read safe from any thread, ``get_file_block``); anything else (blocks
    put since the last barrier, damaged copies, blocks on peers) as the
    ``get`` op finds it, on the node's thread. The walk's read-ahead hint reaches it
    as a batch look-up; what is not in a pack is handed to
    ``read_ahead`` (the node fetches from the network what it lacks)."""

    def __init__(self, blocks: Any, get: Callable[[CID], Awaitable[bytes]], token: trio.lowlevel.TrioToken,
                 read_ahead: Callable[[Sequence[CID]], None]) -> None:
        self._blocks = blocks
        self._get = get
        self._token = token
        self._read_ahead = read_ahead

    def fetchers(self, cids: Sequence[CID]) -> list[Callable[[], bytes | None] | None]:
        # The reader's batched look-ups (files._LeafLookups), through this
        # thread's connection; a copy that fails verification is left to
        # the node's get, which quarantines it and heals it.
        found = self._blocks.fetchers(cids, committed=True)
        elsewhere = [cid for cid, fetch in zip(cids, found, strict=True) if fetch is None]
        if elsewhere:
            trio.from_thread.run_sync(self._read_ahead, elsewhere, trio_token=self._token)
        return [None if fetch is None else partial(self._or_none, fetch) for fetch in found]

    @staticmethod
    def _or_none(fetch: Callable[[], bytes | None]) -> bytes | None:
        try:
            return fetch()
        except CorruptBlockError:
            return None  # ask get

    def get(self, cid: CID) -> bytes:
        data: bytes | None
        try:
            data = self._blocks.get_file_block(cid)
        except CorruptBlockError:
            data = None
        if data is None:
            data = trio.from_thread.run(self._get, cid, trio_token=self._token)
        return data

    def release(self) -> None:
        self._blocks.release_thread()


# -- blocks ---------------------------------------------------------------------------


async def ping(request: ops.Ping, ctx: OpContext) -> str:
    return "pong"


async def has(request: ops.Has, ctx: OpContext) -> bool:
    return await ctx.node.blocks.has(request.cid)


async def get(request: ops.Get, ctx: OpContext) -> bytes:
    return await ctx.node.blocks.get(request.cid)


async def prefetch(request: ops.Prefetch, ctx: OpContext) -> None:
    """A reader's read-ahead hint: its next blocks, read ahead from the
    disk (``prefetch``: the kernel starts reading them) or, those this node
    lacks, fetched from the network in the background."""
    await ctx.node.blocks.prefetch(request.cids)


async def session(ctx: OpContext) -> Any:
    """The connection's write session: gc keeps every block it put (or
    protected) until the client disconnects, by which time its pin or
    root is recorded."""
    client = ctx.client
    found = client.values.get("session")
    if found is None:
        found = client.values["session"] = await ctx.in_store_thread(ctx.store.blocks.open_session)

        async def close() -> None:
            await ctx.in_store_thread(found.close)

        client.on_close.append(close)
    return found


async def put_blocks(blocks: list[Block], ctx: OpContext) -> list[bool]:
    writer = await session(ctx)
    held = ctx.store.held

    def put_own() -> list[bool]:
        own = OwnBlocks(writer, held)
        return [own.put(block) for block in blocks]

    new = await ctx.in_store_thread(put_own)  # one trip to the store thread for the batch
    if ctx.node.replicator is not None:
        for block in blocks:
            await ctx.node.replicator.place(block.cid, block.data)  # queued: the add goes on
    return new


async def put(request: ops.Put, ctx: OpContext) -> bool:
    block = Block(request.cid, request.data)  # verifies, ≤ 1 MiB
    return (await put_blocks([block], ctx))[0]


async def put_many(request: ops.PutMany, ctx: OpContext) -> list[bool]:
    """Several blocks in one request, stored in order; for each, whether it was new."""
    blocks = [Block(cid, data) for cid, data in request.blocks]  # verifies each
    return await put_blocks(blocks, ctx)


async def protect(request: ops.Protect, ctx: OpContext) -> None:
    await ctx.in_store_thread((await session(ctx)).protect, request.cid)


async def barrier(request: ops.Barrier, ctx: OpContext) -> None:
    await ctx.in_store_thread(ctx.store.blocks.barrier)


async def delete(request: ops.Delete, ctx: OpContext) -> bool:
    return bool(await ctx.in_store_thread(ctx.store.blocks.delete, request.cid))


async def iterate(request: ops.Iterate, ctx: OpContext) -> AsyncIterator[list[CID]]:
    # A snapshot of the CIDs, taken in one go in the store thread (the
    # metadata database is not for concurrent use), streamed in batches.
    blocks = ctx.store.blocks
    cids: list[CID] = await ctx.in_store_thread(lambda: list(blocks.iterate()))
    for start in range(0, len(cids), MAX_ITERATE_BATCH):
        yield cids[start:start + MAX_ITERATE_BATCH]


# -- files ----------------------------------------------------------------------------


async def add_file(request: ops.AddFile, ctx: OpContext) -> AsyncIterator[list[Any]]:
    """Add the regular file whose descriptor came with the request, from
    ``offset`` to its end, as the client's own blocks: ``{"read": n}``
    after each step, then the result. The daemon reads the file itself,
    so its bytes never cross the socket, and places each step's blocks
    while it reads the next."""
    fd = ctx.client.take_fd()
    try:
        offset = request.offset  # checked by the schema
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInputError("add_file reads regular files only")
        own = OwnBlocks(await session(ctx), ctx.store.held)
        add = FileAdd(own, chunk_stream(_FileFrom(fd, offset)))
        while add.result is None:
            blocks, read = await ctx.in_store_thread(add.step, ADD_STEP_BYTES)
            if ctx.node.replicator is not None:
                for block in blocks:
                    await ctx.node.replicator.place(block.cid, block.data)  # queued: the add goes on
            yield [{"read": read}]
        done = add.result
        yield [{"cid": done.cid, "size": done.size, "blocks": done.blocks,
                "new_blocks": done.new_blocks, "new_bytes": done.new_bytes}]
    finally:
        os.close(fd)


async def write_file(request: ops.WriteFile, ctx: OpContext) -> AsyncIterator[list[Any]]:
    """Write bytes [offset, offset + length) of file ``cid`` to the
    descriptor that came with the request: ``{"written": n}`` every
    ``WRITE_REPORT_BYTES`` and at the end (the last is the total), or
    ``{"failed": errno}`` if a write failed (EPIPE: the descriptor's
    reader went away). The bytes never cross the socket: one worker
    thread reads, verifies and writes them (a pipe may block it, never
    the node), asking the node only for blocks that are not in a pack
    (small nodes, blocks from peers). A report is also how the op
    learns that its client has gone; the copy stops then."""
    fd = ctx.client.take_fd()
    cid, offset, length = request.cid, request.offset, request.length  # checked by the schema
    token = trio.lowlevel.current_trio_token()
    reader = PackFirst(ctx.store.blocks, ctx.node.blocks.get, token, ctx.node.blocks.read_ahead)
    gone = threading.Event()
    # Who closes fd: the thread once it has begun (a write may outlast
    # the request: a stalled pipe), else the op, if it gives up first.
    closer: list[str] = []
    closer_lock = threading.Lock()
    reports_in, reports = trio.open_memory_channel[tuple[str, Any]](math.inf)

    def report(kind: str, value: Any) -> None:  # from the thread
        token.run_sync_soon(reports_in.send_nowait, (kind, value))

    def copy_out() -> None:
        with closer_lock:
            if closer:
                return  # the op gave up before this thread began
            closer.append("thread")
        written = 0
        next_report = WRITE_REPORT_BYTES

        def progress(more: int) -> None:
            nonlocal written, next_report
            written += more
            if written >= next_report:
                report("written", written)
                next_report = written + WRITE_REPORT_BYTES

        try:
            report("done", write_file_to(reader, cid, fd, offset, length, stopped=gone.is_set,
                                         progress=progress))
        except BaseException as exc:
            report("failed", exc)
        finally:
            os.close(fd)
            reader.release()  # a pooled thread: its index connection goes now

    trio.lowlevel.start_thread_soon(copy_out, lambda result: None)
    try:
        async for kind, value in reports:
            if kind == "failed":
                if isinstance(value, OSError):  # a write: the client raises it as its own
                    yield [{"failed": value.errno or errno.EIO}]
                    return
                raise value
            # A report on the way lets the op see a client that has gone.
            yield [{"written": value}]
            if kind == "done":
                return
    finally:
        gone.set()
        with closer_lock:
            if not closer:
                closer.append("op")
                os.close(fd)


# -- pins, reports, roots ---------------------------------------------------------------


async def pin(request: ops.Pin, ctx: OpContext) -> bool:
    return bool(await ctx.in_store_thread(ctx.store.pin, request.cid))


async def unpin(request: ops.Unpin, ctx: OpContext) -> bool:
    return bool(await ctx.in_store_thread(ctx.store.unpin, request.cid))


async def pins(request: ops.Pins, ctx: OpContext) -> list[CID]:
    """One page of the pins: no answer grows with their number."""
    limit = ops.MAX_PINS_PAGE if request.limit is None else min(request.limit, ops.MAX_PINS_PAGE)
    return list(await ctx.in_store_thread(ctx.store.pins, limit, request.after))


async def stat(request: ops.Stat, ctx: OpContext) -> RepoStat:
    result: RepoStat = await ctx.in_store_thread(ctx.store.stat)
    return result


async def verify(request: ops.Verify, ctx: OpContext) -> VerifyReport:
    return await ctx.node.verify(repair=request.repair)


async def gc(request: ops.Gc, ctx: OpContext) -> GcReport:
    """Thin the history by its policy first (cas.names.history), then
    collect what no kept version, pin or name needs."""
    store, history = ctx.store, request.history
    await ctx.node.commit_mount()  # what the mount changed is kept as what it is now
    thinned = await ctx.node.thin()
    report: GcReport = await ctx.in_store_thread(lambda: store.gc(history=history))
    report.roots_dropped += thinned.dropped
    return report


async def prune(request: ops.Prune, ctx: OpContext) -> dict[str, Any]:
    return (await ctx.node.thin(dry_run=request.dry_run))._asdict()


async def roots(request: ops.Roots, ctx: OpContext) -> list[RootRow]:
    """One page of the roots (the client asks for the next past the last
    it got): no answer grows with the history."""
    store = ctx.store
    await ctx.node.commit_mount()  # a command run after a change in the mount sees it
    limit = ops.MAX_ROOTS_PAGE if request.limit is None else min(request.limit, ops.MAX_ROOTS_PAGE)
    rows: list[RootRow] = await ctx.in_store_thread(
        lambda: store.roots(newest_first=request.newest_first, limit=limit, after=request.after))
    return rows


async def commit_root(request: ops.CommitRoot, ctx: OpContext) -> None:
    await ctx.node.commit_mount()  # what the mount changed first: it came first
    await ctx.in_store_thread(ctx.store.commit_root, request.seq, request.root, request.time_ns, request.record)
    if ctx.node.mount is not None:
        await ctx.node.mount.changed_elsewhere(None)  # a whole root: anything may have changed
    if ctx.node.publisher is not None:
        ctx.node.publisher.root_changed()  # published namespaces go out now, not at the next interval


# -- the table ----------------------------------------------------------------------------


HANDLERS: dict[type[ops.Request[Any]], Callable[[Any, OpContext], Any]] = {
    ops.Ping: ping, ops.Has: has, ops.Get: get, ops.Prefetch: prefetch, ops.Put: put, ops.PutMany: put_many,
    ops.AddFile: add_file, ops.WriteFile: write_file, ops.Protect: protect, ops.Barrier: barrier,
    ops.Delete: delete, ops.Iterate: iterate, ops.Pin: pin, ops.Unpin: unpin, ops.Pins: pins,
    ops.Stat: stat, ops.Verify: verify, ops.Gc: gc, ops.Prune: prune, ops.Roots: roots, ops.CommitRoot: commit_root,
    ops.NamespaceChange: ops_names.namespace_change, ops.NamespaceResolve: ops_names.namespace_resolve,
    ops.NamePublish: ops_names.name_publish, ops.NameResolve: ops_names.name_resolve,
    ops.NameStatus: ops_names.name_status,
    ops.Id: ops_node.id_, ops.Peers: ops_node.peers, ops.DhtFind: ops_node.dht_find,
    ops.DhtRefresh: ops_node.dht_refresh, ops.ReplicationStatus: ops_node.replication_status,
    ops.ReplicationRepair: ops_node.replication_repair, ops.ReplicationStats: ops_node.replication_stats,
    ops.NetStats: ops_node.net_stats,
    ops.Mount: ops_mount.mount, ops.Unmount: ops_mount.unmount,
}
"""Every op's handler, by its request class: the one place an op is added
(declare it in cas.control.schema, write its handler, list it here)."""


def control_ops(node: Node) -> OpTable:
    """The op table the node's control server answers from: each handler
    bound to ``node``, called with the parsed request and the connection."""
    def bind(handler: Callable[[Any, OpContext], Any]) -> Callable[[Any, ClientState], Any]:
        return lambda request, client: handler(request, OpContext(node, client))

    return {request.OP: Op(request, bind(handler)) for request, handler in HANDLERS.items()}


__all__ = ["HANDLERS", "OpContext", "PackFirst", "control_ops", "parse_target"]
