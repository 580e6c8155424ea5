"""The messages nodes exchange, and their strict DAG-CBOR encoding.

This module owns the *shape* of every message on the wire: which types
exist, which fields each has, each field's type and bound, and the one
encoding (DAG-CBOR via :mod:`cas.dagcbor`, canonical, so equal messages are
equal bytes). Decoding is the gate every byte from a peer passes through
after decryption: anything that is not exactly one of the messages below
(unknown type, missing or extra field, wrong type, out of bounds, not
canonical, too large) raises :class:`MalformedMessageError` and nothing else.

It never does I/O, never verifies content against hashes or signatures (the
layers that asked for a block or a record do that) and never keeps state.

Errors are split by whose fault they are, as h11 does:
:class:`RemoteProtocolError` means the peer broke the protocol (drop the
message or the connection, count it against the peer, carry on);
:class:`LocalProtocolError` means our own code tried to send something the
protocol does not allow (a bug: it is never caught and dressed up).

Wire form: a DAG-CBOR map ``{"t": <type>, "id": <request id>, ...fields}``;
``hello`` has no ``"id"``. See docs/network.md for the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar

from .. import dagcbor
from ..cid import CID, MAX_BLOCK_SIZE
from ..dagcbor import encode_head
from ..errors import InvalidBlockError, LocalProtocolError, MalformedMessageError

# -- limits -------------------------------------------------------------------------

PROTOCOL_VERSION = 3
"""1: before leases (``store_blocks`` without ``leases``, ``have`` without
``lease``). 2: before announced addresses (``hello`` without ``host``)."""
# DESIGN.md, "Wire protocol": every CBOR message is at most 2 MiB.
MAX_MESSAGE_SIZE = 2 * 1024 * 1024
# DESIGN.md: chunks are at most 1 MiB and so are tree nodes (cas.cid's
# MAX_BLOCK_SIZE); a block that big plus its envelope fits in one message.
# Kademlia's k (DESIGN.md: k = 20); no answer needs more peers than a bucket.
MAX_PEERS = 20
# HAVE batches presence checks for repair; 1024 CIDs is ~40 KiB on the wire.
MAX_HAVE_CIDS = 1024
# STORE_BLOCKS carries up to 64 blocks whose bytes fit one message with
# room for the envelope (64 CIDs and heads are under 3 KiB).
MAX_STORE_BLOCKS = 64
MAX_STORE_BYTES = MAX_MESSAGE_SIZE - 4096
# A namespace record is a key, a sequence number, a CID and a signature
# (~200 bytes); 16 KiB leaves room to grow without inviting abuse.
MAX_LEASE = (1 << 32) - 1
"""Seconds in a lease on the wire, at most (the receiver caps it at its
network's lease anyway)."""
MAX_RECORD_SIZE = 16 * 1024
MAX_RECORD_KEY_SIZE = 64
# Request ids are chosen by the requester; 32 bits never wrap in practice.
MAX_REQUEST_ID = (1 << 32) - 1
# RFC 1035: a host name is at most 253 characters.
MAX_HOST_LENGTH = 253
MAX_AGENT_LENGTH = 64
MAX_ERROR_CODE_LENGTH = 32
MAX_ERROR_TEXT_LENGTH = 256
NODE_ID_SIZE = 32


# -- field codecs ---------------------------------------------------------------------
# A codec checks a field in both directions: ``decode`` takes the wire value
# (parsed by dagcbor, not yet proven canonical) and returns the Python value;
# ``encode`` the reverse. Both raise ValueError with the reason; callers turn
# that into the right error. Both accept and produce exact types only (no
# subclasses, no floats), which is what lets :func:`decode` skip dagcbor's
# data-model walk and :func:`encode` skip its ordering walk; a codec for a
# map must also check, and build, its keys in canonical order (see peers).


@dataclass(frozen=True)
class _Codec:
    describe: str
    decode: Callable[[Any], Any]
    encode: Callable[[Any], Any]


def _uint(maximum: int, minimum: int = 0) -> _Codec:
    def check(value: Any) -> int:
        if type(value) is not int or not minimum <= value <= maximum:
            raise ValueError(f"must be an integer from {minimum} to {maximum}")
        return value

    return _Codec(f"uint ≤ {maximum}", check, check)


def _bytes(maximum: int, exact: bool = False) -> _Codec:
    def check(value: Any) -> bytes:
        if type(value) is not bytes:
            raise ValueError("must be a byte string")
        if exact and len(value) != maximum:
            raise ValueError(f"must be exactly {maximum} bytes")
        if len(value) > maximum:
            raise ValueError(f"must be at most {maximum} bytes")
        return value

    return _Codec(f"bytes[{'=' if exact else '≤'}{maximum}]", check, check)


def _text(maximum: int) -> _Codec:
    def check(value: Any) -> str:
        if type(value) is not str:
            raise ValueError("must be a text string")
        if len(value.encode("utf-8", "surrogatepass")) > maximum:
            raise ValueError(f"must be at most {maximum} bytes of UTF-8")
        return value

    return _Codec(f"text ≤ {maximum}", check, check)


def _boolean() -> _Codec:
    def check(value: Any) -> bool:
        if type(value) is not bool:
            raise ValueError("must be true or false")
        return value

    return _Codec("bool", check, check)


def _cid() -> _Codec:
    def check(value: Any) -> CID:
        if not isinstance(value, CID):
            raise ValueError("must be a CID link")
        return value

    return _Codec("CID", check, check)


def _optional(inner: _Codec) -> _Codec:
    return _Codec(
        f"{inner.describe} or null",
        lambda v: None if v is None else inner.decode(v),
        lambda v: None if v is None else inner.encode(v),
    )


def _array(inner: _Codec, maximum: int) -> _Codec:
    def decode(value: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise ValueError("must be an array")
        if len(value) > maximum:
            raise ValueError(f"must have at most {maximum} items")
        decode_item = inner.decode
        return tuple([decode_item(item) for item in value])

    def encode(value: Any) -> list[Any]:
        if not isinstance(value, (tuple, list)):
            raise ValueError("must be a tuple")
        if len(value) > maximum:
            raise ValueError(f"must have at most {maximum} items")
        return [inner.encode(item) for item in value]

    return _Codec(f"[{inner.describe}] ≤ {maximum}", decode, encode)


class PeerInfo(NamedTuple):
    """How to reach a node: its ID and the address it listens on.

    A named tuple rather than a frozen dataclass: a FIND_NODE answer carries
    20 of them, and building a frozen dataclass costs ~0.5 µs a field."""

    node_id: bytes
    host: str
    port: int


# A peer's wire keys in canonical DAG-CBOR order (shorter first, then bytewise).
_PEER_KEYS = ("id", "host", "port")
_NODE_ID = _bytes(NODE_ID_SIZE, exact=True)
_HOST = _text(MAX_HOST_LENGTH)
_PORT = _uint(65535, minimum=1)


_new_tuple = tuple.__new__


def _peer_decode(value: Any) -> PeerInfo:
    # The checks of _NODE_ID, _HOST and _PORT, inlined: this runs 20 times per
    # FIND_NODE answer, the commonest message there is.
    if type(value) is not dict or tuple(value) != _PEER_KEYS:
        if type(value) is dict and set(value) == set(_PEER_KEYS):
            raise ValueError("a peer's keys must be in canonical order")
        raise ValueError("a peer must be a map of exactly 'id', 'host' and 'port'")
    node_id, host, port = value.values()  # in _PEER_KEYS order, as just checked
    if type(node_id) is not bytes or len(node_id) != NODE_ID_SIZE:
        raise ValueError(f"a peer's id must be exactly {NODE_ID_SIZE} bytes")
    if type(host) is not str or (len(host) > MAX_HOST_LENGTH // 4  # else ≤ 4 bytes a character fit
                                 and len(host.encode("utf-8", "surrogatepass")) > MAX_HOST_LENGTH):
        raise ValueError(f"a peer's host must be text of at most {MAX_HOST_LENGTH} bytes")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError("a peer's port must be an integer from 1 to 65535")
    # The named tuple without its Python-level __new__ (the fields are checked).
    return _new_tuple(PeerInfo, (node_id, host, port))


_PEER_WIRE_CACHE = 4096
"""Checked wire maps of peers remembered: a node answers FIND_NODE with the
same few hundred contacts over and over."""
_peer_wire: dict[PeerInfo, dict[str, Any]] = {}


def _peer_encode(value: Any) -> dict[str, Any]:
    if type(value) is not PeerInfo:
        raise ValueError("must be a PeerInfo")
    try:
        return _peer_wire[value]
    except (KeyError, TypeError):  # TypeError: a field is unhashable, so invalid
        pass
    # Built in canonical key order (_PEER_KEYS): encode() relies on it. Only
    # a peer whose fields pass is remembered, and the map is never changed.
    wire = {"id": _NODE_ID.encode(value.node_id), "host": _HOST.encode(value.host),
            "port": _PORT.encode(value.port)}
    if len(_peer_wire) >= _PEER_WIRE_CACHE:
        _peer_wire.clear()
    _peer_wire[value] = wire
    return wire


_PEERS = _array(_Codec("peer", _peer_decode, _peer_encode), MAX_PEERS)


# -- messages ---------------------------------------------------------------------------


class Message:
    """Base of every message. ``TYPE`` is the wire name; ``FIELDS`` maps
    each dataclass field (in order) to its wire key and codec."""

    TYPE: ClassVar[str]
    FIELDS: ClassVar[tuple[tuple[str, str, _Codec], ...]]
    HAS_ID: ClassVar[bool] = True

    request_id: int


AnyMessage = TypeVar("AnyMessage", bound="Message")
"""Any message type, kept through :func:`with_request_id`."""


class Request(Message):
    """A message that expects exactly one response carrying its request id."""


class Response(Message):
    """The answer to a request; its ``request_id`` is the request's."""


@dataclass(frozen=True)
class Hello(Message):
    """First message on every channel, both ways: versions, the port the
    sender listens on and, if it announces one (``--announce``), the host
    to dial it at instead of the connection's source address."""

    TYPE = "hello"
    HAS_ID = False
    FIELDS = (
        ("version", "version", _uint(MAX_REQUEST_ID)),
        ("agent", "agent", _text(MAX_AGENT_LENGTH)),
        ("listen_port", "port", _optional(_PORT)),
        ("listen_host", "host", _optional(_HOST)),
    )
    version: int = PROTOCOL_VERSION
    agent: str = ""
    listen_port: int | None = None
    listen_host: str | None = None
    request_id: int = 0


@dataclass(frozen=True)
class Ping(Request):
    TYPE = "ping"
    FIELDS = ()
    request_id: int = 0


@dataclass(frozen=True)
class Pong(Response):
    TYPE = "pong"
    FIELDS = ()
    request_id: int = 0


@dataclass(frozen=True)
class FindNode(Request):
    """Which peers do you know closest to ``target``?"""

    TYPE = "find_node"
    FIELDS = (("target", "target", _NODE_ID),)
    target: bytes
    request_id: int = 0


@dataclass(frozen=True)
class Nodes(Response):
    """Peers closest to what was asked (FIND_NODE, or FIND_BLOCK without the block)."""

    TYPE = "nodes"
    FIELDS = (("peers", "peers", _PEERS),)
    peers: tuple[PeerInfo, ...]
    request_id: int = 0


@dataclass(frozen=True)
class FindBlock(Request):
    """Send me this block if you have it, else the peers closest to it."""

    TYPE = "find_block"
    FIELDS = (("cid", "cid", _cid()),)
    cid: CID
    request_id: int = 0


@dataclass(frozen=True)
class Block(Response):
    """A block's bytes. The receiver verifies them against the CID it asked for."""

    TYPE = "block"
    FIELDS = (("data", "data", _bytes(MAX_BLOCK_SIZE)),)
    data: bytes
    request_id: int = 0


@dataclass(frozen=True)
class Providers(Response):
    """FIND_BLOCK's answer from a node without the block that knows who has
    it (a provider record: the node offered it here, cas.dht.providers),
    with the peers closest to it as ``nodes`` gives them."""

    TYPE = "providers"
    FIELDS = (
        ("providers", "providers", _PEERS),
        ("peers", "peers", _PEERS),
    )
    providers: tuple[PeerInfo, ...]
    peers: tuple[PeerInfo, ...] = ()
    request_id: int = 0


@dataclass(frozen=True)
class StoreBlocks(Request):
    """Keep these blocks (DESIGN.md's STORE_BLOCK, batched): ``data[i]`` is
    the block named ``cids[i]``, to be kept ``leases[i]`` seconds unless
    renewed (``leases`` empty: as long as the receiver's network allows,
    which also caps any lease asked for). The receiver verifies each block
    against its CID. Sent and received without copying a block's bytes:
    they are sealed from where they lie and the message is proven canonical
    by position (:func:`cas.dagcbor.check_reencodes`)."""

    TYPE = "store_blocks"
    FIELDS = (
        ("cids", "cids", _array(_cid(), MAX_STORE_BLOCKS)),
        ("data", "blocks", _array(_bytes(MAX_BLOCK_SIZE), MAX_STORE_BLOCKS)),
        ("leases", "leases", _array(_uint(MAX_LEASE), MAX_STORE_BLOCKS)),
    )
    cids: tuple[CID, ...]
    data: tuple[bytes, ...]  # received: memoryviews of the decrypted message (decode)
    leases: tuple[int, ...] = ()
    request_id: int = 0

    def __post_init__(self) -> None:
        if not self.cids:
            raise ValueError("must carry at least one block")
        if len(self.data) != len(self.cids):
            raise ValueError("needs one block per CID")
        if self.leases and len(self.leases) != len(self.cids):
            raise ValueError("needs one lease per block, or none")
        if sum(len(block) for block in self.data) > MAX_STORE_BYTES:
            raise ValueError(f"blocks must add up to at most {MAX_STORE_BYTES} bytes")

    @classmethod
    def of(cls, blocks: Sequence[tuple[CID, bytes]], leases: Sequence[int] = ()) -> StoreBlocks:
        """The message for ``(cid, data)`` pairs (and their leases, if any)."""
        return cls(tuple(cid for cid, _ in blocks), tuple(data for _, data in blocks), tuple(leases))

    def blocks(self) -> list[tuple[CID, bytes]]:
        """The ``(cid, data)`` pairs, in order (the data not yet verified)."""
        return list(zip(self.cids, self.data))


@dataclass(frozen=True)
class Stored(Response):
    """The answer to STORE_BLOCKS: one code per block, in order. ``ok``: the
    block is verified and durable there; otherwise why it was refused
    (``full``: the quota for other nodes' blocks). ``message`` is the first
    refusal's reason, for people."""

    TYPE = "stored"
    FIELDS = (
        ("codes", "codes", _array(_text(MAX_ERROR_CODE_LENGTH), MAX_STORE_BLOCKS)),
        ("message", "message", _text(MAX_ERROR_TEXT_LENGTH)),
    )
    codes: tuple[str, ...]
    message: str = ""
    request_id: int = 0


@dataclass(frozen=True)
class Ok(Response):
    """A request with nothing to return succeeded (PUT_RECORD)."""

    TYPE = "ok"
    FIELDS = ()
    request_id: int = 0


@dataclass(frozen=True)
class Have(Request):
    """Which of these blocks do you hold? (Batch presence check for repair.)
    With a ``lease``, also: keep those you hold at least this many seconds
    more (the node that wants them kept renews their leases this way; 0
    only asks)."""

    TYPE = "have"
    FIELDS = (
        ("cids", "cids", _array(_cid(), MAX_HAVE_CIDS)),
        ("lease", "lease", _uint(MAX_LEASE)),
    )
    cids: tuple[CID, ...]
    lease: int = 0
    request_id: int = 0


@dataclass(frozen=True)
class HaveResult(Response):
    """One boolean per CID asked about, in the same order."""

    TYPE = "have_result"
    FIELDS = (("present", "present", _array(_boolean(), MAX_HAVE_CIDS)),)
    present: tuple[bool, ...]
    request_id: int = 0


@dataclass(frozen=True)
class DialBack(Request):
    """Can you reach me? Dial the address this connection comes from at
    ``port``, complete a handshake with me there, and say (AutoNAT's check;
    docs/network.md, "Reachability")."""

    TYPE = "dial_back"
    FIELDS = (("port", "port", _PORT),)
    port: int
    request_id: int = 0


@dataclass(frozen=True)
class DialBackResult(Response):
    """Whether the dial back reached the requester and it proved its ID."""

    TYPE = "dial_back_result"
    FIELDS = (("reachable", "reachable", _boolean()),)
    reachable: bool
    request_id: int = 0


@dataclass(frozen=True)
class PutRecord(Request):
    """Store a signed record (a namespace root) under ``key``."""

    TYPE = "put_record"
    FIELDS = (
        ("key", "key", _bytes(MAX_RECORD_KEY_SIZE)),
        ("record", "record", _bytes(MAX_RECORD_SIZE)),
    )
    key: bytes
    record: bytes
    request_id: int = 0


@dataclass(frozen=True)
class GetRecord(Request):
    """Send me the record under ``key`` if you have it, and closer peers."""

    TYPE = "get_record"
    FIELDS = (("key", "key", _bytes(MAX_RECORD_KEY_SIZE)),)
    key: bytes
    request_id: int = 0


@dataclass(frozen=True)
class Record(Response):
    """The record (or null) and peers closer to its key."""

    TYPE = "record"
    FIELDS = (
        ("record", "record", _optional(_bytes(MAX_RECORD_SIZE))),
        ("peers", "peers", _PEERS),
    )
    record: bytes | None
    peers: tuple[PeerInfo, ...] = ()
    request_id: int = 0


@dataclass(frozen=True)
class Error(Response):
    """The request could not be served. ``code`` is machine-readable
    (``busy``, ``not_found``, ``invalid``, ``refused``...)."""

    TYPE = "error"
    FIELDS = (
        ("code", "code", _text(MAX_ERROR_CODE_LENGTH)),
        ("message", "message", _text(MAX_ERROR_TEXT_LENGTH)),
    )
    code: str
    message: str = ""
    request_id: int = 0


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (Hello, Ping, Pong, FindNode, Nodes, FindBlock, Block, Providers, StoreBlocks, Stored, Ok,
                Have, HaveResult, DialBack, DialBackResult, PutRecord, GetRecord, Record, Error)
}
_REQUEST_ID = _uint(MAX_REQUEST_ID)


def _canonical_order(keys: set[str]) -> tuple[str, ...]:
    """Map keys in DAG-CBOR's canonical order: shorter UTF-8 first, then bytewise."""
    return tuple(sorted(keys, key=lambda key: (len(key.encode()), key.encode())))


# Per message type, its wire keys in canonical order and, in that order, how
# to fill each: (wire key, dataclass field or None for "t", codec).
_WIRE_KEYS: dict[type[Message], tuple[str, ...]] = {}
_WIRE_PLAN: dict[type[Message], tuple[tuple[str, str | None, _Codec | None], ...]] = {}
for _cls in MESSAGE_TYPES.values():
    _fields: dict[str, tuple[str | None, _Codec | None]] = {"t": (None, None)}
    if _cls.HAS_ID:
        _fields["id"] = ("request_id", _REQUEST_ID)
    _fields.update({key: (name, codec) for name, key, codec in _cls.FIELDS})
    _WIRE_KEYS[_cls] = _canonical_order(set(_fields))
    _WIRE_PLAN[_cls] = tuple((key, *_fields[key]) for key in _WIRE_KEYS[_cls])
del _cls, _fields


_peer_bytes: dict[PeerInfo, bytes] = {}
"""Encoded wire maps of checked peers (bounded like ``_peer_wire``)."""


def _peer_encoded(value: Any) -> bytes:
    try:
        return _peer_bytes[value]
    except (KeyError, TypeError):
        pass
    data = dagcbor.encode_unchecked(_peer_encode(value))  # ValueError if it is no valid peer
    if len(_peer_bytes) >= _PEER_WIRE_CACHE:
        _peer_bytes.clear()
    _peer_bytes[value] = data
    return data


# A NODES message, {"t": "nodes", "id": id, "peers": [...]} in canonical key
# order, is these bytes around the id's head and the array's items.
_NODES_START = b"\xa3" + b"".join(map(dagcbor.encode_unchecked, ("t", "nodes", "id")))
_NODES_PEERS = dagcbor.encode_unchecked("peers")


def _encode_nodes(message: Nodes) -> bytes | None:
    """NODES, the commonest answer, put together from its peers' remembered
    encodings: the same bytes as cbor2's encoding of the whole map, without
    building and encoding 20 maps again. None if a field is not as it must
    be (the general path then says what is wrong)."""
    request_id, peers = message.request_id, message.peers
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID \
            or not isinstance(peers, (tuple, list)) or len(peers) > MAX_PEERS:
        return None
    remembered = _peer_bytes.get  # _peer_encoded inlined for the remembered peers (nearly all)
    try:
        items = [remembered(peer) or _peer_encoded(peer) for peer in peers]
    except (ValueError, TypeError):  # TypeError: a field is unhashable, so invalid
        return None
    return b"".join((_NODES_START, encode_head(0, request_id), _NODES_PEERS, encode_head(4, len(items)), *items))


# FIND_NODE, {"t": "find_node", "id": id, "target": bytes(32)}, likewise.
_FIND_NODE_START = b"\xa3" + b"".join(map(dagcbor.encode_unchecked, ("t", "find_node", "id")))
_FIND_NODE_TARGET = dagcbor.encode_unchecked("target") + encode_head(2, NODE_ID_SIZE)
_FIND_NODE_SIZE = len(_FIND_NODE_START) + len(_FIND_NODE_TARGET) + NODE_ID_SIZE  # plus the id's head


def _encode_find_node(message: FindNode) -> bytes | None:
    request_id, target = message.request_id, message.target
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID \
            or type(target) is not bytes or len(target) != NODE_ID_SIZE:
        return None
    return b"".join((_FIND_NODE_START, encode_head(0, request_id), _FIND_NODE_TARGET, target))


_BY_POSITION_MIN = 64 * 1024
"""Messages at least this long (they span several Noise messages, so they
arrive as a bytearray) are tried as a STORE_BLOCKS read by position."""

_ID_HEAD_SIZES = {**{b: 1 for b in range(24)}, 24: 2, 25: 3, 26: 5}


def _decode_find_node(data: bytes) -> FindNode | None:
    """FIND_NODE read by position, if ``data`` is exactly the canonical
    encoding of one (proven by encoding what was read and comparing):
    that is a message the general decoder accepts, with the same result.
    None for anything else, which the general decoder then judges."""
    head_size = _ID_HEAD_SIZES.get(data[len(_FIND_NODE_START)]) if len(data) > _FIND_NODE_SIZE else None
    if head_size is None or len(data) != _FIND_NODE_SIZE + head_size:
        return None
    start = len(_FIND_NODE_START)
    head = data[start:start + head_size]
    request_id = int.from_bytes(head[1:], "big") if head_size > 1 else head[0]
    message = FindNode(data[-NODE_ID_SIZE:], request_id=request_id)
    return message if _encode_find_node(message) == data else None


# STORE_BLOCKS, {"t": "store_blocks", "id": id, "cids": [links], "blocks":
# [bytes], "leases": [uints]}: these bytes, then the id's head, "cids" and so on.
_STORE_BLOCKS_START = b"\xa5" + b"".join(map(dagcbor.encode_unchecked, ("t", "store_blocks", "id")))
_STORE_BLOCKS_CIDS = dagcbor.encode_unchecked("cids")
_STORE_BLOCKS_BLOCKS = dagcbor.encode_unchecked("blocks")
_STORE_BLOCKS_LEASES = dagcbor.encode_unchecked("leases")
_LINK_TAG = b"\xd8\x2a"  # tag 42, a CID link


def _read_head(data: memoryview, at: int, major: int) -> tuple[int, int]:
    """(value, next offset) of the CBOR head of type ``major`` at ``at``;
    ValueError unless it is there and in its one canonical (shortest) form."""
    first = data[at]
    if first >> 5 != major:
        raise ValueError("another type")
    info = first & 31
    if info < 24:
        return info, at + 1
    if not 24 <= info <= 27:
        raise ValueError("not a definite length")
    size = 1 << (info - 24)
    value = int.from_bytes(data[at + 1:at + 1 + size], "big")
    if len(encode_head(major, value)) != 1 + size:
        raise ValueError("not the shortest head")
    return value, at + 1 + size


def _encode_store_blocks(message: StoreBlocks) -> list[bytes] | None:
    """STORE_BLOCKS as the pieces of its canonical encoding, written by
    position: the structure before each block, then the block itself (not
    copied), ..., then the (empty) structure after the last. The same bytes
    as cbor2's encoding of the map (property-tested), without building it.
    None if a field is not as it must be (the general path then says what
    is wrong)."""
    request_id, cids, data, leases = message.request_id, message.cids, message.data, message.leases
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID \
            or type(cids) is not tuple or type(data) is not tuple or type(leases) is not tuple \
            or not 0 < len(cids) <= MAX_STORE_BLOCKS or len(data) != len(cids) \
            or len(leases) not in (0, len(cids)):
        return None
    structure = [_STORE_BLOCKS_START, encode_head(0, request_id), _STORE_BLOCKS_CIDS, encode_head(4, len(cids))]
    for cid in cids:
        if type(cid) is not CID:
            return None
        link = bytes(cid)
        structure += (_LINK_TAG, encode_head(2, len(link) + 1), b"\x00", link)
    structure += (_STORE_BLOCKS_BLOCKS, encode_head(4, len(data)))
    parts: list[bytes] = []
    for block in data:
        if type(block) is not bytes or len(block) > MAX_BLOCK_SIZE:
            return None
        structure.append(encode_head(2, len(block)))
        parts += (b"".join(structure), block)
        structure = []
    structure += (_STORE_BLOCKS_LEASES, encode_head(4, len(leases)))
    for lease in leases:
        if type(lease) is not int or not 0 <= lease <= MAX_LEASE:
            return None
        structure.append(encode_head(0, lease))
    parts.append(b"".join(structure))
    return parts


def _decode_store_blocks(data: memoryview) -> StoreBlocks | None:
    """STORE_BLOCKS read by position, its blocks as views of ``data`` (the
    receiver's copy of up to 2 MiB saved), if ``data`` is exactly the
    canonical encoding of a valid one: every head is read in its shortest
    form and every other byte compared with what the encoder writes, so
    this accepts exactly what the general decoder accepts, with the same
    result. None for anything else, which the general decoder then judges."""
    try:
        if data[:len(_STORE_BLOCKS_START)] != _STORE_BLOCKS_START:
            return None
        request_id, at = _read_head(data, len(_STORE_BLOCKS_START), 0)
        if data[at:at + len(_STORE_BLOCKS_CIDS)] != _STORE_BLOCKS_CIDS:
            return None
        count, at = _read_head(data, at + len(_STORE_BLOCKS_CIDS), 4)
        if not 0 < count <= MAX_STORE_BLOCKS:
            return None
        cids = []
        for _ in range(count):
            if data[at:at + 2] != _LINK_TAG:
                return None
            size, at = _read_head(data, at + 2, 2)
            link = bytes(data[at:at + size])
            at += size
            if len(link) != size or link[:1] != b"\x00":
                return None
            cid = CID.from_bytes(link[1:])
            if bytes(cid) != link[1:]:
                return None
            cids.append(cid)
        if data[at:at + len(_STORE_BLOCKS_BLOCKS)] != _STORE_BLOCKS_BLOCKS:
            return None
        blocks_count, at = _read_head(data, at + len(_STORE_BLOCKS_BLOCKS), 4)
        if blocks_count != count:
            return None
        blocks = []
        for _ in range(count):
            size, at = _read_head(data, at, 2)
            if size > MAX_BLOCK_SIZE or at + size > len(data):
                return None
            blocks.append(data[at:at + size])
            at += size
        if data[at:at + len(_STORE_BLOCKS_LEASES)] != _STORE_BLOCKS_LEASES:
            return None
        leases_count, at = _read_head(data, at + len(_STORE_BLOCKS_LEASES), 4)
        if leases_count not in (0, count):
            return None
        leases = []
        for _ in range(leases_count):
            lease, at = _read_head(data, at, 0)
            if lease > MAX_LEASE:
                return None
            leases.append(lease)
        if at != len(data) or request_id > MAX_REQUEST_ID:
            return None
        return StoreBlocks(tuple(cids), tuple(blocks), tuple(leases),  # type: ignore[arg-type]  # slices of a bytes message are bytes
                           request_id=request_id)
    except (IndexError, ValueError):  # ValueError: a bad CID, __post_init__'s checks
        return None


def _encode_fast(message: Message) -> bytes | None:
    if isinstance(message, Nodes):
        return _encode_nodes(message)
    if isinstance(message, FindNode):
        return _encode_find_node(message)
    return None


def encode(message: Message) -> bytes:
    """The canonical DAG-CBOR bytes of ``message``.

    Raises :class:`LocalProtocolError` if a field is out of its bounds or the
    result exceeds :data:`MAX_MESSAGE_SIZE`: sending that would be our bug.

    The map is built in canonical key order from values the codecs checked
    (exact types within the data model), so cbor2's plain encoding is the
    canonical one and dagcbor's ordering walk is not needed. NODES is put
    together from its peers' remembered encodings (:func:`_encode_nodes`),
    FIND_NODE from its two fields (:func:`_encode_find_node`).
    """
    fast = _encode_fast(message)
    if fast is not None:
        return fast  # 20 peers are far below the message limit
    data = dagcbor.encode_unchecked(_wire(message))
    if len(data) > MAX_MESSAGE_SIZE:
        raise LocalProtocolError(f"{message.TYPE} message of {len(data)} bytes exceeds the limit")
    return data


def encode_parts(message: Message) -> list[bytes]:
    """:func:`encode` as pieces to be joined: a message carrying a block
    (``store_blocks``, ``block``) as the bytes around it and the block's own
    bytes, not copied; any other as one piece."""
    fast = _encode_fast(message)
    if fast is not None:
        return [fast]
    parts = _encode_store_blocks(message) if type(message) is StoreBlocks else None
    if parts is None:
        parts = dagcbor.encode_unchecked_parts(_wire(message))
    size = sum(len(part) for part in parts)
    if size > MAX_MESSAGE_SIZE:
        raise LocalProtocolError(f"{message.TYPE} message of {size} bytes exceeds the limit")
    return parts


def _wire(message: Message) -> dict[str, Any]:
    """The wire map of ``message``, keys in canonical order, fields checked."""
    cls = type(message)
    plan = _WIRE_PLAN.get(cls)
    if plan is None:
        raise LocalProtocolError(f"{cls.__name__} is not a cas message")
    wire: dict[str, Any] = {}
    for key, name, codec in plan:
        if codec is None:
            wire[key] = cls.TYPE
            continue
        try:
            wire[key] = codec.encode(getattr(message, name))  # type: ignore[arg-type]  # the plan pairs each field with its own codec
        except ValueError as exc:
            what = "request id" if key == "id" else name
            raise LocalProtocolError(f"{cls.TYPE}.{what} {exc}") from None
    return wire


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse and validate one message from a peer.

    Raises :class:`MalformedMessageError` (and nothing else) for anything
    that is not exactly a well-formed message of a known type.

    As strict as :func:`cas.dagcbor.decode` followed by the shape checks,
    and cheaper: the shape checks take the place of dagcbor's data-model
    walk (every field is checked for its exact type; the message's keys, and
    a peer's, must come in canonical order), and then the parsed map must
    re-encode to exactly ``data``, which proves the bytes canonical.
    FIND_NODE, the commonest request, is read by position when the bytes
    are exactly its canonical encoding (:func:`_decode_find_node`), and so
    is a large STORE_BLOCKS, whose blocks then stay where they were
    decrypted (:func:`_decode_store_blocks`).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise MalformedMessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    if _FIND_NODE_SIZE < len(data) <= _FIND_NODE_SIZE + 5:  # the size of a FIND_NODE
        small = bytes(data)
        if small.startswith(_FIND_NODE_START):
            find_node = _decode_find_node(small)
            if find_node is not None:
                return find_node
    if type(data) is not bytes:
        data = memoryview(data)  # a decrypted bytearray: parsed where it is, not copied
        if len(data) > _BY_POSITION_MIN:
            store_blocks = _decode_store_blocks(data)
            if store_blocks is not None:
                return store_blocks
    try:
        wire = dagcbor.decode_unchecked(data)
    except InvalidBlockError as exc:
        raise MalformedMessageError(f"not a DAG-CBOR message: {exc}") from None
    except RecursionError:
        raise MalformedMessageError("message nesting is too deep") from None
    if type(wire) is not dict:
        raise MalformedMessageError("a message must be a map")
    kind = wire.get("t")
    if type(kind) is not str:
        raise MalformedMessageError("a message needs a text 't' (its type)")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise MalformedMessageError(f"unknown message type {kind[:40]!r}")
    expected = _WIRE_KEYS[cls]
    if tuple(wire) != expected:
        present = set(wire)
        if present == set(expected):
            raise MalformedMessageError(f"{kind}: not canonical DAG-CBOR (keys out of order)")
        missing = sorted(set(expected) - present)
        extra = sorted(repr(key)[:40] for key in present - set(expected))
        raise MalformedMessageError(f"{kind}: missing fields {missing}, unexpected {extra}")
    values: dict[str, Any] = {}
    try:
        for key, name, codec in _WIRE_PLAN[cls]:
            if codec is not None:
                values[name] = codec.decode(wire[key])  # type: ignore[index]  # wire was checked to be a map above
    except ValueError as exc:
        raise MalformedMessageError(f"{kind}: a field {exc}") from None
    try:
        message = cls(**values)  # checks across fields (__post_init__), where a message has them
    except ValueError as exc:
        raise MalformedMessageError(f"{kind}: {exc}") from None
    if cls is Nodes:
        # The same proof, from the peers' remembered encodings: with every
        # field checked, _encode_nodes gives exactly cbor2's encoding of ``wire``.
        if isinstance(message, Nodes) and _encode_nodes(message) != data:
            raise MalformedMessageError(f"{kind}: DAG-CBOR is not in canonical form")
        return message
    try:
        dagcbor.check_reencodes(wire, data)
    except InvalidBlockError as exc:
        raise MalformedMessageError(f"{kind}: {exc}") from None
    return message


def with_request_id(message: AnyMessage, request_id: int) -> AnyMessage:
    """A copy of ``message`` carrying ``request_id``.

    Copies the instance dictionary rather than calling
    ``dataclasses.replace``, which re-runs the frozen constructor (~3 µs,
    twice per request); every message class is a frozen dataclass without
    slots whose fields all live there."""
    copy = object.__new__(type(message))
    fields = copy.__dict__
    fields.update(message.__dict__)
    fields["request_id"] = request_id
    return copy


def is_request(message: Message) -> bool:
    return isinstance(message, Request)


def is_response(message: Message) -> bool:
    return isinstance(message, Response)
