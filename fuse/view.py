"""The namespace as the mount's handlers see it, in the trio thread.

Owns the write-back of the mount's namespace changes (docs/mount.md,
"Write-back"): each change is checked and applied at once to the overlay of
pending changes (:mod:`.pending`, in memory: a few dictionary operations,
no store, no thread), every read answers from the overlay first, and
:meth:`MountView.flush` builds and commits what is pending as one version
(``MountTree.commit_pending``, in the store thread). The committed tree is
asked (in the store thread, through ``run``) only for what the overlay does
not know: a path under a directory nobody changed since the last commit,
a listing's committed part, the entries of directories about to change.

:class:`ReadView` is the same surface over a tree that only reads (another
node's published namespace, a read-only mount): every question goes to the
store thread.

Must never: touch the store outside ``run``; apply a change without the
checks the kernel and ``rename(2)`` promise (EEXIST, ENOTEMPTY, EISDIR,
ENOTDIR, EINVAL); let two changes or a change and a commit interleave
(one lock).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from ..cid import CID
from ..errors import (
    DirectoryNotEmptyError,
    InvalidMoveError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
)
from ..names.directory import DirEntry, name_key
from ..names.dirtree import EMPTY_DIRECTORY
from ..names.namespace import ROOT_MODE, Node, RootState, split_path
from .pending import NOTHING, Committed, Found, Missing, PendingChanges, PendingDir, Supply
from .tree import Built, CommitResult, MountTree, StoredFile, TreeReader

MAX_KNOWN = 10_000
"""Directories whose listing the view keeps from its commits (then it
starts afresh)."""


class ReadView:
    """A tree that only reads, every question asked in the store thread."""

    def __init__(self, tree: TreeReader, run: Any) -> None:
        self.tree = tree
        self._run = run

    @property
    def pending(self) -> int:
        return 0

    async def resolve(self, path: str) -> Node:
        node: Node = await self._run(self.tree.resolve, path)
        return node

    async def list(self, path: str) -> list[DirEntry]:
        _node, entries = await self._run(self.tree.list, path)
        return list(entries)

    async def flush(self) -> RootState | None:
        return None


class MountView(ReadView):
    """The read-write mount's namespace: see the module docstring."""

    tree: MountTree

    def __init__(self, tree: MountTree, run: Any) -> None:
        super().__init__(tree, run)
        self.overlay = PendingChanges()
        self._stored: list[CID] = []  # new blocks of the files linked since the last commit
        self._lock = trio.Lock()
        self._empty_file: CID | None = None
        # What the last commit wrote, while no other writer has changed the
        # namespace since: spares the store the questions it would answer.
        self._known_root: CID | None = None
        self._known = Built({}, {})

    @property
    def pending(self) -> int:
        """Changes applied but not yet committed."""
        return self.overlay.changes

    # -- reading ------------------------------------------------------------------

    async def resolve(self, path: str) -> Node:
        parts = tuple(split_path(path))
        found = self.overlay.find(parts)
        if isinstance(found, Missing):
            raise PathNotFoundError(f"{path}: no such file or directory")
        if isinstance(found, Found):
            return _node(path, parts, found.item)
        listing = self._known.listings.get(parts[:-1]) if parts else None
        if listing is not None:  # a directory the last commit wrote whole
            entry = listing.get(parts[-1])
            if entry is None:
                raise PathNotFoundError(f"{path}: no such file or directory")
            return Node.of(path, entry)
        node: Node = await self._run(self.tree.resolve_from, found.start, found.rest, path)
        return node

    def forget_known(self) -> None:
        """Another writer changed the namespace: what the last commit wrote
        is no longer known to be current."""
        self._known_root, self._known = None, Built({}, {})

    async def _existing(self, path: str) -> Node | None:
        try:
            return await self.resolve(path)
        except PathNotFoundError:
            return None

    async def list(self, path: str) -> list[DirEntry]:
        parts = tuple(split_path(path))
        found = self.overlay.find(parts)
        if isinstance(found, Missing):
            raise PathNotFoundError(f"{path}: no such file or directory")
        if isinstance(found, Committed):
            known = self._known.listings.get(parts)
            if known is not None:  # a directory the last commit wrote whole
                return sorted(known.values(), key=lambda entry: name_key(entry.name))
            if found.start is None:
                return await super().list(path)
            # Under a committed directory moved here: not at this path in the committed tree.
            node: Node = await self._run(self.tree.resolve_from, found.start, found.rest, path)
            if node.kind != "dir":
                raise NotADirectoryPathError(f"{path} is not a directory")
            listed: list[DirEntry] = await self._run(self.tree.listing, node.cid)
            return listed
        item = found.item
        if isinstance(item, DirEntry):
            if item.kind != "dir":
                raise NotADirectoryPathError(f"{path} is not a directory")
            listed = await self._run(self.tree.listing, item.cid)
            return listed
        entries = {entry.name: entry for entry in await self._run(self.tree.listing, item.base)}
        for name, child in item.children.items():
            if child is None:
                entries.pop(name, None)
            elif isinstance(child, PendingDir):
                entries[name] = DirEntry(name, "dir", 0, child.mode or 0, child.mtime or 0, cid=EMPTY_DIRECTORY)
            else:
                entries[name] = child
        return sorted(entries.values(), key=lambda entry: name_key(entry.name))

    # -- changing -----------------------------------------------------------------

    async def _supply(self, parts: tuple[str, ...]) -> Supply:
        """What the overlay needs looked up to make directory ``parts`` pending."""
        need = self.overlay.needs(parts)
        if need is None:
            return NOTHING
        start, depth = need
        known = [self._known.dirs.get(parts[: at + 1]) for at in range(depth, len(parts))]
        if (start is not None or self._known_root is not None) and all(entry is not None for entry in known):
            # The committed entries the last commit wrote: no trip to the store.
            # (A start CID means the overlay knows the root: none is needed then.)
            return Supply(self._known_root if start is None else None,
                          {parts[: depth + i + 1]: entry for i, entry in enumerate(known) if entry is not None})
        supply: Supply = await self._run(self.tree.supply, start, parts, depth)
        return supply

    async def mkdir(self, path: str, mode: int) -> Node:
        async with self._lock:
            parts = tuple(split_path(path))
            if await self._existing(path) is not None:
                raise PathExistsError(f"{path} exists already")
            now = time.time_ns()
            self.overlay.put(parts, PendingDir(None, mode, now), await self._supply(parts[:-1]), now)
            return Node(path, parts[-1], "dir", 0, mode, now, None)

    async def symlink(self, path: str, target: str) -> Node:
        async with self._lock:
            parts = tuple(split_path(path))
            if await self._existing(path) is not None:
                raise PathExistsError(f"{path} exists already")
            now = time.time_ns()
            entry = DirEntry(parts[-1], "symlink", len(target.encode()), 0o777, now, target=target)
            self.overlay.put(parts, entry, await self._supply(parts[:-1]), now)
            return Node.of(path, entry)

    async def create(self, path: str, mode: int, *, exclusive: bool) -> Node:
        """An empty file at ``path`` (an existing file is kept unless
        ``exclusive``, which refuses it)."""
        async with self._lock:
            parts = tuple(split_path(path))
            existing = await self._existing(path)
            if existing is not None:
                if exclusive:
                    raise PathExistsError(f"{path} exists already")
                if existing.kind == "dir":
                    raise IsADirectoryPathError(f"{path} is a directory")
                return existing
            if self._empty_file is None:
                self._empty_file = await self._run(self.tree.empty_file)
            now = time.time_ns()
            entry = DirEntry(parts[-1], "file", 0, mode, now, cid=self._empty_file)
            self.overlay.put(parts, entry, await self._supply(parts[:-1]), now)
            return Node.of(path, entry)

    async def unlink(self, path: str) -> None:
        async with self._lock:
            parts = tuple(split_path(path))
            if (await self.resolve(path)).kind == "dir":
                raise IsADirectoryPathError(f"{path} is a directory")
            self.overlay.remove(parts, await self._supply(parts[:-1]), time.time_ns())

    async def rmdir(self, path: str) -> None:
        async with self._lock:
            parts = tuple(split_path(path))
            if (await self.resolve(path)).kind != "dir":
                raise NotADirectoryPathError(f"{path} is not a directory")
            if await self.list(path):
                raise DirectoryNotEmptyError(f"{path} is not empty")
            self.overlay.remove(parts, await self._supply(parts[:-1]), time.time_ns())

    async def rename(self, src: str, dst: str, *, no_replace: bool) -> None:
        """``rename(2)``: ``dst`` becomes ``src``'s, replacing a file by a
        file or an empty directory by a directory (unless ``no_replace``)."""
        async with self._lock:
            s_parts, d_parts = tuple(split_path(src)), tuple(split_path(dst))
            if not s_parts or not d_parts:
                raise InvalidMoveError("cannot move the root directory /")
            moving = await self.resolve(src)
            if s_parts == d_parts:
                return
            if moving.kind == "dir" and d_parts[: len(s_parts)] == s_parts:
                raise InvalidMoveError(f"cannot move {src} into itself")
            there = await self._existing(dst)
            if there is not None:
                if no_replace:
                    raise PathExistsError(f"{dst} exists already")
                if moving.kind == "dir" and there.kind != "dir":
                    raise NotADirectoryPathError(f"{dst} is not a directory")
                if moving.kind != "dir" and there.kind == "dir":
                    raise IsADirectoryPathError(f"{dst} is a directory")
                if there.kind == "dir" and await self.list(dst):
                    raise DirectoryNotEmptyError(f"{dst} is not empty")
            found = self.overlay.find(s_parts)
            item: PendingDir | DirEntry
            if isinstance(found, Found) and isinstance(found.item, PendingDir):
                item = found.item  # its pending changes go with it
                if item.at_path:  # it is at a new path now: its base is what it was
                    _pin(item)
            else:
                entry = found.item if isinstance(found, Found) else moving.to_entry(s_parts[-1])
                assert isinstance(entry, DirEntry)
                item = replace(entry, name=d_parts[-1])
            now = time.time_ns()
            self.overlay.remove(s_parts, await self._supply(s_parts[:-1]), now)
            self.overlay.put(d_parts, item, await self._supply(d_parts[:-1]), now)

    async def set_meta(self, path: str, *, mode: int | None = None, mtime: int | None = None) -> Node:
        """Change a file's or directory's mode or mtime."""
        async with self._lock:
            node = await self.resolve(path)
            parts = tuple(split_path(path))
            if not parts or node.kind == "symlink":
                return node  # the root and symlinks have fixed metadata
            mode = None if mode is None else mode & 0o7777
            if (mode is None or mode == node.mode) and (mtime is None or mtime == node.mtime):
                return node
            pending_dir = self.overlay.directory(parts) is not None  # its entry is made at the commit
            entry = None if pending_dir else node.to_entry(parts[-1])
            self.overlay.set_attributes(parts, entry, await self._supply(parts[:-1]), mode, mtime)
            return await self.resolve(path)

    async def link_file(self, where: Callable[[], str | None], stored: StoredFile, mode: int,
                        mtime: int) -> Node | None:
        """Make the path ``where()`` gives name the file ``stored`` (a file
        there is replaced; a directory is not: IsADirectoryPathError).
        ``where`` is asked once no other change runs, so a rename of the
        file finished meanwhile is seen; None (unlinked): nothing is linked."""
        async with self._lock:
            path = where()
            if path is None:
                return None
            parts = tuple(split_path(path))
            there = await self._existing(path)
            if there is not None and there.kind == "dir":
                raise IsADirectoryPathError(f"{path} is a directory")
            entry = DirEntry(parts[-1], "file", stored.size, mode, mtime, cid=stored.cid)
            self.overlay.put(parts, entry, await self._supply(parts[:-1]))
            self._stored.extend(stored.new_blocks)
            return Node.of(path, entry)

    async def flush(self) -> RootState | None:
        """Commit what is pending as one version; None if nothing is."""
        async with self._lock:
            if not self.overlay or self.overlay.root is None:
                return None
            done: CommitResult = await self._run(self.tree.commit_pending, self.overlay.root, self._stored)
            self.overlay.clear()
            self._stored = []
            if len(self._known.listings) + len(done.built.listings) > MAX_KNOWN:
                self._known = Built({}, {})
            self._known_root = done.state.root
            self._known.dirs.update(done.built.dirs)
            self._known.listings.update(done.built.listings)
            return done.state


def _node(path: str, parts: tuple[str, ...], item: PendingDir | DirEntry) -> Node:
    if isinstance(item, DirEntry):
        return Node.of(path, item)
    if not parts:
        return Node("/", "", "dir", 0, ROOT_MODE, item.mtime or 0, None)
    return Node(path, parts[-1], "dir", 0, item.mode or 0, item.mtime or 0, None)


def _pin(directory: PendingDir) -> None:
    """``directory`` (and what is pending below it) leaves its path: from
    now on each starts from the committed directory it started from."""
    for _path, pending in directory.walk():
        pending.at_path = False
