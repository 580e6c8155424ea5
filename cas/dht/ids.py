"""Identifiers in the DHT's key space and the XOR metric over them.

Owns: the 256-bit ID type shared by nodes and blocks, the distance between two
IDs, which k-bucket an ID falls into as seen from a node, and drawing a random
ID inside a bucket's range (for bucket refresh).

Node IDs and keys live in one space: a node's ID is BLAKE3-256 of its Ed25519
public key (DESIGN.md), a block's key is the BLAKE3-256 digest inside its CID.
Both are carried as plain Python ``int`` in ``[0, 2**256)`` interpreted
big-endian, because XOR and ``bit_length`` on ints are what every lookup step
does, and ints make them single C-level operations. On the wire and on disk an
ID is exactly 32 bytes (:func:`id_to_bytes` / :func:`id_from_bytes`).

This module never touches randomness it was not handed: callers pass a
``random.Random``.
"""

from __future__ import annotations

import random
from typing import NewType

import blake3

ID_BITS = 256
"""Width of node IDs and keys: BLAKE3-256."""

ID_BYTES = ID_BITS // 8

ID_LIMIT = 1 << ID_BITS
"""One past the largest valid ID."""

NodeID = NewType("NodeID", int)
"""A node's or a key's position in the key space: an int in ``[0, 2**256)``.
Node IDs and block keys share the type because they share the metric."""


def is_valid_id(value: object) -> bool:
    """True if ``value`` is an ``int`` (not ``bool``) in ``[0, 2**256)``."""
    return type(value) is int and 0 <= value < ID_LIMIT


def node_id_for_public_key(public_key: bytes) -> NodeID:
    """The node ID bound to an Ed25519 public key: BLAKE3-256 of its 32 bytes."""
    if len(public_key) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
    return NodeID(int.from_bytes(blake3.blake3(bytes(public_key)).digest(), "big"))


def key_for_digest(digest: bytes) -> NodeID:
    """The DHT key of a block from ``CID.routing_digest``: its 32-byte BLAKE3
    digest (for another hash, a BLAKE3 derive-key hash of its multihash), so
    a block is placed the same way whatever its codec."""
    return id_from_bytes(digest)


def id_to_bytes(node_id: int) -> bytes:
    """The 32-byte big-endian form used on the wire and on disk."""
    if not is_valid_id(node_id):
        raise ValueError(f"not a 256-bit ID: {node_id!r}")
    return node_id.to_bytes(ID_BYTES, "big")


def id_from_bytes(raw: bytes) -> NodeID:
    """Parse the 32-byte form; anything else is a ``ValueError``."""
    if not isinstance(raw, (bytes, bytearray, memoryview)) or len(raw) != ID_BYTES:
        raise ValueError(f"an ID is exactly {ID_BYTES} bytes")
    return NodeID(int.from_bytes(raw, "big"))


def distance(a: int, b: int) -> int:
    """The XOR metric: ``d(a, b) = a ^ b``, read as an unsigned integer."""
    return a ^ b


def bucket_index(own_id: int, other: int) -> int:
    """Index of the k-bucket that ``other`` belongs to in ``own_id``'s table:
    the position of the highest bit in which they differ, 0..255. Bucket ``i``
    holds the IDs at distance ``[2**i, 2**(i+1))``, so bucket 255 covers half
    the space and bucket 0 a single ID. A node has no bucket for itself."""
    d = own_id ^ other
    if d == 0:
        raise ValueError("a node has no bucket for its own ID")
    return d.bit_length() - 1


def random_id_in_bucket(own_id: int, index: int, rng: random.Random) -> NodeID:
    """A uniformly random ID whose distance from ``own_id`` falls in bucket
    ``index``: the target of a refresh lookup for that bucket."""
    if not 0 <= index < ID_BITS:
        raise ValueError(f"bucket index must be in 0..{ID_BITS - 1}, not {index}")
    low_bits = rng.getrandbits(index) if index else 0
    return NodeID(own_id ^ ((1 << index) | low_bits))


def short(node_id: int) -> str:
    """The first 8 hex digits of an ID, for logs and reprs."""
    return f"{node_id >> (ID_BITS - 32):08x}"
