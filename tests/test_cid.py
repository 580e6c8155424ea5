"""CIDs: the text and binary forms, and the errors for everything else."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas.cid import (
    BLAKE3,
    CID,
    DAG_CBOR,
    DAG_PB,
    RAW,
    SHA2_256,
    decode_varint,
    encode_varint,
    parse_cid,
)
from cas.errors import InvalidCIDError
from tests.formatsdoc import vectors


def test_published_cid_vectors_match():
    for v in vectors("cid"):
        data = bytes.fromhex(v["data_hex"])
        cid = CID.for_data({"raw": RAW, "dag-pb": DAG_PB, "dag-cbor": DAG_CBOR}[v["codec"]], data)
        assert bytes(cid).hex() == v["binary_hex"]
        assert str(cid) == v["cid"]
        assert CID.parse(v["cid"]) == cid


def test_raw_cid_has_the_ipfs_blake3_prefix():
    # CIDv1 + raw + blake3 prints as bafkr4i… in IPFS tools.
    assert str(CID.for_data(RAW, b"hello")).startswith("bafkr4i")
    assert str(CID.for_data(DAG_CBOR, b"hello")).startswith("bafyr4i")


def test_ipfs_cid_vectors_parse_verify_and_print_as_read():
    codecs = {"raw": RAW, "dag-pb": DAG_PB, "dag-cbor": DAG_CBOR}
    for v in vectors("cid-ipfs"):
        data = bytes.fromhex(v["data_hex"])
        cid = CID.parse(v["cid"])
        assert cid.hash_code == SHA2_256 and cid.codec == codecs[v["codec"]]
        assert cid.verify(data) and not cid.verify(data + b"x")
        assert str(cid) == v["cid"]  # a CIDv0 stays a CIDv0
        assert cid.binary.hex() == v["binary_hex"]
        assert CID.from_bytes(cid.binary) == cid and str(CID.from_bytes(cid.binary)) == v["cid"]
        if v.get("version") == 0:
            assert cid.is_v0
            assert bytes(cid).hex() == v["binary_v1_hex"]  # the key: one block, one key
            v1 = CID.parse(v["cid_v1"])
            assert v1 == cid and hash(v1) == hash(cid) and not v1.is_v0
            assert str(cid.to_v1()) == v["cid_v1"]
        else:
            assert CID.for_data(codecs[v["codec"]], data, SHA2_256) == cid


def test_a_sha2_cid_never_equals_or_shares_a_key_with_the_blake3_cid_of_the_same_digest():
    digest = bytes(range(32))
    b3, sha = CID(RAW, digest, BLAKE3), CID(RAW, digest, SHA2_256)
    assert b3 != sha and bytes(b3) != bytes(sha)
    assert b3.routing_digest == digest
    assert sha.routing_digest != digest and len(sha.routing_digest) == 32


def test_base58btc_cidv1_text_is_read():
    cid = CID.for_data(RAW, b"hello", SHA2_256)
    assert CID.parse("zb2rhZfjRh2FHHB2RkHVEvL2vJnCTcu7kwRqgVsf9gpkLgteo") == cid


def _text(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().rstrip("=").lower()


@given(st.sampled_from([RAW, DAG_PB, DAG_CBOR]), st.binary(max_size=64))
def test_text_and_binary_forms_round_trip(codec, data):
    cid = CID.for_data(codec, data)
    assert CID.parse(cid.encode()) == cid
    assert CID.from_bytes(bytes(cid)) == cid
    assert parse_cid(str(cid).upper()) == cid  # base32 is case-insensitive


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("hello", "expected base32"),
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdl", "not a CIDv0"),
        ("b!!!", "invalid base32"),
        ("mAVUSIA", "expected base32"),  # multibase base64
        ("z0OIl", "invalid base58btc"),
        # sha2-512 (0x13) CIDv1
        (_text(b"\x01\x55\x13\x40" + bytes(64)), "unsupported hash"),
        # dag-json codec (0x0129) over a blake3 digest
        (_text(b"\x01\xa9\x02\x1e\x20" + bytes(32)), "unsupported codec"),
        # blake3 with a 16-byte digest
        (_text(b"\x01\x55\x1e\x10" + bytes(16)), "length must be 32"),
    ],
)
def test_bad_cids_are_rejected_with_a_reason(text, message):
    with pytest.raises(InvalidCIDError, match=message):
        CID.parse(text)


def test_truncated_and_trailing_bytes_are_rejected():
    raw = bytes(CID.for_data(RAW, b"x"))
    with pytest.raises(InvalidCIDError, match="truncated"):
        CID.from_bytes(raw[:-1])
    with pytest.raises(InvalidCIDError, match="unexpected bytes"):
        CID.from_bytes(raw + b"\x00")


@given(st.binary(max_size=40))
def test_arbitrary_bytes_never_crash_the_parser(raw):
    try:
        CID.from_bytes(raw)
    except InvalidCIDError:
        pass


@given(st.integers(min_value=0, max_value=2**63))
def test_varints_round_trip(n):
    assert decode_varint(encode_varint(n)) == (n, len(encode_varint(n)))


def test_non_minimal_varint_is_rejected():
    with pytest.raises(ValueError):
        decode_varint(b"\x81\x00")


def test_a_cid_is_checked_however_it_is_made():
    cid = CID.for_data(RAW, b"x")
    assert cid._replace(codec=DAG_PB) == CID(DAG_PB, cid.digest)
    with pytest.raises(InvalidCIDError, match="unsupported codec"):
        cid._replace(codec=0x12)
    with pytest.raises(InvalidCIDError, match="must be 32 bytes"):
        CID._make((RAW, b"short"))
