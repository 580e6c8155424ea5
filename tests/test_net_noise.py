"""The Noise XX handshake: published vectors, interop with an independent
implementation (the ``noiseprotocol`` package), identity binding, and fuzzing."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# noiseprotocol is a test dependency (the independent implementation we are
# checked against): without it these tests must fail, not skip.
from noise.connection import Keypair, NoiseConnection

from cas import dagcbor
from cas.errors import (
    DecryptError,
    HandshakeError,
    IdentityProofError,
    LocalProtocolError,
    PeerIdMismatchError,
    RemoteProtocolError,
)
from cas.net.identity import Identity
from cas.net.noise import (
    IDENTITY_SIGNATURE_PREFIX,
    MAX_NOISE_PLAINTEXT,
    PROTOCOL_NAME,
    CipherState,
    Handshake,
    NoiseXX,
    Role,
    Transport,
    generate_keypair,
    sealed_size,
)

# -- the published vector ----------------------------------------------------------
# From the cacophony test vectors (haskell-cryptography/cacophony,
# vectors/cacophony.txt, commit 36c1e5c3a799342b226547ce9fdb3579ab60ccd3),
# entry "Noise_XX_25519_AESGCM_BLAKE2b". Messages alternate sides,
# initiator first: three handshake messages, then three transport messages.

VECTOR = {
    "prologue": "4a6f686e2047616c74",
    "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "messages": [
        ("4c756477696720766f6e204d69736573",
         "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
         "4c756477696720766f6e204d69736573"),
        ("4d757272617920526f746862617264",
         "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
         "cf031a86733a890297fda30d4b471d0ceeff97124c67a7b656356862398ad52e"
         "08b423271d80894ace0fc531c39492823f2cc8f5ebe97a7feffaae500aef491e"
         "f9815e8e024ac906b3678983549ec8"),
        ("462e20412e20486179656b",
         "ee1c5e4fe3060d7014884f9328573c4f2e3c5593c3ef574b418e8bb397792a77"
         "db4cc497ce5db0c79d29afbbb78a3059d289413105384ef2738071c015c39467"
         "f6e9b61eb3e2f1db47d5f6"),
        ("4361726c204d656e676572",
         "7ab9b6ee246550448f838ec94ab1c3cb93e7d475dc8aa7434e6462"),
        ("4a65616e2d426170746973746520536179",
         "3d741aa91dff33adf4758746ddbf2b6afef8b64768b1d589e6bd999f7e7c7e42"
         "87"),
        ("457567656e2042f6686d20766f6e2042617765726b",
         "6645a432705ba19de0dedaf6c9f2c4ecfa2447d48eac868bffd3ae8d899d6656"
         "a0a00c5699"),
    ],
}


def _vector_pair() -> tuple[NoiseXX, NoiseXX]:
    v = {k: bytes.fromhex(val) for k, val in VECTOR.items() if isinstance(val, str)}
    initiator = NoiseXX(True, v["init_static"], v["prologue"],
                        ephemeral_private=v["init_ephemeral"])
    responder = NoiseXX(False, v["resp_static"], v["prologue"],
                        ephemeral_private=v["resp_ephemeral"])
    return initiator, responder


def test_published_vector_handshake_and_transport_bytes_match() -> None:
    initiator, responder = _vector_pair()
    messages = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in VECTOR["messages"]]
    sides = [(initiator, responder), (responder, initiator)]
    for i, (payload, ciphertext) in enumerate(messages[:3]):
        writer, reader = sides[i % 2]
        assert writer.write_message(payload) == ciphertext
        assert reader.read_message(ciphertext) == payload
    assert initiator.complete and responder.complete
    assert initiator.handshake_hash == responder.handshake_hash
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    ciphers = [(r_send, i_recv), (i_send, r_recv)]  # message 4 (index 3) is the responder's
    for i, (payload, ciphertext) in enumerate(messages[3:]):
        send, recv = ciphers[i % 2]
        assert send.encrypt_with_ad(b"", payload) == ciphertext
        assert recv.decrypt_with_ad(b"", ciphertext) == payload


# -- interop with noiseprotocol ----------------------------------------------------------


def _theirs(initiator: bool, static_private: bytes, prologue: bytes = b"") -> NoiseConnection:
    conn = NoiseConnection.from_name(PROTOCOL_NAME)
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
    if prologue:
        conn.set_prologue(prologue)
    conn.start_handshake()
    return conn


@pytest.mark.parametrize("we_initiate", [True, False], ids=["ours-initiates", "theirs-initiates"])
def test_interop_with_noiseprotocol_handshake_and_transport(we_initiate: bool) -> None:
    our_static, _ = generate_keypair()
    their_static, their_public = generate_keypair()
    prologue = b"interop prologue"
    ours = NoiseXX(we_initiate, our_static, prologue)
    theirs = _theirs(not we_initiate, their_static, prologue)
    payloads = [b"", b"responder payload", b"initiator payload"]
    for payload in payloads:
        if ours.our_turn:
            assert theirs.read_message(ours.write_message(payload)) == payload
        else:
            assert ours.read_message(theirs.write_message(payload)) == payload
    assert ours.complete and theirs.handshake_finished
    assert ours.remote_static == their_public
    assert ours.handshake_hash == theirs.get_handshake_hash()
    send, receive = ours.split()
    transport = Transport(send, receive, ours.handshake_hash)
    for size in (0, 1, 1000, MAX_NOISE_PLAINTEXT):
        message = os.urandom(size)
        assert theirs.decrypt(transport.encrypt(message)) == message
        assert transport.decrypt(theirs.encrypt(message)) == message


def test_interop_tampered_handshake_is_refused_by_both() -> None:
    ours = NoiseXX(True, generate_keypair()[0])
    theirs = _theirs(False, generate_keypair()[0])
    theirs.read_message(ours.write_message())
    reply = bytearray(theirs.write_message(b"x"))
    reply[40] ^= 1
    with pytest.raises(HandshakeError):
        ours.read_message(bytes(reply))


def test_an_independent_noise_implementation_can_speak_the_cas_handshake() -> None:
    """The cas handshake is plain Noise XX plus payloads: noiseprotocol,
    given the prologue and the identity proof, completes it with us."""
    from cas.net.noise import PROLOGUE, identity_proof

    alice, bob = Identity.generate(), Identity.generate()
    their_static, their_public = generate_keypair()
    theirs = _theirs(False, their_static, PROLOGUE)
    ours = Handshake(alice, Role.INITIATOR, expected_peer_id=bob.node_id)
    assert theirs.read_message(ours.next_message()) == b""
    ours.receive_message(theirs.write_message(identity_proof(bob, their_public)))
    proof = theirs.read_message(ours.next_message())
    assert ours.complete and theirs.handshake_finished
    assert dagcbor.decode(proof)["key"] == alice.public_key
    transport = ours.transport()
    assert theirs.decrypt(transport.encrypt(b"ping")) == b"ping"
    assert transport.decrypt(theirs.encrypt(b"pong")) == b"pong"


# -- the identity-bound handshake ------------------------------------------------------


def _run(initiator: Handshake, responder: Handshake) -> tuple[Transport, Transport]:
    ends = {True: initiator, False: responder}
    turn = True
    while not (initiator.complete and responder.complete):
        ends[not turn].receive_message(ends[turn].next_message())
        turn = not turn
    return initiator.transport(), responder.transport()


def test_handshake_proves_both_identities_and_yields_matching_transports() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    hs_a = Handshake(alice, Role.INITIATOR, expected_peer_id=bob.node_id)
    hs_b = Handshake(bob, Role.RESPONDER)
    t_a, t_b = _run(hs_a, hs_b)
    assert hs_a.peer is not None and hs_a.peer.node_id == bob.node_id
    assert hs_b.peer is not None and hs_b.peer.public_key == alice.public_key
    assert t_a.handshake_hash == t_b.handshake_hash
    big = os.urandom(3 * MAX_NOISE_PLAINTEXT + 7)
    sealed = t_a.seal(big)
    assert len(sealed) == sealed_size(len(big))
    assert t_b.open(sealed) == big
    assert t_a.open(t_b.seal(b"")) == b""


def test_initiator_refuses_a_responder_with_another_node_id() -> None:
    alice, bob, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    hs_a = Handshake(alice, Role.INITIATOR, expected_peer_id=bob.node_id)
    hs_m = Handshake(mallory, Role.RESPONDER)
    hs_m.receive_message(hs_a.next_message())
    with pytest.raises(PeerIdMismatchError) as info:
        hs_a.receive_message(hs_m.next_message())
    assert info.value.actual == mallory.node_id
    assert hs_a.peer is None
    with pytest.raises(LocalProtocolError):
        hs_a.next_message()


class _LyingHandshake(Handshake):
    """Claims ``claimed``'s Ed25519 key but signs with its own identity."""

    def __init__(self, own: Identity, claimed: Identity, role: Role) -> None:
        super().__init__(own, role)
        self._claimed = claimed

    def next_message(self) -> bytes:
        if self._noise.message_index == 0:
            return super().next_message()
        sig = self._identity.sign(IDENTITY_SIGNATURE_PREFIX + self._noise.static_public)
        return self._noise.write_message(
            dagcbor.encode({"key": self._claimed.public_key, "sig": sig})
        )


def test_a_signature_by_another_key_is_refused_with_identity_proof_error() -> None:
    alice, bob, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    # Mallory as responder pretends to be Bob.
    hs_a = Handshake(alice, Role.INITIATOR, expected_peer_id=bob.node_id)
    liar = _LyingHandshake(mallory, bob, Role.RESPONDER)
    liar.receive_message(hs_a.next_message())
    with pytest.raises(IdentityProofError):
        hs_a.receive_message(liar.next_message())
    # Mallory as initiator pretends to be Alice.
    liar = _LyingHandshake(mallory, alice, Role.INITIATOR)
    hs_b = Handshake(bob, Role.RESPONDER)
    hs_b.receive_message(liar.next_message())
    liar.receive_message(hs_b.next_message())
    with pytest.raises(IdentityProofError):
        hs_b.receive_message(liar.next_message())
    assert hs_b.peer is None


def test_a_proof_for_another_static_key_is_refused() -> None:
    """Replaying a genuine proof made for a different Noise static key fails."""
    alice, bob = Identity.generate(), Identity.generate()
    _, other_static = generate_keypair()
    sig = bob.sign(IDENTITY_SIGNATURE_PREFIX + other_static)
    hs_a = Handshake(alice, Role.INITIATOR)
    noise_b = NoiseXX(False, generate_keypair()[0], b"cas/net noise handshake")
    noise_b.read_message(hs_a.next_message())
    forged = noise_b.write_message(dagcbor.encode({"key": bob.public_key, "sig": sig}))
    with pytest.raises(IdentityProofError):
        hs_a.receive_message(forged)


def test_a_peer_speaking_another_prologue_cannot_complete() -> None:
    hs_a = Handshake(Identity.generate(), Role.INITIATOR)
    hs_b = Handshake(Identity.generate(), Role.RESPONDER, prologue=b"some other protocol")
    hs_b.receive_message(hs_a.next_message())
    with pytest.raises(HandshakeError):
        hs_a.receive_message(hs_b.next_message())


def test_transport_rejects_tampering_and_replay() -> None:
    t_a, t_b = _run(Handshake(Identity.generate(), Role.INITIATOR),
                    Handshake(Identity.generate(), Role.RESPONDER))
    first, second = t_a.seal(b"one"), t_a.seal(b"two")
    with pytest.raises(DecryptError):
        t_b.open(second)  # out of order
    assert t_b.open(first) == b"one"
    with pytest.raises(DecryptError):
        t_b.open(first)  # replay
    tampered = bytearray(second)
    tampered[0] ^= 0x80
    with pytest.raises(DecryptError):
        t_b.open(bytes(tampered))


def test_cipher_state_without_key_passes_through_and_rekey_changes_key() -> None:
    assert CipherState().encrypt_with_ad(b"ad", b"plain") == b"plain"
    a, b, unchanged = CipherState(bytes(32)), CipherState(bytes(32)), CipherState(bytes(32))
    a.rekey()
    b.rekey()
    sealed = a.encrypt_with_ad(b"", b"x")
    assert sealed != unchanged.encrypt_with_ad(b"", b"x")
    assert b.decrypt_with_ad(b"", sealed) == b"x"


def test_a_low_order_ephemeral_key_is_the_peers_fault() -> None:
    responder = Handshake(Identity.generate(), Role.RESPONDER)
    responder.receive_message(bytes(32))  # the all-zero X25519 point
    with pytest.raises(HandshakeError, match="invalid X25519"):
        responder.next_message()
    with pytest.raises(LocalProtocolError):
        responder.next_message()


def test_writing_out_of_turn_is_a_local_error() -> None:
    responder = Handshake(Identity.generate(), Role.RESPONDER)
    with pytest.raises(LocalProtocolError):
        responder.next_message()
    with pytest.raises(LocalProtocolError):
        responder.transport()


# -- fuzzing: only RemoteProtocolError may escape --------------------------------------

_fuzz = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(st.binary(max_size=300))
def test_fuzz_first_message_to_responder(data: bytes) -> None:
    hs = Handshake(Identity.generate(), Role.RESPONDER)
    try:
        hs.receive_message(data)
    except RemoteProtocolError:
        return
    assert len(data) == 32  # only a bare ephemeral key is a valid message 1


@_fuzz
@given(st.binary(max_size=400), st.integers(0, 300), st.integers(0, 7))
def test_fuzz_second_message_random_and_bit_flipped(junk: bytes, pos: int, bit: int) -> None:
    initiator = Handshake(Identity.generate(), Role.INITIATOR)
    responder = Handshake(Identity.generate(), Role.RESPONDER)
    responder.receive_message(initiator.next_message())
    genuine = bytearray(responder.next_message())
    genuine[pos % len(genuine)] ^= 1 << bit
    for message in (junk, bytes(genuine), bytes(genuine[: pos % len(genuine)])):
        fresh = Handshake(Identity.generate(), Role.INITIATOR)
        fresh.next_message()
        with pytest.raises(RemoteProtocolError):
            fresh.receive_message(message)


@_fuzz
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(dagcbor.encode, st.dictionaries(
        st.sampled_from(["key", "sig", "x"]),
        st.one_of(st.binary(max_size=70), st.integers(-(2**63), 2**63), st.text(max_size=5),
                  st.none()),
        max_size=3,
    )),
))
def test_fuzz_identity_payload_shapes(payload: bytes) -> None:
    """Valid encryption around a wrong-shaped proof is still refused cleanly."""
    hs_a = Handshake(Identity.generate(), Role.INITIATOR)
    noise_b = NoiseXX(False, generate_keypair()[0], b"cas/net noise handshake")
    noise_b.read_message(hs_a.next_message())
    with pytest.raises(RemoteProtocolError):
        hs_a.receive_message(noise_b.write_message(payload))


def _transport(send_key: bytes, receive_key: bytes) -> Transport:
    return Transport(CipherState(send_key), CipherState(receive_key), b"h")


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 4 * MAX_NOISE_PLAINTEXT + 5), cuts=st.lists(st.integers(0, 4 * MAX_NOISE_PLAINTEXT + 5)))
def test_sealing_parts_in_place_gives_the_bytes_sealing_them_joined_does(size: int, cuts: list[int]) -> None:
    """seal_into over any cutting of a message into parts writes exactly what
    seal of the whole writes (same pieces, same nonces), and it opens."""
    plaintext = os.urandom(size)
    edges = sorted({0, size, *(c for c in cuts if c <= size)})
    parts = [plaintext[a:b] for a, b in zip(edges, edges[1:])] or [b""]
    key = os.urandom(32)
    joined_sender, in_place, receiver = _transport(key, key), _transport(key, key), _transport(key, key)
    out = bytearray(sealed_size(size))
    in_place.seal_into(parts, memoryview(out))
    sealed = joined_sender.seal(plaintext)
    assert bytes(out) == sealed
    assert bytes(receiver.open(sealed)) == plaintext


def test_seal_into_refuses_an_output_of_the_wrong_size() -> None:
    sender = _transport(os.urandom(32), os.urandom(32))
    with pytest.raises((LocalProtocolError, ValueError)):
        sender.seal_into([b"x" * 100], memoryview(bytearray(sealed_size(100) + 1)))
