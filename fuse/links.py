"""Where the names of each hard-linked inode are, as far as the mount knows.

Every name of a hard-linked inode carries its content and metadata
(docs/formats.md, "Directories"), so a change to one is made to all of
them, and finding them all would mean walking the namespace. This index
spares the walk: it holds, for each link group it has seen whole, the
paths of its names, and follows the mount's own changes (a name made,
removed, moved, or a directory above it moved). A group it does not know
(linked before this mount, or by another writer) is found by one walk,
then known. Another writer's change makes it start afresh.

Pure data, sans-IO: it never reads the namespace and is told every change.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_GROUPS = 100_000
"""Groups remembered (then it starts afresh: a walk finds any again)."""


class LinkIndex:
    """Link group (an entry's ``meta.ino``) -> the paths of its names."""

    def __init__(self) -> None:
        self._groups: dict[int, set[str]] = {}
        self._group_of: dict[str, int] = {}

    def paths(self, group: int) -> set[str] | None:
        """The paths of ``group``'s names, or None if it is not known."""
        known = self._groups.get(group)
        return None if known is None else set(known)

    def know(self, group: int, paths: Iterable[str]) -> None:
        """``group``'s names are exactly ``paths`` (after a walk, or made here)."""
        self.drop(group)
        if len(self._groups) >= MAX_GROUPS:
            self.forget()
        names = set(paths)
        if len(names) > 1:
            self._groups[group] = names
            for path in names:
                self._group_of[path] = group

    def drop(self, group: int) -> None:
        """``group`` is no longer hard-linked (one name left), or not known."""
        for path in self._groups.pop(group, ()):
            self._group_of.pop(path, None)

    def removed(self, path: str) -> None:
        """The name ``path`` went (unlinked, or replaced)."""
        group = self._group_of.pop(path, None)
        if group is not None:
            self._groups[group].discard(path)

    def moved(self, src: str, dst: str) -> None:
        """``src`` (a name, or a directory and everything below it) is now ``dst``."""
        self.removed(dst)
        prefix = src.rstrip("/") + "/"
        for path in [p for p in self._group_of if p == src or p.startswith(prefix)]:
            group = self._group_of.pop(path)
            moved_to = dst + path[len(src):]
            self._groups[group].discard(path)
            self._groups[group].add(moved_to)
            self._group_of[moved_to] = group

    def exchanged(self, a: str, b: str) -> None:
        """``a`` and ``b`` swapped what they name."""
        swap = "\0exchange"  # no path holds a NUL
        self.moved(a, swap)
        self.moved(b, a)
        self.moved(swap, b)

    def forget(self) -> None:
        """Another writer changed the namespace: nothing is known any more."""
        self._groups.clear()
        self._group_of.clear()
