"""Root records: signed, sequence-numbered, strictly decoded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas import dagcbor
from cas.cid import CID, DAG_CBOR, RAW
from cas.errors import InvalidRecordError
from cas.keys import Ed25519Key
from cas.names.record import RootRecord, check_successor
from tests.formatsdoc import vectors

KEY = Ed25519Key.from_seed(bytes(range(32)))
OTHER = Ed25519Key.from_seed(bytes(32))
ROOT = CID.for_data(DAG_CBOR, b"\xa0")


def test_a_signed_record_round_trips_and_verifies():
    record = RootRecord.sign(KEY, 7, ROOT, 1_700_000_000_000_000_000)
    again = RootRecord.decode(record.encode())
    assert again == record and again.public_key == KEY.public_key


def test_any_change_to_a_signed_record_breaks_its_signature():
    record = RootRecord.sign(KEY, 7, ROOT, 5)
    value = dagcbor.decode(record.encode())
    for field, new in [("seq", 8), ("time", 6), ("root", CID.for_data(DAG_CBOR, b"\x80"))]:
        forged = dagcbor.encode({**value, field: new})
        with pytest.raises(InvalidRecordError, match="bad signature"):
            RootRecord.decode(forged)


def test_a_record_signed_by_another_key_is_not_a_successor():
    current = RootRecord.sign(KEY, 1, ROOT, 1)
    theirs = RootRecord.sign(OTHER, 2, ROOT, 2)
    with pytest.raises(InvalidRecordError, match="signed by key"):
        check_successor(current, theirs, KEY.public_key)


@pytest.mark.parametrize("seq", [3, 2])
def test_a_record_not_above_the_current_sequence_is_refused(seq):
    current = RootRecord.sign(KEY, 3, ROOT, 1)
    with pytest.raises(InvalidRecordError, match="not above the current 3"):
        check_successor(current, RootRecord.sign(KEY, seq, ROOT, 2), KEY.public_key)
    check_successor(current, RootRecord.sign(KEY, 4, ROOT, 2), KEY.public_key)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: {**v, "type": "cas/other"},
        lambda v: {**v, "key": b"short"},
        lambda v: {**v, "seq": -1},
        lambda v: {**v, "root": CID.for_data(RAW, b"a file")},
        lambda v: {k: x for k, x in v.items() if k != "time"},
        lambda v: {**v, "extra": 1},
    ],
)
def test_malformed_records_are_refused(mutate):
    value = dagcbor.decode(RootRecord.sign(KEY, 1, ROOT, 1).encode())
    with pytest.raises(InvalidRecordError):
        RootRecord.decode(dagcbor.encode(mutate(value)))


@given(st.binary(max_size=400))
def test_random_bytes_are_never_a_record(data):
    with pytest.raises(InvalidRecordError):
        RootRecord.decode(data)


def test_published_record_vector_matches():
    [v] = vectors("root-record")
    key = Ed25519Key.from_seed(bytes.fromhex(v["seed_hex"]))
    record = RootRecord.sign(key, v["seq"], CID.parse(v["root"]), v["time"])
    assert record.encode().hex() == v["record_hex"]
    assert RootRecord.decode(bytes.fromhex(v["record_hex"])) == record
