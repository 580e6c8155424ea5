"""The inode table: kernel inode numbers <-> names in the namespace.

The namespace has paths, not inodes; the kernel wants stable numbers and
counts the references it holds (its *lookup count*). This module owns that
bookkeeping and nothing else: it never touches the store, the disk or FUSE,
so it is tested as plain Python.

Theory of operation
===================

An :class:`Inode` is named by (``parent``, ``name``), never by a full path,
so renaming a directory is one change here and every inode below it follows.
``path_of`` walks the parents to the root. An inode whose name was unlinked
or renamed over is *detached* (``parent`` None): the kernel may still hold
it, open files may still read and write it, but it has no path, and writes
to it are committed nowhere, as on a local disk.

Rules:

1. Every reply that gives the kernel an entry (lookup, create, mkdir,
   symlink, readdirplus) calls :meth:`InodeTable.lookup`, which adds one to
   the lookup count; ``forget`` subtracts what the kernel says.
2. An inode is dropped only when the kernel holds no lookup, no file handle
   is open on it, and no known inode names it as parent (a child keeps its
   parent alive, so ``path_of`` always works for a live inode).
3. The root inode is never dropped.
4. The same (parent, name) gives the same inode for as long as it lives, unless
   the kind changed under it (replaced from outside): then the old inode is
   detached and a new one made.
5. A hard-linked inode (its entries carry a link ``group``, cas.names.directory's
   ``ino``) has one inode for all its names: a lookup of another name of a
   live group adds that name to it (``others``). Each name, first or other,
   keeps its parent alive; the inode is detached only when its last name goes,
   and the first name is then taken from the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .wire import ROOT_INODE as ROOT_INODE  # re-exported: the table's root is the protocol's

if TYPE_CHECKING:
    from ..names.namespace import Node


@dataclass(eq=False)
class Inode:
    """One inode the kernel knows, or that an open file still needs."""

    ino: int
    parent: int | None  # None: detached (unlinked), or the root
    name: str
    kind: str  # "file" | "dir" | "symlink"
    lookups: int = 0
    opens: int = 0
    children: int = 0  # live inodes whose parent this is
    state: Any = None  # the open file's state (cas.fuse.handles.FileState), if any
    last: Node | None = None  # the last namespace node seen for it (its attributes when detached)
    detached: bool = False
    group: int | None = None  # its hard-link group, if it is hard-linked
    others: set[tuple[int, str]] = field(default_factory=set)  # its names beyond (parent, name)


@dataclass
class InodeTable:
    """All live inodes; see the module docstring for the rules."""

    _inodes: dict[int, Inode] = field(default_factory=dict)
    _names: dict[tuple[int, str], int] = field(default_factory=dict)
    _groups: dict[int, int] = field(default_factory=dict)  # hard-link group -> inode number
    _next: int = ROOT_INODE + 1

    def __post_init__(self) -> None:
        self._inodes[ROOT_INODE] = Inode(ROOT_INODE, None, "", "dir", lookups=1)

    def __len__(self) -> int:
        return len(self._inodes)

    def __iter__(self) -> Iterator[Inode]:
        return iter(list(self._inodes.values()))

    def get(self, ino: int) -> Inode:
        """The inode ``ino``; KeyError if the kernel sent one it never had."""
        return self._inodes[ino]

    def find(self, parent: int, name: str) -> Inode | None:
        """The live inode named ``name`` in ``parent``, without counting a lookup."""
        ino = self._names.get((parent, name))
        return None if ino is None else self._inodes[ino]

    def path_of(self, ino: int) -> str | None:
        """The namespace path of ``ino`` now, or None if it is detached."""
        parts: list[str] = []
        inode = self._inodes[ino]
        while inode.ino != ROOT_INODE:
            if inode.detached or inode.parent is None:
                return None
            parts.append(inode.name)
            inode = self._inodes[inode.parent]
        return "/" + "/".join(reversed(parts))

    def child_path(self, parent: int, name: str) -> str | None:
        base = self.path_of(parent)
        if base is None:
            return None
        return base.rstrip("/") + "/" + name

    def lookup(self, parent: int, name: str, kind: str, group: int | None = None) -> Inode:
        """The inode for ``name`` in ``parent`` (made if new; the group's if
        the entry is hard-linked), its lookup count raised by one: call it
        for every entry handed to the kernel."""
        inode = self.find(parent, name)
        linked = self._inodes.get(self._groups.get(group, -1)) if group is not None else None
        if inode is not None and (inode.kind != kind or linked is not None and linked is not inode):
            self.detach(parent, name)
            inode = None
        if inode is None and linked is not None:
            inode = linked
            inode.others.add((parent, name))
            self._names[(parent, name)] = inode.ino
            self._inodes[parent].children += 1
        if inode is None:
            inode = Inode(self._next, parent, name, kind)
            self._next += 1
            self._inodes[inode.ino] = inode
            self._names[(parent, name)] = inode.ino
            self._inodes[parent].children += 1
        self.join(inode, group)
        inode.lookups += 1
        return inode

    def join(self, inode: Inode, group: int | None) -> None:
        """``inode`` is (from now on) of hard-link ``group`` (None: of none)."""
        if inode.group == group:
            return
        if inode.group is not None and self._groups.get(inode.group) == inode.ino:
            del self._groups[inode.group]
        inode.group = group
        if group is not None:
            self._groups[group] = inode.ino

    def names(self, ino: int) -> int:
        """How many names the table knows ``ino`` by (0: detached)."""
        inode = self._inodes[ino]
        return 0 if inode.detached else 1 + len(inode.others)

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references to ``ino``."""
        inode = self._inodes.get(ino)
        if inode is None:
            return
        inode.lookups = max(0, inode.lookups - count)
        self._maybe_drop(inode)

    def opened(self, ino: int) -> Inode:
        inode = self._inodes[ino]
        inode.opens += 1
        return inode

    def released(self, ino: int) -> None:
        inode = self._inodes[ino]
        inode.opens -= 1
        assert inode.opens >= 0, "more releases than opens"
        self._maybe_drop(inode)

    def detach(self, parent: int, name: str) -> Inode | None:
        """``name`` in ``parent`` was removed (unlinked, or renamed over):
        its inode, if any, lives on by its other names, or without a path."""
        ino = self._names.pop((parent, name), None)
        if ino is None:
            return None
        inode = self._inodes[ino]
        if (parent, name) in inode.others:
            inode.others.discard((parent, name))
            self._unpin(parent)
            return inode
        if inode.others:  # another name becomes its first
            old = inode.parent
            inode.parent, inode.name = inode.others.pop()
            assert old is not None, "a named inode has a parent"
            self._unpin(old)
            return inode
        inode.detached = True
        self.join(inode, None)
        self._maybe_drop(inode)
        return inode

    def _unpin(self, parent: int) -> None:
        """A name in ``parent`` went: it holds one child less."""
        directory = self._inodes[parent]
        directory.children -= 1
        self._maybe_drop(directory)

    def rename(self, parent: int, name: str, new_parent: int, new_name: str) -> None:
        """``name`` in ``parent`` is now ``new_name`` in ``new_parent``; an
        inode that had the new name is detached."""
        if (parent, name) == (new_parent, new_name):
            return
        self.detach(new_parent, new_name)
        ino = self._names.pop((parent, name), None)
        if ino is None:
            return
        inode = self._inodes[ino]
        if (parent, name) in inode.others:  # one of its other names moves
            inode.others.discard((parent, name))
            inode.others.add((new_parent, new_name))
            self._names[(new_parent, new_name)] = ino
            self._inodes[new_parent].children += 1
            self._unpin(parent)
            return
        if inode.parent != new_parent:
            self._inodes[new_parent].children += 1
            old_parent = self._inodes[parent]
            old_parent.children -= 1
            inode.parent = new_parent
            self._maybe_drop(old_parent)
        inode.name = new_name
        self._names[(new_parent, new_name)] = ino

    def exchange(self, parent: int, name: str, other_parent: int, other_name: str) -> None:
        """The two names swapped what they name (``RENAME_EXCHANGE``)."""
        first, second = (parent, name), (other_parent, other_name)
        if first == second:
            return
        moving = [(self._names.pop(first, None), first, second), (self._names.pop(second, None), second, first)]
        unpin = []
        for ino, old, new in moving:
            if ino is None:
                continue
            inode = self._inodes[ino]
            if old in inode.others:
                inode.others.discard(old)
                inode.others.add(new)
            else:
                inode.parent, inode.name = new
            self._names[new] = ino
            if old[0] != new[0]:
                self._inodes[new[0]].children += 1
                unpin.append(old[0])
        for directory in unpin:
            self._unpin(directory)

    def _maybe_drop(self, inode: Inode) -> None:
        # Rule 2: drop it when nothing refers to it; then its parent may go too.
        while (
            inode.ino != ROOT_INODE
            and inode.lookups == 0
            and inode.opens == 0
            and inode.children == 0
        ):
            del self._inodes[inode.ino]
            self.join(inode, None)
            for other in inode.others:  # a hard-linked inode's other names go with it
                if self._names.get(other) == inode.ino:
                    del self._names[other]
                self._unpin(other[0])
            inode.others.clear()
            if inode.parent is None:  # only the root has none, and it is never dropped
                return
            if not inode.detached and self._names.get((inode.parent, inode.name)) == inode.ino:
                del self._names[(inode.parent, inode.name)]
            parent = self._inodes[inode.parent]
            parent.children -= 1
            inode = parent
