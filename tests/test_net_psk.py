"""Private networks in the network layer: the network key file, the
``Noise_XXpsk0`` handshake (a published vector for the PSK rules, byte for
byte against the independent ``noiseprotocol`` package in both roles), and
what a peer on another network sees: a refusal at message 1, never the
other side's static key or identity."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.exceptions import InvalidTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The independent implementation we are checked against: without it these
# tests must fail, not skip.
from noise.connection import Keypair, NoiseConnection

from cas import dagcbor
from cas.errors import HandshakeError, LocalProtocolError, NetworkMismatchError, RemoteProtocolError
from cas.net.connection import open_channel
from cas.net.identity import Identity
from cas.net.network_key import (
    NetworkKey,
    NetworkKeyError,
    NetworkSettings,
    describe_network,
    network_key_for,
    repository_key_path,
)
from cas.net.noise import (
    KEY_DIFFERS,
    PEER_HAS_NO_KEY,
    PROLOGUE,
    PSK_PROTOCOL_NAME,
    REFUSED_KEY_DIFFERS,
    REFUSED_OPEN,
    REFUSED_PRIVATE,
    WE_HAVE_NO_KEY,
    Handshake,
    NoiseXX,
    Role,
    Transport,
    generate_keypair,
    identity_proof,
)

# -- the published vector: the PSK rules -------------------------------------------
# cacophony (haskell-cryptography/cacophony, vectors/cacophony.txt, commit
# 36c1e5c3a799342b226547ce9fdb3579ab60ccd3), entry
# "Noise_XXpsk3_25519_AESGCM_BLAKE2b". No published vector has psk0 on XX;
# this one checks the same rules (MixKeyAndHash for "psk", MixKey on every
# "e" once a PSK is in use, the payload of message 1 encrypted) with the
# token in another place, and noiseprotocol checks psk0 itself below.

PSK3_VECTOR = {
    "prologue": "4a6f686e2047616c74",
    "psk": "54686973206973206d7920417573747269616e20706572737065637469766521",
    "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "messages": [
        ("4c756477696720766f6e204d69736573",
         "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
         "1a0e6699152df30e64f4b6f837d14a2637d11f8d7aee7c0ea249dfe0b3bb12d4"),
        ("4d757272617920526f746862617264",
         "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
         "e64bfb36e532b1b83415d4d9eeae41183f9115b8a4a9a9b86fd8d8755da5f627"
         "aa633ae1065631b282e5b160ece8f2901adb7b7e96e1a656dab14a7b2c70202d"
         "649dab622c9cf613218f6d8fe01629"),
        ("462e20412e20486179656b",
         "cb93fef33078034e315683070c27007f40c2e3a34aa89d942cf0a1b51d2b516a"
         "4ef34ec5f53c51c9904c32d0c83fab4c686bf72f9c63251ff96f3efea03a4dad"
         "1e0331dfa7feb5915c13b4"),
        ("4361726c204d656e676572",
         "44970d8d4a48d23bb9df738f2f5999229dcd8414071b58dda13da2"),
        ("4a65616e2d426170746973746520536179",
         "ceac947046dca00efd5642fd8297729740d01d48ffce8b467dd6e2823d9e673f2c"),
        ("457567656e2042f6686d20766f6e2042617765726b",
         "9df434e314412ea96c7958a07bc4ef2172cd998ed9ff8a6f078fec4786c3a41ae59fe0fed4"),
    ],
}


def test_published_xxpsk3_vector_handshake_and_transport_bytes_match() -> None:
    v = {k: bytes.fromhex(val) for k, val in PSK3_VECTOR.items() if isinstance(val, str)}
    initiator = NoiseXX(True, v["init_static"], v["prologue"], ephemeral_private=v["init_ephemeral"],
                        psk=v["psk"], psk_position=3)
    responder = NoiseXX(False, v["resp_static"], v["prologue"], ephemeral_private=v["resp_ephemeral"],
                        psk=v["psk"], psk_position=3)
    messages = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in PSK3_VECTOR["messages"]]
    sides = [(initiator, responder), (responder, initiator)]
    for i, (payload, ciphertext) in enumerate(messages[:3]):
        writer, reader = sides[i % 2]
        assert writer.write_message(payload) == ciphertext
        assert reader.read_message(ciphertext) == payload
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    for i, (payload, ciphertext) in enumerate(messages[3:]):
        send, recv = [(r_send, i_recv), (i_send, r_recv)][i % 2]
        assert send.encrypt_with_ad(b"", payload) == ciphertext
        assert recv.decrypt_with_ad(b"", ciphertext) == payload


# -- XXpsk0 against noiseprotocol ---------------------------------------------------------

PSK = bytes(range(32))
OTHER_PSK = bytes(range(1, 33))


def _theirs(initiator: bool, static_private: bytes, psk: bytes | None, prologue: bytes = b"",
            ephemeral_private: bytes | None = None) -> NoiseConnection:
    conn = NoiseConnection.from_name(PSK_PROTOCOL_NAME if psk is not None
                                     else b"Noise_XX_25519_AESGCM_BLAKE2b")
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
    if ephemeral_private is not None:
        with warnings.catch_warnings():  # "ephemeral keys should not be fixed": tests only
            warnings.simplefilter("ignore")
            conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private)
    if psk is not None:
        conn.set_psks(psk)
    if prologue:
        conn.set_prologue(prologue)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn.start_handshake()
    return conn


def test_xxpsk0_writes_exactly_the_bytes_noiseprotocol_writes() -> None:
    """Same keys, same payloads: our three handshake messages and the
    transport messages after them are noiseprotocol's, byte for byte."""
    keys = {name: generate_keypair()[0] for name in ("is", "ie", "rs", "re")}
    prologue = b"psk interop"
    ours_i = NoiseXX(True, keys["is"], prologue, ephemeral_private=keys["ie"], psk=PSK)
    ours_r = NoiseXX(False, keys["rs"], prologue, ephemeral_private=keys["re"], psk=PSK)
    theirs_i = _theirs(True, keys["is"], PSK, prologue, keys["ie"])
    theirs_r = _theirs(False, keys["rs"], PSK, prologue, keys["re"])
    for i, payload in enumerate([b"", b"responder payload", b"initiator payload"]):
        (ours_w, ours_rd), (theirs_w, theirs_rd) = [((ours_i, ours_r), (theirs_i, theirs_r)),
                                                    ((ours_r, ours_i), (theirs_r, theirs_i))][i % 2]
        message = ours_w.write_message(payload)
        assert message == theirs_w.write_message(payload)
        assert ours_rd.read_message(message) == payload
        assert theirs_rd.read_message(message) == payload
    assert ours_i.handshake_hash == theirs_i.get_handshake_hash() == theirs_r.get_handshake_hash()
    send, _ = ours_i.split()
    for size in (0, 1, 1000):
        message = os.urandom(size)
        assert send.encrypt_with_ad(b"", message) == theirs_i.encrypt(message)


@pytest.mark.parametrize("we_initiate", [True, False], ids=["ours-initiates", "theirs-initiates"])
def test_xxpsk0_interoperates_with_noiseprotocol_in_both_roles(we_initiate: bool) -> None:
    their_static, their_public = generate_keypair()
    ours = NoiseXX(we_initiate, generate_keypair()[0], PROLOGUE, psk=PSK)
    theirs = _theirs(not we_initiate, their_static, PSK, PROLOGUE)
    for payload in (b"", b"two", b"three"):
        if ours.our_turn:
            assert theirs.read_message(ours.write_message(payload)) == payload
        else:
            assert ours.read_message(theirs.write_message(payload)) == payload
    assert ours.complete and theirs.handshake_finished
    assert ours.remote_static == their_public
    transport = Transport(*ours.split(), ours.handshake_hash)
    assert theirs.decrypt(transport.encrypt(b"ping")) == b"ping"
    assert transport.decrypt(theirs.encrypt(b"pong")) == b"pong"


@pytest.mark.parametrize("we_initiate", [True, False], ids=["ours-initiates", "theirs-initiates"])
def test_noiseprotocol_speaks_the_cas_handshake_of_a_private_network(we_initiate: bool) -> None:
    """The cas handshake with a network key is plain XXpsk0 plus the
    identity proofs: noiseprotocol, given the key, the prologue and a
    proof, completes it with us in either role."""
    ours_id, their_id = Identity.generate(), Identity.generate()
    their_static, their_public = generate_keypair()
    key = NetworkKey(PSK)
    role = Role.INITIATOR if we_initiate else Role.RESPONDER
    ours = Handshake(ours_id, role, network_key=key,
                     expected_peer_id=their_id.node_id if we_initiate else None)
    theirs = _theirs(not we_initiate, their_static, PSK, PROLOGUE)
    their_proof = identity_proof(their_id, their_public)
    for index in range(3):
        if ours.our_turn:
            payload = theirs.read_message(ours.next_message())
            if index > 0:
                assert dagcbor.decode(payload)["key"] == ours_id.public_key
        else:
            ours.receive_message(theirs.write_message(their_proof if index > 0 else b""))
    assert ours.complete and theirs.handshake_finished
    assert ours.peer is not None and ours.peer.node_id == their_id.node_id


def test_with_a_key_message_one_carries_a_tag_and_without_one_the_wire_is_plain_xx() -> None:
    private = Handshake(Identity.generate(), Role.INITIATOR, network_key=NetworkKey(PSK))
    assert len(private.next_message()) == 48  # e, and the tag of the empty payload
    open_ = Handshake(Identity.generate(), Role.INITIATOR)
    first = open_.next_message()
    assert len(first) == 32  # e alone, as before private networks existed
    theirs = _theirs(False, generate_keypair()[0], None, PROLOGUE)
    assert theirs.read_message(first) == b""  # plain XX


# -- another network: refused at message 1, nothing learnt ---------------------------------


def _first_exchange(initiator: Handshake, responder: Handshake) -> tuple[NetworkMismatchError, bytes]:
    """Message 1 to the responder, which must refuse it; returns its error
    and every byte it sent back (its refusal)."""
    with pytest.raises(NetworkMismatchError) as refused:
        responder.receive_message(initiator.next_message())
    assert responder.refusal is not None
    return refused.value, responder.refusal


@pytest.mark.parametrize("initiator_key, responder_key, responder_says, refusal, initiator_says", [
    (NetworkKey(OTHER_PSK), NetworkKey(PSK), KEY_DIFFERS, REFUSED_KEY_DIFFERS, KEY_DIFFERS),
    (None, NetworkKey(PSK), PEER_HAS_NO_KEY, REFUSED_PRIVATE, WE_HAVE_NO_KEY),
    (NetworkKey(PSK), None, WE_HAVE_NO_KEY, REFUSED_OPEN, PEER_HAS_NO_KEY),
], ids=["keys-differ", "open-dials-private", "private-dials-open"])
def test_a_peer_on_another_network_is_refused_at_message_one_and_learns_nothing(
        initiator_key: NetworkKey | None, responder_key: NetworkKey | None,
        responder_says: str, refusal: bytes, initiator_says: str) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    initiator = Handshake(alice, Role.INITIATOR, network_key=initiator_key)
    responder = Handshake(bob, Role.RESPONDER, network_key=responder_key)
    error, sent_back = _first_exchange(initiator, responder)
    assert str(error) == responder_says
    # All the initiator ever receives is the fixed refusal: no ephemeral or
    # static key, no identity proof, nothing derived from the responder's keys.
    assert sent_back == refusal
    assert bob.public_key not in sent_back and bob.node_id not in sent_back
    with pytest.raises(NetworkMismatchError) as told:
        initiator.receive_message(sent_back)
    assert str(told.value) == initiator_says
    assert initiator.peer is None and responder.peer is None
    assert initiator._noise.remote_static is None and responder._noise.remote_static is None
    for side in (initiator, responder):
        with pytest.raises(LocalProtocolError, match="already failed"):  # a failed handshake is spent
            side.next_message()


def test_noiseprotocol_agrees_that_another_key_fails_message_one_both_ways() -> None:
    ours = Handshake(Identity.generate(), Role.RESPONDER, network_key=NetworkKey(PSK))
    theirs = _theirs(True, generate_keypair()[0], OTHER_PSK, PROLOGUE)
    with pytest.raises(NetworkMismatchError, match="network key differs"):
        ours.receive_message(theirs.write_message(b""))
    theirs = _theirs(False, generate_keypair()[0], OTHER_PSK, PROLOGUE)
    ours = Handshake(Identity.generate(), Role.INITIATOR, network_key=NetworkKey(PSK))
    with pytest.raises(InvalidTag):  # the tag of message 1's empty payload
        theirs.read_message(ours.next_message())


def test_a_refusal_that_cannot_apply_is_an_ordinary_handshake_failure() -> None:
    open_ = Handshake(Identity.generate(), Role.INITIATOR)
    open_.next_message()
    with pytest.raises(HandshakeError) as info:
        open_.receive_message(REFUSED_KEY_DIFFERS)  # a node with no key sent no tag to fail
    assert not isinstance(info.value, NetworkMismatchError)
    private = Handshake(Identity.generate(), Role.INITIATOR, network_key=NetworkKey(PSK))
    private.next_message()
    with pytest.raises(HandshakeError) as info:
        private.receive_message(b"cas/net refused: some future reason")
    assert not isinstance(info.value, NetworkMismatchError)


_fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(st.binary(max_size=200))
def test_fuzz_first_message_to_a_private_responder(data: bytes) -> None:
    """Junk is a handshake failure, and only a message of a handshake's own
    size (32 or 48 bytes) is taken for another network's and answered."""
    hs = Handshake(Identity.generate(), Role.RESPONDER, network_key=NetworkKey(PSK))
    with pytest.raises(RemoteProtocolError) as info:
        hs.receive_message(data)
    if len(data) in (32, 48):
        assert isinstance(info.value, NetworkMismatchError) and hs.refusal is not None
    else:
        assert not isinstance(info.value, NetworkMismatchError) and hs.refusal is None


# -- over a stream: the driver sends the refusal, both ends say why ----------------------------


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        trio.run(functools.partial(fn, *args, **kwargs),
                 clock=trio.testing.MockClock(autojump_threshold=0))

    return run


async def _open_pair(a_key: NetworkKey | None, b_key: NetworkKey | None) -> dict[str, Any]:
    """Both ends of a handshake over an in-memory stream: each one's channel,
    or the exception it raised."""
    left, right = trio.testing.memory_stream_pair()
    result: dict[str, Any] = {}

    async def side(name: str, stream: Any, initiator: bool, key: NetworkKey | None) -> None:
        try:
            result[name] = await open_channel(stream, Identity.generate(), initiator=initiator,
                                              network_key=key)
        except RemoteProtocolError as exc:
            result[name] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "a", left, True, a_key)
        nursery.start_soon(side, "b", right, False, b_key)
    return result


@trio_test
async def test_channels_with_the_same_key_open_and_carry_messages() -> None:
    from cas.net import messages as m

    ends = await _open_pair(NetworkKey(PSK), NetworkKey(PSK))
    await ends["a"].send_message(m.Ping(request_id=1))
    assert await ends["b"].receive_message() == m.Ping(request_id=1)


@pytest.mark.parametrize("a_key, b_key, a_says, b_says", [
    (NetworkKey(OTHER_PSK), NetworkKey(PSK), KEY_DIFFERS, KEY_DIFFERS),
    (None, NetworkKey(PSK), WE_HAVE_NO_KEY, PEER_HAS_NO_KEY),
    (NetworkKey(PSK), None, PEER_HAS_NO_KEY, WE_HAVE_NO_KEY),
], ids=["keys-differ", "open-dials-private", "private-dials-open"])
@trio_test
async def test_channels_across_networks_fail_on_both_ends_with_the_reason(
        a_key: NetworkKey | None, b_key: NetworkKey | None, a_says: str, b_says: str) -> None:
    ends = await _open_pair(a_key, b_key)
    assert isinstance(ends["a"], NetworkMismatchError) and str(ends["a"]) == a_says
    assert isinstance(ends["b"], NetworkMismatchError) and str(ends["b"]) == b_says


# -- the key file ------------------------------------------------------------------------------


def test_a_new_key_file_is_private_text_and_loads_back(tmp_path: Path) -> None:
    key = NetworkKey.generate()
    path = tmp_path / "network.key"
    key.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == "cas-network-key v1" and len(lines) == 2
    assert bytes.fromhex(lines[1]) == key.psk
    loaded = NetworkKey.load(path)
    assert loaded == key and loaded.fingerprint == key.fingerprint
    assert len(key.fingerprint) == 16 and key.fingerprint != NetworkKey.generate().fingerprint
    for shown in (repr(key), str(key)):  # only the fingerprint, never the key
        assert key.psk.hex() not in shown and key.fingerprint in shown


def test_an_existing_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "network.key"
    NetworkKey.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(NetworkKeyError, match="already exists"):
        NetworkKey.generate().save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["network.key"]  # no temporary left


@pytest.mark.parametrize("content", [
    b"",
    b"cas-network-key v1\n",
    b"cas-network-key v2\n" + b"ab" * 32 + b"\n",
    b"cas-network-key v1\n" + b"ab" * 31 + b"\n",
    b"cas-network-key v1\n" + b"zz" * 32 + b"\n",
    b"cas-ed25519-seed-v1 " + b"ab" * 32 + b"\n",
    b"\xff" * 90,
    b"x" * 4096,
], ids=["empty", "no-key", "other-version", "short", "not-hex", "node-key",
        "binary", "large"])
def test_a_damaged_key_file_is_refused_with_what_is_expected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "network.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(NetworkKeyError, match="damaged or not a cas network key.*cas-network-key v1"):
        NetworkKey.load(path)


def test_a_networks_settings_travel_in_its_key_file_and_are_part_of_its_psk(tmp_path: Path) -> None:
    settings = NetworkSettings(replicas=5, repair_interval=300, lease=7 * 86400)
    key = NetworkKey.generate(settings)
    key.save(tmp_path / "network.key")
    assert (tmp_path / "network.key").read_text().splitlines()[2:] == [
        "replicas 5", "repair-interval 300", "lease 604800"]
    loaded = NetworkKey.load(tmp_path / "network.key")
    assert loaded.settings == settings and loaded.psk == key.psk and loaded.fingerprint == key.fingerprint
    # The same secret with other settings, or none, is another network.
    plain = NetworkKey(key._secret)
    other = NetworkKey(key._secret, settings=NetworkSettings(replicas=3, repair_interval=300, lease=7 * 86400))
    assert plain.psk == key._secret  # no settings: the key itself, as before settings existed
    assert len({key.psk, plain.psk, other.psk}) == 3
    assert len({key.fingerprint, plain.fingerprint, other.fingerprint}) == 3
    assert "replicas 5" in describe_network(loaded) and key.psk.hex() not in describe_network(loaded)


@pytest.mark.parametrize("lines, complaint", [
    (b"extra\n", "not a setting this cas knows"),
    (b"replicas five\n", "not a setting this cas knows"),
    (b"replicas 05\n", "not a setting this cas knows"),
    (b"replicas 5\nreplicas 6\n", "not a setting this cas knows"),
    (b"replicas 0\n", "replicas must be a whole number from 1 to 20"),
    (b"id-difficulty 41\n", "id-difficulty must be a whole number from 0 to 40"),
    (b"lease 60\nreplicas 5\n", "must come in the order replicas, repair-interval, lease"),
])
def test_a_bad_setting_in_a_key_file_is_refused_saying_which(tmp_path: Path, lines: bytes, complaint: str) -> None:
    path = tmp_path / "network.key"
    path.write_bytes(b"cas-network-key v1\n" + b"ab" * 32 + b"\n" + lines)
    path.chmod(0o600)
    with pytest.raises(NetworkKeyError, match=complaint):
        NetworkKey.load(path)


def test_a_key_file_others_can_read_or_a_missing_one_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "network.key"
    with pytest.raises(NetworkKeyError, match="does not exist.*cas network init --out"):
        NetworkKey.load(path)
    NetworkKey.generate().save(path)
    path.chmod(0o644)
    with pytest.raises(NetworkKeyError, match="chmod 600"):
        NetworkKey.load(path)
    path.chmod(0o600)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(NetworkKeyError):
        NetworkKey.load(link)


def test_a_repository_with_a_key_uses_it_unless_another_file_is_given(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert network_key_for(repo) is None  # no key: the open network
    (repo / "keys").mkdir(parents=True)
    own = NetworkKey.generate()
    own.save(repository_key_path(repo))
    assert network_key_for(repo) == own
    other = NetworkKey.generate()
    other.save(tmp_path / "other.key")
    assert network_key_for(repo, tmp_path / "other.key") == other
    repository_key_path(repo).chmod(0o644)
    with pytest.raises(NetworkKeyError):  # a key that cannot be used never means "open"
        network_key_for(repo)
