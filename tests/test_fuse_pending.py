"""The mount's overlay of pending changes (fuse/pending.py), alone: what it
answers for a path, and what it asks the committed tree for."""

from __future__ import annotations

import pytest
from cas.fuse.pending import NOTHING, Committed, Found, Missing, PendingChanges, PendingDir, Supply

from cas.blocks import Block
from cas.cid import RAW
from cas.errors import NotADirectoryPathError, PathNotFoundError
from cas.names.directory import DirEntry

ROOT = Block.of(RAW, b"the committed root").cid
A = Block.of(RAW, b"committed /a").cid
MOVED = Block.of(RAW, b"a committed directory").cid
FILE = Block.of(RAW, b"a file").cid


def file(name: str) -> DirEntry:
    return DirEntry(name, "file", 6, 0o644, 1, cid=FILE)


def test_nothing_pending_sends_every_path_to_the_committed_tree() -> None:
    overlay = PendingChanges()
    assert not overlay and overlay.find(("a", "b")) == Committed(None, ("a", "b"))
    assert overlay.needs(("a",)) == (None, 0)  # the root and /a must be looked up


def test_a_change_in_a_committed_directory_keeps_the_rest_of_it_committed() -> None:
    overlay = PendingChanges()
    overlay.put(("a", "new"), file("new"), Supply(ROOT, {("a",): DirEntry("a", "dir", 0, 0o755, 1, cid=A)}), 5)
    assert overlay.find(("a", "new")) == Found(file("new"))
    assert overlay.find(("a", "old")) == Committed(A, ("old",))  # the committed /a decides
    assert overlay.find(("b", "x")) == Committed(ROOT, ("b", "x"))
    pending_a = overlay.directory(("a",))
    assert pending_a is not None and pending_a.base == A and pending_a.at_path and pending_a.mtime == 5
    assert overlay.needs(("a",)) is None  # pending already: nothing to look up
    assert overlay.needs(("b", "c")) == (ROOT, 0)
    assert overlay.changes == 1


def test_a_new_directory_knows_all_it_holds() -> None:
    overlay = PendingChanges()
    overlay.put(("d",), PendingDir(None, 0o755, 1), Supply(ROOT, {}), 1)
    overlay.put(("d", "f"), file("f"), NOTHING, 2)
    assert overlay.find(("d", "f")) == Found(file("f"))
    assert overlay.find(("d", "nothing")) == Missing()  # no committed tree to ask
    with pytest.raises(PathNotFoundError):
        overlay.put(("d", "nothing", "g"), file("g"), NOTHING)


def test_removed_names_are_missing_and_what_is_below_them_too() -> None:
    overlay = PendingChanges()
    overlay.remove(("a",), Supply(ROOT, {}), 3)
    assert overlay.find(("a",)) == Missing() and overlay.find(("a", "b")) == Missing()
    assert overlay.root is not None and overlay.root.mtime == 3


def test_a_committed_directory_moved_in_is_read_under_its_own_cid() -> None:
    overlay = PendingChanges()
    moved = DirEntry("m", "dir", 0, 0o700, 1, cid=MOVED)
    overlay.put(("m",), moved, Supply(ROOT, {}), 1)
    assert overlay.find(("m", "x", "y")) == Committed(MOVED, ("x", "y"))
    assert overlay.needs(("m", "x")) == (MOVED, 1)  # /m/x is looked up under the moved CID
    overlay.put(("m", "x", "f"), file("f"),
                Supply(None, {("m", "x"): DirEntry("x", "dir", 0, 0o755, 1, cid=A)}), 2)
    inside = overlay.directory(("m", "x"))
    assert inside is not None and inside.base == A and not inside.at_path  # not at its committed path
    overlay.put(("m",), file("m"), NOTHING)  # replaced by a file: nothing is below it
    with pytest.raises(NotADirectoryPathError):
        overlay.find(("m", "f", "x"))


def test_attributes_of_a_file_and_of_a_pending_directory() -> None:
    overlay = PendingChanges()
    overlay.put(("d",), PendingDir(None, 0o755, 1), Supply(ROOT, {}), 1)
    overlay.set_attributes(("d",), None, NOTHING, 0o700, None)
    pending_d = overlay.directory(("d",))
    assert pending_d is not None and (pending_d.mode, pending_d.mtime) == (0o700, 1)
    overlay.set_attributes(("f",), file("f"), NOTHING, None, 99)  # committed: its entry is given
    assert overlay.find(("f",)) == Found(DirEntry("f", "file", 6, 0o644, 99, cid=FILE))
    assert overlay.root is not None and overlay.root.mtime == 1  # an attribute change is not the parent's
    with pytest.raises(PathNotFoundError):
        overlay.set_attributes(("gone",), None, NOTHING, 0o600, None)


def test_walk_lists_every_pending_directory_parents_first() -> None:
    overlay = PendingChanges()
    overlay.put(("a",), PendingDir(None, 0o755, 1), Supply(ROOT, {}), 1)
    overlay.put(("a", "b"), PendingDir(None, 0o755, 1), NOTHING, 1)
    assert overlay.root is not None
    assert [path for path, _ in overlay.root.walk()] == [(), ("a",), ("a", "b")]
    overlay.clear()
    assert not overlay and overlay.changes == 0
