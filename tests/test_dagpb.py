"""dag-pb and UnixFS Data: canonical bytes out, strict decoding in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.cid import CID, DAG_CBOR, DAG_PB, MAX_BLOCK_SIZE, RAW
from cas.dagpb import (
    TYPE_DIRECTORY,
    TYPE_FILE,
    PBLink,
    PBNode,
    UnixFSData,
    decode_node,
    decode_unixfs,
    encode_node,
    encode_unixfs,
)
from cas.errors import InvalidBlockError

HELLO = CID.for_data(RAW, b"hello ")
WORLD = CID.for_data(RAW, b"world")

# The example node of docs/formats.md ("File DAG"): a file of the two chunks
# "hello " and "world". Written out field by field so a change in the encoder
# shows up here, not only as a different CID.
EXAMPLE_UNIXFS = UnixFSData(TYPE_FILE, filesize=11, blocksizes=(6, 5))
EXAMPLE_UNIXFS_HEX = "0802" "180b" "2006" "2005"
EXAMPLE_NODE = PBNode(
    links=(PBLink(HELLO, "", 6), PBLink(WORLD, "", 5)),
    data=bytes.fromhex(EXAMPLE_UNIXFS_HEX),
)
EXAMPLE_NODE_HEX = (
    "122a" "0a24" + bytes(HELLO).hex() + "1200" "1806"
    + "122a" "0a24" + bytes(WORLD).hex() + "1200" "1805"
    + "0a08" + EXAMPLE_UNIXFS_HEX
)
EXAMPLE_CID = "bafyb4igk2jmrj3z4vvpfgf2zab23m7a6eysxj4qr477hp2fwiy2tllhdu4"


def test_example_node_encodes_to_the_published_bytes() -> None:
    assert encode_unixfs(EXAMPLE_UNIXFS).hex() == EXAMPLE_UNIXFS_HEX
    encoded = encode_node(EXAMPLE_NODE)
    assert encoded.hex() == EXAMPLE_NODE_HEX
    assert str(CID.for_data(DAG_PB, encoded)) == EXAMPLE_CID


def test_example_node_decodes_back_to_the_same_values() -> None:
    node = decode_node(bytes.fromhex(EXAMPLE_NODE_HEX))
    assert node == EXAMPLE_NODE
    assert decode_unixfs(node.data) == EXAMPLE_UNIXFS


@pytest.mark.parametrize(
    "node, hex_bytes",
    [
        (PBNode(), ""),
        (PBNode(data=b""), "0a00"),
        (PBNode(data=b"\x01\x02"), "0a020102"),
        (PBNode(links=(PBLink(HELLO),)), "1226" "0a24" + bytes(HELLO).hex()),
        (PBNode(links=(PBLink(HELLO, tsize=0),)), "1228" "0a24" + bytes(HELLO).hex() + "1800"),
        (PBNode(links=(PBLink(HELLO, "a", 300),)),
         "122c" "0a24" + bytes(HELLO).hex() + "120161" "18ac02"),
    ],
    ids=["empty", "empty-data", "data", "hash-only", "tsize-zero", "name-and-tsize"],
)
def test_node_encoding_is_canonical_and_absent_differs_from_empty(node, hex_bytes) -> None:
    assert encode_node(node).hex() == hex_bytes
    assert decode_node(bytes.fromhex(hex_bytes)) == node


def test_blocksizes_are_written_unpacked_one_tag_each() -> None:
    value = UnixFSData(TYPE_FILE, filesize=2**40, blocksizes=(1, 2**40 - 1))
    assert encode_unixfs(value).hex() == (
        "0802" "18808080808020" "2001" "20ffffffffff1f"
    )


def test_unixfs_optional_fields_round_trip_in_field_order() -> None:
    value = UnixFSData(TYPE_FILE, data=b"xy", filesize=2, hash_type=0x22, fanout=256,
                       mode=0o644)
    encoded = encode_unixfs(value)
    assert encoded.hex() == "0802" "12027879" "1802" "2822" "308002" "38a403"
    assert decode_unixfs(encoded) == value


# -- strict decoding: each malformation is refused with a reason -----------

LINK = "0a24" + bytes(HELLO).hex()


def links_field(body_hex: str) -> str:
    """A PBNode Links field (2) around a link body, with its true length."""
    return "12" + f"{len(body_hex) // 2:02x}" + body_hex


@pytest.mark.parametrize(
    "hex_bytes, reason",
    [
        ("0a00" + links_field(LINK), "unexpected field 2"),  # Data before Links
        ("0a00" "0a00", "unexpected field 1"),  # Data twice
        ("0800", "wire type 0, not 2"),  # Data as a varint
        ("1a00", "unexpected field 3"),  # unknown field
        ("1000", "wire type 0"),  # Links as a varint
        ("0a05" "0102", "runs past the end"),
        ("0a", "truncated varint"),
        ("0a8000", "non-minimal varint"),
        ("1202" "1200", "must start with its Hash"),  # link without Hash
        (links_field("1200" + LINK), "must start with its Hash"),  # Name before Hash
        (links_field(LINK + "1801" "1200"), "unexpected field 2"),  # Tsize before Name
        (links_field(LINK + LINK), "unexpected field 1"),  # Hash twice
        (links_field(LINK + "1201ff"), "not valid UTF-8"),
        ("1204" "0a02" "0155", "not a usable CID"),
        (links_field(LINK + "2000"), "unexpected field 4"),  # unknown link field
        (links_field(LINK + "18" + "ff" * 10 + "01"), "varint longer than 10 bytes"),
        (links_field(LINK + "18" + "ff" * 9 + "7f"), "out of range"),
    ],
)
def test_malformed_nodes_are_refused_with_a_reason(hex_bytes: str, reason: str) -> None:
    with pytest.raises(InvalidBlockError, match=reason):
        decode_node(bytes.fromhex(hex_bytes))


def _one_link_node(link_hash: bytes) -> bytes:
    return bytes.fromhex("12" + f"{len(link_hash) + 2:02x}" + "0a" + f"{len(link_hash):02x}" + link_hash.hex())


def test_a_link_to_an_unsupported_cid_is_refused() -> None:
    sha512_cidv1 = bytes.fromhex("01551340") + bytes(64)
    with pytest.raises(InvalidBlockError, match="unsupported hash function 0x13"):
        decode_node(_one_link_node(sha512_cidv1))


def test_ipfs_links_sha256_v1_and_v0_decode_and_encode_back_byte_for_byte() -> None:
    for link_hash in (bytes.fromhex("01551220") + bytes(range(32)), bytes.fromhex("1220") + bytes(range(32))):
        node_bytes = _one_link_node(link_hash)
        node = decode_node(node_bytes)
        assert node.links[0].hash.binary == link_hash
        assert encode_node(node) == node_bytes


def test_nodes_over_the_block_limit_are_refused_before_parsing() -> None:
    with pytest.raises(InvalidBlockError, match="over the"):
        decode_node(b"\x0a" + b"\x00" * MAX_BLOCK_SIZE)


@pytest.mark.parametrize(
    "hex_bytes, reason",
    [
        ("", "must start with its Type"),
        ("1800", "must start with its Type"),
        ("0802" "0802", "unexpected field 1"),
        ("0809", "unknown UnixFS type 9"),
        ("0a00", "wire type 2, not 0"),
        ("0802" "1801" "1802", "unexpected field 3"),  # filesize twice
        ("0802" "2001" "1801", "unexpected field 3"),  # filesize after blocksizes
        ("0802" "2202" "0102", "wire type 2, not 0"),  # packed blocksizes
        ("0802" "2001" "2801" "2001", "unexpected field 4"),  # blocksizes split
        ("0802" "4202" "1001", "must start with its Seconds"),  # an mtime without Seconds
        ("0802" "4a020801", "unexpected field 9"),  # past mtime: unknown
        ("0802" "3880808080 10".replace(" ", ""), "out of range"),  # mode > uint32
        ("0802" "18", "truncated varint"),
    ],
)
def test_malformed_unixfs_data_is_refused_with_a_reason(hex_bytes: str, reason: str) -> None:
    with pytest.raises(InvalidBlockError, match=reason):
        decode_unixfs(bytes.fromhex(hex_bytes))


# -- properties --------------------------------------------------------------

cids = st.builds(CID.for_data, st.sampled_from([RAW, DAG_PB, DAG_CBOR]), st.binary(max_size=8))
links = st.builds(
    PBLink,
    cids,
    st.none() | st.text(max_size=20),
    st.none() | st.integers(0, 2**64 - 1),
)
nodes = st.builds(PBNode, st.lists(links, max_size=5).map(tuple), st.none() | st.binary(max_size=50))
unixfs_values = st.builds(
    UnixFSData,
    st.sampled_from([TYPE_FILE, TYPE_DIRECTORY, 0, 3, 4, 5]),
    st.none() | st.binary(max_size=20),
    st.none() | st.integers(0, 2**64 - 1),
    st.lists(st.integers(0, 2**64 - 1), max_size=5).map(tuple),
    st.none() | st.integers(0, 2**64 - 1),
    st.none() | st.integers(0, 2**64 - 1),
    st.none() | st.integers(0, 2**32 - 1),
    st.none() | st.tuples(st.integers(-(2**63), 2**63 - 1), st.none() | st.integers(0, 2**32 - 1)),
)


@given(nodes)
def test_any_node_round_trips(node: PBNode) -> None:
    assert decode_node(encode_node(node)) == node


@given(unixfs_values)
def test_any_unixfs_value_round_trips(value: UnixFSData) -> None:
    assert decode_unixfs(encode_unixfs(value)) == value


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_either_decode_canonically_or_raise_invalid_block(data: bytes) -> None:
    for decode, encode in ((decode_node, encode_node), (decode_unixfs, encode_unixfs)):
        try:
            value = decode(data)
        except InvalidBlockError:
            continue
        # Whatever is accepted is exactly the canonical encoding of its value.
        assert encode(value) == data


@settings(max_examples=300)
@given(nodes, st.data())
def test_mutated_nodes_either_decode_canonically_or_raise_invalid_block(node, data) -> None:
    encoded = bytearray(encode_node(node))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, len(encoded)))
        if action == "flip" and pos < len(encoded):
            encoded[pos] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            encoded[pos:pos] = bytes([data.draw(st.integers(0, 255))])
        elif action == "delete":
            del encoded[pos : pos + 1]
        else:
            del encoded[pos:]
    try:
        value = decode_node(bytes(encoded))
    except InvalidBlockError:
        return
    assert encode_node(value) == bytes(encoded)


@pytest.mark.parametrize("mtime", [(1_614_834_367, 123_456_789), (0, None), (-86_400, 5), ((1 << 63) - 1, None)])
def test_unixfs_mtime_as_ipfs_tools_write_it_round_trips(mtime: tuple[int, int | None]) -> None:
    value = UnixFSData(TYPE_FILE, data=b"x", filesize=1, mode=0o600, mtime=mtime)
    encoded = encode_unixfs(value)
    assert decode_unixfs(encoded) == value
    if mtime == (0, None):  # field 8 (length-delimited), holding Seconds = 0
        assert encoded.endswith(b"\x42\x02\x08\x00")
