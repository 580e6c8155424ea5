"""Content identifiers: CIDv1 with a BLAKE3-256 multihash.

This module owns the one way cas names content. A CID is

    <version=1> <codec> <multihash>      (each integer an unsigned varint)
    multihash = <code=0x1e blake3> <length=32> <32-byte digest>

with one of three codecs: ``raw`` (0x55) for file data, ``dag-pb`` (0x70) for
file tree nodes and ``dag-cbor`` (0x71) for directories and records. The text
form is multibase base32 (lower case, no padding, prefix ``b``), the form IPFS
prints, e.g. ``bafkr4i…``.

Parsing is strict: anything else (CIDv0, another hash, another codec, a
truncated digest, trailing bytes) raises :class:`InvalidCIDError` with a
message that says which part is wrong. This module never touches storage.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from functools import cached_property
from typing import Any, NamedTuple

import blake3

from .errors import InvalidCIDError

RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb", DAG_CBOR: "dag-cbor"}

BLAKE3 = 0x1E
MAX_BLOCK_SIZE = 1 << 20
"""Largest block cas creates or accepts (1 MiB, DESIGN.md: max chunk and max
tree node). Anything larger from outside is refused before it is hashed.
Here, with the other format limits, so that the codecs, the blocks and the
wire all take it from the bottom layer."""

DIGEST_SIZE = 32

# Varints in a CID are at most 9 bytes (multiformats unsigned-varint spec);
# ours are all one byte, but we parse the general form to give good errors.
_MAX_VARINT_BYTES = 9


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128, as multiformats and protobuf use."""
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# What precedes the digest in the binary form, by codec (every part a
# one-byte varint): an add or a read makes thousands.
_BINARY_HEADS = {
    codec: b"\x01" + encode_varint(codec) + bytes((BLAKE3, DIGEST_SIZE)) for codec in CODEC_NAMES
}


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a minimal unsigned varint at ``pos``; return (value, next_pos).

    Raises ``ValueError`` on truncation, overlong or non-minimal encodings.
    """
    value = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES + 1):
        if pos + i >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise ValueError("non-minimal varint")
            return value, pos + i + 1
        shift += 7
    raise ValueError("varint too long")


def _cid_varint(raw: bytes, pos: int) -> tuple[int, int]:
    try:
        return decode_varint(raw, pos)
    except ValueError as exc:
        raise InvalidCIDError(f"malformed CID: {exc}") from None


class _CIDFields(NamedTuple):
    codec: int
    digest: bytes


class CID(_CIDFields):
    """A CIDv1 over a BLAKE3-256 digest. Immutable, hashable, and ordered by
    (codec, digest).

    A named tuple rather than a dataclass, as are the other records every
    command loads ("Records" in docs/architecture.md): hashing and comparing run in C,
    and nothing on the way to a first byte imports ``dataclasses``."""

    def __new__(cls, codec: int, digest: bytes) -> CID:
        if codec not in CODEC_NAMES:
            raise InvalidCIDError(f"unsupported codec 0x{codec:x}")
        if len(digest) != DIGEST_SIZE:
            raise InvalidCIDError(f"BLAKE3 digest must be {DIGEST_SIZE} bytes, not {len(digest)}")
        return tuple.__new__(cls, (codec, digest))

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> CID:  # type: ignore[override]  # checked, unlike the tuple's
        # The named tuple's own _make (and _replace, which calls it) builds
        # the tuple directly, past the checks above.
        return cls(*iterable)

    # -- construction -----------------------------------------------------

    @classmethod
    def for_data(cls, codec: int, data: bytes | memoryview) -> CID:
        """The CID of ``data`` under ``codec``."""
        return cls(codec, blake3.blake3(data).digest())

    @classmethod
    def from_parts(cls, codec: int, digest: bytes) -> CID:
        """A CID from a codec and digest its caller has already checked
        (a known codec, 32 bytes): the constructor without the checks, for
        decoders that build thousands."""
        return tuple.__new__(cls, (codec, digest))

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview) -> CID:
        """Parse the binary form. Rejects anything but a BLAKE3 CIDv1."""
        raw = bytes(raw)
        cid, end = cls._parse_prefix(raw)
        if end != len(raw):
            raise InvalidCIDError(f"{len(raw) - end} unexpected bytes after the CID")
        return cid

    @classmethod
    def _parse_prefix(cls, raw: bytes) -> tuple[CID, int]:
        if len(raw) == 34 and raw[:2] == b"\x12\x20":
            raise InvalidCIDError("CIDv0 (sha2-256) is not supported; cas uses CIDv1 with BLAKE3")
        version, pos = _cid_varint(raw, 0)
        if version != 1:
            raise InvalidCIDError(f"unsupported CID version {version}; cas uses CIDv1")
        codec, pos = _cid_varint(raw, pos)
        if codec not in CODEC_NAMES:
            raise InvalidCIDError(
                f"unsupported codec 0x{codec:x}; cas knows raw (0x55), "
                "dag-pb (0x70) and dag-cbor (0x71)"
            )
        hash_code, pos = _cid_varint(raw, pos)
        if hash_code != BLAKE3:
            raise InvalidCIDError(
                f"unsupported hash function 0x{hash_code:x}; cas uses BLAKE3 (0x1e)"
            )
        length, pos = _cid_varint(raw, pos)
        if length != DIGEST_SIZE:
            raise InvalidCIDError(f"BLAKE3 digest length must be 32, not {length}")
        digest = raw[pos : pos + DIGEST_SIZE]
        if len(digest) != DIGEST_SIZE:
            raise InvalidCIDError("truncated CID: the digest is cut short")
        return cls(codec, digest), pos + DIGEST_SIZE

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parse the text form (multibase base32, ``b…``)."""
        if not isinstance(text, str):
            raise InvalidCIDError("a CID must be given as text")
        text = text.strip()
        if not text:
            raise InvalidCIDError("empty string is not a CID")
        if text.startswith("Qm"):
            raise InvalidCIDError(
                f"{text!r} is a CIDv0 (sha2-256); cas uses CIDv1 with BLAKE3"
            )
        if text[0] not in "bB":
            raise InvalidCIDError(
                f"{text[:60]!r} is not a CID: expected base32 text starting with 'b'"
            )
        body = text[1:].upper()
        body += "=" * (-len(body) % 8)
        try:
            raw = base64.b32decode(body)
        except (binascii.Error, ValueError):
            raise InvalidCIDError(f"{text[:60]!r} is not a CID: invalid base32") from None
        try:
            return cls.from_bytes(raw)
        except InvalidCIDError as exc:
            raise InvalidCIDError(f"{text[:60]!r} is not a usable CID: {exc}") from None

    # -- forms ------------------------------------------------------------

    def __bytes__(self) -> bytes:
        return _BINARY_HEADS[self.codec] + self.digest

    def encode(self) -> str:
        """The text form, ``b`` + lower-case base32 without padding."""
        return self._text

    @cached_property
    def _text(self) -> str:
        # Cached: block paths are named by it, so the read path asks often.
        return "b" + base64.b32encode(bytes(self)).decode("ascii").rstrip("=").lower()

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"CID({self.encode()})"

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    def verify(self, data: bytes | memoryview) -> bool:
        """True if ``data`` hashes to this CID's digest."""
        return blake3.blake3(data).digest() == self.digest


def parse_cid(value: str | bytes | CID) -> CID:
    """Accept a CID, its text form or its binary form."""
    if isinstance(value, CID):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return CID.from_bytes(value)
    return CID.parse(value)
