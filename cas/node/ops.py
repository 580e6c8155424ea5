"""The daemon's control ops: what the CLI, the library and the mount ask a
running node through ``<repo>/control.sock``.

Owns the op table (:func:`control_ops`): the store ops (blocks, files,
pins, gc, verify), the namespace ops (changes grouped into commits), the
node ops (identity, peers, the DHT, replication, network statistics) and the
published-name ops. Each op checks its arguments, runs store work in the
node's store thread and answers with plain values.

Must never: hold state of its own (the :class:`~cas.node.daemon.Node`
does), or speak the control protocol's framing (cas.control does).
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat as stat_module
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ..blocks import Block
from ..chunker import chunk_stream
from ..cid import CID, RAW, parse_cid
from ..control import (
    MAX_ITERATE_BATCH,
    MAX_PROBLEMS,
    ClientState,
    Op,
    OpTable,
)
from ..dht.driver import DhtDriver, FindResult
from ..dht.ids import id_from_bytes, id_to_bytes, key_for_digest
from ..dht.publisher import (
    MAX_REPUBLISH_INTERVAL,
    MIN_REPUBLISH_INTERVAL,
    REPUBLISH_INTERVAL,
    Publisher,
    StoreThread,
)
from ..dht.replicator import Replicator
from ..errors import (
    BlockNotFoundError,
    CorruptBlockError,
    InvalidInputError,
)
from ..files import FileAdd
from ..files import write_file as write_file_to  # the op below has the name
from ..names.changes import change_from_value
from ..names.namespace import RootState
from ..names.record import RootRecord, parse_public_key
from ..store import LocalStore
from .config import ADD_STEP_BYTES, WRITE_REPORT_BYTES

if TYPE_CHECKING:
    from .daemon import Node

# -- the op table ---------------------------------------------------------------------


MAX_PUT_BATCH = 1024
"""Blocks one ``put_many`` may carry (the frame limit bounds their bytes)."""


def _cid_arg(args: dict[str, Any], name: str = "cid") -> CID:
    value = args.get(name)
    if isinstance(value, CID):
        return value
    if isinstance(value, str):
        return parse_cid(value)
    raise InvalidInputError(f"argument {name!r} must be a CID")


def _bytes_arg(args: dict[str, Any], name: str) -> bytes:
    value = args.get(name)
    if not isinstance(value, bytes):
        raise InvalidInputError(f"argument {name!r} must be bytes")
    return value


def parse_target(text: str) -> tuple[int, CID | None]:
    """A lookup target from the command line: a node ID (64 hex digits) or a
    CID (whose key is its digest)."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return id_from_bytes(bytes.fromhex(text)), None
    cid = parse_cid(text)
    return key_for_digest(cid.digest), cid


class _OwnBlocks:
    """A write session whose blocks are the node's own (a local client's),
    even those a peer sent first: what ``add_file`` stores through."""

    def __init__(self, writer: Any, held: Any) -> None:
        self._writer = writer
        self._held = held

    def put(self, block: Block) -> bool:
        new = bool(self._writer.put(block))
        self._held.claim(block.cid)
        return new


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


class _PackFirst:
    """What a worker thread reads a file through for the ``write_file`` op
    (a :class:`cas.blocks.BlockSource` that :class:`cas.blocks.LooksUpInBatches`):
    large blocks straight from their packs, in that thread (the one read
    safe from any thread, ``get_file_block``); anything else (small nodes,
    blocks put since the last barrier, blocks on peers) as the ``get`` op
    finds it, on the node's thread. The walk's read-ahead hint reaches it
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
        elsewhere = [cid for cid, fetch in zip(cids, found) if fetch is None]
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
        try:
            data = self._blocks.get_file_block(cid)
        except CorruptBlockError:
            data = None
        if data is None:
            data = trio.from_thread.run(self._get, cid, trio_token=self._token)
        return data

    def release(self) -> None:
        self._blocks.release_thread()


def control_ops(node: Node) -> OpTable:
    """The node's op table: block store, pins and reports, then node ops.

    To add ops (the namespace, say), write ``names_ops(node) -> OpTable`` in
    your module and merge it in the ``return`` below; that is the one place.
    """
    def publisher() -> Publisher:
        assert node.publisher is not None
        return node.publisher

    def store() -> LocalStore:
        assert node.store is not None
        return node.store

    return {**_store_ops(node), **_node_ops(node), **_namespace_ops(node),
            **_name_ops(publisher, store, node.in_store_thread)}


def _namespace_ops(node: Node) -> OpTable:
    async def namespace_change(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        """Apply a client's namespace change here, in the store thread, one
        change at a time: clients' changes never race each other (the rule:
        docs/architecture.md, "Concurrent changes"). Changes that arrive
        together are committed together (:meth:`Node.apply_changes`)."""
        change = change_from_value(args.get("change"))
        assert node.namespace_commits is not None
        state = await node.namespace_commits.keep(change)
        assert isinstance(state, RootState)
        if node.publisher is not None:
            node.publisher.root_changed()  # published namespaces go out now, not at the next interval
        return {"seq": state.seq, "root": state.root, "time_ns": state.time_ns, "public_key": state.public_key}

    async def namespace_resolve(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        """What a path names, in one round trip (the client would read one
        directory node per level over the socket)."""
        path, at = args.get("path"), args.get("at")
        if not isinstance(path, str) or not (at is None or (type(at) is int and at >= 0)):
            raise InvalidInputError("arguments 'path' (text) and 'at' (a sequence number or null) are needed")
        assert node.namespace is not None
        found = await node.in_store_thread(node.namespace.resolve, path, at)
        return found.to_value()

    return {"namespace_change": Op(namespace_change), "namespace_resolve": Op(namespace_resolve)}


def _store_ops(node: Node) -> OpTable:
    def store() -> LocalStore:
        assert node.store is not None
        return node.store

    async def ping(args: dict[str, Any], client: ClientState) -> str:
        return "pong"

    async def has(args: dict[str, Any], client: ClientState) -> bool:
        return bool(await node.in_store_thread(store().blocks.has, _cid_arg(args)))

    async def get_block(cid: CID) -> bytes:
        try:
            data = bytes(await node.in_store_thread(store().blocks.get, cid))
        except CorruptBlockError as damage:
            # A local read heals itself from the network instead of failing.
            await node.quarantine(damage)
            return await node.heal(cid)
        except BlockNotFoundError:
            if await node.in_store_thread(store().quarantine.is_quarantined, cid):
                return await node.heal(cid)  # kept as it was (own or held) when it comes back
            if node.dht is None or not len(node.dht.table):
                raise  # alone: the repository is all there is
            return await node.fetch(cid)
        if (cid.codec != RAW or cid in node._fetched) and node.dht is not None and len(node.dht.table):
            node.after_read(cid, data)  # tree nodes: where their children sit, for read-ahead
        return data

    async def get(args: dict[str, Any], client: ClientState) -> bytes:
        return await get_block(_cid_arg(args))

    async def write_file(args: dict[str, Any], client: ClientState) -> AsyncIterator[list[Any]]:
        """Write bytes [offset, offset + length) of file ``cid`` to the
        descriptor that came with the request: ``{"written": n}`` every
        ``WRITE_REPORT_BYTES`` and at the end (the last is the total), or
        ``{"failed": errno}`` if a write failed (EPIPE: the descriptor's
        reader went away). The bytes never cross the socket: one worker
        thread reads, verifies and writes them (a pipe may block it, never
        the node), asking the node only for blocks that are not in a pack
        (small nodes, blocks from peers). A report is also how the op
        learns that its client has gone; the copy stops then."""
        fd = client.take_fd()
        try:
            cid = _cid_arg(args)
            offset, length = args.get("offset", 0), args.get("length")
            if type(offset) is not int or offset < 0 or (
                    length is not None and (type(length) is not int or length < 0)):
                raise InvalidInputError("arguments 'offset' and 'length' must be byte counts (integers >= 0)")
        except BaseException:
            os.close(fd)
            raise
        token = trio.lowlevel.current_trio_token()
        reader = _PackFirst(store().blocks, get_block, token, node.read_ahead)
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

    async def session(client: ClientState) -> Any:
        """The connection's write session: gc keeps every block it put (or
        protected) until the client disconnects, by which time its pin or
        root is recorded."""
        found = client.values.get("session")
        if found is None:
            found = client.values["session"] = await node.in_store_thread(store().blocks.open_session)

            async def close() -> None:
                await node.in_store_thread(found.close)

            client.on_close.append(close)
        return found

    async def put_blocks(blocks: list[Block], client: ClientState) -> list[bool]:
        writer = await session(client)

        def put_own() -> list[bool]:
            own = _OwnBlocks(writer, store().held)
            return [own.put(block) for block in blocks]

        new = await node.in_store_thread(put_own)  # one trip to the store thread for the batch
        if node.replicator is not None:
            for block in blocks:
                await node.replicator.place(block.cid, block.data)  # queued: the add goes on
        return new

    async def put(args: dict[str, Any], client: ClientState) -> bool:
        block = Block(_cid_arg(args), _bytes_arg(args, "data"))  # verifies, ≤ 1 MiB
        return (await put_blocks([block], client))[0]

    async def put_many(args: dict[str, Any], client: ClientState) -> list[bool]:
        """Several blocks in one request (a frame holds up to 2 MiB), stored
        in order; for each, whether it was new."""
        items = args.get("blocks")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_PUT_BATCH or not all(
                isinstance(i, list) and len(i) == 2 and isinstance(i[1], bytes) for i in items):
            raise InvalidInputError(
                f"argument 'blocks' must be a list of 1 to {MAX_PUT_BATCH} [cid, bytes] pairs")
        blocks = [Block(_cid_arg({"cid": cid}), data) for cid, data in items]  # verifies each
        return await put_blocks(blocks, client)

    async def add_file(args: dict[str, Any], client: ClientState) -> AsyncIterator[list[Any]]:
        """Add the regular file whose descriptor came with the request, from
        ``offset`` to its end, as the client's own blocks: ``{"read": n}``
        after each step, then the result. The daemon reads the file itself,
        so its bytes never cross the socket, and places each step's blocks
        while it reads the next."""
        fd = client.take_fd()
        try:
            offset = args.get("offset", 0)
            if type(offset) is not int or offset < 0:
                raise InvalidInputError("argument 'offset' must be a byte offset (an integer >= 0)")
            if not stat_module.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidInputError("add_file reads regular files only")
            own = _OwnBlocks(await session(client), store().held)
            add = FileAdd(own, chunk_stream(_FileFrom(fd, offset)))
            while add.result is None:
                blocks, read = await node.in_store_thread(add.step, ADD_STEP_BYTES)
                if node.replicator is not None:
                    for block in blocks:
                        await node.replicator.place(block.cid, block.data)  # queued: the add goes on
                yield [{"read": read}]
            done = add.result
            yield [{"cid": done.cid, "size": done.size, "blocks": done.blocks,
                    "new_blocks": done.new_blocks, "new_bytes": done.new_bytes}]
        finally:
            os.close(fd)

    async def protect(args: dict[str, Any], client: ClientState) -> None:
        await node.in_store_thread((await session(client)).protect, _cid_arg(args))

    async def barrier(args: dict[str, Any], client: ClientState) -> None:
        await node.in_store_thread(store().blocks.barrier)

    async def delete(args: dict[str, Any], client: ClientState) -> bool:
        return bool(await node.in_store_thread(store().blocks.delete, _cid_arg(args)))

    async def iterate(args: dict[str, Any], client: ClientState) -> AsyncIterator[list[CID]]:
        # A snapshot of the CIDs, taken in one go in the store thread (the
        # metadata database is not for concurrent use), streamed in batches.
        cids: list[CID] = await node.in_store_thread(lambda: list(store().blocks.iterate()))
        for start in range(0, len(cids), MAX_ITERATE_BATCH):
            yield cids[start:start + MAX_ITERATE_BATCH]

    async def pin(args: dict[str, Any], client: ClientState) -> bool:
        return bool(await node.in_store_thread(store().pin, _cid_arg(args)))

    async def unpin(args: dict[str, Any], client: ClientState) -> bool:
        return bool(await node.in_store_thread(store().unpin, _cid_arg(args)))

    async def pins(args: dict[str, Any], client: ClientState) -> list[CID]:
        return list(await node.in_store_thread(store().pins))

    async def stat(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        st = await node.in_store_thread(store().stat)
        return {"path": st.path, "blocks": st.blocks, "bytes": st.bytes, "pinned": st.pinned,
                "pack_bytes": st.pack_bytes, "dead_bytes": st.dead_bytes}

    async def verify(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        repair = args.get("repair", False)
        if type(repair) is not bool:
            raise InvalidInputError("argument 'repair' must be true or false")
        report = await node.verify(repair=repair)
        return {"blocks_checked": report.blocks_checked, "bytes_checked": report.bytes_checked,
                "problems": [{"cid": p.cid, "what": p.what} for p in report.problems[:MAX_PROBLEMS]],
                "repaired": report.repaired}

    async def gc(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        history = args.get("history")
        if history is not None and (type(history) is not int or history < 0):
            raise InvalidInputError("argument 'history' must be a whole number or null")
        report = await node.in_store_thread(lambda: store().gc(history=history))
        return {"blocks_freed": report.blocks_freed, "bytes_freed": report.bytes_freed,
                "roots_dropped": report.roots_dropped, "expired_freed": report.expired_freed}

    async def roots(args: dict[str, Any], client: ClientState) -> list[dict[str, Any]]:
        newest_first, limit = args.get("newest_first", True), args.get("limit")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidInputError("argument 'limit' must be a whole number or null")
        rows = await node.in_store_thread(lambda: store().roots(newest_first=bool(newest_first), limit=limit))
        return [{"seq": r.seq, "root": r.root, "time_ns": r.time_ns, "record": r.record} for r in rows]

    async def commit_root(args: dict[str, Any], client: ClientState) -> None:
        seq, time_ns = args.get("seq"), args.get("time_ns")
        if type(seq) is not int or type(time_ns) is not int:
            raise InvalidInputError("arguments 'seq' and 'time_ns' must be whole numbers")
        root, record = _cid_arg(args, "root"), _bytes_arg(args, "record")
        await node.in_store_thread(store().commit_root, seq, root, time_ns, record)
        if node.publisher is not None:
            node.publisher.root_changed()  # published namespaces go out now, not at the next interval

    return {
        "gc": Op(gc), "roots": Op(roots), "commit_root": Op(commit_root),
        "ping": Op(ping), "has": Op(has), "get": Op(get), "put": Op(put), "put_many": Op(put_many),
        "add_file": Op(add_file, streaming=True), "write_file": Op(write_file, streaming=True),
        "protect": Op(protect),
        "barrier": Op(barrier),
        "delete": Op(delete), "iterate": Op(iterate, streaming=True), "pin": Op(pin),
        "unpin": Op(unpin), "pins": Op(pins), "stat": Op(stat), "verify": Op(verify),
    }


def _node_ops(node: Node) -> OpTable:
    def dht() -> DhtDriver:
        assert node.dht is not None
        return node.dht

    async def id_(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        assert node.address is not None
        return {"id": node.address.node_id.hex(), "host": node.address.host, "port": node.address.port,
                "peers": len(dht().table)}

    async def peers(args: dict[str, Any], client: ClientState) -> list[dict[str, Any]]:
        r = node.replicator
        assert node.store is not None
        held = await node.in_store_thread(node.store.held.by_sender)
        out = []
        for p in dht().peers():
            node_id = p.contact.node_id
            held_blocks, held_bytes = held.get(id_to_bytes(node_id), (0, 0))
            ours_blocks, ours_bytes = r.holders.with_peer(node_id) if r is not None else (0, 0)
            out.append({
                "id": id_to_bytes(node_id).hex(), "host": p.contact.host, "port": p.contact.port,
                "connected": p.connected, "failures": p.failures,
                "last_seen_ms": None if p.last_seen is None else int(p.last_seen * 1000),
                # since start: blocks it acknowledged storing, stores it failed, wrong blocks it sent
                "stores": r.stats.peer_stores[node_id] if r is not None else 0,
                "store_failures": r.stats.peer_store_failures[node_id] if r is not None else 0,
                "bad_blocks": dht().bad_blocks[node_id],
                # what we store with it now: our own blocks it is known to hold
                # (the holder index: confirmed by placement or repair, gone if it is found dead)
                "ours_blocks": ours_blocks, "ours_bytes": ours_bytes,
                # what it stores with us now: blocks and bytes it placed here
                "held_blocks": held_blocks, "held_bytes": held_bytes,
            })
        return out

    async def dht_find(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        text = args.get("target")
        if not isinstance(text, str):
            raise InvalidInputError("argument 'target' must be a node ID or a CID")
        target, cid = parse_target(text)
        found: FindResult = await dht().find_node(target)
        closest = list(found.lookup.closest)
        holders: list[list[bool] | None] = [None] * len(closest)
        if cid is not None:
            async with trio.open_nursery() as nursery:
                async def ask(i: int) -> None:
                    holders[i] = await dht().have(closest[i], [cid])
                for i in range(len(closest)):
                    nursery.start_soon(ask, i)
        assert node.store is not None
        local_has = bool(cid is not None and await node.in_store_thread(node.store.blocks.has, cid))
        return {
            "target": id_to_bytes(target).hex(),
            "cid": None if cid is None else cid.encode(),
            "closest": [
                {"id": id_to_bytes(c.node_id).hex(), "host": c.host, "port": c.port,
                 "has": None if h is None else bool(h[0])}
                for c, h in zip(closest, holders)
            ],
            "local_has": local_has if cid is not None else None,
            "hops": found.lookup.hops,
            "messages": found.lookup.messages,
            "failures": found.lookup.failures,
            "elapsed_us": int(found.seconds * 1e6),
        }

    async def dht_refresh(args: dict[str, Any], client: ClientState) -> int:
        return await dht().refresh(force=True)

    def replicator() -> Replicator:
        assert node.replicator is not None
        return node.replicator

    async def replication_status(args: dict[str, Any], client: ClientState) -> list[dict[str, Any]]:
        """Per CID (a file or directory root): how many of the R closest
        nodes hold every one of its blocks, waiting up to ``wait`` seconds
        for placements still in progress."""
        cids = args.get("cids")
        wait = args.get("wait", 0)
        if not isinstance(cids, list) or not all(isinstance(c, CID) for c in cids) or len(cids) > 1024:
            raise InvalidInputError("argument 'cids' must be a list of at most 1024 CIDs")
        if type(wait) is not int or not 0 <= wait <= 3600:  # DAG-CBOR: whole seconds
            raise InvalidInputError("argument 'wait' must be a number of seconds from 0 to 3600")
        out = []
        deadline = trio.current_time() + wait
        for root in cids:
            blocks = await node.in_store_thread(node.dag_blocks, root)
            settled = await replicator().wait_settled(blocks, max(0.0, deadline - trio.current_time()))
            counts = [replicator().copies(cid) for cid in blocks]
            out.append({
                "cid": root, "blocks": len(blocks), "replicas": replicator().replicas,
                # a block never placed (no peers when it was put) has its local copy only
                "copies": min((1 if c is None else c) for c in counts) if counts else 0,
                "settled": settled,
                "reachable": len(dht().table),
            })
        return out

    async def replication_repair(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        """Run a repair round now (the same as the periodic one)."""
        report = await replicator().repair()
        return {"blocks": report.blocks, "stores": report.stores, "dropped": report.dropped,
                "short": report.short, "expired": report.expired}

    async def replication_stats(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        store = node.store
        assert store is not None
        r = replicator()
        return {"replicas": r.replicas, "lease_s": math.ceil(r.lease), "queued": r.stats.queued, "placed": r.stats.placed,
                "stores_sent": r.stats.stores_sent, "store_messages": dht().store_messages_sent,
                "repair_rounds": r.stats.rounds,
                "held_blocks": len(store.held), "held_bytes": store.held.bytes,
                "quota": store.held.quota, "read_ahead": node.read_ahead_count,
                # live: as last placed or repaired, less copies on peers found dead since
                "short": r.short_blocks(), "tracked": len(r.holders), "copies_lost": r.stats.copies_lost,
                "placed_bytes": r.stats.placed_bytes,
                "repair_stores": r.stats.repair_stores, "repair_bytes": r.stats.repair_bytes,
                "repair_dropped": r.stats.repair_dropped, "peers": len(dht().table),
                "repair_rounds_after_loss": r.stats.rounds_after_loss,
                "refusals": r.stats.refusals, "store_failures": sum(r.stats.peer_store_failures.values()),
                "last_failure": r.stats.last_failure,
                "quarantined": node.integrity.quarantined, "restored": node.integrity.restored,
                "unrecoverable": node.integrity.unrecoverable,
                "in_quarantine": await node.in_store_thread(lambda: len(store.quarantine)),
                "scrubbed_bytes": node.integrity.scrubbed_bytes, "scrub_passes": node.integrity.scrub_passes}

    async def net_stats(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        """The transport's own counts: handshakes, admission, the frame budget."""
        driver = dht()
        admission = driver.admission.statistics()
        budget = driver.frame_budget.statistics()
        return {"handshakes_in": driver.handshakes_in, "handshakes_out": driver.handshakes_out,
                "handshakes": admission.handshakes, "connections": admission.connections,
                "addresses": admission.addresses, "admitted": admission.admitted,
                "refused": admission.refused, "rate_limited": admission.rate_limited,
                "evicted_handshakes": admission.evicted_handshakes,
                "evicted_connections": admission.evicted_connections,
                "frame_memory": {"limit": budget.limit, "per_address": budget.per_address,
                                 "used": budget.used, "peak": budget.peak, "waiting": budget.waiting,
                                 "refusals": budget.refusals,
                                 "granted_after_waiting": budget.granted_after_waiting,
                                 "by_address": driver.frame_budget.held_by_address()}}

    return {"id": Op(id_), "peers": Op(peers), "dht_find": Op(dht_find), "dht_refresh": Op(dht_refresh),
            "replication_status": Op(replication_status), "replication_repair": Op(replication_repair),
            "replication_stats": Op(replication_stats), "net_stats": Op(net_stats)}


# -- the process ------------------------------------------------------------------------

def _record_doc(record: RootRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"key": record.public_key.hex(), "seq": record.seq, "root": record.root, "time_ns": record.time_ns,
            "record": record.encode()}


def _name_ops(publisher: Callable[[], Publisher], store: Callable[[], LocalStore],
             in_store_thread: StoreThread) -> OpTable:
    """``name_publish`` (turn publishing on, publish now), ``name_resolve``
    (the newest record of a namespace) and ``name_status``."""

    async def name_publish(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        every_ms = args.get("interval_ms", int(REPUBLISH_INTERVAL * 1000))  # DAG-CBOR has no floats here
        stop = bool(args.get("stop", False))
        if stop:
            await in_store_thread(store().records.set_publish_interval, None)
            return {"publishing": False}
        if type(every_ms) is not int or not MIN_REPUBLISH_INTERVAL <= every_ms / 1000 <= MAX_REPUBLISH_INTERVAL:
            raise InvalidInputError(f"the republish interval must be {MIN_REPUBLISH_INTERVAL:g} s to "
                                    f"{MAX_REPUBLISH_INTERVAL:g} s")
        await in_store_thread(store().records.set_publish_interval, every_ms / 1000)
        report = await publisher().publish()
        publisher().root_changed()  # re-arm the timer with the new interval
        return {"publishing": True, "interval_ms": every_ms, "stored": report.stored, "asked": report.asked,
                **(_record_doc(report.record) or {})}

    async def name_resolve(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        key = args.get("key")
        if isinstance(key, str):
            key = parse_public_key(key)
        if not isinstance(key, bytes) or len(key) != 32:
            raise InvalidInputError("argument 'key' must be a namespace key (32 bytes or 64 hex digits)")
        report = await publisher().resolve(key)
        return {"found": _record_doc(report.record), "answers": report.answers, "asked": report.asked}

    async def name_status(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        interval = await in_store_thread(store().records.publish_interval)
        last = publisher().last
        return {"publishing": interval is not None,
                "interval_ms": None if interval is None else int(interval * 1000),
                "last": None if last is None else {"stored": last.stored, "asked": last.asked,
                                                    **(_record_doc(last.record) or {})},
                "last_error": publisher().last_error,
                "held_records": await in_store_thread(lambda: len(store().records))}

    return {"name_publish": Op(name_publish), "name_resolve": Op(name_resolve), "name_status": Op(name_status)}
