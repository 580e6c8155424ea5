"""The Noise XX handshake and transport encryption, with node identity bound in.

Theory of operation
===================

Two nodes that meet over TCP share nothing but the bytes between them. They
need three things before they can trust a message: secrecy (nobody on the path
reads it), integrity (nobody on the path changes it) and identity (the other
end owns the node ID it is talking as). This module provides all three by
running a *published* construction, ``Noise_XX_25519_AESGCM_BLAKE2b``
from the Noise Protocol Framework (noiseprotocol.org, revision 34), and adding
one binding step on top, the one libp2p's noise transport uses.

The handshake pattern XX is three messages::

    -> e                 initiator sends a fresh ephemeral X25519 key
    <- e, ee, s, es      responder: its ephemeral key, then (encrypted) its
                         static key and a payload
    -> s, se             initiator: (encrypted) its static key and a payload

Every token mixes into a running hash ``h`` (the transcript) and every
Diffie-Hellman result into a chaining key ``ck`` through HKDF. Once a key is
mixed in, everything after it (static keys, payloads) is encrypted with
AES-256-GCM using ``h`` as associated data, so tampering with any byte
of the transcript makes the next decryption fail. After the third message
both sides call ``Split`` and get two keys, one per direction.

Noise authenticates *X25519 static keys*. A cas node is known by its
*Ed25519* identity key (its node ID is BLAKE3 of that key). The binding: in
the encrypted payload of messages 2 and 3, each side sends its Ed25519 public
key and an Ed25519 signature over ``IDENTITY_SIGNATURE_PREFIX + s``, where
``s`` is the Noise static public key it just sent. The receiver checks the
signature against the static key the handshake authenticated. A peer that
replays someone else's proof fails, because it would have to complete the
``es``/``se`` Diffie-Hellman with the victim's X25519 secret, which it does
not have; a peer that signs with another key simply proves a different node
ID. The initiator, which dialled a node ID it learnt from the DHT, then
checks that the proven ID is the one it dialled.

Private networks: XXpsk0
========================

A node given a network key (:mod:`.network_key`) runs
``Noise_XXpsk0_25519_AESGCM_BLAKE2b`` instead: the same three messages with
the key mixed in as a pre-shared key *before* the first one (the Noise
spec, revision 34, section 9)::

    -> psk, e            MixKeyAndHash(psk); e; the (empty) payload is
                         encrypted, so its 16-byte tag proves the key
    <- e, ee, s, es      as in XX, under keys that depend on the psk
    -> s, se

In PSK mode every "e" token also calls MixKey(e), as the spec requires. A
node without the key cannot produce a first message that verifies, and the
responder, which checks it before doing any Diffie-Hellman or signing,
refuses it at once. So a node on another network (or on none) sees only
the responder's refusal: not its static key, not its identity proof, not
its node ID; and a member dialling an outsider shows it only a fresh
ephemeral key and a tag. psk3, the spec's own example for XX, checks the
key only in message 3, after the responder has sent its identity proof
(under keys an outsider can compute), so any outsider could learn every
member's node ID by dialling it; docs/network.md compares the placements.

A refused peer is told why in one short, clear frame (:data:`REFUSALS`),
so that both ends can say "not on this node's private network" rather
than "garbage". Without a key, nothing changes on the wire: the handshake
is plain XX, byte for byte.

Rules for this file
===================

1. No I/O: bytes in, bytes out (the h11 shape). No sockets, clocks or tasks.
2. No home-made cryptography. Primitives come from libsodium (through
   pynacl: X25519, Ed25519), OpenSSL (through ``cryptography``:
   AES-256-GCM, 2.7x the speed of its own ChaCha20-Poly1305 on this
   project's machines, which have AES instructions; see PROTOCOL_NAME) and
   the standard library (BLAKE2b, HMAC). This file only composes them in the order the
   Noise specification and RFC 2104 prescribe; the tests check the result
   byte for byte against published vectors and against the independent
   ``noiseprotocol`` implementation.
3. Anything wrong in what the remote sent is a :class:`HandshakeError` or a
   :class:`DecryptError` (both "the remote's fault"); misuse by our own code
   is a :class:`cas.net.messages.LocalProtocolError`.
4. Secrets never appear in a ``repr`` or an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

import nacl.bindings as sodium
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import dagcbor
from ..errors import (
    DecryptError,
    HandshakeError,
    IdentityProofError,
    InvalidBlockError,
    LocalProtocolError,
    NetworkMismatchError,
    PeerIdMismatchError,
    RemoteProtocolError,
)
from .identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, node_id_for, verify_signature
from .network_key import NetworkKey

PROTOCOL_NAME = b"Noise_XX_25519_AESGCM_BLAKE2b"
"""AESGCM rather than ChaChaPoly: every block placed on a peer is sealed by
the sender and opened by the receiver, and with AES instructions (x86-64
since 2010, ARMv8) OpenSSL's AES-256-GCM does 8.8 GB/s here against 3.2 for
ChaCha20-Poly1305 (1 MiB messages). Both are Noise ciphers and equally
strong; a machine without AES instructions would be the one to pay."""

# Bound into every handshake as the Noise prologue: two programs that do not
# agree on it cannot complete a handshake with each other.
PROLOGUE = b"cas/net noise handshake"

PSK_PROTOCOL_NAME = b"Noise_XXpsk0_25519_AESGCM_BLAKE2b"
"""The handshake of a private network: XX with the network key as the
pre-shared key, mixed in before the first message (the "psk0" modifier)."""
PSK_SIZE = 32  # Noise spec section 9: a PSK is 32 bytes

# A refusal: the body of the handshake frame a responder sends instead of
# message 2 when message 1 shows that the peer is on another network, then
# it closes. Cleartext and unauthenticated (there are no shared keys to
# authenticate it with); all it can do is make a handshake that is failing
# anyway fail with a clearer reason. Each is shorter than the shortest
# message 2 (96 bytes), so it is never mistaken for one.
REFUSAL_PREFIX = b"cas/net refused: "
REFUSED_KEY_DIFFERS = REFUSAL_PREFIX + b"network key differs"
"""From a private node whose key did not verify the peer's message 1."""
REFUSED_PRIVATE = REFUSAL_PREFIX + b"private network"
"""From a private node to a peer that sent a plain XX message 1 (no key)."""
REFUSED_OPEN = REFUSAL_PREFIX + b"open network"
"""From a node with no key to a peer that sent a PSK message 1."""
REFUSALS = (REFUSED_KEY_DIFFERS, REFUSED_PRIVATE, REFUSED_OPEN)

# Why a handshake between different networks failed, as both ends say it
# (the driver's log line is "refused peer HOST:PORT: <reason>").
KEY_DIFFERS = "it is not on this node's private network (network key differs)"
PEER_HAS_NO_KEY = "it is not on this node's private network (it has no network key)"
WE_HAVE_NO_KEY = "it is on a private network (this node has no network key)"

# Domain separation for the identity signature (libp2p uses
# "noise-libp2p-static-key:"; ours names cas so a signature made for one
# protocol can never be replayed into the other).
IDENTITY_SIGNATURE_PREFIX = b"cas-noise-static-key:"

DHLEN = 32  # X25519 public keys and shared secrets (Noise spec section 12.1)
HASHLEN = 64  # BLAKE2b output (section 12.8)
KEYLEN = 32  # AES-256 key
TAGLEN = 16  # GCM tag
# Noise spec section 3: every Noise message, handshake or transport, is at
# most 65535 bytes, so that it can sit behind a 16-bit length.
MAX_NOISE_MESSAGE = 65535
MAX_NOISE_PLAINTEXT = MAX_NOISE_MESSAGE - TAGLEN
# Section 5.1: the nonce 2^64-1 is reserved; reaching it means the key is
# spent (after 2^64-1 messages, which no connection will live to see).
_MAX_NONCE = (1 << 64) - 1
# A handshake payload carries a public key and a signature (~110 bytes of
# CBOR); 1 KiB is ample and stops a peer making us decode large junk.
MAX_HANDSHAKE_PAYLOAD = 1024


# -- the primitives, as the spec names them (section 4) -------------------------


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASHLEN).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def _hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> tuple[bytes, ...]:
    """Noise's HKDF (section 4.3): two or three HASHLEN-byte outputs."""
    temp_key = _hmac(chaining_key, input_key_material)
    out1 = _hmac(temp_key, b"\x01")
    out2 = _hmac(temp_key, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, _hmac(temp_key, out2 + b"\x03")


def _dh(private_key: bytes, public_key: bytes) -> bytes:
    try:
        return sodium.crypto_scalarmult(private_key, public_key)
    except nacl.exceptions.RuntimeError:
        # libsodium refuses low-order points (an all-zero shared secret).
        raise HandshakeError("the peer sent an invalid X25519 public key") from None


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 keypair ``(private, public)``."""
    private = os.urandom(DHLEN)
    return private, sodium.crypto_scalarmult_base(private)


def _nonce(n: int) -> bytes:
    # AESGCM (section 12.4): 32 bits of zeros, then n as 64-bit big-endian.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "big")


# -- CipherState (section 5.1) ---------------------------------------------------


class CipherState:
    """A key and a message counter: one direction of encrypted traffic."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != KEYLEN:
            raise LocalProtocolError("an AESGCM key has 32 bytes")
        self._key = key
        # OpenSSL's context for the key, made once: making it costs about
        # what encrypting a small message does.
        self._aead = None if key is None else AESGCM(key)
        self._n = 0

    def __repr__(self) -> str:
        return f"CipherState(has_key={self.has_key}, nonce={self._n})"

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def nonce(self) -> int:
        return self._n

    def _next_nonce(self) -> bytes:
        if self._n >= _MAX_NONCE:
            raise LocalProtocolError("this key is spent (nonce exhausted); reconnect")
        nonce = _nonce(self._n)
        self._n += 1
        return nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        if self._aead is None:
            return bytes(plaintext)
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def encrypt_into(self, plaintext: bytes | memoryview, out: memoryview) -> None:
        """:meth:`encrypt_with_ad` with empty ad, written into ``out``
        (exactly ``len(plaintext) + TAGLEN`` bytes). Keyed ciphers only."""
        if self._aead is None:
            raise LocalProtocolError("encrypt_into needs a keyed cipher")
        self._aead.encrypt_into(self._next_nonce(), plaintext, b"", out)

    def decrypt_into(self, ciphertext: bytes | memoryview, out: memoryview) -> None:
        """:meth:`decrypt_with_ad` with empty ad, written into ``out``
        (exactly ``len(ciphertext) - TAGLEN`` bytes). Keyed ciphers only."""
        if self._aead is None:
            raise LocalProtocolError("decrypt_into needs a keyed cipher")
        if len(ciphertext) < TAGLEN:
            raise DecryptError("ciphertext shorter than its authentication tag")
        if self._n >= _MAX_NONCE:
            raise LocalProtocolError("this key is spent (nonce exhausted); reconnect")
        try:
            self._aead.decrypt_into(_nonce(self._n), ciphertext, b"", out)
        except InvalidTag:
            raise DecryptError("a message failed authentication") from None
        self._n += 1

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        if self._aead is None:
            return bytes(ciphertext)
        if len(ciphertext) < TAGLEN:
            raise DecryptError("ciphertext shorter than its authentication tag")
        if self._n >= _MAX_NONCE:
            raise LocalProtocolError("this key is spent (nonce exhausted); reconnect")
        try:
            plaintext = self._aead.decrypt(_nonce(self._n), ciphertext, ad)
        except InvalidTag:
            # The nonce is not advanced: the spec leaves the state unchanged
            # on failure, and the caller drops the connection anyway.
            raise DecryptError("a message failed authentication") from None
        self._n += 1
        return plaintext

    def rekey(self) -> None:
        """Section 11.3: the new key is ENCRYPT(k, maxnonce, "", zeros)[:32]."""
        if self._aead is None:
            raise LocalProtocolError("cannot rekey a cipher that has no key")
        self._key = self._aead.encrypt(_nonce(_MAX_NONCE), bytes(KEYLEN), b"")[:KEYLEN]
        self._aead = AESGCM(self._key)


# -- SymmetricState (section 5.2) ------------------------------------------------


class SymmetricState:
    """The running transcript hash ``h``, the chaining key ``ck`` and a cipher."""

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = _hash(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, input_key_material, 2)
        self.cipher = CipherState(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        """Section 5.2, for "psk" tokens: ck, a hash input and a key."""
        self.ck, temp_h, temp_k = _hkdf(self.ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k[:KEYLEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = _hkdf(self.ck, b"", 2)
        return CipherState(temp_k1[:KEYLEN]), CipherState(temp_k2[:KEYLEN])


# -- HandshakeState for XX (section 5.3, pattern from section 7.5) ----------------

_XX = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


def _xx_with_psk(position: int) -> tuple[tuple[str, ...], ...]:
    """XX with the "pskN" modifier (section 9.2): psk0 puts a "psk" token
    first in message 1, pskN (N >= 1) last in message N."""
    messages = [list(tokens) for tokens in _XX]
    if position == 0:
        messages[0].insert(0, "psk")
    else:
        messages[position - 1].append("psk")
    return tuple(tuple(tokens) for tokens in messages)


def protocol_name(psk_position: int | None = None) -> bytes:
    """``Noise_XX_25519_AESGCM_BLAKE2b``, or with ``pskN`` after ``XX``."""
    if psk_position is None:
        return PROTOCOL_NAME
    return b"Noise_XXpsk%d_25519_AESGCM_BLAKE2b" % psk_position


class NoiseXX:
    """The bare Noise XX handshake, exactly as the spec defines it.

    Call :meth:`write_message` and :meth:`read_message` alternately (the
    initiator writes first); after the third message :attr:`complete` is
    true and :meth:`split` yields the transport ciphers. The ephemeral key
    may be supplied only to reproduce published test vectors.

    With ``psk`` (32 bytes) it is ``XXpskN`` for ``psk_position`` N: cas
    uses psk0 (see the module docstring); the other placements exist so
    that the published XXpsk3 vector can check the PSK rules.
    """

    def __init__(
        self,
        initiator: bool,
        static_private: bytes,
        prologue: bytes = b"",
        *,
        ephemeral_private: bytes | None = None,
        psk: bytes | None = None,
        psk_position: int = 0,
    ) -> None:
        if len(static_private) != DHLEN:
            raise LocalProtocolError("an X25519 private key has 32 bytes")
        if psk is not None and len(psk) != PSK_SIZE:
            raise LocalProtocolError("a Noise pre-shared key has 32 bytes")
        if not 0 <= psk_position <= len(_XX):
            raise LocalProtocolError("XX takes psk0 to psk3")
        self._psk = psk
        self._pattern = _XX if psk is None else _xx_with_psk(psk_position)
        self.initiator = initiator
        self._s = static_private
        self.static_public = sodium.crypto_scalarmult_base(static_private)
        self._e_fixed = ephemeral_private
        self._e: bytes | None = None
        self.remote_static: bytes | None = None
        self._re: bytes | None = None
        self._symmetric = SymmetricState(protocol_name(None if psk is None else psk_position))
        self._symmetric.mix_hash(prologue)
        self._step = 0
        self._failed = False

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        psk = "" if self._psk is None else ", with psk"
        return f"NoiseXX({role}, message {self._step + 1} of 3{psk})"

    @property
    def complete(self) -> bool:
        return self._step == len(self._pattern)

    @property
    def handshake_hash(self) -> bytes:
        """The transcript hash ``h``: equal on both ends, unique per session."""
        return self._symmetric.h

    @property
    def message_index(self) -> int:
        """How many of the three handshake messages have been processed."""
        return self._step

    @property
    def our_turn(self) -> bool:
        """True if the next handshake message is ours to write."""
        return not self.complete and (self._step % 2 == 0) == self.initiator

    def _check_turn(self, writing: bool) -> None:
        if self._failed:
            raise LocalProtocolError("this handshake already failed; start a new one")
        if self.complete:
            raise LocalProtocolError("the handshake is already complete")
        if self.our_turn != writing:
            raise LocalProtocolError(
                "it is not our turn to " + ("write" if writing else "read")
            )

    def _mix_dh(self, token: str) -> None:
        if token == "ee":
            local, remote = self._e, self._re
        elif token == "es":  # initiator's ephemeral with responder's static
            local, remote = (self._e, self.remote_static) if self.initiator else (self._s, self._re)
        else:  # "se": initiator's static with responder's ephemeral
            local, remote = (self._s, self._re) if self.initiator else (self._e, self.remote_static)
        assert local is not None and remote is not None
        self._symmetric.mix_key(_dh(local, remote))

    def write_message(self, payload: bytes = b"") -> bytes:
        """Our next handshake message, carrying ``payload``."""
        self._check_turn(writing=True)
        out = bytearray()
        for token in self._pattern[self._step]:
            if token == "e":
                if self._e_fixed is not None:
                    self._e = self._e_fixed
                    e_public = sodium.crypto_scalarmult_base(self._e)
                else:
                    self._e, e_public = generate_keypair()
                out += e_public
                self._symmetric.mix_hash(e_public)
                if self._psk is not None:  # section 9.2: "e" also calls MixKey
                    self._symmetric.mix_key(e_public)
            elif token == "psk":
                assert self._psk is not None
                self._symmetric.mix_key_and_hash(self._psk)
            elif token == "s":
                out += self._symmetric.encrypt_and_hash(self.static_public)
            else:
                self._mix_dh(token)
        out += self._symmetric.encrypt_and_hash(payload)
        if len(out) > MAX_NOISE_MESSAGE:
            raise LocalProtocolError("handshake payload too large for one Noise message")
        self._step += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's handshake message; return its payload."""
        self._check_turn(writing=False)
        if len(message) > MAX_NOISE_MESSAGE:
            self._failed = True
            raise HandshakeError("handshake message longer than a Noise message may be")
        view = bytes(message)
        pos = 0
        try:
            for token in self._pattern[self._step]:
                if token == "e":
                    if len(view) - pos < DHLEN:
                        raise HandshakeError("handshake message too short for an ephemeral key")
                    self._re = view[pos : pos + DHLEN]
                    pos += DHLEN
                    self._symmetric.mix_hash(self._re)
                    if self._psk is not None:
                        self._symmetric.mix_key(self._re)
                elif token == "psk":
                    assert self._psk is not None
                    self._symmetric.mix_key_and_hash(self._psk)
                elif token == "s":
                    size = DHLEN + (TAGLEN if self._symmetric.cipher.has_key else 0)
                    if len(view) - pos < size:
                        raise HandshakeError("handshake message too short for a static key")
                    self.remote_static = self._symmetric.decrypt_and_hash(view[pos : pos + size])
                    pos += size
                else:
                    self._mix_dh(token)
            payload = self._symmetric.decrypt_and_hash(view[pos:])
        except DecryptError:
            self._failed = True
            raise HandshakeError("handshake message failed authentication") from None
        except RemoteProtocolError:
            self._failed = True
            raise
        self._step += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """``(send, receive)`` ciphers for this side, once :attr:`complete`."""
        if not self.complete:
            raise LocalProtocolError("the handshake is not complete")
        c1, c2 = self._symmetric.split()
        return (c1, c2) if self.initiator else (c2, c1)


# -- transport --------------------------------------------------------------------


def sealed_size(plaintext_size: int) -> int:
    """Ciphertext bytes :meth:`Transport.seal` produces for a plaintext size."""
    chunks = max(1, -(-plaintext_size // MAX_NOISE_PLAINTEXT))
    return plaintext_size + chunks * TAGLEN


class Transport:
    """The two directional ciphers of an established session.

    :meth:`encrypt`/:meth:`decrypt` handle one Noise transport message (at
    most 65535 bytes). :meth:`seal`/:meth:`open` handle one cas message of
    any size by cutting it into consecutive Noise messages of at most 65535
    ciphertext bytes each, every one but the last full; the receiver, who
    knows the total ciphertext length from the frame header, cuts it the same
    way. Each piece has its own tag and nonce, so a truncated, reordered or
    spliced message fails to decrypt.
    """

    def __init__(self, send: CipherState, receive: CipherState, handshake_hash: bytes) -> None:
        self._send = send
        self._receive = receive
        self.handshake_hash = handshake_hash

    def __repr__(self) -> str:
        return f"Transport(sent={self._send.nonce}, received={self._receive.nonce})"

    def encrypt(self, plaintext: bytes) -> bytes:
        if len(plaintext) > MAX_NOISE_PLAINTEXT:
            raise LocalProtocolError("a Noise transport message holds at most 65519 bytes")
        return self._send.encrypt_with_ad(b"", plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) > MAX_NOISE_MESSAGE:
            raise DecryptError("a Noise transport message is at most 65535 bytes")
        return self._receive.decrypt_with_ad(b"", ciphertext)

    def seal(self, plaintext: bytes) -> bytes:
        if len(plaintext) <= MAX_NOISE_PLAINTEXT:
            # One piece: nearly every message (a 20-peer answer is ~1.2 KB).
            return self._send.encrypt_with_ad(b"", plaintext)
        out = bytearray(sealed_size(len(plaintext)))
        self.seal_into([plaintext], memoryview(out))
        return bytes(out)

    def seal_into(self, parts: Sequence[bytes | memoryview], out: memoryview) -> None:
        """:meth:`seal` the concatenation of ``parts`` into ``out`` (exactly
        :func:`sealed_size` of their total length): each piece is encrypted
        straight from the parts (joined only where a piece spans two) into
        its place, so a block is read once and written once."""
        at = 0
        for piece in _pieces(parts, MAX_NOISE_PLAINTEXT):
            end = at + len(piece) + TAGLEN
            self._send.encrypt_into(piece, out[at:end])
            at = end
        if at != len(out):
            raise LocalProtocolError("seal_into: the output is not the sealed size of the parts")

    def open(self, ciphertext: bytes | memoryview) -> bytes | bytearray:
        """The plaintext of a sealed message: bytes for one piece, a
        bytearray (decrypted in place, not joined) for several."""
        if not ciphertext:
            raise DecryptError("an empty ciphertext carries no message")
        if len(ciphertext) <= MAX_NOISE_MESSAGE:
            return self._receive.decrypt_with_ad(b"", ciphertext)
        pieces = -(-len(ciphertext) // MAX_NOISE_MESSAGE)
        if len(ciphertext) - (pieces - 1) * MAX_NOISE_MESSAGE < TAGLEN:
            raise DecryptError("the last piece is shorter than its authentication tag")
        plaintext = bytearray(len(ciphertext) - pieces * TAGLEN)
        view, out = memoryview(ciphertext), memoryview(plaintext)
        at = 0
        for i in range(0, len(view), MAX_NOISE_MESSAGE):
            piece = view[i : i + MAX_NOISE_MESSAGE]
            end = at + len(piece) - TAGLEN
            self._receive.decrypt_into(piece, out[at:end])
            at = end
        return plaintext


def _pieces(parts: Sequence[bytes | memoryview], size: int) -> Iterator[bytes | memoryview]:
    """The concatenation of ``parts`` cut into pieces of ``size`` bytes
    (the last shorter; one empty piece for no bytes at all). A piece inside
    one part is a view of it; one spanning parts is joined (≤ ``size``)."""
    pending: list[memoryview] = []
    have = 0
    produced = False
    for part in parts:
        view = memoryview(part)
        at = 0
        while at < len(view):
            take = min(size - have, len(view) - at)
            pending.append(view[at : at + take])
            have += take
            at += take
            if have == size:
                yield pending[0] if len(pending) == 1 else b"".join(pending)
                produced = True
                pending, have = [], 0
    if pending or not produced:
        yield pending[0] if len(pending) == 1 else b"".join(pending)


# -- the cas handshake: Noise XX plus the identity binding --------------------------


def identity_proof(identity: Identity, noise_static_public: bytes) -> bytes:
    """The handshake payload proving ``identity`` owns ``noise_static_public``.

    DAG-CBOR map ``{"key": <Ed25519 public key>, "sig": <signature>}``, the
    signature over ``IDENTITY_SIGNATURE_PREFIX || noise_static_public``.
    """
    signature = identity.sign(IDENTITY_SIGNATURE_PREFIX + noise_static_public)
    return dagcbor.encode({"key": identity.public_key, "sig": signature})


def verify_identity_proof(payload: bytes, noise_static_public: bytes) -> bytes:
    """Check a proof made by :func:`identity_proof`; return the Ed25519 key.

    Raises :class:`IdentityProofError` if the payload is not exactly that
    map or the signature does not cover this static key.
    """
    if len(payload) > MAX_HANDSHAKE_PAYLOAD:
        raise IdentityProofError("identity proof is too large")
    try:
        proof = dagcbor.decode(payload)
    except InvalidBlockError as exc:
        raise IdentityProofError(f"identity proof is not valid DAG-CBOR: {exc}") from None
    if not isinstance(proof, dict) or set(proof) != {"key", "sig"}:
        raise IdentityProofError("identity proof must be a map of exactly 'key' and 'sig'")
    key, signature = proof["key"], proof["sig"]
    if not (isinstance(key, bytes) and len(key) == PUBLIC_KEY_SIZE):
        raise IdentityProofError("identity proof 'key' must be a 32-byte Ed25519 public key")
    if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_SIZE):
        raise IdentityProofError("identity proof 'sig' must be a 64-byte Ed25519 signature")
    if not verify_signature(key, IDENTITY_SIGNATURE_PREFIX + noise_static_public, signature):
        raise IdentityProofError("identity proof signature does not verify")
    return key


@dataclass(frozen=True)
class PeerIdentity:
    """Who the handshake proved the peer to be."""

    public_key: bytes
    node_id: bytes

    def __repr__(self) -> str:
        return f"PeerIdentity(node_id={self.node_id.hex()[:16]}…)"


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class Handshake:
    """The cas handshake as a sans-IO state machine.

    Drive it like this (each ``bytes`` travels in one frame)::

        while not hs.complete:
            if hs.our_turn:
                send(hs.next_message())
            else:
                hs.receive_message(receive())
        peer, transport = hs.peer, hs.transport()

    ``expected_peer_id``, if given, is the node ID we mean to reach; a peer
    that proves any other ID is refused with :class:`PeerIdMismatchError`.

    ``network_key``, if given, makes it the private network's handshake
    (``XXpsk0``, see the module docstring); None is plain XX, unchanged on
    the wire. A peer on another network is refused with
    :class:`NetworkMismatchError`; if :attr:`refusal` is then set, send it
    to the peer (one frame) before closing, so it learns why.
    """

    def __init__(
        self,
        identity: Identity,
        role: Role,
        *,
        expected_peer_id: bytes | None = None,
        prologue: bytes = PROLOGUE,
        static_private: bytes | None = None,
        network_key: NetworkKey | None = None,
    ) -> None:
        # The Noise static key is per handshake: the Ed25519 signature is
        # what makes it the node's, so it need not be stored anywhere.
        if static_private is None:
            static_private, _ = generate_keypair()
        self._identity = identity
        self._expected = expected_peer_id
        self._private = network_key is not None
        self._noise = NoiseXX(role is Role.INITIATOR, static_private, prologue,
                              psk=None if network_key is None else network_key.psk)
        self._failed = False
        self.peer: PeerIdentity | None = None
        self.refusal: bytes | None = None
        """The frame to send a peer found to be on another network, once
        :meth:`receive_message` has raised :class:`NetworkMismatchError`."""

    def __repr__(self) -> str:
        return f"Handshake({self._noise!r}, peer={self.peer!r})"

    @property
    def complete(self) -> bool:
        return self._noise.complete

    @property
    def our_turn(self) -> bool:
        return self._noise.our_turn

    def next_message(self) -> bytes:
        """Our next handshake message. Message 1 carries no payload (it would
        travel in clear); messages 2 and 3 carry our identity proof."""
        if self._failed:
            raise LocalProtocolError("this handshake already failed; start a new one")
        payload = b""
        if self._noise.message_index > 0:
            payload = identity_proof(self._identity, self._noise.static_public)
        try:
            return self._noise.write_message(payload)
        except RemoteProtocolError:  # a DH with a bad key the peer sent earlier
            self._failed = True
            raise

    def receive_message(self, message: bytes) -> None:
        """Process the peer's message; raise a :class:`HandshakeError` subclass
        if it is malformed, fails to decrypt, proves the wrong identity, or
        comes from another network (:class:`NetworkMismatchError`)."""
        if self._failed:
            raise LocalProtocolError("this handshake already failed; start a new one")
        step = self._noise.message_index
        try:
            if step == 0:
                if self._read_first(message):
                    raise HandshakeError("the first handshake message must carry no payload")
                return
            if step == 1 and message.startswith(REFUSAL_PREFIX):
                raise self._refused(message)
            payload = self._noise.read_message(message)
            assert self._noise.remote_static is not None
            public_key = verify_identity_proof(payload, self._noise.remote_static)
            node_id = node_id_for(public_key)
            if self._expected is not None and node_id != self._expected:
                raise PeerIdMismatchError(self._expected, node_id)
        except RemoteProtocolError:
            self._failed = True
            raise
        self.peer = PeerIdentity(public_key, node_id)

    def _read_first(self, message: bytes) -> bytes:
        """Message 1, which says which network its sender is on: plain XX's
        is an ephemeral key alone (32 bytes); XXpsk0's adds the tag of its
        empty payload (48 bytes), which only the same key verifies. A
        message of any other size is no cas handshake and gets no refusal."""
        if self._private and len(message) == DHLEN:
            self.refusal = REFUSED_PRIVATE
            raise NetworkMismatchError(PEER_HAS_NO_KEY)
        if not self._private and len(message) == DHLEN + TAGLEN:
            self.refusal = REFUSED_OPEN
            raise NetworkMismatchError(WE_HAVE_NO_KEY)
        try:
            return self._noise.read_message(message)
        except HandshakeError:
            if self._private and len(message) == DHLEN + TAGLEN:
                # With a psk, reading message 1 does no Diffie-Hellman:
                # the tag is all that can fail, and only another key fails it.
                self.refusal = REFUSED_KEY_DIFFERS
                raise NetworkMismatchError(KEY_DIFFERS) from None
            raise

    def _refused(self, message: bytes) -> HandshakeError:
        """The error for a refusal frame received instead of message 2."""
        reasons = ({REFUSED_KEY_DIFFERS: KEY_DIFFERS, REFUSED_OPEN: PEER_HAS_NO_KEY}
                   if self._private else {REFUSED_PRIVATE: WE_HAVE_NO_KEY})
        reason = reasons.get(message)
        if reason is None:  # an unknown reason, or one that cannot apply to us
            return HandshakeError("the peer refused the handshake")
        return NetworkMismatchError(reason)

    def transport(self) -> Transport:
        """The session's ciphers; only after the handshake is complete."""
        if not self.complete or self.peer is None:
            raise LocalProtocolError("the handshake is not complete")
        send, receive = self._noise.split()
        return Transport(send, receive, self._noise.handshake_hash)
