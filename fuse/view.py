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

import builtins
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

from ..cid import CID
from ..errors import (
    DirectoryNotEmptyError,
    InvalidMoveError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
)
from ..names.directory import NO_META, DirEntry, Meta, name_key
from ..names.dirtree import EMPTY_DIRECTORY
from ..names.namespace import ROOT_MODE, Node, RootState
from .links import LinkIndex
from .pending import NOTHING, Committed, Found, Missing, PendingChanges, PendingDir, Supply
from .session import HandlerLock
from .tree import CommitResult, MountTree, StoredFile, TreeReader

MAX_KNOWN = 10_000
"""Directories whose committed entry the view keeps from its commits (then
it starts afresh)."""

MAX_KNOWN_ENTRIES = 100_000
"""Entries, in all, of the committed listings the view keeps from its
commits (past it, the oldest listings go first): ~20 MB at most."""


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


class Renamed(NamedTuple):
    """What a rename moved, and what it replaced."""

    moving: Node
    there: Node | None


class MountView(ReadView):
    """The read-write mount's namespace: see the module docstring."""

    tree: MountTree

    def __init__(self, tree: MountTree, run: Any) -> None:
        super().__init__(tree, run)
        self.overlay = PendingChanges()
        self._stored: list[CID] = []  # new blocks of the files linked since the last commit
        self._lock = HandlerLock()
        self._empty_file: CID | None = None
        # What the last commit wrote, while no other writer has changed the
        # namespace since: spares the store the questions it would answer.
        self._known_root: CID | None = None
        self._known_dirs: dict[tuple[str, ...], DirEntry] = {}
        # Listings of committed directories by CID, learnt from commits:
        # never stale, so kept when another writer changes the namespace.
        self._listings: dict[CID, dict[str, DirEntry]] = {}
        self._listing_entries = 0
        self._root_mtime: int | None = None  # the root's own, from the last commit that changed it
        self._links = LinkIndex()

    @property
    def pending(self) -> int:
        """Changes applied but not yet committed."""
        return self.overlay.changes

    # -- reading ------------------------------------------------------------------

    async def resolve(self, path: str) -> Node:
        parts = _parts(path)
        if not parts and self.overlay.root is not None and self.overlay.root.mtime is None:
            return replace(await self._committed_root(path), size=0, cid=None)  # changed below only
        found = self.overlay.find(parts)
        if isinstance(found, Missing):
            raise PathNotFoundError(f"{path}: no such file or directory")
        if isinstance(found, Found):
            return _node(path, parts, found.item)
        if not parts:
            return await self._committed_root(path)
        entry = self._known_entry(found, path)
        if entry is not None:
            return Node.of(path, entry)
        node: Node = await self._run(self.tree.resolve_from, found.start, found.rest, path)
        return node

    def _known_listing(self, found: Committed) -> dict[str, DirEntry] | None:
        """The listing of the committed directory ``found`` names, if the
        listings learnt from commits reach it (None: ask the store)."""
        listing = self._known_of(self._known_root if found.start is None else found.start)
        for name in found.rest:
            if listing is None:
                return None
            entry = listing.get(name)
            if entry is None or entry.kind != "dir":
                return None  # the store says which error it is
            listing = self._known_of(entry.cid)
        return listing

    def _known_of(self, cid: CID | None) -> dict[str, DirEntry] | None:
        """Committed directory ``cid``'s listing, if a commit taught it."""
        if cid is None:
            return None
        return _EMPTY if cid == EMPTY_DIRECTORY else self._listings.get(cid)

    def _known_entry(self, found: Committed, path: str) -> DirEntry | None:
        """The committed entry ``found`` names, if the listings learnt from
        commits know its directory (None: ask the store); PathNotFoundError
        if they know it is not there."""
        listing = self._known_listing(Committed(found.start, found.rest[:-1]))
        if listing is None:
            return None
        entry = listing.get(found.rest[-1])
        if entry is None:
            raise PathNotFoundError(f"{path}: no such file or directory")
        return entry

    async def _committed_root(self, path: str) -> Node:
        node: Node = await self._run(self.tree.resolve_from, None, (), path)
        if self._root_mtime is not None:  # not the commit's time: the root's last change
            node = replace(node, mtime=self._root_mtime)
        return node

    def forget_known(self) -> None:
        """Another writer changed the namespace: what the last commit wrote
        is no longer known to be current."""
        self._known_root, self._known_dirs, self._root_mtime = None, {}, None
        self._links.forget()

    async def _existing(self, path: str) -> Node | None:
        try:
            return await self.resolve(path)
        except PathNotFoundError:
            return None

    async def list(self, path: str) -> list[DirEntry]:
        parts = _parts(path)
        found = self.overlay.find(parts)
        if isinstance(found, Missing):
            raise PathNotFoundError(f"{path}: no such file or directory")
        if isinstance(found, Committed):
            known = self._known_listing(found)
            if known is not None:
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
            return await self._listing(item.cid)
        entries = {entry.name: entry for entry in await self._listing(item.base)}
        for name, child in item.children.items():
            if child is None:
                entries.pop(name, None)
            elif isinstance(child, PendingDir):
                entries[name] = DirEntry(name, "dir", 0, child.mode or 0, child.mtime or 0, cid=EMPTY_DIRECTORY,
                                         meta=child.meta)
            else:
                entries[name] = child
        return sorted(entries.values(), key=lambda entry: name_key(entry.name))

    async def _listing(self, cid: CID | None) -> builtins.list[DirEntry]:
        """Committed directory ``cid``'s entries (None: none), in name order."""
        known = self._known_of(cid) if cid is not None else _EMPTY
        if known is not None:
            return sorted(known.values(), key=lambda entry: name_key(entry.name))
        listed: list[DirEntry] = await self._run(self.tree.listing, cid)
        return listed

    # -- changing -----------------------------------------------------------------

    async def _supply(self, parts: tuple[str, ...]) -> Supply:
        """What the overlay needs looked up to make directory ``parts`` pending."""
        need = self.overlay.needs(parts)
        if need is None:
            return NOTHING
        start, depth = need
        known = [self._known_dirs.get(parts[: at + 1]) for at in range(depth, len(parts))]
        if (start is not None or self._known_root is not None) and all(entry is not None for entry in known):
            # The committed entries the last commit wrote: no trip to the store.
            # (A start CID means the overlay knows the root: none is needed then.)
            return Supply(self._known_root if start is None else None,
                          {parts[: depth + i + 1]: entry for i, entry in enumerate(known) if entry is not None})
        supply: Supply = await self._run(self.tree.supply, start, parts, depth)
        return supply

    async def mkdir(self, path: str, mode: int, meta: Meta = NO_META) -> Node:
        """A new directory (``meta``: its owner, for one)."""
        async with self._lock:
            parts = _parts(path)
            if await self._existing(path) is not None:
                raise PathExistsError(f"{path} exists already")
            now = time.time_ns()
            self.overlay.put(parts, PendingDir(None, mode, now, meta=meta), await self._supply(parts[:-1]), now)
            return Node(path, parts[-1], "dir", 0, mode, now, None, meta=meta)

    async def symlink(self, path: str, target: str, meta: Meta = NO_META) -> Node:
        return await self.make(path, "symlink", 0o777, meta, target=target)

    async def make(self, path: str, kind: str, mode: int, meta: Meta, *, target: str | None = None) -> Node:
        """A new symlink, fifo, socket or device node at ``path``."""
        async with self._lock:
            parts = _parts(path)
            if await self._existing(path) is not None:
                raise PathExistsError(f"{path} exists already")
            now = time.time_ns()
            size = len(target.encode()) if target is not None else 0
            entry = DirEntry(parts[-1], kind, size, mode, now, target=target, meta=meta)
            self.overlay.put(parts, entry, await self._supply(parts[:-1]), now)
            return Node.of(path, entry)

    async def create(self, path: str, mode: int, *, exclusive: bool, meta: Meta = NO_META) -> Node:
        """An empty file at ``path`` (an existing file is kept unless
        ``exclusive``, which refuses it)."""
        async with self._lock:
            parts = _parts(path)
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
            entry = DirEntry(parts[-1], "file", 0, mode, now, cid=self._empty_file, meta=meta)
            self.overlay.put(parts, entry, await self._supply(parts[:-1]), now)
            return Node.of(path, entry)

    async def unlink(self, path: str) -> Meta | None:
        """Remove the name ``path``; for a hard-linked inode, the metadata
        its other names have now (one link less), else None."""
        async with self._lock:
            parts = _parts(path)
            node = await self.resolve(path)
            if node.kind == "dir":
                raise IsADirectoryPathError(f"{path} is a directory")
            now = time.time_ns()
            self.overlay.remove(parts, await self._supply(parts[:-1]), now)
            self._links.removed(path)
            return await self._unlinked(node, now)

    # -- hard links -----------------------------------------------------------------
    #
    # Every name of a hard-linked inode carries its content and metadata
    # (docs/formats.md, "Directories"), so a change to one is made to all:
    # the index (fuse/links.py) says where they are, or one walk of the
    # namespace (what is pending included) finds them.

    async def _group(self, ino: int) -> builtins.list[tuple[str, DirEntry]]:
        """Every name of hard-link group ``ino`` now, with its entry."""
        known = self._links.paths(ino)
        if known is not None:
            found = []
            for path in sorted(known):
                node = await self._existing(path)
                if node is not None and node.meta.ino == ino:
                    found.append((path, node.to_entry(node.name)))
            if len(found) == len(known):
                return found
        found = []
        directories = ["/"]
        while directories:
            path = directories.pop()
            for entry in await self.list(path):
                child = path.rstrip("/") + "/" + entry.name
                if entry.kind == "dir":
                    directories.append(child)
                elif entry.meta.ino == ino:
                    found.append((child, entry))
        self._links.know(ino, (path for path, _ in found))
        return found

    async def _set_group(self, ino: int, change: Callable[[DirEntry], DirEntry], skip: str | None = None) -> None:
        """Apply ``change`` to the entry of every name of group ``ino`` but ``skip``."""
        for path, entry in await self._group(ino):
            if path != skip:
                parts = _parts(path)
                self.overlay.put(parts, change(entry), await self._supply(parts[:-1]))

    async def _unlinked(self, node: Node, now: int) -> Meta | None:
        """``node``'s name went: a hard-linked inode has one name less."""
        if node.meta.ino is None:
            return None
        rest = await self._group(node.meta.ino)
        if len(rest) > 1:
            meta = replace(node.meta, nlink=len(rest), ctime=now)
        else:
            meta = replace(node.meta, ino=None, nlink=1, ctime=now)  # one name left: a plain file again
        await self._set_group(node.meta.ino, lambda entry: replace(entry, meta=meta))
        if meta.ino is None:
            self._links.drop(node.meta.ino)
        return meta

    async def link(self, src: str, dst: str, group: int) -> Node:
        """``dst`` is a new name of the inode ``src`` names (hard-linked as
        ``group`` if it was not yet): ``link(2)``."""
        async with self._lock:
            node = await self.resolve(src)
            if node.kind == "dir":
                raise IsADirectoryPathError(f"{src} is a directory")
            if await self._existing(dst) is not None:
                raise PathExistsError(f"{dst} exists already")
            now = time.time_ns()
            parts, d_parts = _parts(src), _parts(dst)
            if node.meta.ino is None:
                meta = replace(node.meta, ino=group, nlink=2, ctime=now)
                self.overlay.put(parts, replace(node.to_entry(parts[-1]), meta=meta), await self._supply(parts[:-1]))
                names = {src}
            else:
                meta = replace(node.meta, nlink=node.meta.nlink + 1, ctime=now)
                await self._set_group(node.meta.ino, lambda entry: replace(entry, meta=meta))
                names = self._links.paths(node.meta.ino) or {src}
            assert meta.ino is not None
            self._links.know(meta.ino, names | {dst})
            entry = replace(node.to_entry(d_parts[-1]), meta=meta)
            self.overlay.put(d_parts, entry, await self._supply(d_parts[:-1]), now)
            return Node.of(dst, entry)

    async def rmdir(self, path: str) -> None:
        async with self._lock:
            parts = _parts(path)
            if (await self.resolve(path)).kind != "dir":
                raise NotADirectoryPathError(f"{path} is not a directory")
            if await self.list(path):
                raise DirectoryNotEmptyError(f"{path} is not empty")
            self.overlay.remove(parts, await self._supply(parts[:-1]), time.time_ns())

    async def rename(self, src: str, dst: str, *, no_replace: bool) -> Renamed | None:
        """``rename(2)``: ``dst`` becomes ``src``'s, replacing a file by a
        file or an empty directory by a directory (unless ``no_replace``).
        What moved and what it replaced; None if nothing changed (the same
        name, or two of one inode)."""
        async with self._lock:
            s_parts, d_parts = _parts(src), _parts(dst)
            if not s_parts or not d_parts:
                raise InvalidMoveError("cannot move the root directory /")
            moving = await self.resolve(src)
            if s_parts == d_parts:
                return None
            if moving.kind == "dir" and d_parts[: len(s_parts)] == s_parts:
                raise InvalidMoveError(f"cannot move {src} into itself")
            there = await self._existing(dst)
            if there is not None:
                if no_replace:
                    raise PathExistsError(f"{dst} exists already")
                if there.meta.ino is not None and there.meta.ino == moving.meta.ino:
                    return None  # two names of one inode: rename(2) does nothing
                if moving.kind == "dir" and there.kind != "dir":
                    raise NotADirectoryPathError(f"{dst} is not a directory")
                if moving.kind != "dir" and there.kind == "dir":
                    raise IsADirectoryPathError(f"{dst} is a directory")
                if there.kind == "dir" and await self.list(dst):
                    raise DirectoryNotEmptyError(f"{dst} is not empty")
            now = time.time_ns()
            item = await self._taken(s_parts, moving, d_parts[-1], now)
            self.overlay.remove(s_parts, await self._supply(s_parts[:-1]), now)
            self.overlay.put(d_parts, item, await self._supply(d_parts[:-1]), now)
            self._links.moved(src, dst)
            if there is not None:
                await self._unlinked(there, now)
            return Renamed(moving, there)

    async def exchange(self, a: str, b: str) -> None:
        """``renameat2(RENAME_EXCHANGE)``: ``a`` and ``b`` swap what they name."""
        async with self._lock:
            a_parts, b_parts = _parts(a), _parts(b)
            if not a_parts or not b_parts:
                raise InvalidMoveError("cannot exchange the root directory /")
            first, second = await self.resolve(a), await self.resolve(b)
            if a_parts == b_parts:
                return
            if a_parts == b_parts[: len(a_parts)] or b_parts == a_parts[: len(b_parts)]:
                raise InvalidMoveError(f"cannot exchange {a} with {b}: one holds the other")
            now = time.time_ns()
            items = [await self._taken(a_parts, first, b_parts[-1], now),
                     await self._taken(b_parts, second, a_parts[-1], now)]
            self.overlay.put(b_parts, items[0], await self._supply(b_parts[:-1]), now)
            self.overlay.put(a_parts, items[1], await self._supply(a_parts[:-1]), now)
            self._links.exchanged(a, b)

    async def _taken(self, parts: tuple[str, ...], node: Node, new_name: str, now: int) -> PendingDir | DirEntry:
        """What moves when ``parts`` (naming ``node``) moves to a name
        ``new_name``: its pending changes with it, its ctime now."""
        found = self.overlay.find(parts)
        if isinstance(found, Found) and isinstance(found.item, PendingDir):
            item = found.item
            if item.at_path:  # it is at a new path now: its base is what it was
                _pin(item)
            item.meta = _changed(item.meta, item.mtime, now)
            return item
        entry = found.item if isinstance(found, Found) else node.to_entry(parts[-1])
        assert isinstance(entry, DirEntry)
        return replace(entry, name=new_name, meta=_changed(entry.meta, entry.mtime, now))

    async def set_meta(self, where: Callable[[], str | None], *, mode: int | None = None, mtime: int | None = None,
                       meta: Meta | None = None) -> Node | None:
        """Change the mode, mtime and/or the rest of the metadata (``meta``,
        whole; its ctime as given) of what the path ``where()`` gives names.
        As for :meth:`link_file`, ``where`` is asked once no other change
        runs (a rename finished meanwhile is seen); None (unlinked): nothing
        is changed, and None is returned."""
        async with self._lock:
            path = where()
            if path is None:
                return None
            node = await self.resolve(path)
            parts = _parts(path)
            if not parts:
                return node  # the root's metadata is the mount's
            mode = None if mode is None or node.kind == "symlink" else mode & 0o7777
            if (mode is None or mode == node.mode) and (mtime is None or mtime == node.mtime) and (
                    meta is None or meta == node.meta):
                return node
            pending_dir = self.overlay.directory(parts) is not None  # its entry is made at the commit
            entry = None if pending_dir else node.to_entry(parts[-1])
            if meta is not None:  # the group's names and count are the tree's, whatever the caller last saw
                meta = replace(meta, ino=node.meta.ino, nlink=node.meta.nlink)
            self.overlay.set_attributes(parts, entry, await self._supply(parts[:-1]), mode, mtime, meta)
            changed = await self.resolve(path)
            if changed.meta.ino is not None:
                await self._set_group(changed.meta.ino, lambda other: replace(
                    other, mode=changed.mode, mtime=changed.mtime, meta=changed.meta), skip=path)
            return changed

    async def link_file(self, where: Callable[[], str | None], stored: StoredFile, mode: int,
                        mtime: int, meta: Meta = NO_META) -> Node | None:
        """Make the path ``where()`` gives name the file ``stored`` (a file
        there is replaced; a directory is not: IsADirectoryPathError).
        ``where`` is asked once no other change runs, so a rename of the
        file finished meanwhile is seen; None (unlinked): nothing is linked."""
        async with self._lock:
            path = where()
            if path is None:
                return None
            parts = _parts(path)
            there = await self._existing(path)
            if there is not None and there.kind == "dir":
                raise IsADirectoryPathError(f"{path} is a directory")
            if there is not None and there.meta.ino is not None:  # the group's names and count are the tree's
                meta = replace(meta, ino=there.meta.ino, nlink=there.meta.nlink)
            elif meta.ino is not None:  # the others went meanwhile: a plain file now
                meta = replace(meta, ino=None, nlink=1)
            entry = DirEntry(parts[-1], "file", stored.size, mode, mtime, cid=stored.cid, meta=meta)
            self.overlay.put(parts, entry, await self._supply(parts[:-1]))
            if meta.ino is not None:
                await self._set_group(meta.ino, lambda other: replace(entry, name=other.name), skip=path)
            self._stored.extend(stored.new_blocks)
            return Node.of(path, entry)

    async def flush(self) -> RootState | None:
        """Commit what is pending as one version; None if nothing is."""
        async with self._lock:
            if not self.overlay or self.overlay.root is None:
                return None
            done: CommitResult = await self._run(self.tree.commit_pending, self.overlay.root, self._stored,
                                                 self._listings)
            self._root_mtime = self.overlay.root.mtime or self._root_mtime
            self.overlay.clear()
            self._stored = []
            self._known_root = done.state.root
            # What was known at or below a path where no directory is now is
            # stale (a directory is known whenever one below it is).
            gone = {path for path in done.built.gone if path in self._known_dirs}
            if gone:
                for path in [path for path in self._known_dirs if any(path[:i] in gone for i in range(1, len(path) + 1))]:
                    del self._known_dirs[path]
            if len(self._known_dirs) + len(done.built.dirs) > MAX_KNOWN:
                self._known_dirs.clear()
            self._known_dirs.update(done.built.dirs)
            self._learn(done.built.listings)
            return done.state


    def _learn(self, listings: dict[CID, dict[str, DirEntry]]) -> None:
        """Keep these listings; past MAX_KNOWN_ENTRIES in all, the oldest go."""
        for cid, listing in listings.items():
            if cid not in self._listings:
                self._listings[cid] = listing
                self._listing_entries += len(listing)
        while self._listing_entries > MAX_KNOWN_ENTRIES and len(self._listings) > 1:
            oldest = next(iter(self._listings))
            self._listing_entries -= len(self._listings.pop(oldest))


_EMPTY: dict[str, DirEntry] = {}  # the empty directory's listing (never changed)


def _node(path: str, parts: tuple[str, ...], item: PendingDir | DirEntry) -> Node:
    if isinstance(item, DirEntry):
        return Node.of(path, item)
    if not parts:
        return Node("/", "", "dir", 0, ROOT_MODE, item.mtime or 0, None)
    return Node(path, parts[-1], "dir", 0, item.mode or 0, item.mtime or 0, None, meta=item.meta)


def _changed(meta: Meta, mtime: int | None, now: int) -> Meta:
    """``meta`` of an inode whose status changed at ``now`` (ctime)."""
    return meta if mtime == now and meta.ctime is None else replace(meta, ctime=now)


def _pin(directory: PendingDir) -> None:
    """``directory`` (and what is pending below it) leaves its path: from
    now on each starts from the committed directory it started from."""
    for _path, pending in directory.walk():
        pending.at_path = False


def _parts(path: str) -> tuple[str, ...]:
    """The names of a path the handlers made: cas.fuse.inodes joins names
    that were checked when they were made (``CasOperations._name``), so
    they are split, not checked again (``split_path`` checks each one, a
    cost paid on every request)."""
    return tuple(part for part in path.split("/") if part)
