"""Message schemas: round trips, strict shapes, and fuzzing of decode."""

from __future__ import annotations

import os
import random

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas import dagcbor
from cas.cid import CID, DAG_CBOR, RAW
from cas.errors import LocalProtocolError, MalformedMessageError, RemoteProtocolError
from cas.net import messages as m
from cas.net.messages import MAX_BLOCK_SIZE, MAX_HAVE_CIDS, MAX_MESSAGE_SIZE, MAX_PEERS, decode, encode

CID_A = CID.for_data(RAW, b"a")
CID_B = CID.for_data(DAG_CBOR, b"b")
PEER = m.PeerInfo(b"\x01" * 32, "192.0.2.7", 4001)
PEER_WIRE = {"id": b"\x01" * 32, "host": "192.0.2.7", "port": 4001}

EXAMPLES = [
    m.Hello(version=1, agent="cas/0.1", listen_port=4001),
    m.Hello(agent="cas/0.2", listen_port=4710, listen_host="203.0.113.7"),
    m.Hello(),
    m.Ping(request_id=1),
    m.Pong(request_id=1),
    m.FindNode(b"\x02" * 32, request_id=7),
    m.Nodes((PEER,) * MAX_PEERS, request_id=7),
    m.Nodes((), request_id=8),
    m.FindBlock(CID_A, request_id=2**32 - 1),
    m.Block(os.urandom(1000), request_id=3),
    m.Providers((PEER,), (PEER,) * MAX_PEERS, request_id=3),
    m.StoreBlocks((CID_B,), (b"\x00" * MAX_BLOCK_SIZE,), request_id=4),
    m.StoreBlocks((CID_A, CID_B), (b"x", b""), request_id=4),  # tiny blocks: no payload shortcut
    m.StoreBlocks((CID_A, CID_B), (b"x", b"y"), (0, m.MAX_LEASE), request_id=4),  # a lease per block
    # as many blocks as one message may carry, as many bytes as fit
    m.StoreBlocks((CID_A,) * m.MAX_STORE_BLOCKS,
                  (b"\x01" * (m.MAX_STORE_BYTES // m.MAX_STORE_BLOCKS),) * m.MAX_STORE_BLOCKS, request_id=4),
    m.Stored(("ok", "full"), "storage for other nodes' blocks is full", request_id=4),
    m.Ok(request_id=4),
    m.Have((CID_A, CID_B) * (MAX_HAVE_CIDS // 2), request_id=5),
    m.Have((CID_A,), lease=30 * 86400, request_id=5),  # and renew
    m.HaveResult((True, False, True), request_id=5),
    m.DialBack(4710, request_id=12),
    m.DialBackResult(False, request_id=12),
    m.PutRecord(b"k" * 32, b"signed record", request_id=6),
    m.GetRecord(b"k" * 32, request_id=9),
    m.Record(b"signed record", (PEER,), request_id=9),
    m.Record(None, request_id=10),
    m.Error("busy", "rate limited, retry later", request_id=11),
    # hosts near and at the limit: 126 two-byte characters (252 bytes), 253 ASCII ones
    m.Nodes((m.PeerInfo(b"\x03" * 32, "é" * 126, 1), m.PeerInfo(b"\x04" * 32, "a" * 253, 65535)), request_id=8),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda msg: type(msg).__name__)
def test_every_message_type_round_trips(message: m.Message) -> None:
    data = encode(message)
    assert len(data) <= MAX_MESSAGE_SIZE
    assert decode(data) == message
    assert encode(decode(data)) == data


def test_every_registered_type_has_an_example() -> None:
    assert {type(msg) for msg in EXAMPLES} == set(m.MESSAGE_TYPES.values())


def test_wire_form_is_a_flat_map_with_type_and_id() -> None:
    assert dagcbor.decode(encode(m.FindNode(b"\x02" * 32, request_id=7))) == {
        "t": "find_node", "id": 7, "target": b"\x02" * 32,
    }
    assert dagcbor.decode(encode(m.Hello(agent="x"))) == {
        "t": "hello", "version": m.PROTOCOL_VERSION, "agent": "x", "port": None, "host": None,
    }


def test_requests_and_responses_are_classified() -> None:
    assert m.is_request(m.Ping()) and not m.is_response(m.Ping())
    assert m.is_response(m.Nodes(())) and not m.is_request(m.Hello())
    assert m.with_request_id(m.Ping(), 5) == m.Ping(request_id=5)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda msg: type(msg).__name__)
def test_with_request_id_copies_the_message_and_leaves_the_original_alone(message: m.Message) -> None:
    import dataclasses

    before = dataclasses.replace(message)  # type: ignore[type-var]
    tagged = m.with_request_id(message, 77)
    assert tagged == dataclasses.replace(message, request_id=77)  # type: ignore[type-var]
    assert type(tagged) is type(message) and tagged.request_id == 77
    assert message == before


@pytest.mark.parametrize(
    "bad",
    [
        m.FindNode(b"short"),
        m.Block(b"x" * (MAX_BLOCK_SIZE + 1)),
        m.Nodes((PEER,) * (MAX_PEERS + 1)),
        m.Ping(request_id=-1),
        m.Ping(request_id=2**32),
        m.Nodes((m.PeerInfo(b"\x01" * 32, "h", 0),)),
        m.Error("x" * 33),
        m.HaveResult((1,)),  # type: ignore[arg-type]
    ],
)
def test_encoding_an_out_of_bounds_message_is_a_local_error(bad: m.Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode(bad)


_peers = st.lists(
    st.builds(m.PeerInfo, st.binary(min_size=32, max_size=32),
              st.one_of(st.just("127.0.0.1"), st.text(max_size=63)),
              st.one_of(st.sampled_from([1, 23, 24, 255, 256, 65535]), st.integers(1, 65535))),
    max_size=MAX_PEERS,
).map(tuple)
_request_ids = st.one_of(st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1]),
                         st.integers(0, 2**32 - 1))


@given(_peers, _request_ids)
@settings(max_examples=300)
def test_nodes_put_together_from_remembered_peers_is_the_plain_encoding_of_the_map(
        peers: tuple[m.PeerInfo, ...], request_id: int) -> None:
    message = m.Nodes(peers, request_id=request_id)
    expected = cbor2.dumps({"t": "nodes", "id": request_id, "peers": [
        {"id": p.node_id, "host": p.host, "port": p.port} for p in peers]})
    assert encode(message) == expected
    assert encode(message) == expected  # again, from the remembered peers
    assert decode(expected) == message


@given(st.binary(min_size=32, max_size=32), _request_ids)
@settings(max_examples=300)
def test_find_node_read_and_written_by_position_is_exactly_its_canonical_encoding(
        target: bytes, request_id: int) -> None:
    message = m.FindNode(target, request_id=request_id)
    expected = cbor2.dumps({"t": "find_node", "id": request_id, "target": target})
    assert encode(message) == expected
    assert decode(expected) == message
    # The same id in a longer head than it needs is not canonical: refused as before.
    longer = {0: b"\x18", 1: b"\x19\x00", 2: b"\x1a\x00\x00"}
    head = expected[len(m._FIND_NODE_START):-len(m._FIND_NODE_TARGET) - 32]
    if len(head) <= 3 and head[0] < 0x1a:
        size = 0 if head[0] < 24 else head[0] - 23
        padded = longer[size] + (head if size == 0 else head[1:])
        with pytest.raises(MalformedMessageError):
            decode(m._FIND_NODE_START + padded + m._FIND_NODE_TARGET + target)


def _wire(**fields: object) -> bytes:
    return dagcbor.encode(fields)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        dagcbor.encode([1, 2]),
        dagcbor.encode("ping"),
        _wire(id=1),
        _wire(t=5, id=1),
        _wire(t="nope", id=1),
        _wire(t="ping"),
        _wire(t="ping", id=1, extra=True),
        _wire(t="ping", id=-1),
        _wire(t="ping", id=2**40),
        _wire(t="ping", id="1"),
        _wire(t="ping", id=True),
        _wire(t="find_node", id=1, target=b"\x00" * 31),
        _wire(t="find_node", id=1, target="00" * 32),
        _wire(t="find_block", id=1, cid=bytes(CID_A)),
        _wire(t="block", id=1, data=b"x" * (MAX_BLOCK_SIZE + 1)),
        _wire(t="nodes", id=1, peers=[{"id": b"\x01" * 32, "host": "h"}]),
        _wire(t="nodes", id=1, peers=[{"id": b"\x01" * 32, "host": "h", "port": 70000}]),
        _wire(t="nodes", id=1, peers={"a": 1}),
        _wire(t="nodes", id=1, peers=[{"id": b"\x01" * 32, "host": "é" * 127, "port": 1}]),  # 254 bytes
        _wire(t="nodes", id=1, peers=[{"id": b"\x01" * 32, "host": "a" * 254, "port": 1}]),
        _wire(t="have_result", id=1, present=[1, 0]),
        _wire(t="have", id=1, cids=[CID_A] * (MAX_HAVE_CIDS + 1)),
        _wire(t="hello", id=1, version=1, agent="", port=None),
        _wire(t="hello", version=1, agent="a" * 65, port=None),
        _wire(t="record", id=1, record=5, peers=[]),
        bytes.fromhex("a2617401626964") + b"\x00",  # not canonical / truncated
        b"\xa2\x62id\x01\x61t\x64ping",  # keys out of canonical order
    ],
)
def test_malformed_input_raises_malformed_message_error(data: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        decode(data)


def test_oversized_input_is_refused_before_decoding() -> None:
    with pytest.raises(MalformedMessageError, match="exceeds"):
        decode(b"\x00" * (MAX_MESSAGE_SIZE + 1))


# -- fuzzing: only RemoteProtocolError ever escapes decode -----------------------------

_fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_cbor_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.text(max_size=20),
    st.binary(max_size=40), st.just(CID_A),
)
_cbor_values = st.recursive(
    _cbor_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
_field_names = st.sampled_from(
    ["t", "id", "target", "peers", "cid", "data", "cids", "present", "key", "record",
     "code", "message", "version", "agent", "port", "host"]
)
_shaped = st.builds(
    lambda t, rest: {"t": t, **rest},
    st.one_of(st.sampled_from(sorted(m.MESSAGE_TYPES)), st.text(max_size=10)),
    st.dictionaries(_field_names, _cbor_values, max_size=5),
)


def _only_remote_errors(data: bytes) -> None:
    try:
        message = decode(data)
    except RemoteProtocolError:
        return
    assert encode(message) == data  # anything accepted is canonical and re-encodable


@_fuzz
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    _only_remote_errors(data)


@_fuzz
@given(_shaped)
def test_fuzz_valid_cbor_of_wrong_shapes(value: dict) -> None:
    _only_remote_errors(dagcbor.encode(value))


@_fuzz
@given(st.sampled_from(EXAMPLES[:9]), st.data())
def test_fuzz_truncated_and_bit_flipped_messages(message: m.Message, data: st.DataObject) -> None:
    wire = bytearray(encode(message))
    cut = data.draw(st.integers(0, len(wire) - 1))
    _only_remote_errors(bytes(wire[:cut]))
    flip = data.draw(st.integers(0, len(wire) * 8 - 1))
    wire[flip // 8] ^= 1 << (flip % 8)
    _only_remote_errors(bytes(wire))


# -- decode is exactly as strict as strict DAG-CBOR followed by the shape checks ---------


def _reference_decode(data: bytes) -> m.Message | None:
    """The obvious construction decode() must agree with: strict DAG-CBOR
    (dagcbor.decode, which proves the bytes canonical on its own), then the
    message's exact key set and every field's codec."""
    if len(data) > MAX_MESSAGE_SIZE:
        return None
    try:
        wire = dagcbor.decode(data)
    except Exception:
        return None
    if type(wire) is not dict or type(wire.get("t")) is not str or wire["t"] not in m.MESSAGE_TYPES:
        return None
    cls = m.MESSAGE_TYPES[wire["t"]]
    keys = {"t", *(key for _, key, _ in cls.FIELDS)} | ({"id"} if cls.HAS_ID else set())
    if set(wire) != keys:
        return None
    try:
        values = {name: codec.decode(wire[key]) for name, key, codec in cls.FIELDS}
        if cls.HAS_ID:
            values["request_id"] = m._REQUEST_ID.decode(wire["id"])
    except ValueError:
        return None
    return cls(**values)


def _agrees_with_reference(data: bytes) -> None:
    try:
        got: m.Message | None = decode(data)
    except MalformedMessageError:
        got = None
    assert got == _reference_decode(data)


def _shuffled(value: object, rng: random.Random) -> object:
    """The same value with every map's keys in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


def _plain(value: object) -> bytes:
    """cbor2's plain encoding: map keys in whatever order the dict holds."""
    return cbor2.dumps(value, default=lambda enc, cid: enc.encode(cbor2.CBORTag(42, b"\x00" + bytes(cid))))


@_fuzz
@given(st.sampled_from(EXAMPLES[:9] + EXAMPLES[12:]), st.randoms(use_true_random=False), st.data())
def test_decode_accepts_exactly_what_strict_dag_cbor_plus_the_shape_accepts(
    message: m.Message, rng: random.Random, data: st.DataObject
) -> None:
    wire = dagcbor.decode(encode(message))
    if isinstance(message, m.Nodes) and message.peers:  # peers of many shapes
        wire["peers"] = [dict(PEER_WIRE, port=rng.choice([1, 4001, 65535, 0, 70000]))] * rng.randint(1, 3)
    _agrees_with_reference(_plain(_shuffled(wire, rng)))  # keys in any order
    encoded = bytearray(_plain(wire))
    flip = data.draw(st.integers(0, len(encoded) * 8 - 1))
    encoded[flip // 8] ^= 1 << (flip % 8)
    _agrees_with_reference(bytes(encoded))
    _agrees_with_reference(bytes(encoded[: data.draw(st.integers(0, len(encoded)))]))


@_fuzz
@given(_shaped, st.randoms(use_true_random=False))
def test_decode_agrees_with_the_reference_on_shaped_cbor_in_any_key_order(value: dict, rng: random.Random) -> None:
    _agrees_with_reference(dagcbor.encode(value))
    _agrees_with_reference(_plain(_shuffled(value, rng)))


@pytest.mark.parametrize(
    "data",
    [
        # a peer's keys out of canonical order, otherwise valid
        b"\xa3\x61t\x65nodes\x62id\x01\x65peers\x81\xa3\x64host\x61h\x62id\x58\x20" + b"\x01" * 32
        + b"\x64port\x19\x0f\xa1",
        # a request id written in a wider head than needed (0x18 0x01 for 1)
        b"\xa2\x61t\x64ping\x62id\x18\x01",
        # a duplicate key
        b"\xa3\x61t\x64ping\x62id\x01\x62id\x01",
        # a bignum (tag 2) where a request id belongs
        b"\xa2\x61t\x64ping\x62id\xc2\x41\x01",
        # NODES with a peer's port in a wider head than needed (0x19 0x00 0x05 for 5)
        b"\xa3\x61t\x65nodes\x62id\x01\x65peers\x81\xa3\x62id\x58\x20" + b"\x01" * 32
        + b"\x64host\x61h\x64port\x19\x00\x05",
        # NODES with its peers in an indefinite-length array
        b"\xa3\x61t\x65nodes\x62id\x01\x65peers\x9f\xa3\x62id\x58\x20" + b"\x01" * 32
        + b"\x64host\x61h\x64port\x05\xff",
        # NODES with trailing bytes
        b"\xa3\x61t\x65nodes\x62id\x01\x65peers\x80\x00",
        # FIND_NODE with its target's length in a wider head than needed
        b"\xa3\x61t\x69find_node\x62id\x01\x66target\x59\x00\x20" + b"\x01" * 32,
    ],
)
def test_non_canonical_messages_are_malformed(data: bytes) -> None:
    assert _reference_decode(data) is None
    with pytest.raises(MalformedMessageError):
        decode(data)


def test_docs_network_md_states_the_wire_example_and_limits_the_code_uses() -> None:
    from pathlib import Path

    from cas.net import connection as c
    from cas.net.framing import MAX_FRAME_SIZE

    doc = (Path(__file__).resolve().parent.parent / "docs" / "network.md").read_text()
    assert encode(m.Ping(request_id=1)).hex() == "a261746470696e6762696401"
    assert "a2 61 74 64 70696e67 62 6964 01" in doc
    assert f"{MAX_FRAME_SIZE:,}".replace(",", " ") in doc
    for name, value in [("HANDSHAKE_TIMEOUT", "10 s"), ("IDLE_TIMEOUT", "120 s"),
                        ("REQUEST_TIMEOUT", "30 s"), ("MAX_STRIKES", "16"),
                        ("MAX_CONCURRENT_REQUESTS", "16"), ("MAX_PENDING_REQUESTS", "256")]:
        assert f"| `{name}` | {value} |" in doc
        assert str(int(getattr(c, name))) == value.split()[0]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda msg: type(msg).__name__)
def test_encoding_in_parts_joins_to_the_one_encoding(message: m.Message) -> None:
    parts = m.encode_parts(message)
    assert b"".join(parts) == encode(message)
    if isinstance(message, m.Block) and len(message.data) >= 4096:
        assert len(parts) == 3 and parts[1] is message.data  # the block itself, not a copy
    if isinstance(message, m.StoreBlocks) and sum(map(len, message.data)) >= 4096:
        assert parts[1::2] == list(message.data)
        assert all(part is block for part, block in zip(parts[1::2], message.data))


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda msg: type(msg).__name__)
def test_a_message_decodes_the_same_from_a_bytearray(message: m.Message) -> None:
    assert decode(bytearray(encode(message))) == message


# -- STORE_BLOCKS read by position ----------------------------------------------------

_store_blocks_messages = st.builds(
    lambda blocks, leases, request_id: m.StoreBlocks(
        tuple(CID.for_data(RAW, b) for b in blocks), tuple(blocks),
        tuple(leases[: len(blocks)]) if len(leases) >= len(blocks) else (), request_id=request_id),
    st.lists(st.binary(max_size=40), min_size=1, max_size=5),  # small: most bytes are structure
    st.lists(st.integers(0, m.MAX_LEASE), max_size=5),  # enough for every block, or none sent
    _request_ids,
)


def test_a_large_store_blocks_is_read_by_position_with_its_blocks_left_in_place() -> None:
    blocks = [os.urandom(100_000), os.urandom(3), os.urandom(300_000)]
    message = m.StoreBlocks(tuple(CID.for_data(RAW, b) for b in blocks), tuple(blocks), request_id=77)
    received = bytearray(encode(message))
    got = decode(received)
    assert got == message
    assert all(type(d) is memoryview and d.obj is received for d in got.data)  # not copied
    assert [bytes(d) for d in got.data] == blocks


@given(_store_blocks_messages, st.data())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_store_blocks_by_position_accepts_exactly_what_the_general_decoder_accepts(
        message: m.StoreBlocks, data: st.DataObject) -> None:
    wire = bytearray(encode(message))
    assert m._decode_store_blocks(memoryview(wire)) == message  # the canonical bytes: accepted
    at = data.draw(st.integers(0, len(wire)))
    change = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    byte = data.draw(st.integers(0, 255))
    if change == "replace" and at < len(wire):
        wire[at] = byte
    elif change == "insert":
        wire[at:at] = bytes([byte])
    elif at < len(wire):
        del wire[at]
    by_position = m._decode_store_blocks(memoryview(wire))
    try:
        general = decode(bytes(wire))  # bytes: the general decoder only
    except MalformedMessageError:
        assert by_position is None
        return
    assert by_position is None or by_position == general


@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=m.MAX_STORE_BLOCKS), _request_ids,
       st.booleans(), st.integers(0, m.MAX_LEASE))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_store_blocks_written_by_position_is_exactly_the_plain_encoding_of_the_map(
        blocks: list[bytes], request_id: int, with_leases: bool, lease: int) -> None:
    leases = [lease + i for i in range(len(blocks))] if with_leases and lease + len(blocks) <= m.MAX_LEASE else []
    message = m.StoreBlocks(tuple(CID.for_data(RAW, b) for b in blocks), tuple(blocks), tuple(leases),
                            request_id=request_id)
    expected = dagcbor.encode({"t": "store_blocks", "id": request_id, "cids": list(message.cids),
                               "blocks": blocks, "leases": leases})
    parts = m.encode_parts(message)
    assert b"".join(parts) == expected == encode(message)
    assert all(part is block for part, block in zip(parts[1::2], blocks))  # not copied
