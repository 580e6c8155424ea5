"""Strict DAG-CBOR: the deterministic encoding of directories and records.

Encoding follows the DAG-CBOR rules (ipld/specs, "DAG-CBOR"): definite
lengths, smallest integer encodings, map keys that are text strings sorted
length-first then bytewise, links as tag 42 over ``0x00 || binary CID``. cas
adds one restriction of its own: no floats anywhere, because none of our
formats need them and they are the usual source of "same value, other bytes".

Decoding is the strict mirror: the bytes must be exactly what :func:`encode`
would produce for the decoded value (checked by one walk that proves the
types and the map key order, then a plain re-encoding that must give back
the same bytes, which rejects indefinite lengths, duplicate keys, non-minimal
integers and trailing bytes), and only the data model types below may
appear. Bytes from a peer or a disk go through :func:`decode` and nothing
else.

Value types: ``None``, ``bool``, ``int`` (64-bit range), ``str``, ``bytes``,
``list``, ``dict`` with ``str`` keys, and :class:`cas.cid.CID`.
"""

from __future__ import annotations

from typing import Any

import cbor2

from .cid import CID
from .errors import InvalidBlockError, InvalidCIDError

_CID_TAG = 42
_INT_MIN = -(1 << 64)
_INT_MAX = (1 << 64) - 1
_MAX_DEPTH = 64  # our nodes are two or three levels deep; bound recursion on input
# Exact types that need no check beyond their type (cbor2 decodes to exactly
# these; a subclass handed to encode() takes the isinstance path instead).
_PLAIN_SCALARS = frozenset({str, bytes, bool, type(None), CID})


def _encode_cid(encoder: Any, value: CID) -> None:
    encoder.encode(cbor2.CBORTag(_CID_TAG, b"\x00" + bytes(value)))


def _default(encoder: Any, value: Any) -> None:
    raise TypeError(f"DAG-CBOR cannot encode {type(value).__name__}")


_ENCODE: dict[str, Any] = {"encoders": {CID: _encode_cid}, "default": _default}
"""Keyword arguments of every ``cbor2.dumps`` here. A CID is found in
``encoders`` at once; left to ``default``, it first sends cbor2 through its
table of deferred types, which imports email.mime, decimal, fractions and
uuid on a process's first CID (26 ms: every daemon paid it on its first
store of an add)."""


def _check(value: Any, depth: int = 0) -> bool:
    """Raise TypeError unless ``value`` is within the data model above.

    Returns whether every map in ``value`` already has its keys in canonical
    order (length of the UTF-8 form first, then bytewise, no duplicates).
    :func:`encode` then needs no sorting and :func:`decode` uses it to prove
    key order without cbor2's canonical mode, which costs several times a
    plain encoding (measured: 64 µs against 10 µs for a 20-peer DHT answer).

    One call per container, not per value: scalars inside a list or a map
    are checked in the loop (``type(x) is`` for the exact types cbor2
    decodes to), and only anything else takes the general path below, so a
    FIND_NODE answer of 20 peers costs 22 calls rather than 84.
    """
    if depth > _MAX_DEPTH:
        raise TypeError("nesting is too deep")
    kind = type(value)
    if kind is dict:
        return _check_map(value, depth)
    if kind is list:
        if value and depth >= _MAX_DEPTH:
            raise TypeError("nesting is too deep")
        in_order = True
        for item in value:
            item_kind = type(item)
            if item_kind in _PLAIN_SCALARS:
                continue
            if item_kind is int:
                if not _INT_MIN <= item <= _INT_MAX:
                    raise TypeError("integer out of the 64-bit range")
                continue
            if not _check(item, depth + 1):
                in_order = False
        return in_order
    # Not a subclass of CID: CID is a named tuple, and cbor2 would write a
    # subclass of it as an array.
    if value is None or kind in _PLAIN_SCALARS or isinstance(value, (bool, str, bytes)):
        return True
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise TypeError("integer out of the 64-bit range")
        return True
    if isinstance(value, list):  # a subclass: only what encode() may be handed
        return all([_check(item, depth + 1) for item in value])
    if isinstance(value, dict):
        return _check_map(value, depth)
    raise TypeError(f"{kind.__name__} is not allowed in DAG-CBOR here")


def _check_map(value: dict[Any, Any], depth: int) -> bool:
    if value and depth >= _MAX_DEPTH:
        raise TypeError("nesting is too deep")
    in_order = True
    previous = ""
    previous_size = -1
    for key, item in value.items():
        if type(key) is not str and not isinstance(key, str):
            raise TypeError("map keys must be text strings")
        # Canonical order compares the keys' UTF-8 forms, shorter first. For
        # equal lengths, comparing the str values gives the same answer:
        # UTF-8 preserves code point order (and a text string from cbor2 is
        # valid UTF-8; one that is not cannot be encoded at all).
        size = len(key) if key.isascii() else len(key.encode("utf-8"))
        if size < previous_size or (size == previous_size and key <= previous):
            in_order = False
        previous, previous_size = key, size
        item_kind = type(item)
        if item_kind in _PLAIN_SCALARS:
            continue
        if item_kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise TypeError("integer out of the 64-bit range")
            continue
        if not _check(item, depth + 1):
            in_order = False
    return in_order


def encode(value: Any, *, check: bool = True) -> bytes:
    """Encode ``value`` canonically. Raises TypeError for values outside the
    data model (a programming error, not bad input).

    ``check=False`` skips the walk that proves the value is within the data
    model, for hot paths whose values come from validated records (directory
    entries); ``decode`` always checks.
    """
    if check and _check(value):
        # Every map is already in canonical order, so cbor2's plain encoding
        # is the canonical one (its canonical mode differs only in sorting
        # map keys and in shrinking floats, which the data model excludes).
        return cbor2.dumps(value, **_ENCODE)
    return cbor2.dumps(value, canonical=True, **_ENCODE)


def _tag_hook(*args: Any) -> Any:
    # cbor2 has called this as (decoder, tag) and, since 6.x, as
    # (tag, immutable); take the tag from wherever it is.
    tag = next(arg for arg in args if isinstance(arg, cbor2.CBORTag))
    if tag.tag != _CID_TAG:
        raise InvalidBlockError(f"tag {tag.tag} is not allowed in DAG-CBOR")
    payload = tag.value
    if not isinstance(payload, bytes) or not payload.startswith(b"\x00"):
        raise InvalidBlockError("a link (tag 42) must hold 0x00 followed by a binary CID")
    try:
        return CID.from_bytes(payload[1:])
    except InvalidCIDError as exc:
        raise InvalidBlockError(f"bad link: {exc}") from None


def decode_unchecked(data: bytes | memoryview) -> Any:
    """The first half of :func:`decode`: parse ``data`` (links resolved,
    foreign tags and malformed CBOR rejected with :class:`InvalidBlockError`)
    without proving it canonical or within the data model.

    For decoders that know the exact shape to expect (the network messages):
    their own shape check replaces the data-model walk, and
    :func:`check_reencodes` then completes the proof. Anything else must use
    :func:`decode`.
    """
    try:
        return cbor2.loads(data, tag_hook=_tag_hook)
    except InvalidBlockError:
        raise
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise InvalidBlockError(f"malformed DAG-CBOR: {exc}") from None


def decode_noncanonical(data: bytes | memoryview) -> Any:
    """Parse ``data`` and check it is within the data model, without proving
    it canonical (no re-encoding): for the control socket, whose client is
    the same user's own program and whose values are never hashed or
    stored as they came, so that a frame of 2 MiB of blocks is not copied
    twice more. Raises :class:`InvalidBlockError`."""
    value = decode_unchecked(data)
    try:
        _check(value)
    except TypeError as exc:
        raise InvalidBlockError(f"not valid DAG-CBOR: {exc}") from None
    return value


def check_reencodes(value: Any, data: bytes | memoryview) -> None:
    """The second half of :func:`decode`: raise :class:`InvalidBlockError`
    unless cbor2's plain encoding of ``value`` (parsed from ``data``) is
    exactly ``data``.

    That rejects non-minimal integers and lengths, indefinite lengths,
    duplicate keys, trailing bytes and non-canonical links. It proves
    ``data`` canonical only together with a check that ``value`` is within
    the data model with every map's keys in canonical order, which the
    caller must have made (:func:`decode` makes it with :func:`_check`).
    """
    try:
        if not _reencodes_around_payload(value, data):
            again = cbor2.dumps(value, **_ENCODE)
            if again != data:
                raise InvalidBlockError("DAG-CBOR is not in canonical form")
    except TypeError as exc:
        raise InvalidBlockError(f"not valid DAG-CBOR: {exc}") from None


_PAYLOAD_MIN = 4096
"""Byte strings this long in all, as a value of a message's top-level map
(a block) or as the items of an array there (a batch of blocks), are
checked by position instead of being encoded again."""


def _reencodes_around_payload(value: Any, data: bytes | bytearray | memoryview) -> bool:
    """:func:`check_reencodes` for a map carrying blocks (a STORE_BLOCKS, a
    block answer), without copying them twice more.

    Returns False when the shortcut does not apply (the caller re-encodes
    everything); True once ``data`` is proven to be the plain encoding of
    ``value``; raises InvalidBlockError when it is proven not to be.

    Why it is exact: the plain encoding of the map is the bytes before the
    payload (the map's head, the entries before it, its key and, for an
    array, the array's head), then each payload byte string after its own
    head, then the bytes after the payload (the entries after it).
    :func:`_split_around_payload` gives these pieces. Every piece but the
    byte strings' contents is compared with ``data`` at the offset the
    plain encoding puts it. A decoder reading ``data`` (as cbor2 did to
    produce ``value``) is then at that very offset before each piece, so it
    took each byte string from exactly where the plain encoding has it, and
    those bytes need no comparison; with the total length equal too,
    ``data`` is the plain encoding.
    """
    parts = _split_around_payload(value)
    if parts is None:
        return False
    at = 0
    for i, part in enumerate(parts):
        if i % 2 == 0 and data[at:at + len(part)] != part:  # structure (payloads sit at odd places)
            raise InvalidBlockError("DAG-CBOR is not in canonical form")
        at += len(part)
    if at != len(data):
        raise InvalidBlockError("DAG-CBOR is not in canonical form")
    return True


def encode_head(major: int, value: int) -> bytes:
    """The shortest CBOR head of major type ``major`` for ``value`` (a uint):
    the only one DAG-CBOR allows, and the one cbor2 writes. For encoders
    that write the structure around a payload themselves."""
    kind = major << 5
    if value < 24:
        return bytes((kind | value,))
    if value < 1 << 8:
        return bytes((kind | 24, value))
    if value < 1 << 16:
        return bytes((kind | 25,)) + value.to_bytes(2, "big")
    if value < 1 << 32:
        return bytes((kind | 26,)) + value.to_bytes(4, "big")
    return bytes((kind | 27,)) + value.to_bytes(8, "big")


def _split_around_payload(value: Any) -> list[bytes] | None:
    """The plain encoding of ``value`` in pieces, when it is a map with a
    value that is a byte string, or an array of byte strings, of at least
    ``_PAYLOAD_MIN`` bytes in all (the largest such is the payload):
    structure, payload, structure, payload, ..., structure — the payload
    byte strings themselves at the odd places, not copied. None otherwise."""
    if type(value) is not dict or len(value) >= 24:  # a one-byte map head only
        return None
    items = list(value.items())
    at, best = -1, _PAYLOAD_MIN - 1
    for i, (_, item) in enumerate(items):
        if type(item) is bytes:
            size = len(item)
        elif type(item) is list and item and all(type(x) is bytes for x in item):
            size = sum(len(x) for x in item)
        else:
            continue
        if size > best:
            at, best = i, size
    if at < 0:
        return None
    key, payload = items[at]
    before = bytes([0xA0 | len(items)]) + cbor2.dumps(dict(items[:at]), **_ENCODE)[1:] + cbor2.dumps(key)
    after = cbor2.dumps(dict(items[at + 1:]), **_ENCODE)[1:]
    if type(payload) is bytes:
        return [before + encode_head(2, len(payload)), payload, after]
    parts = [before + encode_head(4, len(payload)) + encode_head(2, len(payload[0])), payload[0]]
    for item in payload[1:]:
        parts += [encode_head(2, len(item)), item]
    parts.append(after)
    return parts


def encode_unchecked_parts(value: Any) -> list[bytes]:
    """:func:`encode_unchecked` as pieces whose concatenation is the
    encoding: a map carrying blocks comes back as the bytes around and
    between them and the blocks themselves (not copied), for a sender that
    encrypts the pieces straight into its frame. Same caller's guarantees
    as :func:`encode_unchecked`."""
    parts = _split_around_payload(value)
    if parts is None:
        return [encode_unchecked(value)]
    return parts


def encode_unchecked(value: Any) -> bytes:
    """cbor2's plain encoding of ``value``, which is the canonical one when
    ``value`` is within the data model and every map's keys are already in
    canonical order; the caller guarantees both (the network messages build
    their maps in that order from checked fields). Anything else must use
    :func:`encode`."""
    return cbor2.dumps(value, **_ENCODE)


def decode(data: bytes) -> Any:
    """Decode strictly; raise :class:`InvalidBlockError` on anything that is
    not canonical DAG-CBOR within cas's data model.

    The proof of canonical form has two halves: :func:`_check` shows every
    map's keys are in canonical order (and every value is in the data
    model), and re-encoding the value with cbor2's plain encoder gives back
    exactly ``data`` (:func:`check_reencodes`). cbor2 always writes the
    shortest heads and definite lengths, so the second half rejects
    non-minimal integers and lengths, indefinite lengths, duplicate keys (the
    dict holds one), trailing bytes and non-canonical links; with keys in
    order, the plain encoding is the canonical one, so together they prove
    ``data == encode(value)``.
    """
    value = decode_unchecked(data)
    try:
        in_order = _check(value)
    except TypeError as exc:
        raise InvalidBlockError(f"not valid DAG-CBOR: {exc}") from None
    if not in_order:
        raise InvalidBlockError("DAG-CBOR is not in canonical form")
    check_reencodes(value, data)
    return value
