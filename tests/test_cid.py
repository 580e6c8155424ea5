"""CIDs: the text and binary forms, and the errors for everything else."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas.cid import CID, DAG_CBOR, DAG_PB, RAW, decode_varint, encode_varint, parse_cid
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
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "CIDv0"),
        ("b!!!", "invalid base32"),
        ("zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA", "expected base32"),
        # sha2-256 CIDv1 of the empty file (IPFS's default hash)
        ("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", "unsupported hash"),
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
