"""Namespace root records: who says which directory is the namespace, and when.

A record binds a namespace key to a root directory at a sequence number::

    {"type": "cas/root", "key": <32-byte Ed25519 public key>, "seq": N,
     "root": <link to the root directory>, "time": <ns since 1970>,
     "sig": <64-byte Ed25519 signature>}

encoded as strict DAG-CBOR. The signature covers ``SIGNING_CONTEXT`` followed
by the DAG-CBOR encoding of the same map without ``sig``: the context string
keeps a root signature from ever being valid as any other kind of message.

Rules (DESIGN.md, "Namespace root"): a record that fails verification is
ignored; of two valid records for one key, the higher sequence number wins;
a record for another key is not a successor of ours. :func:`check_successor`
applies them; the repository and, later, the network both go through it.

On the network (docs/replication.md, "Published namespaces") a record lives
under its *record key*, :func:`record_key` of its public key, on the nodes
closest to that key. :func:`accept_record` is the rule a node applies to a
PUT_RECORD: strict decoding, a good signature, stored under its own key,
and newer than what the node holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import blake3

from .. import dagcbor
from ..cid import CID, DAG_CBOR
from ..errors import InvalidBlockError, InvalidRecordError, StaleRecordError
from ..keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Ed25519Key, verify_signature

RECORD_TYPE = "cas/root"
SIGNING_CONTEXT = b"cas-root-record-v1\x00"
MAX_RECORD_SIZE = 1024  # a record is ~200 bytes; refuse anything far bigger unread
RECORD_KEY_CONTEXT = "cas 2026 namespace record key v1"
"""BLAKE3 ``derive_key`` context for :func:`record_key`. Derive-key mode is
domain-separated from plain hashing inside BLAKE3 itself, so a record key can
never equal a block key (a plain BLAKE3 digest of some block's bytes), not
even for a block whose bytes are the public key."""


@dataclass(frozen=True)
class RootRecord:
    """A signed namespace root. Construct with :meth:`sign` or :meth:`decode`."""

    public_key: bytes
    seq: int
    root: CID
    time_ns: int
    signature: bytes

    def _unsigned(self) -> dict[str, Any]:
        return {
            "type": RECORD_TYPE,
            "key": self.public_key,
            "seq": self.seq,
            "root": self.root,
            "time": self.time_ns,
        }

    def signed_bytes(self) -> bytes:
        return SIGNING_CONTEXT + dagcbor.encode(self._unsigned())

    @classmethod
    def sign(cls, key: Ed25519Key, seq: int, root: CID, time_ns: int) -> RootRecord:
        unsigned = cls(key.public_key, seq, root, time_ns, b"")
        return cls(key.public_key, seq, root, time_ns, key.sign(unsigned.signed_bytes()))

    def encode(self) -> bytes:
        return dagcbor.encode({**self._unsigned(), "sig": self.signature})

    @classmethod
    def decode(cls, data: bytes) -> RootRecord:
        """Parse and verify a record; InvalidRecordError says what is wrong."""
        if len(data) > MAX_RECORD_SIZE:
            raise InvalidRecordError(f"root record of {len(data)} bytes is too large")
        try:
            value = dagcbor.decode(data)
        except InvalidBlockError as exc:
            raise InvalidRecordError(f"root record is not valid DAG-CBOR: {exc}") from None
        if not isinstance(value, dict) or set(value) != {"type", "key", "seq", "root", "time", "sig"}:
            raise InvalidRecordError("root record has the wrong fields")
        key, seq, root, time_ns, sig = (value[k] for k in ("key", "seq", "root", "time", "sig"))
        if value["type"] != RECORD_TYPE:
            raise InvalidRecordError(f"not a root record (type {value['type']!r})")
        if not (isinstance(key, bytes) and len(key) == PUBLIC_KEY_SIZE):
            raise InvalidRecordError("root record has a bad public key")
        if not (isinstance(sig, bytes) and len(sig) == SIGNATURE_SIZE):
            raise InvalidRecordError("root record has a bad signature field")
        for number in (seq, time_ns):
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise InvalidRecordError("root record has a bad sequence number or time")
        if not isinstance(root, CID) or root.codec != DAG_CBOR:
            raise InvalidRecordError("root record does not link to a directory")
        record = cls(key, seq, root, time_ns, sig)
        if not verify_signature(key, record.signed_bytes(), sig):
            raise InvalidRecordError(f"root record {seq} has a bad signature")
        return record


def check_successor(current: RootRecord | None, new: RootRecord, key: bytes) -> None:
    """Raise InvalidRecordError unless ``new`` may replace ``current`` as the
    root of the namespace held by ``key`` (:class:`StaleRecordError` when it
    is not newer)."""
    if new.public_key != key:
        raise InvalidRecordError(
            f"root record is signed by key {new.public_key.hex()[:16]}…, "
            f"not by this namespace's key {key.hex()[:16]}…"
        )
    if current is not None and new.seq <= current.seq:
        raise StaleRecordError(
            f"root record has sequence number {new.seq}, not above the current {current.seq}"
        )


def record_key(public_key: bytes) -> bytes:
    """The 32-byte DHT key under which the records of the namespace held by
    ``public_key`` are stored: BLAKE3-256 in derive-key mode, context
    :data:`RECORD_KEY_CONTEXT`, over the 32-byte public key."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidRecordError("a namespace key is a 32-byte Ed25519 public key")
    return blake3.blake3(public_key, derive_key_context=RECORD_KEY_CONTEXT).digest()


def parse_public_key(text: str) -> bytes:
    """A namespace key as users write it (64 hex digits) → 32 bytes."""
    text = text.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != PUBLIC_KEY_SIZE:
        raise InvalidRecordError(f"{text[:80]!r} is not a namespace key; give its 64 hex digits ('cas root' shows yours)")
    return raw


def accept_record(held: bytes | None, key: bytes, data: bytes) -> RootRecord | None:
    """What a node does with a PUT_RECORD of ``data`` under ``key`` while it
    holds ``held`` there (or nothing). Returns the record to keep, None if
    ``data`` is exactly what is held already (a republish: nothing to do), or
    raises :class:`InvalidRecordError`: malformed, forged, stored under
    another key than its own, or not newer than the held one."""
    record = RootRecord.decode(data)
    if record_key(record.public_key) != key:
        raise InvalidRecordError("root record is not stored under its own key")
    if held is not None:
        if held == data:
            return None
        current = RootRecord.decode(held)
        check_successor(current, record, current.public_key)
    return record


def newest_record(candidates: list[bytes], public_key: bytes) -> RootRecord | None:
    """Of records gathered from anywhere, the valid one for ``public_key``
    with the highest sequence number (forged, malformed and foreign ones are
    skipped), or None."""
    best: RootRecord | None = None
    for data in candidates:
        try:
            record = RootRecord.decode(data)
            check_successor(best, record, public_key)
        except InvalidRecordError:
            continue
        best = record
    return best
