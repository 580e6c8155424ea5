"""fuse/links.py: the index of where each hard-linked inode's names are."""

from __future__ import annotations

from cas.fuse.links import LinkIndex


def test_an_unknown_group_is_none_and_a_known_one_its_names() -> None:
    index = LinkIndex()
    assert index.paths(7) is None
    index.know(7, ["/a", "/d/b"])
    assert index.paths(7) == {"/a", "/d/b"}
    index.know(8, ["/alone"])  # one name is not a link group
    assert index.paths(8) is None


def test_removing_and_moving_names_and_directories_keeps_it_true() -> None:
    index = LinkIndex()
    index.know(7, ["/a", "/d/b", "/d/e/c"])
    index.removed("/a")
    assert index.paths(7) == {"/d/b", "/d/e/c"}
    index.moved("/d", "/x")  # a directory above two names
    assert index.paths(7) == {"/x/b", "/x/e/c"}
    index.moved("/x/b", "/x/e/c")  # renamed over another name
    assert index.paths(7) == {"/x/e/c"}
    index.moved("/dd", "/y")  # a sibling with the same prefix is not below /d
    assert index.paths(7) == {"/x/e/c"}


def test_exchange_swaps_the_names_below_both() -> None:
    index = LinkIndex()
    index.know(1, ["/a/f", "/top"])
    index.know(2, ["/b/g", "/other"])
    index.exchanged("/a", "/b")
    assert index.paths(1) == {"/b/f", "/top"}
    assert index.paths(2) == {"/a/g", "/other"}


def test_drop_and_forget() -> None:
    index = LinkIndex()
    index.know(1, ["/a", "/b"])
    index.know(2, ["/c", "/d"])
    index.drop(1)
    assert index.paths(1) is None and index.paths(2) == {"/c", "/d"}
    index.forget()
    assert index.paths(2) is None
