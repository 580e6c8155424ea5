"""The namespace as the mount sees it: resolve, list, change, commit files.

Owns the mount's view of one repository's namespace: path resolution against
the *current* root (so what ``cas mv`` or ``cas add --to`` did through the
control socket shows in the mount), the copy-on-write path operations the
kernel asks for, and committing a staged file as blocks plus one namespace
link.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from .. import files
from ..blocks import Block
from ..cid import CID
from ..errors import (
    BlockNotFoundError,
    DirectoryNotEmptyError,
    InvalidInputError,
    IsADirectoryPathError,
    NamespaceError,
    NotADirectoryPathError,
    PathNotFoundError,
)
from ..names import dirtree
from ..names.changes import Change, Link, Mkdir, Move, Remove, SetAttributes
from ..names.directory import DirEntry
from ..names.namespace import ROOT_MODE, Namespace, Node, RootState, split_path
from ..store import OwnBlocks

log = logging.getLogger("cas.fuse")

ROOT_TTL = 0.1
"""Seconds a read of the current root is reused: bounds how late a change
made through the control socket shows (plus the kernel's attribute timeout)."""

MAX_LOOKUP_CACHE = 200_000


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

    def read_all(self, cid: CID) -> Any:
        """The content of file ``cid`` in pieces (to copy into a staged file)."""
        return files.iter_file(self.blocks, cid)



class MountTree(TreeReader):
    """See the module docstring. ``store`` is the node's LocalStore.

    **Write-back.** A change is applied at once to a draft of the root (its
    new directory nodes stored, nothing committed: :meth:`Namespace.draft`)
    and remembered; every read sees the draft. :meth:`flush` commits what
    is pending as one namespace version (one signature, one fsync), and is
    called every commit interval, on fsync, before another writer's change
    and at unmount. A crash loses what was not flushed, never more, and
    never leaves part of it (a version is one root). If another writer
    committed meanwhile, the pending changes are applied again to its root
    (and each that no longer fits is dropped, logged): the rule every
    writer keeps (docs/architecture.md, "Concurrent changes").

    ``on_commit``, if given, is called after each flush (in the store
    thread, like the flush) with the blocks the files committed since the
    last one stored: the node places them on the network and republishes
    (:mod:`cas.fuse.served`)."""

    def __init__(self, store: Any, *, root_ttl: float = ROOT_TTL,
                 on_commit: Callable[[list[CID]], None] | None = None) -> None:
        super().__init__(store.blocks)
        self.store = store
        self.namespace = Namespace(store)  # LocalStore keeps its key loaded
        self._on_commit = on_commit
        self._root_ttl = root_ttl
        self._view: RootState | None = None  # what reads see: the newest root, or the draft over it
        self._root_read = 0.0
        self._base: RootState | None = None  # the committed root the draft was made from
        self._pending: list[Change] = []
        self._stored: list[CID] = []  # blocks of files committed since the last flush
        self.dropped: list[str] = []  # pending changes another writer's change made impossible

    @property
    def pending(self) -> int:
        """Changes applied but not yet committed."""
        return len(self._pending)

    def root(self) -> RootState:
        now = time.monotonic()
        if self._view is None or now - self._root_read > self._root_ttl:
            current = self.namespace.current()
            if not self._pending:
                self._view = current
            elif self._base is not None and current.seq != self._base.seq:
                self._rebase(current)
            self._root_read = now
        assert self._view is not None
        return self._view

    def _rebase(self, current: RootState) -> None:
        """Another writer committed ``current``: the draft is made again
        over it, each pending change applied in turn (one that no longer
        fits is dropped, and said)."""
        view, kept = current, []
        for change in self._pending:
            try:
                view = self.namespace.draft(view, change)
                kept.append(change)
            except (NamespaceError, InvalidInputError, BlockNotFoundError) as exc:
                self._drop(change, exc)
        self._base, self._view, self._pending = current, view, kept

    def _drop(self, change: Change, exc: Exception) -> None:
        message = f"a change made in the mount was dropped: {exc} (another writer changed the namespace first)"
        log.warning("%s", message)
        self.dropped.append(message)

    def _change(self, change: Change) -> RootState:
        """Apply ``change`` to the draft; raises the NamespaceError it meets."""
        state = self.root()
        draft = self.namespace.draft(state, change)
        if draft.root != state.root:
            if not self._pending:
                self._base = state
            self._pending.append(change)
            self._view = draft
        return draft

    def flush(self) -> RootState | None:
        """Commit every pending change as one version (store thread); the
        root committed, or None if nothing was pending."""
        if not self._pending:
            return None
        assert self._base is not None and self._view is not None
        state, failed = self.namespace.commit_changes(self._pending, self._base, self._view)
        for change, exc in failed:
            self._drop(change, exc)
        self._pending, self._base, self._view, self._root_read = [], None, state, time.monotonic()
        stored, self._stored = self._stored, []
        if self._on_commit is not None:
            self._on_commit(stored)
        return state

    # -- changing -------------------------------------------------------------

    def mkdir(self, path: str, mode: int) -> Node:
        self._change(Mkdir(path, mode=mode))
        return self.resolve(path)

    def symlink(self, path: str, target: str) -> Node:
        name = split_path(path)[-1]
        node = Node(path, name, "symlink", len(target.encode()), 0o777, time.time_ns(), None, target)
        return self.link(path, node, exclusive=True)

    def link(self, path: str, node: Node, *, exclusive: bool = False) -> Node:
        """Make ``path`` name ``node``'s content (a file: replaced if there)."""
        parts = split_path(path)
        if not parts:
            raise InvalidInputError("cannot replace the root directory /")
        self._change(Link(path, node.to_entry(parts[-1]), replace_file=not exclusive))
        return self.resolve(path)

    def create(self, path: str, mode: int, *, exclusive: bool) -> Node:
        """An empty file at ``path`` (an existing file is kept unless
        ``exclusive``, which refuses it)."""
        try:
            existing = self.resolve(path)
        except PathNotFoundError:
            existing = None
        if existing is not None and not exclusive:
            if existing.kind == "dir":
                raise IsADirectoryPathError(f"{path} is a directory")
            return existing
        empty = files.add_bytes(self.blocks, b"")
        name = split_path(path)[-1]
        return self.link(path, Node(path, name, "file", 0, mode, time.time_ns(), empty.cid), exclusive=True)

    def unlink(self, path: str) -> None:
        if self.resolve(path).kind == "dir":
            raise IsADirectoryPathError(f"{path} is a directory")
        self._change(Remove(path))

    def rmdir(self, path: str) -> None:
        node = self.resolve(path)
        if node.kind != "dir":
            raise NotADirectoryPathError(f"{path} is not a directory")
        assert node.cid is not None
        if dirtree.summary(self.blocks, node.cid).count:
            raise DirectoryNotEmptyError(f"{path} is not empty")
        self._change(Remove(path))

    def rename(self, src: str, dst: str, *, no_replace: bool) -> None:
        self._change(Move(src, dst, into_directory=False, no_replace=no_replace))

    def set_meta(self, path: str, *, mode: int | None = None, mtime: int | None = None) -> Node:
        """Change a file's or directory's mode or mtime (a link of the same CID)."""
        node = self.resolve(path)
        if path == "/" or node.kind == "symlink":
            return node  # the root and symlinks have fixed metadata
        changed = Node(
            node.path, node.name, node.kind, node.size,
            node.mode if mode is None else mode & 0o7777,
            node.mtime if mtime is None else mtime,
            node.cid, node.target,
        )
        if changed == node:
            return node
        self._change(SetAttributes(path, mode=changed.mode, mtime=changed.mtime))
        return self.resolve(path)

    def commit_file(self, path: str | None, stream: BinaryIO, mode: int, mtime: int) -> tuple[CID, int]:
        """Store ``stream`` as a file and link it at ``path`` (None: an
        unlinked file, stored nowhere). Returns (CID, size). The blocks
        are the user's own, as those of an add (claimed if a peer had
        placed the same content here); the link is pending until the next
        :meth:`flush`, which makes them durable with it."""
        with self.store.blocks.open_session() as session:
            sink = _NewBlocks(OwnBlocks(session, self.store.held))
            added = files.add_stream(sink, stream)  # type: ignore[arg-type]  # it only puts
            if path is not None:
                name = split_path(path)[-1]
                self._change(Link(path, Node(path, name, "file", added.size, mode, mtime, added.cid).to_entry(name)))
                self._stored.extend(sink.cids)
        return added.cid, added.size

    def statfs(self) -> FsStat:
        st = os.statvfs(self.store.path)
        return FsStat(st.f_frsize, st.f_blocks, st.f_bavail, st.f_files)


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
