"""The network layer: node identity and secure, framed message channels.

What lives here, bottom up (docs/network.md describes the wire protocol):

* :mod:`.identity` — the node's Ed25519 key (file mode 0600) and its node ID,
  BLAKE3-256 of the public key.
* :mod:`.network_key` — a private network's key (file mode 0600, shown
  only by its fingerprint), and which key a node uses.
* :mod:`.noise` — the ``Noise_XX_25519_AESGCM_BLAKE2b`` handshake and
  transport ciphers as a sans-IO state machine, with the Noise static key
  bound to the node's Ed25519 identity by a signature; on a private network
  ``Noise_XXpsk0_…`` with the network key as the pre-shared key.
* :mod:`.framing` — 4-byte length-prefixed frames with hard limits, checked
  before any body byte is buffered.
* :mod:`.messages` — every message as a frozen dataclass, encoded as strict
  DAG-CBOR and validated field by field on the way in; the error split between
  the remote's fault (:class:`RemoteProtocolError`) and ours
  (:class:`LocalProtocolError`).
* :mod:`.connection` — the thin trio driver: handshake with a deadline,
  :class:`SecureChannel`, request-id multiplexing (:class:`Connection`),
  idle and stalled-frame timeouts, rate limits, waiting for the frame budget.
* :mod:`.admission` — who may hold an inbound connection: limits per source
  address and in total, new handshakes per address per second, and whose
  connection a newcomer evicts (sans-IO).
* :mod:`.frame_budget` — who may receive a large frame now: the memory for
  large frames, shared out by source address (sans-IO).

This package never decides what a request means (the DHT and the store do)
and never trusts content: blocks and records that arrive here are verified by
the layer that asked for them.
"""

from __future__ import annotations

from ..errors import (
    ConnectionClosedError,
    DecryptError,
    FrameError,
    FrameTooLargeError,
    HandshakeError,
    HandshakeTimeoutError,
    IdentityProofError,
    IncompatibleVersionError,
    LocalProtocolError,
    MalformedMessageError,
    NetworkMismatchError,
    PeerIdMismatchError,
    RemoteProtocolError,
    RequestFailedError,
    RequestTimeoutError,
)
from .admission import Admission, Admitted, Refused
from .connection import AnswerWaiter, ChannelStatistics, Connection, SecureChannel, connect_tcp, open_channel, serve
from .frame_budget import FrameBudget, FrameClaim
from .framing import FrameDecoder, encode_frame
from .identity import Identity, IdentityError, node_id_for
from .messages import (
    MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    Block,
    Error,
    FindBlock,
    FindNode,
    GetRecord,
    Have,
    HaveResult,
    Hello,
    Message,
    Nodes,
    Ok,
    PeerInfo,
    Ping,
    Pong,
    PutRecord,
    Record,
    Request,
    Response,
    StoreBlocks,
    Stored,
)
from .network_key import NetworkKey, NetworkKeyError, network_key_for
from .noise import Handshake, PeerIdentity, Role, Transport

__all__ = [
    # identity
    "Identity", "IdentityError", "node_id_for",
    # private networks
    "NetworkKey", "NetworkKeyError", "network_key_for",
    # handshake and transport
    "Handshake", "Role", "Transport", "PeerIdentity",
    "HandshakeError", "IdentityProofError", "PeerIdMismatchError", "NetworkMismatchError",
    "DecryptError",
    # framing
    "FrameDecoder", "encode_frame", "FrameError", "FrameTooLargeError",
    # messages
    "Message", "Request", "Response", "Hello", "Ping", "Pong", "FindNode", "Nodes",
    "FindBlock", "Block", "StoreBlocks", "Stored", "Ok", "Have", "HaveResult", "PutRecord",
    "GetRecord", "Record", "Error", "PeerInfo", "PROTOCOL_VERSION", "MAX_MESSAGE_SIZE",
    "RemoteProtocolError", "LocalProtocolError", "MalformedMessageError",
    # driver
    "open_channel", "connect_tcp", "SecureChannel", "Connection", "serve", "AnswerWaiter",
    "ChannelStatistics",
    "ConnectionClosedError", "RequestFailedError", "RequestTimeoutError",
    "HandshakeTimeoutError", "IncompatibleVersionError",
    # admission
    "Admission", "Admitted", "Refused",
    # memory
    "FrameBudget", "FrameClaim",
]
