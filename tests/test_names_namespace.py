"""The namespace over a real repository: paths, errors, history, records."""

from __future__ import annotations

import pytest

from cas import files
from cas.errors import (
    DirectoryNotEmptyError,
    InvalidInputError,
    InvalidMoveError,
    InvalidRecordError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
)
from cas.keys import Ed25519Key
from cas.names.namespace import Namespace, Node
from cas.names.record import RootRecord
from cas.store import LocalStore


@pytest.fixture
def ns(tmp_path):
    with LocalStore.open(tmp_path / "repo") as store:
        yield Namespace(store)


def put_file(ns: Namespace, path: str, data: bytes) -> Node:
    added = files.add_bytes(ns.blocks, data)
    node = Node(path, "", "file", added.size, 0o644, 1, added.cid)
    ns.link(path, node)
    return node


def names(ns: Namespace, path: str = "/") -> list[str]:
    return [e.name for e in ns.list(path)]


def test_an_empty_namespace_is_an_empty_root_directory(ns):
    assert names(ns) == [] and ns.current().seq == 0 and list(ns.log()) == []
    assert ns.resolve("/").kind == "dir"


def test_each_change_is_a_new_signed_root_and_old_roots_stay_readable(ns):
    ns.mkdir("/a")
    put_file(ns, "/a/f", b"one")
    put_file(ns, "/a/f", b"two")  # replaces the file
    assert [s.seq for s in ns.log()] == [3, 2, 1]
    assert files.read_range(ns.blocks, ns.resolve("/a/f").cid, 0, 10) == b"two"
    assert files.read_range(ns.blocks, ns.resolve("/a/f", at=2).cid, 0, 10) == b"one"
    assert names(ns, "/a") == ["f"] and names(ns) == ["a"]
    with pytest.raises(PathNotFoundError):
        ns.resolve("/a/f", at=1)


def test_mkdir_errors_and_parents(ns):
    ns.mkdir("/x")
    with pytest.raises(PathExistsError):
        ns.mkdir("/x")
    with pytest.raises(PathNotFoundError):
        ns.mkdir("/no/such/parent")
    ns.mkdir("/no/such/parent", parents=True)
    ns.mkdir("/no/such/parent", parents=True)  # no error with -p
    put_file(ns, "/file", b"f")
    with pytest.raises(NotADirectoryPathError):
        ns.mkdir("/file/sub", parents=True)


@pytest.mark.parametrize("bad", ["/a/./b", "/a/../b", "/" + "x" * 256, "/a\x00b"])
def test_invalid_names_are_refused(ns, bad):
    with pytest.raises(InvalidInputError):
        ns.mkdir(bad)
    assert list(ns.log()) == []


def test_a_path_through_a_file_is_not_a_directory(ns):
    put_file(ns, "/f", b"x")
    with pytest.raises(NotADirectoryPathError):
        ns.resolve("/f/inside")
    with pytest.raises(NotADirectoryPathError):
        put_file(ns, "/f/inside", b"y")


def test_rm_of_missing_and_non_empty_directories(ns):
    with pytest.raises(PathNotFoundError):
        ns.remove("/missing")
    ns.mkdir("/d")
    put_file(ns, "/d/f", b"x")
    with pytest.raises(DirectoryNotEmptyError):
        ns.remove("/d")
    ns.remove("/d", recursive=True)
    assert names(ns) == []
    with pytest.raises(InvalidInputError):
        ns.remove("/", recursive=True)


def test_mv_like_the_mv_command(ns):
    ns.mkdir("/dir")
    put_file(ns, "/a", b"a")
    put_file(ns, "/b", b"b")
    ns.move("/a", "/dir")  # into a directory
    assert names(ns, "/dir") == ["a"]
    ns.move("/dir/a", "/b")  # over a file
    assert names(ns) == ["b", "dir"] and files.read_range(ns.blocks, ns.resolve("/b").cid, 0, 9) == b"a"
    ns.move("/dir", "/renamed")
    assert names(ns) == ["b", "renamed"]
    with pytest.raises(InvalidMoveError):
        ns.move("/renamed", "/renamed/inside")
    with pytest.raises(PathNotFoundError):
        ns.move("/nope", "/x")
    ns.mkdir("/full")
    put_file(ns, "/full/f", b"x")
    ns.mkdir("/other")
    with pytest.raises(DirectoryNotEmptyError):
        ns.move("/other", "/full", into_directory=False)
    with pytest.raises(IsADirectoryPathError):
        ns.move("/b", "/other", into_directory=False)
    with pytest.raises(PathExistsError):
        ns.move("/b", "/full/f", no_replace=True)


def test_a_tampered_root_record_is_skipped_and_the_last_good_root_used(ns):
    ns.mkdir("/good")
    ns.mkdir("/later")
    store = ns.repo
    store.db.execute("UPDATE roots SET record = ? WHERE seq = 2", (b"\xa0",))
    store.db.commit()
    fresh = Namespace(store)
    assert fresh.current().seq == 1
    assert names(fresh) == ["good"]
    assert any("root record 2 failed verification" in w for w in fresh.warnings)
    fresh.mkdir("/after")  # the next root supersedes the bad one
    assert Namespace(store).current().seq == 3


def test_records_from_outside_must_be_ours_and_newer(ns):
    ns.mkdir("/a")
    state = ns.current()
    stranger = Ed25519Key.generate()
    with pytest.raises(InvalidRecordError, match="signed by key"):
        ns.import_record(RootRecord.sign(stranger, 9, state.root, 1).encode())
    key = ns.repo.namespace_key()
    with pytest.raises(InvalidRecordError, match="not above"):
        ns.import_record(RootRecord.sign(key, 1, state.root, 1).encode())
    adopted = ns.import_record(RootRecord.sign(key, 5, state.root, 2).encode())
    assert ns.current().seq == adopted.seq == 5


def test_set_attributes_changes_mode_and_mtime_but_not_content(ns):
    node = put_file(ns, "/f", b"content")
    ns.mkdir("/d")
    ns.set_attributes("/f", mode=0o600, mtime=42)
    ns.set_attributes("/d", mode=0o700)
    f, d = ns.resolve("/f"), ns.resolve("/d")
    assert (f.mode, f.mtime, f.cid) == (0o600, 42, node.cid)
    assert d.mode == 0o700
    with pytest.raises(PathNotFoundError):
        ns.set_attributes("/missing", mode=0o644)
    with pytest.raises(InvalidInputError):
        ns.set_attributes("/f", mode=0o10000)


def test_removing_a_hard_linked_name_lowers_the_count_the_others_record(ns):
    from dataclasses import replace

    from cas.names.directory import Meta

    node = put_file(ns, "/a", b"linked")
    linked = replace(node, meta=Meta(ino=77, nlink=4))
    ns.mkdir("/d")
    for path in ("/a", "/b", "/c", "/d/e"):
        ns.link(path, linked)
    ns.remove("/c")
    assert [ns.resolve(p).meta.nlink for p in ("/a", "/b", "/d/e")] == [3, 3, 3]
    put_file(ns, "/other", b"other")
    ns.move("/other", "/b", into_directory=False)  # renamed over one name
    assert [ns.resolve(p).meta.nlink for p in ("/a", "/d/e")] == [2, 2]
    ns.move("/a", "/d/e", into_directory=False)  # two names of one inode: nothing happens
    assert ns.resolve("/a").meta.ino == 77
    ns.remove("/d", recursive=True)  # the last other name, below a directory
    assert ns.resolve("/a").meta.ino is None and ns.resolve("/a").meta.nlink == 1
    assert ns.resolve("/b").meta.ino is None  # the file that replaced a name was never linked
