"""Reading a file DAG: the walk, sans-IO.

This module owns the one reader of the file format of :mod:`cas.files`
(docs/formats.md, "File DAG"). :class:`FileWalk` is a state machine in the
manner of h11: constructed with a root CID and a byte range, it is asked
for its :meth:`~FileWalk.next_event` and answers with one of

* :class:`NeedBlock`: it needs this block; hand the verified bytes back
  with :meth:`~FileWalk.feed` before asking again;
* :class:`ReadAhead`: the blocks it will need next, in order, as far ahead
  as it would like them (its range, plus ``ahead`` bytes past it): a hint a
  driver executes as it can (a batch of index look-ups, ``prefetch``, a
  fetch from the network or into a cache) or ignores;
* a ``memoryview``: the next piece of the range's content, in order (a
  :class:`LeafSpan` instead, with ``leaves=True``: where each leaf lies,
  leaves never fetched);
* :class:`WalkDone`: the end, with the file's size.

It descends by ``blocksizes``, so a byte range costs one node per level
plus only the leaves that overlap it. Every node is treated as untrusted:
the bytes fed are verified against their CID by whoever fetched them (a
:class:`~cas.blocks.BlockStore` keeps that rule), and the walk checks the
structure (links match blocksizes, sizes add up, leaf lengths match what
the parent claims, children are raw or dag-pb, depth at most
``MAX_DEPTH``), raising :class:`InvalidBlockError` naming the offending CID.

A :class:`PathCache` keeps the nodes on the path to the last leaf and that
leaf, so a reader that walks range after range of one file (a file object,
an open file in the mount) fetches each block once; a :class:`NodeCache`
shares decoded interior nodes between readers.

Rules for this module:

1. No I/O, no clock, no threads of its own: the drivers (in
   :mod:`cas.files` for a :class:`~cas.blocks.BlockStore` and an
   :class:`~cas.blocks.AsyncBlockStore`, in ``cas.fuse.operations`` for the
   mount, in ``cas.node.ops`` for the daemon's ``write_file``) do that.
2. Read-ahead is decided here, by the hint, and nowhere else.
3. Never a directory: a dag-cbor root is refused with
   :class:`NotAFileError`.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Generator
from typing import NamedTuple

from .cid import CID, DAG_CBOR, DAG_PB, RAW
from .dagpb import TYPE_FILE, TYPE_NAMES, TYPE_RAW, decode_unixfs_node
from .errors import InvalidBlockError, NotAFileError

MAX_DEPTH = 10
"""Deepest interior-node nesting the reader follows. A cas file of 2**64
bytes needs five levels; kubo's 174-link trees need eight. Anything deeper
is a malicious or broken tree, refused before it can exhaust the stack."""

READ_AHEAD_BLOCKS = 64
"""How many hinted blocks a driver keeps ahead of the walk (~20 MB at the
average chunk size: enough to keep this disk busy, bench/add_cat.py)."""


class _FileNode(NamedTuple):
    """A validated interior node: its content is ``inline`` then each child."""

    cid: CID
    inline: bytes
    children: tuple[CID, ...]
    sizes: tuple[int, ...]
    starts: tuple[int, ...]  # offset of each child within this node's content
    size: int


def _decode_file_node(cid: CID, data: bytes, *, is_root: bool) -> _FileNode:
    try:
        node, unixfs = decode_unixfs_node(data)
    except InvalidBlockError as exc:
        raise InvalidBlockError(f"file node {cid} is invalid: {exc}") from None
    if unixfs.type not in (TYPE_FILE, TYPE_RAW):
        what = TYPE_NAMES[unixfs.type]
        if is_root:
            raise NotAFileError(f"{cid} is a UnixFS {what}, not a file")
        raise InvalidBlockError(f"file node {cid} is invalid: a UnixFS {what} inside a file")
    inline = unixfs.data or b""
    if len(node.links) != len(unixfs.blocksizes):
        raise InvalidBlockError(
            f"file node {cid} is invalid: {len(node.links)} links but "
            f"{len(unixfs.blocksizes)} blocksizes"
        )
    if unixfs.filesize is None:
        raise InvalidBlockError(f"file node {cid} is invalid: it has no filesize")
    starts = []
    offset = len(inline)
    for size in unixfs.blocksizes:
        starts.append(offset)
        offset += size
    if offset != unixfs.filesize:
        raise InvalidBlockError(
            f"file node {cid} is invalid: filesize {unixfs.filesize} but its inline "
            f"data and blocksizes add up to {offset}"
        )
    for link in node.links:
        if link.hash.codec not in (RAW, DAG_PB):
            raise InvalidBlockError(
                f"file node {cid} is invalid: it links to {link.hash}, a "
                f"{link.hash.codec_name} block, which cannot be part of a file"
            )
    return _FileNode(
        cid,
        inline,
        tuple(link.hash for link in node.links),
        unixfs.blocksizes,
        tuple(starts),
        unixfs.filesize,
    )


class ReadAhead(NamedTuple):
    """A hint from the walker: these blocks will be wanted next, in order.

    Drivers may pass it on to a store that can start fetching early (disk
    read-ahead, network requests in flight) or ignore it; it is never needed
    for correctness.
    """

    cids: tuple[CID, ...]


class NodeCache:
    """Decoded interior nodes of file DAGs by CID, shared by many readers.

    Decoding a full node (1024 links) costs milliseconds in Python, so a
    reader that jumps between subtrees (random reads, or read-ahead running
    beside the reader) should decode each node once, not once per jump. A
    CID fixes its content, so an entry never goes stale. Bounded by the
    total number of links held (a 1024-link node is ~300 KB decoded);
    least recently used nodes go first. Thread-safe.
    """

    def __init__(self, max_links: int = 64 * 1024) -> None:
        self.max_links = max_links
        self._nodes: OrderedDict[CID, _FileNode] = OrderedDict()
        self._links = 0
        self._lock = threading.Lock()

    def get(self, cid: CID) -> _FileNode | None:
        with self._lock:
            node = self._nodes.get(cid)
            if node is not None:
                self._nodes.move_to_end(cid)
            return node

    def put(self, node: _FileNode) -> None:
        with self._lock:
            if node.cid in self._nodes:
                return
            self._nodes[node.cid] = node
            self._links += len(node.children)
            while self._links > self.max_links and len(self._nodes) > 1:
                _, old = self._nodes.popitem(last=False)
                self._links -= len(old.children)


class PathCache:
    """The interior nodes on the path to the last leaf read, and that leaf.

    A reader keeps one of these, so sequential small reads fetch each node
    and each leaf once, not once per read. With a shared :class:`NodeCache`,
    nodes off the current path are found decoded there.
    """

    def __init__(self, nodes: NodeCache | None = None) -> None:
        self.path: list[_FileNode] = []  # path[d] is the node at depth d
        self.leaf: tuple[CID, bytes] | None = None
        self.nodes = nodes

    def node(self, cid: CID, depth: int) -> Generator[CID, bytes, _FileNode]:
        if depth < len(self.path) and self.path[depth].cid == cid:
            return self.path[depth]
        node = self.nodes.get(cid) if self.nodes is not None else None
        if node is None:
            data = yield cid
            node = _decode_file_node(cid, data, is_root=depth == 0)
            if self.nodes is not None:
                self.nodes.put(node)
        del self.path[depth:]
        self.path.append(node)
        return node

    def leaf_bytes(self, cid: CID) -> Generator[CID, bytes, bytes]:
        if self.leaf is not None and self.leaf[0] == cid:
            return self.leaf[1]
        data = yield cid
        self.leaf = (cid, data)
        return data


def _root_size(cache: PathCache, cid: CID) -> Generator[CID, bytes, int]:
    if cid.codec == DAG_CBOR:
        raise NotAFileError(f"{cid} is a directory/record (dag-cbor), not a file")
    if cid.codec == RAW:
        return len((yield from cache.leaf_bytes(cid)))
    return (yield from cache.node(cid, 0)).size


class LeafSpan(NamedTuple):
    """A leaf of a file and where its bytes sit in the file (what a walk
    with ``leaves=True`` lists: the blocks a byte range will need)."""

    cid: CID
    offset: int
    size: int


def _walk(
    cache: PathCache, cid: CID, start: int, end: int, depth: int, claimed: int | None,
    parent: CID | None, base: int = 0, spans: bool = False, ahead: int = 0,
) -> Generator[CID | memoryview | LeafSpan | ReadAhead, bytes | None, None]:
    """Produce bytes [start, end) of the subtree ``cid``, whose parent says
    it holds ``claimed`` bytes (None at the root) and which starts at file
    offset ``base``. With ``spans``, a leaf below the root is not fetched
    but produced as a :class:`LeafSpan` (its length is checked when it is
    read). The read-ahead hint of a node lists its children from the
    first one needed up to ``ahead`` bytes past ``end``."""
    if spans and cid.codec == RAW and claimed is not None:
        yield LeafSpan(cid, base, claimed)
        return
    if cid.codec == RAW:
        data = yield from cache.leaf_bytes(cid)
        if claimed is not None and len(data) != claimed:
            raise InvalidBlockError(
                f"leaf {cid} holds {len(data)} bytes but its parent {parent} "
                f"claims {claimed}"
            )
        if start < end:
            yield memoryview(data)[start:end]
        return
    if depth > MAX_DEPTH:
        raise InvalidBlockError(
            f"file node {cid} is nested deeper than {MAX_DEPTH} levels; refusing the tree"
        )
    node = yield from cache.node(cid, depth)
    if claimed is not None and node.size != claimed:
        raise InvalidBlockError(
            f"file node {cid} holds {node.size} bytes but its parent {parent} claims {claimed}"
        )
    if start < len(node.inline):
        yield memoryview(node.inline)[start : min(end, len(node.inline))]
    # The first child that can overlap: the last one starting at or before
    # `start`. Children of zero bytes are skipped, never fetched.
    first = max(bisect_right(node.starts, start) - 1, 0)
    hinted = bisect_right(node.starts, end + ahead - 1)
    if hinted - first > 1:
        yield ReadAhead(node.children[first:hinted])
    for index in range(first, len(node.children)):
        child_start = node.starts[index]
        if child_start >= end:
            break
        child_end = child_start + node.sizes[index]
        lo, hi = max(start, child_start), min(end, child_end)
        if lo < hi:
            yield from _walk(
                cache, node.children[index], lo - child_start, hi - child_start,
                depth + 1, node.sizes[index], cid, base + child_start, spans, ahead,
            )



class NeedBlock(NamedTuple):
    """The walk needs the verified bytes of ``cid``: :meth:`FileWalk.feed`."""

    cid: CID


class WalkDone(NamedTuple):
    """The walk is over; ``size`` is the whole file's size in bytes."""

    size: int


WalkEvent = NeedBlock | ReadAhead | memoryview | LeafSpan | WalkDone


class FileWalk:
    """One walk over bytes [offset, offset + length) of file ``root`` (to
    its end if ``length`` is None; clamped to its end); see the module
    docstring for the events. ``FileWalk(root, 0, 0)`` reads the root only:
    the size of the file.

    ``path`` carries the nodes and the leaf a previous walk of the same
    reader fetched; ``leaves`` lists the leaves of the range as
    :class:`LeafSpan` instead of reading them (the root of a one-block file
    is read, being the leaf); ``ahead`` widens the read-ahead hint that far
    past the range.
    """

    def __init__(
        self, root: CID, offset: int = 0, length: int | None = None, *,
        path: PathCache | None = None, leaves: bool = False, ahead: int = 0,
    ) -> None:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"a byte range starts and runs at 0 or more (got {offset}, {length})")
        self.root = root
        self.size: int | None = None  # known once the root is read
        self._steps = self._run(path if path is not None else PathCache(), offset, length, leaves, ahead)
        self._reply: bytes | None = None
        self._need: CID | None = None
        self._done: WalkDone | None = None

    def _run(
        self, path: PathCache, offset: int, length: int | None, leaves: bool, ahead: int,
    ) -> Generator[CID | memoryview | LeafSpan | ReadAhead, bytes | None, None]:
        size = self.size = yield from _root_size(path, self.root)
        end = size if length is None else min(size, offset + length)
        if offset >= end:
            return
        if leaves and self.root.codec == RAW:  # a one-block file: the root is the leaf
            yield LeafSpan(self.root, 0, size)
            return
        yield from _walk(path, self.root, offset, end, 0, None, None, 0, leaves, ahead)

    @property
    def needed(self) -> CID | None:
        """The block the walk waits for, if it does."""
        return self._need

    def next_event(self) -> WalkEvent:
        """The next thing the walk needs or produces (see the module docstring)."""
        if self._need is not None:
            raise RuntimeError(f"the walk is waiting for block {self._need}: feed it first")
        if self._done is not None:
            return self._done
        try:
            item = self._steps.send(self._reply)
        except StopIteration:
            assert self.size is not None
            self._done = WalkDone(self.size)
            return self._done
        self._reply = None
        if isinstance(item, CID):
            self._need = item
            return NeedBlock(item)
        return item

    def feed(self, data: bytes) -> None:
        """The verified bytes of the block the last :class:`NeedBlock` named."""
        if self._need is None:
            raise RuntimeError("the walk needs no block now")
        self._reply, self._need = data, None
