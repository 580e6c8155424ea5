"""Strict DAG-CBOR: one encoding per value, and nothing else accepted."""

from __future__ import annotations

import subprocess
import sys

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas import dagcbor
from cas.cid import CID, RAW
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


def test_encoding_a_cid_does_not_load_cbor2s_optional_encoders() -> None:
    # cbor2 imports email.mime, decimal and more the first time it meets a
    # type it has no encoder for; a CID must never send it there (a daemon
    # paid ~26 ms on its first store).
    script = (
        "import sys\n"
        "from cas import dagcbor\n"
        "from cas.blocks import Block\n"
        "from cas.cid import RAW\n"
        "dagcbor.encode({'cids': [Block.of(RAW, b'x').cid], 'n': 1})\n"
        "print(sorted(m for m in ('email.mime.text', 'decimal', 'fractions', 'uuid') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_encoding_a_float_is_a_programming_error():
    with pytest.raises(TypeError):
        dagcbor.encode({"x": 0.5})


# -- the fast strict codec against the plain reference ----------------------------
#
# dagcbor proves canonical form with one walk (types and key order) and a
# plain re-encoding. The reference below is the obvious construction it
# replaced: check the types, encode with cbor2's canonical mode, compare.
# Both must accept exactly the same bytes, give the same values and encode
# every value to the same bytes.


def _reference_check(value, depth=0):
    if depth > 64:
        raise TypeError("nesting is too deep")
    if value is None or isinstance(value, (bool, str, bytes, CID)):
        return
    if isinstance(value, int):
        if not -(2**64) <= value <= 2**64 - 1:
            raise TypeError("integer out of the 64-bit range")
        return
    if isinstance(value, list):
        for item in value:
            _reference_check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("map keys must be text strings")
            _reference_check(item, depth + 1)
        return
    raise TypeError(f"{type(value).__name__} is not allowed")


def _reference_cid(encoder, cid):
    # Named in ``encoders``: a CID is a named tuple, which cbor2 would
    # otherwise write as an array before it ever asked ``default``.
    encoder.encode(cbor2.CBORTag(42, b"\x00" + bytes(cid)))


def _reference_encode(value):
    _reference_check(value)
    return cbor2.dumps(value, canonical=True, encoders={CID: _reference_cid})


def _reference_decode(data):
    try:
        value = cbor2.loads(data, tag_hook=dagcbor._tag_hook)
    except InvalidBlockError:
        raise
    except Exception as exc:
        raise InvalidBlockError(str(exc)) from None
    try:
        canonical = _reference_encode(value)
    except TypeError as exc:
        raise InvalidBlockError(str(exc)) from None
    if canonical != bytes(data):
        raise InvalidBlockError("not canonical")
    return value


def _outcome(function, data):
    try:
        return ("value", function(data))
    except Exception as exc:  # the exception's type is what must agree
        return ("raised", type(exc))


# Keys that sort differently by length-first UTF-8 order than by str order:
# multi-byte characters make a short str a long key.
KEYS = st.sampled_from(["", "a", "b", "aa", "ab", "z", "é", "ée", "ab\x00", "ÿ", "日本", "\U0001f600"]) \
    | st.text(max_size=6)

unordered_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64) - 2, max_value=2**64 + 1)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.just(LINK),
    # Dicts are built from pairs in whatever order hypothesis draws them, so
    # insertion order is often not canonical order.
    lambda children: st.lists(children, max_size=4)
    | st.lists(st.tuples(KEYS, children), max_size=5).map(dict),
    max_leaves=25,
)


def _nested(depth, leaf, kinds="ld"):
    value = leaf
    for i in range(depth):
        value = [value] if kinds[i % len(kinds)] == "l" else {"k": value}
    return value


NESTED = [_nested(depth, leaf, kinds) for depth in (63, 64, 65) for leaf in (1, [], {})
          for kinds in ("ld", "l", "d")]


@given(unordered_values)
def test_encode_agrees_with_the_canonical_reference(value):
    assert _outcome(dagcbor.encode, value) == _outcome(_reference_encode, value)


@pytest.mark.parametrize("value", [
    1.0, {"x": [0.5]}, (1, 2), {1: 2}, {"a": {b"k": 1}}, bytearray(b"x"), 2**64, -(2**64) - 1,
    *NESTED,
])
def test_encode_rejects_what_the_reference_rejects(value):
    assert _outcome(dagcbor.encode, value) == _outcome(_reference_encode, value)


# Raw CBOR items, built byte by byte so that every way of breaking the
# canonical rules is reachable: wider heads than needed, indefinite lengths,
# keys out of order or repeated, floats, simple values, foreign tags, links
# with and without the 0x00 prefix, invalid UTF-8, truncation, trailing bytes.


@st.composite
def _head(draw, major, n):
    if n < 24 and draw(st.booleans()):
        return bytes([major << 5 | n])
    widths = [w for w, limit in ((1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF), (8, 2**64 - 1)) if n <= limit]
    minimal = n >= 24 or not draw(st.booleans())  # mostly the shortest head
    width = widths[0] if minimal and n >= 24 else draw(st.sampled_from(widths))
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | info]) + n.to_bytes(width, "big")


def _key_order(encoded_key):
    return (len(encoded_key), encoded_key)


@st.composite
def _text_item(draw):
    raw = draw(KEYS).encode("utf-8")
    if draw(st.integers(0, 20)) == 0:
        raw += b"\xff"  # invalid UTF-8
    return draw(_head(3, len(raw))) + raw


def _container(children):
    @st.composite
    def array(draw):
        items = draw(st.lists(children, max_size=4))
        if draw(st.integers(0, 8)) == 0:
            return b"\x9f" + b"".join(items) + b"\xff"
        return draw(_head(4, len(items))) + b"".join(items)

    @st.composite
    def map_(draw):
        keys = draw(st.lists(_text_item() | children, max_size=4))
        if draw(st.integers(0, 3)):  # mostly in canonical order
            keys = sorted(keys, key=_key_order)
        pairs = [key + draw(children) for key in keys]
        if draw(st.integers(0, 8)) == 0:
            return b"\xbf" + b"".join(pairs) + b"\xff"
        return draw(_head(5, len(pairs))) + b"".join(pairs)

    @st.composite
    def tagged(draw):
        tag = draw(st.sampled_from([42, 42, 42, 0, 1, 2, 3, 24, 99]))
        if tag == 42 and draw(st.booleans()):
            payload = b"\x00" + bytes(LINK) if draw(st.integers(0, 5)) else bytes(LINK)
            return draw(_head(6, tag)) + draw(_head(2, len(payload))) + payload
        return draw(_head(6, tag)) + draw(children)

    return array() | map_() | tagged()


@st.composite
def _scalar_item(draw):
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(_head(0, draw(st.integers(0, 2**64 - 1))))
    if kind == 1:
        return draw(_head(1, draw(st.integers(0, 2**64 - 1))))
    if kind == 2:
        raw = draw(st.binary(max_size=8))
        if draw(st.integers(0, 8)) == 0:
            return b"\x5f" + draw(_head(2, len(raw))) + raw + b"\xff"
        return draw(_head(2, len(raw))) + raw
    if kind == 3:
        return draw(_text_item())
    if kind == 4:
        return draw(st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xe0", b"\xf8\x20"]))
    if kind == 5:
        return draw(st.sampled_from([b"\xf9\x3c\x00", b"\xfa\x3f\x80\x00\x00",
                                     b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00"]))
    return cbor2.dumps(draw(st.integers(-(2**70), 2**70)))  # bignums beyond 64 bits


raw_items = st.recursive(_scalar_item(), _container, max_leaves=15)


@st.composite
def _damaged(draw):
    data = draw(raw_items)
    how = draw(st.integers(0, 4))
    if how == 1 and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == 2:
        return data + draw(st.binary(min_size=1, max_size=3))
    if how == 3 and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    return data


@settings(max_examples=1000)
@given(_damaged() | unordered_values.map(lambda v: cbor2.dumps(v, encoders={CID: _reference_cid})))
def test_decode_accepts_and_rejects_exactly_what_the_reference_does(data):
    assert _outcome(dagcbor.decode, data) == _outcome(_reference_decode, data)


@given(unordered_values.filter(lambda v: _outcome(_reference_encode, v)[0] == "value"))
def test_decode_agrees_with_the_reference_on_valid_encodings(value):
    data = _reference_encode(value)
    assert _outcome(dagcbor.decode, data) == ("value", value)


@pytest.mark.parametrize("value", NESTED)
def test_decode_nesting_limit_agrees_with_the_reference(value):
    data = cbor2.dumps(value, canonical=True)
    assert _outcome(dagcbor.decode, data) == _outcome(_reference_decode, data)


def test_the_noncanonical_decoder_takes_any_key_order_but_nothing_outside_the_data_model() -> None:
    """The control socket's decoder: keys out of order are fine (a local
    client), a float or a foreign tag is not."""
    out_of_order = cbor2.dumps({"args": {}, "op": 1})  # canonical order puts the shorter key first
    with pytest.raises(InvalidBlockError):
        dagcbor.decode(out_of_order)
    assert dagcbor.decode_noncanonical(out_of_order) == {"op": 1, "args": {}}
    with pytest.raises(InvalidBlockError):
        dagcbor.decode_noncanonical(cbor2.dumps({"x": 1.5}))
    with pytest.raises(InvalidBlockError):
        dagcbor.decode_noncanonical(cbor2.dumps(cbor2.CBORTag(99, b"x")))
    with pytest.raises(InvalidBlockError):
        dagcbor.decode_noncanonical(b"\xa1")  # truncated


# -- the shortcut for messages that carry a block --------------------------------------


def _full_reencode_accepts(value: object, data: bytes) -> bool:
    return cbor2.dumps(value, encoders={CID: _reference_cid}) == data


_PAYLOAD_MAPS = st.lists(
    st.tuples(st.text(min_size=1, max_size=6),
              st.one_of(st.integers(0, 2**40), st.text(max_size=8), st.binary(max_size=8),
                        st.binary(min_size=dagcbor._PAYLOAD_MIN, max_size=dagcbor._PAYLOAD_MIN + 300),
                        # a batch of blocks: byte strings of any size, up to 30 of them
                        st.lists(st.one_of(st.binary(max_size=30), st.binary(min_size=250, max_size=1200)),
                                 min_size=1, max_size=30))),
    min_size=1, max_size=6, unique_by=lambda kv: kv[0],
)


@settings(max_examples=200, deadline=None)
@given(entries=_PAYLOAD_MAPS, edit=st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
       kind=st.sampled_from(["same", "flip", "append", "truncate", "long_head"]))
def test_checking_a_block_carrying_map_by_position_agrees_with_re_encoding_it(entries, edit, kind) -> None:
    """Whatever the bytes (canonical, a byte changed anywhere, trailing
    bytes, cut short, the payload's length written in a longer form), the
    shortcut accepts exactly what a full re-encoding would."""
    value = dict(sorted(entries, key=lambda kv: (len(kv[0].encode()), kv[0].encode())))
    data = cbor2.dumps(value)
    where, byte = edit
    if kind == "flip":
        i = where % len(data)
        data = data[:i] + bytes([byte]) + data[i + 1:]
    elif kind == "append":
        data += bytes([byte])
    elif kind == "truncate":
        data = data[: where % len(data)]
    elif kind == "long_head":
        big = max((v for v in value.values() if type(v) is bytes), key=len, default=b"")
        if len(big) >= dagcbor._PAYLOAD_MIN:  # 2-byte length form rewritten as 4-byte: not minimal
            short, long_ = b"\x59" + len(big).to_bytes(2, "big"), b"\x5a" + len(big).to_bytes(4, "big")
            data = data.replace(short + big, long_ + big, 1)
    try:
        parsed = dagcbor.decode_unchecked(data)
    except InvalidBlockError:
        return  # not even CBOR: never reaches the check
    expected = _full_reencode_accepts(parsed, data)
    try:
        dagcbor.check_reencodes(parsed, data)
        accepted = True
    except InvalidBlockError:
        accepted = False
    assert accepted == expected


@settings(max_examples=200, deadline=None)
@given(entries=_PAYLOAD_MAPS)
def test_encoding_around_a_payload_joins_to_the_plain_encoding(entries) -> None:
    value = dict(sorted(entries, key=lambda kv: (len(kv[0].encode()), kv[0].encode())))
    parts = dagcbor.encode_unchecked_parts(value)
    assert b"".join(parts) == dagcbor.encode_unchecked(value)
    big = [v for v in value.values() if type(v) is bytes and len(v) >= dagcbor._PAYLOAD_MIN]
    if big and len(parts) == 3:  # the payload itself is handed back, not a copy of it
        assert any(part is max(big, key=len) for part in parts)
    if len(parts) > 3:  # a batch: its byte strings themselves, at the odd places
        batch = next(v for v in value.values() if type(v) is list and all(p is b for p, b in zip(parts[1::2], v)))
        assert len(batch) == len(parts) // 2
