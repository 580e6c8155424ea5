"""Node identity: the Ed25519 key a node is known by, and its node ID.

The node's long-term key is an :class:`cas.keys.Ed25519Key` kept in the
repository (mode 0600); this module adds what makes it an identity: the node
ID, the BLAKE3-256 of the 32-byte public key. The same ID is the node's
position in the DHT's XOR space, so a node cannot pick where it sits: it is
wherever its key hashes to.

**Identities cost work** (S/Kademlia's static crypto puzzle, Baumgart and
Mies 2007): a node ID is only accepted by a network of difficulty D if the
BLAKE3 hash of the ID, derived under its own context, starts with D zero
bits (:func:`id_work`). Making such a key takes 2^D tries on average, about
21 µs each here (Ed25519 key generation and two hashes): 0.1 s at the
default D = 12, 1.4 s at 16, and each extra bit doubles it. Checking one
takes one hash. An attacker who wants many identities (to fill a node's
connection slots, or to surround a key) pays that for each.

This module never touches the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import blake3

from ..errors import KeyFileError
from ..keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Ed25519Key, verify_signature

NODE_ID_SIZE = 32

ID_WORK_CONTEXT = "cas 2026 node id work v1"
"""BLAKE3 derive-key context of the puzzle hash: the work done for a node
ID counts for nothing else."""

DEFAULT_ID_DIFFICULTY = 12
"""Leading zero bits a node ID's puzzle hash must have, unless the network
is configured otherwise (``cas daemon --id-difficulty``): ~0.1 s of work per
identity here. Every node of a network should use the same value."""

IdentityError = KeyFileError
"""The node key file is missing, malformed, or readable by others."""

__all__ = [
    "NODE_ID_SIZE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "Identity",
    "IdentityError",
    "id_work",
    "meets_difficulty",
    "node_id_for",
    "verify_signature",
]


def node_id_for(public_key: bytes) -> bytes:
    """The node ID of an Ed25519 public key: BLAKE3-256 over its 32 bytes."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_SIZE} bytes")
    return blake3.blake3(public_key).digest()


def id_work(node_id: bytes) -> int:
    """The leading zero bits of ``node_id``'s puzzle hash: the work it shows."""
    digest = int.from_bytes(blake3.blake3(node_id, derive_key_context=ID_WORK_CONTEXT).digest(), "big")
    return 256 - digest.bit_length()


def meets_difficulty(node_id: bytes, difficulty: int) -> bool:
    """Whether ``node_id`` shows the work a network of ``difficulty`` asks."""
    return difficulty <= 0 or id_work(node_id) >= difficulty


@dataclass(frozen=True, repr=False)
class Identity(Ed25519Key):
    """A node's Ed25519 keypair. ``repr`` never shows the secret."""

    what: ClassVar[str] = "node key"

    @property
    def node_id(self) -> bytes:
        return node_id_for(self.public_key)

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id.hex()[:16]}…)"

    @classmethod
    def with_work(cls, difficulty: int) -> Identity:
        """A fresh identity whose ID meets ``difficulty`` (2^difficulty
        tries on average)."""
        while True:
            key = cls.generate()
            if meets_difficulty(key.node_id, difficulty):
                return key

    @classmethod
    def for_node(cls, path: str | os.PathLike[str], difficulty: int) -> tuple[Identity, bool]:
        """The node's identity at ``path``, made (with work) if there is
        none, or made anew if the one there falls short of ``difficulty``
        (the old file kept beside it as ``.old``): (identity, whether it is
        new because the old one fell short)."""
        if os.path.lexists(path):
            key = cls.load(path)
            if meets_difficulty(key.node_id, difficulty):
                return key, False
            os.replace(path, f"{os.fspath(path)}.old")
            replaced = True
        else:
            replaced = False
        key = cls.with_work(difficulty)
        key.save(path)
        return key, replaced
