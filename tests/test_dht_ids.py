"""The key space: IDs, the XOR metric, buckets."""

from __future__ import annotations

import random
import types

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas.cid import CID, RAW
from cas.dht.ids import (
    ID_BITS,
    bucket_index,
    distance,
    id_from_bytes,
    id_to_bytes,
    is_valid_id,
    key_for_digest,
    node_id_for_public_key,
    random_id_in_bucket,
)

ids = st.integers(min_value=0, max_value=2**ID_BITS - 1)


@given(ids, ids)
def test_distance_is_symmetric_and_zero_only_to_itself(a: int, b: int) -> None:
    assert distance(a, b) == distance(b, a)
    assert (distance(a, b) == 0) == (a == b)


@given(ids, ids, ids)
def test_distance_obeys_the_triangle_inequality(a: int, b: int, c: int) -> None:
    assert distance(a, c) <= distance(a, b) + distance(b, c)


@given(ids, ids)
def test_bucket_index_is_the_power_of_two_range_of_the_distance(own: int, other: int) -> None:
    if own == other:
        with pytest.raises(ValueError):
            bucket_index(own, other)
        return
    i = bucket_index(own, other)
    assert 0 <= i < ID_BITS
    assert 2**i <= distance(own, other) < 2 ** (i + 1)


@given(ids, st.integers(min_value=0, max_value=ID_BITS - 1), st.integers())
def test_random_id_in_bucket_lands_in_that_bucket(own: int, index: int, seed: int) -> None:
    target = random_id_in_bucket(own, index, random.Random(seed))
    assert is_valid_id(target)
    assert bucket_index(own, target) == index


def test_random_id_in_bucket_rejects_an_index_outside_the_space() -> None:
    with pytest.raises(ValueError):
        random_id_in_bucket(0, ID_BITS, random.Random(1))


@given(ids)
def test_ids_round_trip_through_their_32_byte_form(node_id: int) -> None:
    raw = id_to_bytes(node_id)
    assert len(raw) == 32
    assert id_from_bytes(raw) == node_id


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33, "x" * 32])
def test_id_from_bytes_rejects_anything_but_32_bytes(raw: object) -> None:
    with pytest.raises(ValueError):
        id_from_bytes(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 2**256, True, 1.0, "1"])
def test_out_of_range_or_non_int_ids_are_not_valid(bad: object) -> None:
    assert not is_valid_id(bad)
    with pytest.raises(ValueError):
        id_to_bytes(bad)  # type: ignore[arg-type]


def test_node_id_is_blake3_of_the_public_key_big_endian() -> None:
    key = bytes(range(32))
    assert node_id_for_public_key(key) == int.from_bytes(blake3.blake3(key).digest(), "big")
    with pytest.raises(ValueError):
        node_id_for_public_key(key[:31])


def test_a_block_key_is_its_cid_digest_whatever_the_codec() -> None:
    cid = CID.for_data(RAW, b"hello")
    assert key_for_digest(cid.digest) == int.from_bytes(cid.digest, "big")


def test_the_package_exports_exactly_the_names_it_lists() -> None:
    import cas.dht

    assert sorted(cas.dht.__all__) == sorted(set(cas.dht.__all__))
    for name in cas.dht.__all__:
        assert getattr(cas.dht, name) is not None
    # Submodules appear as attributes once anything imports them; the
    # exported surface is everything else.
    public = {n for n, v in vars(cas.dht).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == set(cas.dht.__all__)
