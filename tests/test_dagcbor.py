"""Strict DAG-CBOR: one encoding per value, and nothing else accepted."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas import dagcbor
from cas.cid import RAW, CID
from cas.errors import InvalidBlockError
from tests.formatsdoc import vectors

LINK = CID.for_data(RAW, b"leaf")

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.just(LINK),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@given(values)
def test_every_value_round_trips_through_its_one_encoding(value):
    data = dagcbor.encode(value)
    assert dagcbor.decode(data) == value
    assert dagcbor.encode(dagcbor.decode(data)) == data


def test_published_dagcbor_vectors_match():
    for v in vectors("dagcbor"):
        value = _from_json(v["value"])
        assert dagcbor.encode(value).hex() == v["bytes_hex"]


def _from_json(value):
    if isinstance(value, dict) and set(value) == {"/"}:
        return CID.parse(value["/"])
    if isinstance(value, dict):
        return {k: _from_json(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_from_json(x) for x in value]
    return value


def test_map_keys_are_sorted_length_first():
    assert list(cbor2.loads(dagcbor.encode({"bb": 1, "a": 2, "c": 3}))) == ["a", "c", "bb"]


@pytest.mark.parametrize(
    "data",
    [
        cbor2.dumps({"bb": 1, "a": 2}),  # keys out of order
        b"\x9f\x01\xff",  # indefinite-length list
        b"\x18\x01",  # 1 encoded in two bytes
        cbor2.dumps(1.5),  # float
        b"\xa1\x01\x02",  # integer map key
        b"\xa2\x61a\x01\x61a\x02",  # duplicate key
        cbor2.dumps(cbor2.CBORTag(99, 1)),  # foreign tag
        bytes.fromhex("d82a420001"),  # tag 42 that is not a CID
        b"",
        b"\x82\x01",  # truncated
    ],
)
def test_non_canonical_or_foreign_input_is_rejected(data):
    with pytest.raises(InvalidBlockError):
        dagcbor.decode(data)


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_invalid_block(data):
    try:
        dagcbor.decode(data)
    except InvalidBlockError:
        pass


def test_encoding_a_float_is_a_programming_error():
    with pytest.raises(TypeError):
        dagcbor.encode({"x": 0.5})
