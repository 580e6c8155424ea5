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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import dagcbor
from ..cid import DAG_CBOR, CID
from ..errors import InvalidBlockError, InvalidRecordError
from ..keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Ed25519Key, verify_signature

RECORD_TYPE = "cas/root"
SIGNING_CONTEXT = b"cas-root-record-v1\x00"
MAX_RECORD_SIZE = 1024  # a record is ~200 bytes; refuse anything far bigger unread


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
    root of the namespace held by ``key``."""
    if new.public_key != key:
        raise InvalidRecordError(
            f"root record is signed by key {new.public_key.hex()[:16]}…, "
            f"not by this namespace's key {key.hex()[:16]}…"
        )
    if current is not None and new.seq <= current.seq:
        raise InvalidRecordError(
            f"root record has sequence number {new.seq}, not above the current {current.seq}"
        )
