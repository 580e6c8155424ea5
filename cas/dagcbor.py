"""Strict DAG-CBOR: the deterministic encoding of directories and records.

Encoding follows the DAG-CBOR rules (ipld/specs, "DAG-CBOR"): definite
lengths, smallest integer encodings, map keys that are text strings sorted
length-first then bytewise, links as tag 42 over ``0x00 || binary CID``. cas
adds one restriction of its own: no floats anywhere, because none of our
formats need them and they are the usual source of "same value, other bytes".

Decoding is the strict mirror: the bytes must be exactly what :func:`encode`
would produce for the decoded value (checked by re-encoding, which rejects
indefinite lengths, unsorted or duplicate keys and non-minimal integers in one
step), and only the data model types below may appear. Bytes from a peer or a
disk go through :func:`decode` and nothing else.

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


def _default(encoder: Any, value: Any) -> None:
    if isinstance(value, CID):
        encoder.encode(cbor2.CBORTag(_CID_TAG, b"\x00" + bytes(value)))
        return
    raise TypeError(f"DAG-CBOR cannot encode {type(value).__name__}")


def _check(value: Any, depth: int = 0) -> None:
    """Raise TypeError unless ``value`` is within the data model above."""
    if depth > _MAX_DEPTH:
        raise TypeError("nesting is too deep")
    if value is None or isinstance(value, (bool, str, bytes, CID)):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise TypeError("integer out of the 64-bit range")
        return
    if isinstance(value, list):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("map keys must be text strings")
            _check(item, depth + 1)
        return
    raise TypeError(f"{type(value).__name__} is not allowed in DAG-CBOR here")


def encode(value: Any, *, check: bool = True) -> bytes:
    """Encode ``value`` canonically. Raises TypeError for values outside the
    data model (a programming error, not bad input).

    ``check=False`` skips the walk that proves the value is within the data
    model, for hot paths whose values come from validated records (directory
    entries); ``decode`` always checks.
    """
    if check:
        _check(value)
    return cbor2.dumps(value, canonical=True, default=_default)


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


def decode(data: bytes) -> Any:
    """Decode strictly; raise :class:`InvalidBlockError` on anything that is
    not canonical DAG-CBOR within cas's data model."""
    try:
        value = cbor2.loads(data, tag_hook=_tag_hook)
    except InvalidBlockError:
        raise
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise InvalidBlockError(f"malformed DAG-CBOR: {exc}") from None
    try:
        _check(value)
        canonical = cbor2.dumps(value, canonical=True, default=_default)
    except TypeError as exc:
        raise InvalidBlockError(f"not valid DAG-CBOR: {exc}") from None
    if canonical != bytes(data):
        raise InvalidBlockError("DAG-CBOR is not in canonical form")
    return value
