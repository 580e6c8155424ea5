"""The committed namespace as the mount reads and writes it (store thread).

Owns the store side of the mount: path resolution against the *current*
committed root (so what ``cas mv`` or ``cas add --to`` did through the
control socket shows in the mount), listings, a staged file stored as
blocks, and the write-back's commit: the overlay of pending changes
(cas.fuse.pending, kept by cas.fuse.view) built into one new version over
the newest root. What is not yet committed is the view's, never this
module's.

The reading half (:class:`TreeReader`) is shared with the read-only tree
of another node's published namespace (cas.fuse.published), which differs
only in where its root comes from.

Every method here is synchronous and may read or write the disk: it runs
only in the node's store thread (``Node.in_store_thread``), one at a time
with the control socket's operations. It never talks to FUSE and never
knows inode numbers (cas.fuse.inodes does).

Caches, both safe because they are keyed by content:

* the current root is read at most every ``root_ttl`` seconds, and replaced
  at once by the root each of our own commits returns;
* directory lookups are cached by (directory CID, name): a CID's listing
  never changes, so a cached answer is never stale.
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

from .. import files
from ..blocks import Block
from ..cid import CID
from ..errors import NotADirectoryPathError, PathNotFoundError
from ..names import dirtree
from ..names.directory import DirEntry
from ..names.namespace import ROOT_MODE, Namespace, Node, RootState, split_path
from ..store import OwnBlocks, WriteSession
from .pending import PendingDir, Supply

log = logging.getLogger("cas.fuse")

ROOT_TTL = 0.1
"""Seconds a read of the current root is reused: bounds how late a change
made through the control socket shows (plus the kernel's attribute timeout)."""

MAX_LOOKUP_CACHE = 200_000

MAX_KNOWN_LISTING = 4096
"""Entries of a directory past which a commit does not hand its listing
back to the mount (``Built``)."""



@dataclass(frozen=True)
class FsStat:
    block_size: int
    blocks: int
    blocks_free: int
    files: int


class TreeReader:
    """Reading a tree of directories from whatever :meth:`root` says is
    current: path resolution with the lookup cache, listings, file content.
    Subclasses say where the root comes from (:class:`MountTree`: the local
    namespace; :class:`cas.fuse.published.PublishedTree`: another node's
    published record)."""

    def __init__(self, blocks: Any) -> None:
        self.blocks = blocks
        self._lookups: OrderedDict[tuple[CID, str], DirEntry | None] = OrderedDict()

    def root(self) -> RootState:
        raise NotImplementedError

    def _lookup(self, directory: CID, name: str) -> DirEntry | None:
        key = (directory, name)
        if key in self._lookups:
            self._lookups.move_to_end(key)
            return self._lookups[key]
        entry = dirtree.lookup(self.blocks, directory, name)
        self._lookups[key] = entry
        if len(self._lookups) > MAX_LOOKUP_CACHE:
            self._lookups.popitem(last=False)
        return entry

    def resolve(self, path: str) -> Node:
        """What ``path`` names in the current root."""
        state = self.root()
        parts = split_path(path)
        node = Node("/", "", "dir", 0, ROOT_MODE, state.time_ns, state.root)
        for depth, name in enumerate(parts):
            if node.kind != "dir":
                raise NotADirectoryPathError(f"{node.path} is not a directory")
            assert node.cid is not None
            entry = self._lookup(node.cid, name)
            if entry is None:
                raise PathNotFoundError(f"/{'/'.join(parts[: depth + 1])}: no such file or directory")
            node = Node.of("/" + "/".join(parts[: depth + 1]), entry)
        return node

    def list(self, path: str) -> tuple[Node, list[DirEntry]]:
        """Directory ``path`` and its entries, in name order (a snapshot)."""
        node = self.resolve(path)
        if node.kind != "dir":
            raise NotADirectoryPathError(f"{path} is not a directory")
        assert node.cid is not None
        return node, list(dirtree.iterate(self.blocks, node.cid))

    def statfs(self) -> FsStat:
        """The file system's figures for statfs(2)."""
        raise NotImplementedError

    def stored_bytes(self, cid: CID) -> int:
        """The bytes file ``cid`` keeps in blocks: each distinct leaf once, so
        a hole (the same block of zeros again and again) costs one block.
        Reads the file's interior nodes only."""
        seen: dict[CID, int] = {}
        for leaf in files.file_leaves(self.blocks, cid):
            seen[leaf.cid] = leaf.size
        return sum(seen.values())

    def read_all(self, cid: CID) -> Any:
        """The content of file ``cid`` in pieces (to copy into a staged file)."""
        return files.iter_file(self.blocks, cid)



class MountTree(TreeReader):
    """See the module docstring. ``store`` is the node's LocalStore.

    The committed side of the mount's write-back (cas.fuse.view): the
    committed tree read for the overlay's misses (:meth:`chain`,
    :meth:`resolve_from`, :meth:`listing`), files stored as blocks
    (:meth:`store_file`), and the overlay built into one new version
    (:meth:`commit_pending`). ``on_commit``, if given, is called after each
    such commit (in the store thread, like the commit) with the blocks the
    files linked by it stored: the node places them on the network and
    republishes (:mod:`cas.fuse.served`)."""

    def __init__(self, store: Any, *, root_ttl: float = ROOT_TTL,
                 on_commit: Callable[[list[CID]], None] | None = None) -> None:
        super().__init__(store.blocks)
        self.store = store
        self.namespace = Namespace(store)  # LocalStore keeps its key loaded
        self._on_commit = on_commit
        self._root_ttl = root_ttl
        self._root: RootState | None = None
        self._root_read = 0.0
        # Write sessions (gc keeps what they put) for the files stored and
        # not yet linked by a commit: a commit closes all but the newest,
        # whose files it or the next one links, and opens another.
        self._sessions = [store.blocks.open_session()]

    def root(self) -> RootState:
        now = time.monotonic()
        if self._root is None or now - self._root_read > self._root_ttl:
            self._root = self.namespace.current()
            self._root_read = now
        return self._root

    def close(self) -> None:
        """The mount has ended (store thread): gc may take what no commit linked."""
        for session in self._sessions:
            session.close()
        self._sessions = []

    def forget_root(self) -> None:
        """Read the committed root afresh next time (another writer
        committed; any thread: one assignment)."""
        self._root = None

    # -- the committed tree, for the overlay -------------------------------------

    def supply(self, start: CID | None, parts: tuple[str, ...], depth: int) -> Supply:
        """The committed entries the overlay asked for (``PendingChanges.needs``):
        those of the directories ``parts[depth:]``, followed under directory
        ``start`` (None: the committed root, whose CID comes too), keyed by
        their paths. PathNotFoundError or NotADirectoryPathError if one is
        missing or not a directory."""
        root = None
        if start is None:
            root = start = self.root().root
        dirs: dict[tuple[str, ...], DirEntry] = {}
        cid = start
        for at in range(depth, len(parts)):
            entry = self._lookup(cid, parts[at])
            if entry is None:
                raise PathNotFoundError(f"/{'/'.join(parts[: at + 1])}: no such directory")
            if entry.kind != "dir" or entry.cid is None:
                raise NotADirectoryPathError(f"/{'/'.join(parts[: at + 1])} is not a directory")
            dirs[parts[: at + 1]] = entry
            cid = entry.cid
        return Supply(root, dirs)

    def resolve_from(self, start: CID | None, rest: tuple[str, ...], path: str) -> Node:
        """What ``rest`` names under committed directory ``start`` (None:
        ``path`` from the committed root)."""
        if start is None:
            return self.resolve(path)
        cid, entry = start, None
        for depth, name in enumerate(rest):
            entry = self._lookup(cid, name)
            if entry is None:
                raise PathNotFoundError(f"{path}: no such file or directory")
            if depth < len(rest) - 1:
                if entry.kind != "dir" or entry.cid is None:
                    raise NotADirectoryPathError(f"{path}: a part of it is not a directory")
                cid = entry.cid
        assert entry is not None, "rest names something below start"
        return Node.of(path, entry)

    def listing(self, cid: CID | None) -> list[DirEntry]:
        """Committed directory ``cid``'s entries in name order (None: none)."""
        return [] if cid is None else list(dirtree.iterate(self.blocks, cid))

    # -- storing and committing -------------------------------------------------------

    def empty_file(self) -> CID:
        """The empty file's CID, stored."""
        return files.add_bytes(self.blocks, b"").cid

    def store_file(self, stream: BinaryIO) -> StoredFile:
        """Store ``stream`` as a file, as the user's own blocks (claimed if a
        peer had placed the same content here); durable with the next
        commit, which links it."""
        sink = _NewBlocks(OwnBlocks(self._sessions[-1], self.store.held))
        added = files.add_stream(sink, stream)  # type: ignore[arg-type]  # it only puts
        return StoredFile(added.cid, added.size, tuple(sink.cids))

    def store_files(self, streams: list[BinaryIO]) -> list[StoredFile]:
        """:meth:`store_file` of each, in one trip to the store thread."""
        return [self.store_file(stream) for stream in streams]

    # -- a file stored while it is written (cas.fuse.streaming) -------------------

    def open_session(self, keep: Iterable[CID] = ()) -> WriteSession:
        """A write session of its own for a file stored while it is
        written, over several commits: gc keeps what it put, and ``keep``
        (what an earlier session of the same file put: a follower started
        where another left off refers to it), until :meth:`hand_over` or
        :meth:`drop_session`."""
        session: WriteSession = self.store.blocks.open_session()
        for cid in keep:
            session.protect(cid)
        return session

    def put_own(self, session: WriteSession, blocks: list[Block]) -> list[CID]:
        """Put ``blocks`` as the user's own, through ``session``; those new
        to the store (to be placed once linked)."""
        sink = _NewBlocks(OwnBlocks(session, self.store.held))
        for block in blocks:
            sink.put(block)
        return sink.cids

    def hand_over(self, session: WriteSession) -> None:
        """The file ``session`` stored is linked now: the next commit,
        which holds the link, closes the session."""
        self._sessions.insert(0, session)

    def drop_session(self, session: WriteSession) -> None:
        """The file was given up, or stored again whole: gc may take what
        ``session`` put and nothing links."""
        session.close()

    def commit_pending(self, pending: PendingDir, stored: list[CID],
                       known: Mapping[CID, Mapping[str, DirEntry]] | None = None) -> CommitResult:
        """Build what ``pending`` (the overlay's root) makes of the
        committed root it was made over, and commit it as one version: one
        signed record, one fsync (after the blocks it refers to). Then
        ``on_commit(stored)``. Returns the root committed and what the
        build learnt of the directories it wrote. ``known``: listings of
        committed directories by CID (read, never changed), from which the
        listing of a directory edited in place is learnt too."""
        self.empty_file()  # an entry made by create may name it
        built = Built.empty()
        known = known or {}

        def make(state: RootState) -> CID:
            # Over the newest root: if another writer committed since the
            # overlay began, its changes stay, but where both changed one
            # name, the mount's entry is the one kept.
            built.dirs.clear()
            built.listings.clear()
            built.gone.clear()
            return self._build(pending, state.root, (), built, known)[0]

        state = self.namespace.commit_made(make)
        self._root, self._root_read = state, time.monotonic()
        while len(self._sessions) > 1:
            self._sessions.pop(0).close()  # their files are linked by now
        self._sessions.append(self.store.blocks.open_session())
        if self._on_commit is not None:
            self._on_commit(stored)
        return CommitResult(state, built)

    def _build(self, pending: PendingDir, there: CID | None, path: tuple[str, ...], built: Built,
               known: Mapping[CID, Mapping[str, DirEntry]]) -> tuple[CID, int]:
        """The directory ``pending`` makes at ``path``: (CID, size), its
        nodes stored, and what it holds noted in ``built``. ``there``: the
        committed directory at its path now, which one that is ``at_path``
        is built over (its own base if none is). Its leaves are edited one
        change at a time (each edit writes a leaf of ~64 entries) unless
        the changes would rewrite about as many entries as the directory
        holds: then it is built anew from its merged entries, in one pass."""
        base = there if pending.at_path and there is not None else pending.base
        changes: dict[str, DirEntry | None] = {}
        for name, item in pending.children.items():
            if isinstance(item, PendingDir):
                now_there = None
                if item.at_path and base is not None:
                    committed = self._lookup(base, name)
                    if committed is not None and committed.kind == "dir":
                        now_there = committed.cid
                cid, size = self._build(item, now_there, (*path, name), built, known)
                assert item.mode is not None and item.mtime is not None, "a pending directory has its attributes"
                changes[name] = built.dirs[(*path, name)] = DirEntry(name, "dir", size, item.mode, item.mtime, cid=cid,
                                                                     meta=item.meta)
            else:
                changes[name] = item
                if item is not None and item.kind == "dir":  # moved here, or its attributes changed
                    built.dirs[(*path, name)] = item
                else:  # no directory here any more (what was known below it neither)
                    built.gone.add((*path, name))
        listing: dict[str, DirEntry] | None
        if base is None:
            listing = _applied({}, changes)
            summary = dirtree.build(self.blocks, listing.values())
        else:
            was = known.get(base)
            count = len(was) if was is not None else dirtree.summary(self.blocks, base).count
            if len(changes) * dirtree.AVG_FANOUT >= count:  # rewritten whole
                if was is None:
                    was = {entry.name: entry for entry in dirtree.iterate(self.blocks, base)}
                listing = _applied(was, changes)
                summary = dirtree.build(self.blocks, listing.values())
            else:  # edited in place
                summary = dirtree.update(self.blocks, base, changes)
                listing = None if was is None else _applied(was, changes)
        if listing is not None and len(listing) <= MAX_KNOWN_LISTING:
            built.listings[summary.cid] = listing
        return summary.cid, summary.size

    def statfs(self) -> FsStat:
        st = os.statvfs(self.store.path)
        return FsStat(st.f_frsize, st.f_blocks, st.f_bavail, st.f_files)


class Built(NamedTuple):
    """What a commit learnt of the directories it wrote: by path, the
    entry of each (but the root's) and the paths where no directory is any
    more (removed, or a file now); by directory CID, the whole listing of
    those whose entries it knew (at most ``MAX_KNOWN_LISTING``: a listing
    by CID is never stale)."""

    dirs: dict[tuple[str, ...], DirEntry]
    listings: dict[CID, dict[str, DirEntry]]
    gone: set[tuple[str, ...]]

    @classmethod
    def empty(cls) -> Built:
        return cls({}, {}, set())


class CommitResult(NamedTuple):
    state: RootState
    built: Built


class StoredFile(NamedTuple):
    cid: CID
    size: int
    new_blocks: tuple[CID, ...]
    """Those of its blocks that were new to the store (to be placed)."""


class _NewBlocks:
    """A block sink that remembers which of the blocks put through it were
    new to the store: those a commit asks the node to place (the others
    were placed when they first came)."""

    def __init__(self, sink: OwnBlocks) -> None:
        self._sink = sink
        self.cids: list[CID] = []

    def put(self, block: Block) -> bool:
        new = self._sink.put(block)
        if new:
            self.cids.append(block.cid)
        return new


def _applied(listing: Mapping[str, DirEntry], changes: Mapping[str, DirEntry | None]) -> dict[str, DirEntry]:
    """``listing`` (name -> entry) edited by ``changes`` (None: removed), as a new dict."""
    edited = dict(listing)
    for name, change in changes.items():
        if change is None:
            edited.pop(name, None)
        else:
            edited[name] = change
    return edited
