"""The node's HTTP gateway: what ``/ipfs/…``, ``/ns/…``, ``/`` and
``/metrics`` answer, over the node's normal read path.

Owns :class:`Gateway`, the handler the HTTP server
(:class:`cas.gateway.server.HttpServer`) calls for each request. It routes
the request (:func:`cas.gateway.router.route`), finds the content and
answers:

- ``format=raw``: the block the path ends at, as stored (verified);
- ``format=car``: a CARv1, streamed: the blocks the path was resolved
  through, then the terminal's by ``dag-scope`` (``block``: its own;
  ``entity``: a file's whole DAG, or with ``entity-bytes`` only the nodes
  and leaves of that range; a directory's own nodes and its entries' root
  blocks; ``all``: everything it reaches, depth first);
- plain: a file's bytes (with ``Range``), a directory's ``index.html`` or
  an HTML listing (names escaped), a symlink's target as text.

Every block is read as the node's readers read (:class:`~cas.node.ops.PackFirst`:
large blocks from the packs in the worker thread, anything else through
:class:`~cas.node.network_store.NetworkBlockStore`: healed if damaged,
fetched from the network if missing, each fetch bounded by
``fetch_timeout`` (then 504)). The walking (directories, files, CARs) is
the library's sync code run in worker threads, at most ``GATEWAY_WORKERS``
at once; a body is handed to the server a piece at a time through a
channel of two pieces, so a slow client holds at most a few MiB.

A cas directory (DAG-CBOR) is listed as it is; its UnixFS view
(:mod:`cas.unixfs_view`, what IPFS tools read) is computed when it is
listed or asked for, named in the listing, and its nodes are kept in a
bounded cache (``VIEW_CACHE_BYTES``), so that ``/ipfs/VIEW-CID`` (raw
blocks, CAR, files and listings) is served afterwards, as long as the node
runs and the cache holds it.

Must never: send a traceback (errors are statuses with one line; what is
not the client's fault is logged), serve an unverified byte, or hold the
event loop on disk or hashing (worker threads do that).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import trio

from .. import __version__, files, trees
from ..blocks import BlockStore
from ..car import encode_header, encode_section
from ..carfile import dag_walk
from ..cid import CID, DAG_CBOR, DAG_PB, RAW
from ..dagpb import TYPE_DIRECTORY, TYPE_HAMT_SHARD, TYPE_SYMLINK, decode_unixfs_node
from ..errors import (
    BlockNotFoundError,
    CasError,
    HttpError,
    InvalidBlockError,
    InvalidCIDError,
    InvalidInputError,
    InvalidRecordError,
    NamespaceError,
    NotAFileError,
)
from ..gateway import router
from ..gateway.router import Content, Listed, Page
from ..gateway.server import BodyWriter, HttpStats, Request, Response, Send
from ..gateway.status import NodeFigures, PeerFigures, metrics_text, status_page
from ..names.record import parse_public_key
from ..names.remote import RemoteNamespace
from ..store._links import links_of
from ..unixfs_view import build_view
from .ops import PackFirst

if TYPE_CHECKING:
    from .daemon import Node

T = TypeVar("T")

GATEWAY_WORKERS = 8
"""Worker threads reading content for the gateway at once: requests past
it wait their turn (a bound on memory and disk, whatever the connections)."""

FETCH_TIMEOUT = 60.0
"""Seconds a block missing here may take to come from the network before
the request is answered 504 (kubo's gateway waits a minute too)."""

VIEW_CACHE_BYTES = 64 * 1024 * 1024
"""Bytes of UnixFS view nodes kept for serving by CID (the least recently
used view goes first)."""

LISTING_BATCH = 256
"""Listing rows sent to the client at a time."""


class _Found(NamedTuple):
    """What a path ends at."""

    cid: CID
    kind: str  # file, dir, symlink, other
    size: int
    name: str | None  # the last path segment, for a file's Content-Type
    path_blocks: tuple[CID, ...]  # blocks read to resolve the path, in order
    target: str | None = None  # a symlink's
    index_file: tuple[CID, int] | None = None  # a directory's index.html, and its size
    view: CID | None = None  # a cas directory's UnixFS view


class _Views:
    """The UnixFS views computed, by directory CID, their nodes by CID;
    least recently used out first past ``limit`` bytes. Thread-safe."""

    def __init__(self, limit: int = VIEW_CACHE_BYTES) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._views: OrderedDict[CID, tuple[CID, dict[CID, bytes], int]] = OrderedDict()
        self._blocks: dict[CID, bytes] = {}
        self._bytes = 0

    def block(self, cid: CID) -> bytes | None:
        with self._lock:
            return self._blocks.get(cid)

    def view_of(self, directory: CID) -> CID | None:
        with self._lock:
            found = self._views.get(directory)
            if found is None:
                return None
            self._views.move_to_end(directory)
            return found[0]

    def add(self, directory: CID, view: CID, blocks: dict[CID, bytes]) -> None:
        size = sum(len(b) for b in blocks.values())
        if size > self._limit:
            return
        with self._lock:
            if directory in self._views:
                return
            self._views[directory] = (view, blocks, size)
            self._blocks.update(blocks)
            self._bytes += size
            while self._bytes > self._limit:
                _, (_, gone, gone_size) = self._views.popitem(last=False)
                for cid in gone:
                    self._blocks.pop(cid, None)
                self._bytes -= gone_size
            for _, kept, _ in self._views.values():  # shared nodes of views still held
                self._blocks.update(kept)


class _Source:
    """The blocks a worker thread reads: a view's nodes from the cache, the
    rest as :class:`PackFirst` reads them (a :class:`~cas.blocks.BlockSource`
    that looks leaves up in batches). With ``record``, the CIDs it is
    asked for are noted in order (the blocks a path's resolution read)."""

    def __init__(self, views: _Views, reader: PackFirst) -> None:
        self._views = views
        self._reader = reader
        self.record: list[CID] | None = None

    def get(self, cid: CID, /) -> bytes:
        if self.record is not None and cid not in self.record:
            self.record.append(cid)
        data = self._views.block(cid)
        return data if data is not None else self._reader.get(cid)

    def fetchers(self, cids: list[CID]) -> list[Callable[[], bytes | None] | None]:
        return self._reader.fetchers(cids)

    def release(self) -> None:
        self._reader.release()


class Gateway:
    """The node's gateway handler (see the module docstring)."""

    def __init__(self, node: Node, *, fetch_timeout: float = FETCH_TIMEOUT,
                 workers: int = GATEWAY_WORKERS) -> None:
        self._node = node
        self.fetch_timeout = fetch_timeout
        self._workers = trio.CapacityLimiter(workers)
        self._views = _Views()
        self.http_stats: HttpStats | None = None  # the server's, for the status page and metrics
        self.started = time.time()

    # -- the handler ---------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        try:
            found = router.route(request.method, request.target, request.headers)
            if isinstance(found, Page):
                return await self._page(found)
            return await self._content(found)
        except HttpError as exc:
            return self._error(exc.status, str(exc), exc.headers)
        except trio.TooSlowError:
            return self._error(504, f"the network did not give the content within {self.fetch_timeout:g} s")
        except BlockNotFoundError as exc:
            return self._error(404, str(exc))
        except (NamespaceError, NotAFileError) as exc:
            return self._error(404, str(exc))
        except (InvalidCIDError, InvalidRecordError, InvalidInputError) as exc:
            return self._error(400, str(exc))
        except InvalidBlockError as exc:
            self._node.log(f"gateway: {request.target}: {exc}")
            return self._error(502, f"the content's blocks are not what they claim: {exc}")
        except CasError as exc:
            self._node.log(f"gateway: {request.method} {request.target}: {type(exc).__name__}: {exc}")
            return self._error(500, str(exc))

    @staticmethod
    def _error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
        return Response(status, [("Content-Type", router.TEXT), ("X-Content-Type-Options", "nosniff"),
                                 *(headers or [])], router.error_page(status, message))

    # -- status and metrics --------------------------------------------------------------

    async def _page(self, page: Page) -> Response:
        figures = await self.figures()
        if page.name == "metrics":
            return Response(200, [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                                  ("Cache-Control", "no-store")], metrics_text(figures))
        return Response(200, [("Content-Type", router.HTML), ("Cache-Control", "no-store"),
                              ("X-Content-Type-Options", "nosniff"),
                              ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")],
                        status_page(figures))

    async def figures(self) -> NodeFigures:
        """A snapshot of the node's figures, now."""
        node = self._node
        store, dht, replicator = node.store, node.dht, node.replicator
        assert store is not None and dht is not None and replicator is not None and node.address is not None

        def from_store() -> tuple[Any, dict[bytes, tuple[int, int]], int, int, int]:
            return (store.stat(), store.held.by_sender(), len(store.held), store.held.bytes, len(store.quarantine))

        stat, held_by, held_blocks, held_bytes, in_quarantine = await node.in_store_thread(from_store)
        now = trio.current_time()
        from ..dht.ids import id_to_bytes

        peers = []
        for p in dht.peers():
            peer_id = id_to_bytes(p.contact.node_id)
            ours_blocks, _ = replicator.holders.with_peer(p.contact.node_id)
            peers.append(PeerFigures(peer_id.hex(), p.contact.host, p.contact.port, p.connected,
                                     None if p.last_seen is None else max(0.0, now - p.last_seen),
                                     ours_blocks, held_by.get(peer_id, (0, 0))[1]))
        stats = self.http_stats or HttpStats()
        address = node.address
        gateway = node.gateway_address
        r = replicator.stats
        return NodeFigures(
            node_id=address.node_id.hex(), version=__version__, listen=f"{address.host}:{address.port}",
            gateway="" if gateway is None else f"http://{gateway[0]}:{gateway[1]}/",
            uptime=time.time() - self.started, reachable=node.reachable, repo=stat.path, peers=peers,
            blocks=stat.blocks, bytes=stat.bytes, pinned=stat.pinned, disk_bytes=stat.pack_bytes,
            held_blocks=held_blocks, held_bytes=held_bytes, quota=store.held.quota,
            replicas=replicator.replicas, below_r=replicator.short_blocks(), tracked=len(replicator.holders),
            placed=r.placed, repair_rounds=r.rounds, repair_stores=r.repair_stores, repair_bytes=r.repair_bytes,
            scrub_passes=node.integrity.scrub_passes, scrubbed_bytes=node.integrity.scrubbed_bytes,
            quarantined=node.integrity.quarantined, in_quarantine=in_quarantine,
            restored=node.integrity.restored, unrecoverable=node.integrity.unrecoverable,
            recent=list(node.recent_log), http_responses=dict(stats.responses), http_open=stats.open,
            http_refused=stats.refused)

    # -- content --------------------------------------------------------------------------

    async def _content(self, request: Content) -> Response:
        if request.cid is not None and not request.segments and request.format == "raw":
            return await self._raw(request, request.cid)
        if request.key is not None:
            found = await self._resolve_name(request)
        else:
            assert request.cid is not None
            root = request.cid
            found = await self._in_thread(lambda src: self._resolve(src, root, request.segments))
        tag = router.etag(found.cid, request)
        headers = router.common_headers(found.cid, request, tag)
        if router.not_modified(request, tag):
            return Response(304, headers)
        if request.format == "raw":
            return await self._raw(request, found.cid)
        if request.format == "car":
            roots = [request.cid if request.cid is not None else found.cid]
            return Response(200, [*headers, ("Content-Type", router.CAR_CONTENT_TYPE),
                                  router.attachment(found.cid, "car"), ("Accept-Ranges", "none")],
                            self._streamed(lambda src, emit: self._car(src, emit, roots, found, request)))
        return self._plain(request, found, headers)

    async def _raw(self, request: Content, cid: CID) -> Response:
        """The block ``cid``: a trustless client's most frequent request,
        answered with one read, no path walked."""
        tag = router.etag(cid, request)
        headers = router.common_headers(cid, request, tag)
        if router.not_modified(request, tag):  # a CID's block never changes: no need to read it
            return Response(304, headers)
        data = self._views.block(cid)
        if data is None:  # the node's read, in its store thread (a worker would open the index anew)
            data = await self._fetch(cid)
        return Response(200, [*headers, ("Content-Type", router.RAW), router.attachment(cid, "bin"),
                              ("Content-Length", str(len(data)))], data)

    async def _resolve_name(self, request: Content) -> _Found:
        assert request.key is not None
        publisher = self._node.publisher
        assert publisher is not None
        public_key = parse_public_key(request.key)
        report = await publisher.resolve(public_key)
        if report.record is None:
            raise HttpError(404, f"no published record found for namespace {request.key}")
        record, root = report.record.encode(), report.record.root
        path = "/" + "/".join(request.segments)

        def resolve(src: _Source) -> _Found:
            node = RemoteNamespace(cast(BlockStore, src), public_key, [record]).resolve(path)
            if node.cid is None:  # a symlink: its target, as text
                return _Found(root, "symlink", 0, node.name, (), node.target)
            return self._terminal(src, node.cid, request.segments[-1] if request.segments else None, ())

        return await self._in_thread(resolve)

    def _resolve(self, src: _Source, root: CID, segments: tuple[str, ...]) -> _Found:
        """In a worker thread: walk ``segments`` down from ``root``."""
        src.record = []
        cid = root
        walked = str(root)
        for i, name in enumerate(segments):
            if cid.codec not in (DAG_PB, DAG_CBOR) or (cid.codec == DAG_PB and not _is_unixfs_dir(src, cid)):
                raise HttpError(404, f"{walked} is a file; it has no entry {name!r}")
            entry = trees.lookup(cast(BlockStore, src), cid, name)
            if entry is None:
                raise HttpError(404, f"{walked} has no entry {name!r}")
            walked += "/" + name
            if entry.kind == "symlink":
                if i == len(segments) - 1:
                    return _Found(cid, "symlink", 0, name, tuple(src.record), entry.target)
                raise HttpError(404, f"{walked} is a symlink (to {entry.target!r}); the gateway does not follow "
                                "symlinks")
            assert entry.cid is not None
            cid = entry.cid
        path_blocks = tuple(c for c in src.record if c != cid)
        src.record = None
        return self._terminal(src, cid, segments[-1] if segments else None, path_blocks)

    def _terminal(self, src: _Source, cid: CID, name: str | None, path_blocks: tuple[CID, ...]) -> _Found:
        """What ``cid`` is (in a worker thread)."""
        if cid.codec == RAW:
            return _Found(cid, "file", files.file_size(src, cid), name, path_blocks)
        if cid.codec == DAG_CBOR:
            view = self._views.view_of(cid)
            return _Found(cid, "dir", 0, name, path_blocks, index_file=_index(src, cid), view=view)
        if cid.codec == DAG_PB:
            _, unixfs = decode_unixfs_node(src.get(cid))
            if unixfs.type in (TYPE_DIRECTORY, TYPE_HAMT_SHARD):
                return _Found(cid, "dir", 0, name, path_blocks, index_file=_index(src, cid))
            if unixfs.type == TYPE_SYMLINK:
                return _Found(cid, "symlink", 0, name, path_blocks, (unixfs.data or b"").decode("utf-8", "replace"))
            return _Found(cid, "file", files.file_size(src, cid), name, path_blocks)
        return _Found(cid, "other", 0, name, path_blocks)

    # -- plain answers --------------------------------------------------------------------

    def _plain(self, request: Content, found: _Found, headers: list[tuple[str, str]]) -> Response:
        if found.kind == "symlink":
            body = (found.target or "").encode()
            return Response(200, [*headers, ("Content-Type", router.TEXT)], body)
        if found.kind == "other":
            raise HttpError(406, f"{found.cid} is neither a file nor a directory; ask for it with format=raw "
                            "or format=car")
        if found.kind == "dir":
            if found.index_file is not None:
                index, size = found.index_file
                return self._file(request, index, size, "index.html", headers)
            return Response(200, [*headers, ("Content-Type", router.HTML)],
                            self._streamed(lambda src, emit: self._listing(src, emit, request, found)))
        return self._file(request, found.cid, found.size, found.name, headers)

    def _file(self, request: Content, cid: CID, size: int, name: str | None,
              headers: list[tuple[str, str]]) -> Response:
        span = router.byte_range(request.range, size)
        headers = [*headers, ("Content-Type", router.content_type_for(name)), ("Accept-Ranges", "bytes")]
        status = 200
        first, end = 0, size
        if span is not None:
            first, end = span
            status = 206
            headers.append(("Content-Range", f"bytes {first}-{end - 1}/{size}"))
        headers.append(("Content-Length", str(end - first)))

        def body(src: _Source, emit: Callable[[bytes], None]) -> None:
            for piece in files.iter_file(src, cid, first, end - first):
                emit(piece)

        return Response(status, headers, self._streamed(body))

    def _listing(self, src: _Source, emit: Callable[[bytes], None], request: Content, found: _Found) -> None:
        view = found.view
        if found.cid.codec == DAG_CBOR and view is None:
            view, blocks = build_view(cast(BlockStore, src), found.cid)
            self._views.add(found.cid, view, blocks)
        emit(router.listing_head(request, found.cid, view).encode())
        rows: list[str] = []
        for entry in trees.entries(cast(BlockStore, src), found.cid):
            rows.append(router.listing_row(request, Listed(entry.name, entry.kind, entry.size, entry.cid)))
            if len(rows) >= LISTING_BATCH:
                emit("".join(rows).encode())
                rows = []
        emit(("".join(rows) + router.LISTING_END).encode())

    # -- CAR answers ------------------------------------------------------------------------

    def _car(self, src: _Source, emit: Callable[[bytes], None], roots: list[CID], found: _Found,
             request: Content) -> None:
        """In a worker thread: the CAR of ``request`` (see the module docstring)."""
        emit(encode_header(roots))
        written: OrderedDict[CID, None] = OrderedDict()

        def put(cid: CID, data: bytes | None = None) -> None:
            if cid in written:
                return
            written[cid] = None
            emit(encode_section(cid, src.get(cid) if data is None else data))

        for cid in found.path_blocks:
            put(cid)
        terminal = found.cid
        if request.scope == "block" or found.kind in ("symlink", "other"):
            put(terminal)
        elif request.scope == "all":
            for cid, data in dag_walk(src, [terminal], written):
                emit(encode_section(cid, data))
        elif found.kind == "file":
            self._car_file(src, put, terminal, found.size, request.entity_bytes)
        else:  # a directory's entity: its own nodes, and its entries' root blocks for a UnixFS one
            src.record = []
            for _ in trees.entries(cast(BlockStore, src), terminal):
                for cid in src.record:
                    put(cid)
                src.record.clear()
            for cid in src.record:
                put(cid)
            src.record = None
            put(terminal)

    @staticmethod
    def _car_file(src: _Source, put: Callable[..., None], cid: CID, size: int,
                  entity: router.EntityBytes | None) -> None:
        span = (0, size) if entity is None else entity.resolve(size)
        if span is None:  # an empty range or wholly outside: the root alone, which says the size
            put(cid)
            return
        first, end = span
        if entity is None:
            # The whole file: its DAG, depth first.
            stack = [cid]
            while stack:
                at = stack.pop()
                data = src.get(at)
                put(at, data)
                stack.extend(reversed(links_of(at, data)))
            return
        src.record = []
        for leaf in files.file_leaves(src, cid, first, end - first):
            for node in src.record:  # the interior nodes read to find it
                put(node)
            src.record.clear()
            put(leaf.cid)
        for node in src.record:
            put(node)
        src.record = None
        put(cid)  # a one-block file's root is its leaf

    # -- threads ------------------------------------------------------------------------------

    def _source(self, token: trio.lowlevel.TrioToken) -> _Source:
        store = self._node.store
        assert store is not None
        return _Source(self._views, PackFirst(store.blocks, self._fetch, token, self._node.blocks.read_ahead))

    async def _fetch(self, cid: CID) -> bytes:
        with trio.fail_after(self.fetch_timeout):
            return await self._node.blocks.get(cid)

    async def _in_thread(self, work: Callable[[_Source], T]) -> T:
        token = trio.lowlevel.current_trio_token()

        def run() -> T:
            src = self._source(token)
            try:
                return work(src)
            finally:
                src.release()

        return await trio.to_thread.run_sync(run, limiter=self._workers)

    def _streamed(self, produce: Callable[[_Source, Callable[[bytes], None]], None]) -> BodyWriter:
        """A body written by ``produce`` in a worker thread, piece by piece
        (``emit``), two pieces ahead of the client at most."""

        async def body(send: Send) -> None:
            tx, rx = trio.open_memory_channel[bytes](2)
            token = trio.lowlevel.current_trio_token()

            def emit(piece: bytes) -> None:
                trio.from_thread.run(tx.send, piece, trio_token=token)

            async def producer() -> None:
                async with tx:
                    try:
                        await self._in_thread(lambda src: produce(src, emit))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the client went: the thread stopped at its next piece

            async with trio.open_nursery() as nursery:
                nursery.start_soon(producer)
                async with rx:
                    async for piece in rx:
                        await send(piece)

        return body


def _index(src: _Source, directory: CID) -> tuple[CID, int] | None:
    """The directory's ``index.html`` file, served in place of a listing."""
    entry = trees.lookup(cast(BlockStore, src), directory, "index.html")
    if entry is None or entry.kind != "file" or entry.cid is None:
        return None
    return entry.cid, entry.size


def _is_unixfs_dir(src: _Source, cid: CID) -> bool:
    try:
        _, unixfs = decode_unixfs_node(src.get(cid))
    except InvalidBlockError:
        return False
    return unixfs.type in (TYPE_DIRECTORY, TYPE_HAMT_SHARD)


async def serve_gateway(node: Node, listeners: list[trio.SocketListener],
                        log: Callable[[str], None]) -> None:
    """Serve the gateway on ``listeners`` until cancelled."""
    from ..gateway.server import HttpServer

    gateway = Gateway(node)
    server = HttpServer(gateway.handle, log)
    gateway.http_stats = server.stats
    node.gateway = gateway
    await server.serve(listeners)


__all__ = ["Gateway", "serve_gateway"]
