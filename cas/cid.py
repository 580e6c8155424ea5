"""Content identifiers: CIDv1 (and IPFS's CIDv0) over a 256-bit multihash.

This module owns the way cas names content. A CID is

    <version=1> <codec> <multihash>      (each integer an unsigned varint)
    multihash = <hash code> <length=32> <32-byte digest>

with one of three codecs: ``raw`` (0x55) for file data, ``dag-pb`` (0x70) for
file tree nodes and ``dag-cbor`` (0x71) for directories and records, and one
of two hash functions: **BLAKE3** (0x1e), which everything cas makes uses,
and **sha2-256** (0x12), the default of kubo, helia and ipfs-car, so that
blocks made by IPFS are stored under their own CIDs and verified with their
own hash. The text form is multibase base32 (lower case, no padding, prefix
``b``), the form IPFS prints, e.g. ``bafkr4i…``; base58btc (``z…``) is read
too.

A **CIDv0** is a bare sha2-256 multihash (``0x12 0x20`` + digest), implicitly
dag-pb, written in base58btc (``Qm…``). It names the same block as the CIDv1
dag-pb/sha2-256 CID of the same digest, and is *equal* to it here (same
tuple, same hash, same ``bytes()``: the store and the wire key by the CIDv1
binary form), but remembers that it was a v0 so that it prints as ``Qm…``
again and is written back as v0 (``binary``) in dag-pb links and CAR files.

A different multihash never collides with a BLAKE3 one: the hash code is
part of the tuple and of every key made from it (``bytes()`` for the store,
``routing_digest`` for the DHT).

Parsing is strict: anything else (another hash, another codec, a truncated
digest, trailing bytes) raises :class:`InvalidCIDError` with a message that
says which part is wrong. This module never touches storage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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
SHA2_256 = 0x12
HASH_NAMES = {BLAKE3: "blake3", SHA2_256: "sha2-256"}
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
    (codec, hash_code): b"\x01" + encode_varint(codec) + bytes((hash_code, DIGEST_SIZE))
    for codec in CODEC_NAMES for hash_code in HASH_NAMES
}
_V0_HEAD = bytes((SHA2_256, DIGEST_SIZE))

ROUTING_KEY_CONTEXT = "cas 2026-12 DHT key of a non-BLAKE3 multihash"
"""BLAKE3 ``derive_key`` context of :attr:`CID.routing_digest` for a CID
whose hash is not BLAKE3. Derive-key mode is domain-separated from plain
hashing inside BLAKE3, so such a key never equals a BLAKE3 block's key (its
plain digest) nor a name record's (another context)."""

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def b58encode(data: bytes) -> str:
    """base58btc (the Bitcoin alphabet), leading zero bytes as ``1``."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; ``ValueError`` on a foreign character."""
    n = 0
    for c in text:
        digit = _B58_INDEX.get(c)
        if digit is None:
            raise ValueError(f"{c!r} is not a base58btc character")
        n = n * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def decode_varint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
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
    hash_code: int = BLAKE3


class CID(_CIDFields):
    """A CIDv1 over a 256-bit BLAKE3 or sha2-256 digest. Immutable, hashable,
    and ordered by (codec, digest, hash code).

    A named tuple rather than a dataclass, as are the other records every
    command loads ("Records" in docs/architecture.md): hashing and comparing run in C,
    and nothing on the way to a first byte imports ``dataclasses``. A CIDv0
    is the same tuple with a ``v0`` mark beside it (module docstring), which
    equality ignores."""

    def __new__(cls, codec: int, digest: bytes, hash_code: int = BLAKE3) -> CID:
        if codec not in CODEC_NAMES:
            raise InvalidCIDError(f"unsupported codec 0x{codec:x}")
        if hash_code not in HASH_NAMES:
            raise InvalidCIDError(f"unsupported hash function 0x{hash_code:x}")
        if len(digest) != DIGEST_SIZE:
            raise InvalidCIDError(
                f"{HASH_NAMES[hash_code]} digest must be {DIGEST_SIZE} bytes, not {len(digest)}"
            )
        return tuple.__new__(cls, (codec, digest, hash_code))

    @classmethod
    def v0(cls, digest: bytes) -> CID:
        """The CIDv0 of a sha2-256 ``digest`` (dag-pb, printed ``Qm…``)."""
        cid = cls(DAG_PB, digest, SHA2_256)
        cid.__dict__["is_v0"] = True
        return cid

    is_v0: bool = False
    """True for a CID read or made as a CIDv0 (it prints as one)."""

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> CID:  # type: ignore[override]  # checked, unlike the tuple's
        # The named tuple's own _make (and _replace, which calls it) builds
        # the tuple directly, past the checks above.
        return cls(*iterable)

    # -- construction -----------------------------------------------------

    @classmethod
    def for_data(cls, codec: int, data: bytes | memoryview, hash_code: int = BLAKE3) -> CID:
        """The CID of ``data`` under ``codec``, hashed with ``hash_code``
        (BLAKE3 unless asked otherwise)."""
        return cls(codec, _hash(hash_code, data), hash_code)

    @classmethod
    def from_parts(cls, codec: int, digest: bytes) -> CID:
        """A BLAKE3 CID from a codec and digest its caller has already checked
        (a known codec, 32 bytes): the constructor without the checks, for
        decoders that build thousands."""
        return tuple.__new__(cls, (codec, digest, BLAKE3))

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview) -> CID:
        """Parse the binary form: a CIDv1 of a known codec and hash, or a
        CIDv0 (34 bytes, ``0x12 0x20`` + digest)."""
        raw = bytes(raw)
        cid, end = cls._parse_prefix(raw)
        if end != len(raw):
            raise InvalidCIDError(f"{len(raw) - end} unexpected bytes after the CID")
        return cid

    @classmethod
    def read_prefix(cls, raw: bytes) -> tuple[CID, int]:
        """Parse the CID at the start of ``raw`` (more bytes may follow, as
        in a CAR section); return it and where it ends."""
        return cls._parse_prefix(bytes(raw[: 4 + 9 * 3 + DIGEST_SIZE]))

    @classmethod
    def _parse_prefix(cls, raw: bytes) -> tuple[CID, int]:
        if raw[:2] == _V0_HEAD:
            digest = raw[2 : 2 + DIGEST_SIZE]
            if len(digest) != DIGEST_SIZE:
                raise InvalidCIDError("truncated CIDv0: the digest is cut short")
            return cls.v0(digest), 2 + DIGEST_SIZE
        version, pos = _cid_varint(raw, 0)
        if version != 1:
            raise InvalidCIDError(f"unsupported CID version {version}; cas reads CIDv1 and CIDv0")
        codec, pos = _cid_varint(raw, pos)
        if codec not in CODEC_NAMES:
            raise InvalidCIDError(
                f"unsupported codec 0x{codec:x}; cas knows raw (0x55), "
                "dag-pb (0x70) and dag-cbor (0x71)"
            )
        hash_code, pos = _cid_varint(raw, pos)
        if hash_code not in HASH_NAMES:
            raise InvalidCIDError(
                f"unsupported hash function 0x{hash_code:x}; cas knows BLAKE3 (0x1e) "
                "and sha2-256 (0x12)"
            )
        length, pos = _cid_varint(raw, pos)
        if length != DIGEST_SIZE:
            raise InvalidCIDError(
                f"{HASH_NAMES[hash_code]} digest length must be 32, not {length}"
            )
        digest = raw[pos : pos + DIGEST_SIZE]
        if len(digest) != DIGEST_SIZE:
            raise InvalidCIDError("truncated CID: the digest is cut short")
        return cls(codec, digest, hash_code), pos + DIGEST_SIZE

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parse the text form: multibase base32 (``b…``) or base58btc
        (``z…``) of a CIDv1, or the base58btc of a CIDv0 (``Qm…``)."""
        if not isinstance(text, str):
            raise InvalidCIDError("a CID must be given as text")
        text = text.strip()
        if not text:
            raise InvalidCIDError("empty string is not a CID")
        if len(text) == 46 and text.startswith("Qm"):
            try:
                raw = b58decode(text)
            except ValueError:
                raise InvalidCIDError(f"{text!r} is not a CIDv0: invalid base58btc") from None
            if len(raw) != 34 or raw[:2] != _V0_HEAD:
                raise InvalidCIDError(f"{text!r} is not a CIDv0: not a sha2-256 multihash")
            return cls.v0(raw[2:])
        if text[0] in "bB":
            body = text[1:].upper()
            body += "=" * (-len(body) % 8)
            try:
                raw = base64.b32decode(body)
            except (binascii.Error, ValueError):
                raise InvalidCIDError(f"{text[:60]!r} is not a CID: invalid base32") from None
        elif text[0] == "z":
            try:
                raw = b58decode(text[1:])
            except ValueError:
                raise InvalidCIDError(f"{text[:60]!r} is not a CID: invalid base58btc") from None
            if raw[:2] == _V0_HEAD:
                raise InvalidCIDError(f"{text[:60]!r} is not a CID: a CIDv0 has no multibase prefix")
        else:
            raise InvalidCIDError(
                f"{text[:60]!r} is not a CID: expected base32 text starting with 'b' "
                "(or base58btc: 'z…', a CIDv0 'Qm…')"
            )
        try:
            return cls.from_bytes(raw)
        except InvalidCIDError as exc:
            raise InvalidCIDError(f"{text[:60]!r} is not a usable CID: {exc}") from None

    # -- forms ------------------------------------------------------------

    def __bytes__(self) -> bytes:
        """The CIDv1 binary form, also of a CIDv0: what the store and the
        wire key by, so that both forms of a CID name one block."""
        return _BINARY_HEADS[self.codec, self.hash_code] + self.digest

    @property
    def binary(self) -> bytes:
        """The binary form as read: a CIDv0 stays a CIDv0 (dag-pb links, CAR
        files)."""
        return _V0_HEAD + self.digest if self.is_v0 else bytes(self)

    @property
    def multihash(self) -> bytes:
        """The multihash: hash code, length, digest."""
        return bytes((self.hash_code, DIGEST_SIZE)) + self.digest

    @property
    def routing_digest(self) -> bytes:
        """The 32 bytes a DHT key is made from: the digest itself for BLAKE3
        (keys stay what they were), a BLAKE3 derive-key hash of the multihash
        for any other hash (``ROUTING_KEY_CONTEXT``), so that two CIDs of the
        same digest bytes under different hashes never share a key."""
        if self.hash_code == BLAKE3:
            return self.digest
        return blake3.blake3(self.multihash, derive_key_context=ROUTING_KEY_CONTEXT).digest()

    def encode(self) -> str:
        """The text form, ``b`` + lower-case base32 without padding (a CIDv0:
        base58btc, ``Qm…``)."""
        return self._text

    def to_v1(self) -> CID:
        """The same CID, printed as a CIDv1 even if it was read as a v0."""
        return tuple.__new__(CID, tuple(self))

    @cached_property
    def _text(self) -> str:
        # Cached: block paths are named by it, so the read path asks often.
        if self.is_v0:
            return b58encode(self.binary)
        return "b" + base64.b32encode(bytes(self)).decode("ascii").rstrip("=").lower()

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"CID({self.encode()})"

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    @property
    def hash_name(self) -> str:
        return HASH_NAMES[self.hash_code]

    def verify(self, data: bytes | memoryview) -> bool:
        """True if ``data`` hashes to this CID's digest under its own hash."""
        if self.hash_code == BLAKE3:
            return blake3.blake3(data).digest() == self.digest
        return _hash(self.hash_code, data) == self.digest


def _hash(hash_code: int, data: bytes | memoryview) -> bytes:
    if hash_code == BLAKE3:
        return blake3.blake3(data).digest()
    if hash_code == SHA2_256:
        return hashlib.sha256(data).digest()
    raise InvalidCIDError(f"unsupported hash function 0x{hash_code:x}")


def parse_cid(value: str | bytes | CID) -> CID:
    """Accept a CID, its text form or its binary form."""
    if isinstance(value, CID):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return CID.from_bytes(value)
    return CID.parse(value)
