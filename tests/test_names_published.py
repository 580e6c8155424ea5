"""Published namespaces without processes: the record key, what a node
accepts as a PUT_RECORD (pure rule and the driver's answer), choosing the
newest record, the read-only remote namespace, and the held-records table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from cas.cid import CID, DAG_CBOR
from cas.dht.driver import DhtDriver
from cas.dht.ids import id_from_bytes
from cas.dht.publisher import StoreRecords
from cas.dht.routing import RoutingTable
from cas.errors import InvalidRecordError, PathNotFoundError, ReadOnlyNamespaceError, StorageQuotaError
from cas.keys import Ed25519Key
from cas.names.namespace import Namespace
from cas.names.record import RootRecord, accept_record, newest_record, parse_public_key, record_key
from cas.names.remote import RemoteNamespace, split_ns_path
from cas.net import messages as msg
from cas.net.identity import Identity
from cas.store import LocalStore
from cas.store._records import MAX_RECORDS_PER_SENDER, RECORD_LIFETIME
from tests.formatsdoc import vectors

KEY = Ed25519Key.from_seed(bytes(range(32)))
OTHER = Ed25519Key.from_seed(bytes(range(1, 33)))
ROOT = CID.for_data(DAG_CBOR, b"\xa0")
RKEY = record_key(KEY.public_key)


def signed(seq: int, key: Ed25519Key = KEY) -> bytes:
    return RootRecord.sign(key, seq, ROOT, 1_700_000_000_000_000_000 + seq).encode()


def test_record_key_matches_the_published_vector() -> None:
    [v] = vectors("record-key")
    assert record_key(bytes.fromhex(v["public_key_hex"])).hex() == v["record_key_hex"]
    assert record_key(KEY.public_key) != record_key(OTHER.public_key)


def test_record_key_is_not_a_block_key_of_the_same_bytes() -> None:
    assert record_key(KEY.public_key) != CID.for_data(DAG_CBOR, KEY.public_key).digest


def test_a_first_valid_record_is_accepted_and_the_same_bytes_again_are_a_no_op() -> None:
    assert accept_record(None, RKEY, signed(1)).seq == 1
    assert accept_record(signed(1), RKEY, signed(1)) is None
    assert accept_record(signed(1), RKEY, signed(2)).seq == 2


@pytest.mark.parametrize("held,seq", [(3, 2), (3, 3)])
def test_a_lower_or_equal_sequence_is_refused(held: int, seq: int) -> None:
    other_time = RootRecord.sign(KEY, seq, ROOT, 5).encode()  # equal seq, other bytes
    with pytest.raises(InvalidRecordError, match="sequence number"):
        accept_record(signed(held), RKEY, other_time)


def test_a_forged_signature_is_refused() -> None:
    good = RootRecord.decode(signed(5))
    forged = RootRecord(good.public_key, 6, good.root, good.time_ns, bytes(64)).encode()
    with pytest.raises(InvalidRecordError, match="signature"):
        accept_record(signed(1), RKEY, forged)


def test_a_record_of_another_key_under_this_key_is_refused() -> None:
    with pytest.raises(InvalidRecordError, match="its own key"):
        accept_record(None, RKEY, signed(99, OTHER))


@pytest.mark.parametrize("data", [b"", b"\xa0", b"garbage" * 10, b"\x00" * 2000])
def test_malformed_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidRecordError):
        accept_record(None, RKEY, data)


def test_newest_record_skips_forged_and_foreign_ones() -> None:
    good = RootRecord.decode(signed(2))
    forged = RootRecord(good.public_key, 7, good.root, good.time_ns, bytes(64)).encode()
    best = newest_record([signed(1), forged, signed(9, OTHER), signed(2), b"junk"], KEY.public_key)
    assert best is not None and best.seq == 2
    assert newest_record([], KEY.public_key) is None


def test_ns_paths_are_split_and_bad_keys_are_refused() -> None:
    hexkey = KEY.public_key.hex()
    assert split_ns_path(f"/ns/{hexkey}/docs/x") == (KEY.public_key, "/docs/x")
    assert split_ns_path(f"/ns/{hexkey}") == (KEY.public_key, "/")
    assert split_ns_path("/docs/x") is None
    with pytest.raises(InvalidRecordError):
        split_ns_path("/ns/abc/x")
    with pytest.raises(InvalidRecordError):
        parse_public_key("zz" * 32)


def test_a_remote_namespace_reads_the_newest_record_and_refuses_writes(tmp_path: Path) -> None:
    with LocalStore.open(tmp_path / "r") as store:
        ns = Namespace(store)
        ns.mkdir("/docs")
        root = ns.current()
        record = store.roots(newest_first=True, limit=1)[0].record
        key = store.namespace_key().public_key
        remote = RemoteNamespace(store.blocks, key, [record, b"junk"])
        assert remote.current().seq == root.seq
        assert [e.name for e in remote.list("/")] == ["docs"]
        with pytest.raises(ReadOnlyNamespaceError):
            remote.mkdir("/other")
        with pytest.raises(PathNotFoundError):
            RemoteNamespace(store.blocks, key, [signed(3)])  # KEY's record, not this key's


def test_held_records_are_bounded_per_sender(tmp_path: Path) -> None:
    with LocalStore.open(tmp_path / "r") as store:
        for i in range(MAX_RECORDS_PER_SENDER):
            store.records.put(i.to_bytes(32, "big"), b"r", 1, b"s" * 32)
        with pytest.raises(StorageQuotaError):
            store.records.put(b"\xff" * 32, b"r", 1, b"s" * 32)
        store.records.put((0).to_bytes(32, "big"), b"r2", 2, b"s" * 32)  # a replacement still fits
        store.records.put(b"\xff" * 32, b"r", 1, b"t" * 32)  # another sender too


def test_a_held_record_expires_unless_it_is_put_again_within_its_lifetime(tmp_path: Path) -> None:
    day = 86400 * 10**9
    clock = [100 * day]
    with LocalStore.open(tmp_path / "r") as store:
        store.records.now_ns = lambda: clock[0]
        store.records.put(b"\x01" * 32, b"kept", 1, b"s" * 32)
        store.records.put(b"\x02" * 32, b"forgotten", 1, b"s" * 32)
        clock[0] += day
        store.records.renew(b"\x01" * 32)  # republished a day later
        clock[0] += int(RECORD_LIFETIME * 10**9) - day // 2
        assert store.records.expire() == 1
        assert store.records.get(b"\x01" * 32) == b"kept"
        assert store.records.get(b"\x02" * 32) is None
    with LocalStore.open(tmp_path / "r") as store:  # durable
        assert store.records.get(b"\x02" * 32) is None and len(store.records) == 1


def test_a_peer_putting_the_same_record_again_renews_its_lifetime(tmp_path: Path) -> None:
    clock = [1_000 * 10**9]
    with LocalStore.open(tmp_path / "r") as store:
        store.records.now_ns = lambda: clock[0]

        async def in_thread(fn, *args):
            return fn(*args)

        keeper = StoreRecords(lambda: store, in_thread)
        trio.run(keeper.put_record, RKEY, signed(1), b"s" * 32)
        clock[0] += int(RECORD_LIFETIME * 10**9) - 10**9
        trio.run(keeper.put_record, RKEY, signed(1), b"t" * 32)  # a republish, a day and more later
        clock[0] += 2 * 10**9
        assert store.records.expire() == 0
        assert store.records.get(RKEY) == signed(1)


def test_a_version_2_repository_opens_and_gains_the_records_table(tmp_path: Path) -> None:
    LocalStore.open(tmp_path / "r").close()
    db = sqlite3.connect(tmp_path / "r" / "meta.sqlite")
    db.execute("DROP TABLE records")
    db.execute("DROP TABLE settings")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with LocalStore.open(tmp_path / "r") as store:
        assert store.records.get(RKEY) is None
        assert store.records.publish_interval() is None
        store.records.set_publish_interval(2.5)
        assert store.records.publish_interval() == 2.5


def test_the_driver_answers_put_record_by_the_acceptance_rule(tmp_path: Path) -> None:
    async def main() -> list[msg.Response]:
        with LocalStore.open(tmp_path / "r") as store:
            lock = trio.Lock()

            async def in_thread(fn, *args):  # type: ignore[no-untyped-def]
                async with lock:
                    return fn(*args)

            identity = Identity.generate()
            driver = DhtDriver(identity, RoutingTable(id_from_bytes(identity.node_id)),
                               records=StoreRecords(lambda: store, in_thread))
            sender = 12345
            good = RootRecord.decode(signed(2))
            forged = RootRecord(good.public_key, 8, good.root, good.time_ns, bytes(64)).encode()
            answers = [await driver.answer(sender, request) for request in [
                msg.PutRecord(RKEY, signed(2)),
                msg.PutRecord(RKEY, signed(2)),       # republish: ok
                msg.PutRecord(RKEY, signed(1)),       # older
                msg.PutRecord(RKEY, forged),
                msg.PutRecord(RKEY, signed(5, OTHER)),
                msg.PutRecord(RKEY, b"junk"),
                msg.GetRecord(RKEY),
                msg.GetRecord(b"short"),
            ]]
            return answers

    answers = trio.run(main)
    kinds = [a.code if isinstance(a, msg.Error) else a.TYPE for a in answers]
    assert kinds == ["ok", "ok", "stale", "invalid", "invalid", "invalid", "record", "invalid"]
    assert answers[6].record == signed(2)
