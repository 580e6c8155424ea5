"""Directory nodes: names, the entry format, strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas import dagcbor
from cas.blocks import Block
from cas.cid import CID, DAG_CBOR, RAW
from cas.errors import InvalidBlockError, InvalidInputError
from cas.names.directory import (
    MAX_XATTR_BYTES,
    NO_META,
    ChildRef,
    DirEntry,
    LeafNode,
    Meta,
    check_name,
    decode_dir_node,
    encode_index,
    encode_leaf,
)
from tests.formatsdoc import vectors

FILE = CID.for_data(RAW, b"content")


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "empty"),
        (".", "cannot be used"),
        ("..", "cannot be used"),
        ("a/b", "'/'"),
        ("a\x00b", "NUL"),
        ("x" * 256, "limit is 255"),
        ("é" * 128, "limit is 255"),  # 256 bytes of UTF-8
    ],
)
def test_invalid_names_are_refused_with_the_reason(name, why):
    with pytest.raises(InvalidInputError, match=why):
        check_name(name)


def test_names_up_to_255_bytes_and_any_other_character_are_fine():
    for name in ("x" * 255, "é" * 127, "with space", "-dash", ".hidden", "名前", "a\nb"):
        assert check_name(name) == name


def test_entries_are_stored_sorted_by_name_bytes():
    entries = [DirEntry(n, "file", 7, 0o644, 1, cid=FILE) for n in ("b", "a", "Z", "é")]
    block = encode_leaf(entries)
    assert [e.name for e in decode_dir_node(block.cid, block.data).entries] == ["Z", "a", "b", "é"]


def test_same_entries_in_any_order_give_the_same_cid():
    entries = [DirEntry(n, "file", 7, 0o644, 1, cid=FILE) for n in ("x", "y", "z")]
    assert encode_leaf(entries).cid == encode_leaf(reversed(entries)).cid


def test_duplicate_names_are_refused():
    entries = [DirEntry("x", "file", 7, 0o644, 1, cid=FILE)] * 2
    with pytest.raises(InvalidInputError, match="duplicate"):
        encode_leaf(entries)


def test_symlinks_carry_a_target_and_no_cid():
    link = DirEntry("l", "symlink", 3, 0o777, 1, target="a/b")
    block = encode_leaf([link])
    assert decode_dir_node(block.cid, block.data) == LeafNode((link,))
    with pytest.raises(InvalidInputError):
        DirEntry("l", "symlink", 3, 0o777, 1, cid=FILE, target="a")


def test_published_directory_vector_matches():
    for v in vectors("directories"):
        entries = []
        for e in v["entries"]:
            meta = {k: e[k] for k in ("uid", "gid", "atime", "ctime", "rdev", "ino", "nlink") if k in e}
            if "xattrs" in e:
                meta["xattrs"] = {k: bytes.fromhex(x) for k, x in e["xattrs"].items()}
            entries.append(DirEntry(
                e["name"], e["kind"], e["size"], e["mode"], e["mtime"],
                cid=CID.parse(e["cid"]) if "cid" in e else None, target=e.get("target"),
                meta=Meta.from_value(meta) if meta else NO_META,
            ))
        block = encode_leaf(entries)
        decoded = decode_dir_node(block.cid, block.data)
        assert decoded == LeafNode(tuple(sorted(entries, key=lambda e: e.name)))
        assert block.data.hex() == v["bytes_hex"]
        assert str(block.cid) == v["cid"]


def _raw_dir(entries) -> Block:
    return Block.of(DAG_CBOR, dagcbor.encode({"type": "cas/dir", "entries": entries}))


@pytest.mark.parametrize(
    "entries",
    [
        [{"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1}],  # file without cid
        [{"name": "a/b", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE}],
        [{"name": "a", "kind": "fifo", "size": 1, "mode": 1, "mtime": 1, "cid": FILE}],
        [{"name": "a", "kind": "file", "size": "1", "mode": 1, "mtime": 1, "cid": FILE}],
        [{"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE, "x": 1}],
        [
            {"name": "b", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE},
            {"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE},
        ],
        ["not a map"],
        [{"name": "a", "kind": "fifo", "size": 0, "mode": 1, "mtime": 1, "rdev": 3}],  # rdev on a fifo
        [{"name": "a", "kind": "chardev", "size": 2, "mode": 1, "mtime": 1}],  # content on a device
        [{"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE, "nlink": 2}],  # no ino
        [{"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE, "ino": 2}],  # nlink 1
        [{"name": "a", "kind": "dir", "size": 0, "mode": 1, "mtime": 1, "cid": FILE, "ino": 2, "nlink": 2}],
        [{"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE, "uid": -1}],
        [{"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE, "gid": "0"}],
        [{"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE, "xattrs": {}}],
        [{"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE, "xattrs": {"u": "text"}}],
        [{"name": "a", "kind": "file", "size": 1, "mode": 1, "mtime": 1, "cid": FILE, "xattrs": {"u": b"x" * 4064}}],
    ],
)
def test_malformed_directories_are_rejected(entries):
    block = _raw_dir(entries)
    with pytest.raises(InvalidBlockError):
        decode_dir_node(block.cid, block.data)


def test_metadata_round_trips_and_old_entries_keep_their_bytes():
    meta = Meta(uid=5, gid=6, atime=7, ctime=8, xattrs=(("security.x", b""), ("user.a", b"\x00\xff")))
    full = DirEntry("f", "file", 1, 0o6755, 9, cid=FILE, meta=meta)
    block = encode_leaf([full])
    assert decode_dir_node(block.cid, block.data) == LeafNode((full,))
    plain = DirEntry("f", "file", 1, 0o644, 9, cid=FILE)
    assert encode_leaf([plain]).data == _raw_dir([{"name": "f", "kind": "file", "size": 1, "mode": 0o644,
                                                    "mtime": 9, "cid": FILE}]).data
    assert meta.with_xattr("user.a", None).xattrs == (("security.x", b""),)
    assert meta.with_xattr("trusted.b", b"1").xattr("trusted.b") == b"1"


def test_extended_attributes_are_bounded_as_ext4_bounds_them():
    Meta(xattrs=(("user.big", b"x" * (MAX_XATTR_BYTES - len("user.big"))),))
    with pytest.raises(InvalidInputError, match="at most"):
        Meta(xattrs=(("user.big", b"x" * (MAX_XATTR_BYTES - len("user.big") + 1)),))
    with pytest.raises(InvalidInputError):
        Meta(xattrs=(("", b"x"),))
    with pytest.raises(InvalidInputError):
        Meta(xattrs=(("user.b", b""), ("user.a", b"")))  # not sorted


def _raw_index(value) -> Block:
    return Block.of(DAG_CBOR, dagcbor.encode({"type": "cas/dir", **value}))


LEAF = CID.for_data(DAG_CBOR, b"leaf")


def test_index_nodes_round_trip():
    refs = [ChildRef("a", LEAF, 3, 10), ChildRef("m", LEAF, 1, 0)]
    block = encode_index(1, refs)
    node = decode_dir_node(block.cid, block.data)
    assert node.level == 1 and list(node.children) == refs


@pytest.mark.parametrize(
    "value",
    [
        {"level": 0, "children": [{"first": "a", "cid": LEAF, "count": 1, "size": 0}]},
        {"level": 1, "children": []},
        {"level": 1, "children": [{"first": "a", "cid": FILE, "count": 1, "size": 0}]},  # not a dir node
        {"level": 1, "children": [{"first": "a", "cid": LEAF, "count": 0, "size": 0}]},
        {"level": 1, "children": [{"first": "b", "cid": LEAF, "count": 1, "size": 0},
                                  {"first": "a", "cid": LEAF, "count": 1, "size": 0}]},
        {"level": 99, "children": [{"first": "a", "cid": LEAF, "count": 1, "size": 0}]},
        {"level": 1, "entries": []},
    ],
)
def test_malformed_index_nodes_are_rejected(value):
    block = _raw_index(value)
    with pytest.raises(InvalidBlockError):
        decode_dir_node(block.cid, block.data)


@given(st.binary(max_size=300))
def test_random_bytes_never_decode_as_a_directory_by_accident(data):
    try:
        decode_dir_node(CID.for_data(DAG_CBOR, data), data)
    except InvalidBlockError:
        pass
