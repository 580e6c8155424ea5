"""Directory nodes: names, the entry format, strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas import dagcbor
from cas.blocks import Block
from cas.cid import CID, DAG_CBOR, RAW
from cas.errors import InvalidBlockError, InvalidInputError
from cas.names.directory import ChildRef, DirEntry, LeafNode, check_name, decode_dir_node, encode_index, encode_leaf
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
        entries = [
            DirEntry(
                e["name"], e["kind"], e["size"], e["mode"], e["mtime"],
                cid=CID.parse(e["cid"]) if "cid" in e else None, target=e.get("target"),
            )
            for e in v["entries"]
        ]
        block = encode_leaf(entries)
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
    ],
)
def test_malformed_directories_are_rejected(entries):
    block = _raw_dir(entries)
    with pytest.raises(InvalidBlockError):
        decode_dir_node(block.cid, block.data)


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
