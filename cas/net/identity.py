"""Node identity: the Ed25519 key a node is known by, and its node ID.

The node's long-term key is an :class:`cas.keys.Ed25519Key` kept in the
repository (mode 0600); this module adds what makes it an identity: the node
ID, the BLAKE3-256 of the 32-byte public key. The same ID is the node's
position in the DHT's XOR space, so a node cannot pick where it sits: it is
wherever its key hashes to.

This module never touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import blake3

from ..keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Ed25519Key, KeyFileError, verify_signature

NODE_ID_SIZE = 32

IdentityError = KeyFileError
"""The node key file is missing, malformed, or readable by others."""

__all__ = [
    "NODE_ID_SIZE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "Identity",
    "IdentityError",
    "node_id_for",
    "verify_signature",
]


def node_id_for(public_key: bytes) -> bytes:
    """The node ID of an Ed25519 public key: BLAKE3-256 over its 32 bytes."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_SIZE} bytes")
    return blake3.blake3(public_key).digest()


@dataclass(frozen=True, repr=False)
class Identity(Ed25519Key):
    """A node's Ed25519 keypair. ``repr`` never shows the secret."""

    what: ClassVar[str] = "node key"

    @property
    def node_id(self) -> bytes:
        return node_id_for(self.public_key)

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id.hex()[:16]}…)"
