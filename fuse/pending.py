"""The mount's uncommitted namespace changes, in memory.

Owns the overlay that write-back keeps over the committed namespace: every
directory changed through the mount since the last commit, as a
:class:`PendingDir` holding the committed content it starts from (``base``,
a directory CID, or None for a directory made since) and what changed in
it: a name's new entry (a file, a symlink, a committed directory moved
here), a directory with changes of its own, or its removal. A change is a
few dictionary operations, whatever the directory's size; what the changes
make of the namespace is built once per commit (``MountTree.commit_pending``).

Answers, with no I/O, what a path names as far as the overlay knows
(:meth:`PendingChanges.find`): an item, nothing, or "the committed tree
decides" with where to look; the caller asks the store for that part.

Pure data, sans-IO: it never reads or writes the store, never knows inode
numbers, and never checks a change against the committed tree (the caller
does, before asking for the change). It runs in the trio thread only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from ..cid import CID
from ..errors import NotADirectoryPathError, PathNotFoundError
from ..names.directory import NO_META, DirEntry, Meta


@dataclass
class PendingDir:
    """A directory with uncommitted changes. ``base``: the committed
    directory it starts from (None: made since the last commit, empty
    then). ``at_path``: it is the committed directory at its own path
    (not one moved there), so a commit applies its changes to whatever
    that directory is by then. ``mode``/``mtime``/``meta``: its own (the
    root's are fixed: None). ``children``: name -> new entry, changed
    directory, or None (removed)."""

    base: CID | None
    mode: int | None = None
    mtime: int | None = None
    at_path: bool = False
    children: dict[str, PendingDir | DirEntry | None] = field(default_factory=dict)
    meta: Meta = NO_META

    def touch(self, now: int) -> None:
        """Its contents changed at ``now``: its mtime and ctime move."""
        self.mtime = now
        if self.meta.ctime is not None:
            self.meta = replace(self.meta, ctime=None)  # unrecorded: the same as mtime

    def walk(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], PendingDir]]:
        """This directory and every pending one below it, parents first."""
        yield path, self
        for name, item in self.children.items():
            if isinstance(item, PendingDir):
                yield from item.walk((*path, name))


class Found(NamedTuple):
    """The overlay knows what the path names."""

    item: PendingDir | DirEntry


class Missing(NamedTuple):
    """The overlay knows the path names nothing."""


class Committed(NamedTuple):
    """The committed tree decides: ``rest`` looked up under directory
    ``start`` (a CID), or the whole path under the committed root if
    ``start`` is None."""

    start: CID | None
    rest: tuple[str, ...]


Lookup = Found | Missing | Committed


class Supply(NamedTuple):
    """The committed entries a change needs to make directories pending
    (:meth:`PendingChanges.needs`): the committed root's CID, and the
    entry of each directory by its path in the overlay."""

    root: CID | None
    dirs: dict[tuple[str, ...], DirEntry]


NOTHING = Supply(None, {})


class PendingChanges:
    """See the module docstring. ``root`` is None while nothing is pending."""

    def __init__(self) -> None:
        self.root: PendingDir | None = None
        self.changes = 0  # since the last commit

    def __bool__(self) -> bool:
        return self.root is not None

    def clear(self) -> None:
        self.root, self.changes = None, 0

    # -- reading ------------------------------------------------------------------

    def find(self, parts: tuple[str, ...]) -> Lookup:
        """What ``parts`` (a path, split) names as far as the overlay knows."""
        node = self.root
        if node is None:
            return Committed(None, parts)
        for depth, name in enumerate(parts):
            if name not in node.children:
                if node.base is None:
                    return Missing()
                return Committed(node.base, parts[depth:])
            item = node.children[name]
            if item is None:
                return Missing()
            if isinstance(item, PendingDir):
                node = item
                continue
            if depth == len(parts) - 1:
                return Found(item)
            if item.kind != "dir" or item.cid is None:
                raise NotADirectoryPathError(f"/{'/'.join(parts[: depth + 1])} is not a directory")
            return Committed(item.cid, parts[depth + 1:])
        return Found(node)

    def directory(self, parts: tuple[str, ...]) -> PendingDir | None:
        """The pending directory at ``parts``, if it is one."""
        found = self.find(parts)
        return found.item if isinstance(found, Found) and isinstance(found.item, PendingDir) else None

    # -- changing -----------------------------------------------------------------
    #
    # A change to a directory makes it and its ancestors pending. One that
    # is not yet starts from its committed entry, which the caller looks
    # up first: :meth:`needs` says which (a directory CID and the names to
    # follow under it), the caller passes what it found as a Supply. Names
    # and kinds are checked by the caller, against what :meth:`find` and
    # the committed tree say.

    def needs(self, parts: tuple[str, ...]) -> tuple[CID | None, int] | None:
        """What making directory ``parts`` pending needs looked up: None
        (nothing), or (a committed directory's CID, or None for the
        committed root; the depth in ``parts`` from which the names are
        followed under it)."""
        node = self.root
        if node is None:
            return None, 0
        for depth, name in enumerate(parts):
            item = node.children.get(name, _ABSENT)
            if isinstance(item, PendingDir):
                node = item
                continue
            if isinstance(item, DirEntry) and item.kind == "dir":
                return (item.cid, depth + 1) if depth + 1 < len(parts) else None
            if item is _ABSENT and node.base is not None:
                return node.base, depth
            raise PathNotFoundError(f"/{'/'.join(parts[: depth + 1])}: no such directory")
        return None

    def _pending_dir(self, parts: tuple[str, ...], supply: Supply) -> PendingDir:
        if self.root is None:
            assert supply.root is not None, "the committed root was looked up"
            self.root = PendingDir(supply.root, at_path=True)
        node, at_path = self.root, True
        for depth, name in enumerate(parts):
            item = node.children.get(name, _ABSENT)
            if isinstance(item, PendingDir):
                node, at_path = item, item.at_path
                continue
            if isinstance(item, DirEntry) and item.kind == "dir":  # a committed directory moved here
                child = PendingDir(item.cid, item.mode, item.mtime, meta=item.meta)
                at_path = False
            elif item is _ABSENT and node.base is not None:
                entry = supply.dirs[parts[: depth + 1]]
                child = PendingDir(entry.cid, entry.mode, entry.mtime, at_path=at_path, meta=entry.meta)
            else:
                raise PathNotFoundError(f"/{'/'.join(parts[: depth + 1])}: no such directory")
            node.children[name] = child
            node = child
        return node

    def put(self, parts: tuple[str, ...], item: PendingDir | DirEntry, supply: Supply,
            now: int | None = None) -> None:
        """``parts`` names ``item`` from now on (what was there is
        replaced); the parent directory's mtime becomes ``now`` (None: it
        stays, as for a change of a file's content or attributes)."""
        parent = self._pending_dir(parts[:-1], supply)
        parent.children[parts[-1]] = item
        if now is not None:
            parent.touch(now)
        self.changes += 1

    def remove(self, parts: tuple[str, ...], supply: Supply, now: int) -> None:
        """``parts`` names nothing from now on; the parent's mtime becomes ``now``."""
        parent = self._pending_dir(parts[:-1], supply)
        parent.children[parts[-1]] = None
        parent.touch(now)
        self.changes += 1

    def set_attributes(self, parts: tuple[str, ...], entry: DirEntry | None, supply: Supply,
                       mode: int | None, mtime: int | None, meta: Meta | None = None) -> None:
        """Set the mode, mtime and/or the rest of the metadata (``meta``, whole)
        of what ``parts`` names (``entry``: what it is now, for one the
        overlay does not hold); None leaves a part as it is."""
        found = self.find(parts)
        if isinstance(found, Found) and isinstance(found.item, PendingDir):
            item: PendingDir = found.item
            item.mode = item.mode if mode is None else mode
            item.mtime = item.mtime if mtime is None else mtime
            item.meta = item.meta if meta is None else meta
            self.changes += 1
            return
        current = found.item if isinstance(found, Found) and isinstance(found.item, DirEntry) else entry
        if current is None:
            raise PathNotFoundError(f"/{'/'.join(parts)}: no such file or directory")
        self.put(parts, replace(current, mode=current.mode if mode is None else mode,
                                mtime=current.mtime if mtime is None else mtime,
                                meta=current.meta if meta is None else meta), supply)


class _Absent:
    """A name the overlay has no word on (the committed tree decides)."""


_ABSENT = _Absent()
