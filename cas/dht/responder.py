"""The answers to peers' DHT requests, sans-IO.

Owns: what this node answers each request type, as one table of small
handlers: who is refused (a node ID short of the network's work, a node
that keeps nothing for others), the per-peer rate limits on STORE_BLOCKS
and PUT_RECORD, the nodes handed back (the k closest in the routing table)
and the provider records named for a block this node lacks or refused, and
which error code each failure of the store is answered with.

Must never: do I/O or wait. A request that needs the store is answered in
two steps: :meth:`Responder.start` returns the store work to do (a
:data:`Work` record), the trio edge (:meth:`cas.dht.driver.DhtDriver.answer`)
does it, and the matching ``*_done`` method turns what the store said into
the response. Time is passed in.

Rules for this file:

1. A failure is classified by its exception type (:func:`error_code`),
   never by its message. No room (quota, the sender's share, the disk
   reserve) is ``full``; a write the disk refused is ``refused``; a record
   not newer than the one held is ``stale``, an invalid one ``invalid``;
   anything else is our fault and answered as ``error``.
2. Nothing here decides anything about the peer but this answer: what the
   answer says of the requester (a forged record) is returned to the edge,
   which tells the routing table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..blocks import Block
from ..cid import CID
from ..errors import (
    CasError,
    InvalidBlockError,
    InvalidRecordError,
    MalformedMessageError,
    RepositoryError,
    StaleRecordError,
    StorageQuotaError,
)
from ..net import messages as msg
from ..net.identity import meets_difficulty
from ..ratelimit import KeyedBuckets
from .ids import id_from_bytes, id_to_bytes, key_for_digest
from .providers import ProviderRecords
from .routing import Contact, RoutingTable

STORE_RATE = 1000.0
STORE_BURST = 2048.0
"""Blocks accepted per peer in STORE_BLOCKS: 1000 a second on average (≈ 250 MiB/s
of average-size blocks: one adder at full speed on a LAN; 400/s, ≈ 100 MiB/s, was
below what a replicated add sends each peer once stores were batched), bursts of 2048
(twice the placement queue's length). Beyond that the answer is ``busy``, which
the sender retries after a pause. What a peer may keep here is bounded by
the quota, not by this rate."""

DIAL_BACK_RATE = 1 / 60
DIAL_BACK_BURST = 4.0
"""DIAL_BACK requests served per peer: a node checks its reachability at
start and now and then after; each one costs a TCP connect and a handshake
here, so a peer gets a few at once and one a minute after."""

RECORD_RATE = 10.0
RECORD_BURST = 50.0
"""PUT_RECORD requests accepted per peer (a publisher sends one per
namespace per republish; this is generous)."""

NO_ROOM: tuple[type[CasError], ...] = (StorageQuotaError,)
"""Answered ``full``: the quota for blocks or records, the sender's share of it, or the disk reserve."""

DISK_REFUSED: tuple[type[CasError], ...] = (RepositoryError,)
"""Answered ``refused``: the disk refused the write (full, read-only)."""


def error_code(error: BaseException) -> str:
    """The wire error code for a failure of the store to keep something."""
    if isinstance(error, StaleRecordError):
        return "stale"
    if isinstance(error, InvalidRecordError):
        return "invalid"
    if isinstance(error, NO_ROOM):
        return "full"
    if isinstance(error, DISK_REFUSED):
        return "refused"
    return "error"


def _text(error: BaseException) -> str:
    return str(error)[: msg.MAX_ERROR_TEXT_LENGTH]


# -- the store work a request needs (done by the edge) ----------------------


@dataclass(frozen=True)
class ReadBlock:
    """FIND_BLOCK: the block's bytes if it is held here (and sound)."""

    cid: CID


@dataclass(frozen=True)
class CheckPresence:
    """HAVE: which of ``cids`` are held (verified copies), after renewing
    their leases by ``lease`` seconds if it is not 0."""

    cids: tuple[CID, ...]
    lease: int


@dataclass(frozen=True)
class KeepBlocks:
    """STORE_BLOCKS, verified: keep each block, durably."""

    blocks: list[Block]
    sender: bytes
    leases: Sequence[int]


@dataclass(frozen=True)
class ReadRecord:
    """GET_RECORD: the record held under ``key``, if any."""

    key: bytes


@dataclass(frozen=True)
class KeepRecord:
    """PUT_RECORD: let the record keeper judge and keep it."""

    key: bytes
    record: bytes
    sender: bytes


@dataclass(frozen=True)
class DialRequester:
    """DIAL_BACK: dial the requester's address at ``port`` and see whether
    it answers as itself."""

    port: int


Work = ReadBlock | CheckPresence | KeepBlocks | ReadRecord | KeepRecord | DialRequester


_PEER_CACHE = 4096
"""Contacts -> wire peers remembered. Every FIND_NODE answer carries 20
peers, mostly the same few hundred over and over; converting each anew was
a good part of answering."""


class Responder:
    """What this node answers, given its routing table and what it keeps.

    ``keeps_blocks`` / ``keeps_records``: whether the node keeps blocks /
    records for others at all (without, those requests are refused)."""

    def __init__(self, table: RoutingTable, providers: ProviderRecords, *, k: int,
                 id_difficulty: int = 0, keeps_blocks: bool = False, keeps_records: bool = False) -> None:
        self.table = table
        self.providers = providers
        self.k = k
        self.id_difficulty = id_difficulty
        self.keeps_blocks = keeps_blocks
        self.keeps_records = keeps_records
        self.short_of_work = 0
        """Requests refused because the requester's ID falls short of the work."""
        self._store_limiter: KeyedBuckets[int] = KeyedBuckets(STORE_RATE, STORE_BURST)
        self._record_limiter: KeyedBuckets[int] = KeyedBuckets(RECORD_RATE, RECORD_BURST)
        self._dial_limiter: KeyedBuckets[int] = KeyedBuckets(DIAL_BACK_RATE, DIAL_BACK_BURST)
        # Keyed by node ID and checked by identity: the table hands out the
        # same Contact object until the contact changes, and hashing a
        # Contact (a dataclass) costs a Python call where an int's does not.
        self._peers: dict[int, tuple[Contact, msg.PeerInfo]] = {}
        self._quick: dict[type, Callable[[int, Any, float], msg.Response]] = {
            msg.Ping: self._ping,
            msg.FindNode: self._find_node,
        }
        self._slow: dict[type, Callable[[int, Any, float], msg.Response | Work]] = {
            msg.FindBlock: self._find_block,
            msg.Have: self._have,
            msg.StoreBlocks: self._store_blocks,
            msg.GetRecord: self._get_record,
            msg.PutRecord: self._put_record,
            msg.DialBack: self._dial_back,
        }

    def shows_work(self, node_id: int) -> bool:
        return self.id_difficulty <= 0 or meets_difficulty(id_to_bytes(node_id), self.id_difficulty)

    # -- step one ---------------------------------------------------------------

    def answer_now(self, requester: int, request: msg.Request, now: float) -> msg.Response | None:
        """The response to a request answered from memory (PING, FIND_NODE,
        any refusal for missing work), or None for one that needs
        :meth:`start`."""
        if not self.shows_work(requester):
            self.short_of_work += 1
            return msg.Error("refused", f"your node ID does not show the work this network asks for "
                                        f"({self.id_difficulty} bits; docs/network.md, 'Identities')")
        handler = self._quick.get(type(request))
        return None if handler is None else handler(requester, request, now)

    def start(self, requester: int, request: msg.Request, now: float) -> msg.Response | Work:
        """The response to any request, or the store work it needs first
        (then finished by the ``*_done`` method of that work). Raises
        :class:`MalformedMessageError` for a STORE_BLOCKS whose data does
        not match its CIDs (the connection answers ``invalid``)."""
        quick = self.answer_now(requester, request, now)
        if quick is not None:
            return quick
        handler = self._slow.get(type(request))
        if handler is None:
            return msg.Error("refused", f"{request.TYPE} is not served by this node yet")
        return handler(requester, request, now)

    def _ping(self, requester: int, request: msg.Ping, now: float) -> msg.Response:
        return msg.Pong()

    def _find_node(self, requester: int, request: msg.FindNode, now: float) -> msg.Response:
        return msg.Nodes(self.closest_peers(id_from_bytes(request.target), requester))

    def _find_block(self, requester: int, request: msg.FindBlock, now: float) -> msg.Response | Work:
        return ReadBlock(request.cid)

    def _have(self, requester: int, request: msg.Have, now: float) -> msg.Response | Work:
        return CheckPresence(tuple(request.cids), request.lease)

    def _store_blocks(self, requester: int, request: msg.StoreBlocks, now: float) -> msg.Response | Work:
        """Refused, rate limited, or verified: each block against its CID."""
        if not self.keeps_blocks:
            return msg.Error("refused", "this node keeps no blocks for others")
        if not self._store_limiter.take(requester, now, cost=len(request.cids)):
            return msg.Error("busy", "too many blocks from you; retry later")
        try:
            blocks = [Block(cid, data) for cid, data in request.blocks()]  # each verified against its CID
        except InvalidBlockError:
            raise MalformedMessageError("store_blocks: a block's data does not match its CID") from None
        return KeepBlocks(blocks, id_to_bytes(requester), request.leases)

    def _get_record(self, requester: int, request: msg.GetRecord, now: float) -> msg.Response | Work:
        try:
            id_from_bytes(request.key)
        except ValueError:
            return msg.Error("invalid", "a record key is 32 bytes")
        return ReadRecord(request.key)

    def _put_record(self, requester: int, request: msg.PutRecord, now: float) -> msg.Response | Work:
        if not self.keeps_records:
            return msg.Error("refused", "this node keeps no records for others")
        if not self._record_limiter.take(requester, now):
            return msg.Error("busy", "too many records from you; retry later")
        return KeepRecord(request.key, request.record, id_to_bytes(requester))

    def _dial_back(self, requester: int, request: msg.DialBack, now: float) -> msg.Response | Work:
        if not self._dial_limiter.take(requester, now):
            return msg.Error("busy", "too many dial-back checks from you; retry in a minute")
        return DialRequester(request.port)

    # -- step two: what the store said ----------------------------------------

    def dial_back_done(self, reachable: bool) -> msg.Response:
        return msg.DialBackResult(reachable)

    def read_block_done(self, requester: int, work: ReadBlock, data: bytes | None, now: float) -> msg.Response:
        """The block if it was read; else the closer nodes, and whoever
        offered it here (a provider record) if someone did."""
        if data is not None:
            return msg.Block(data)
        cid = work.cid
        closer = self.closest_peers(key_for_digest(cid.routing_digest), requester)
        providers = self.providers.providers(bytes(cid), now)
        if providers:
            return msg.Providers(tuple(self._peer(p) for p in providers[: msg.MAX_PEERS]), closer)
        return msg.Nodes(closer)

    def check_presence_done(self, present: Sequence[bool]) -> msg.Response:
        return msg.HaveResult(tuple(present))

    def keep_blocks_done(self, work: KeepBlocks, outcomes: Sequence[object], sender: Contact | None,
                         now: float) -> msg.Response:
        """One code per block: ``ok`` once durable, else :func:`error_code`
        of why not. A block not kept leaves a provider record: ``sender``
        (where the requester listens, if known) has it, and readers who ask
        here are told so."""
        codes = []
        message = ""
        for block, outcome in zip(work.blocks, outcomes):
            if not isinstance(outcome, BaseException):
                codes.append("ok")
                continue
            if sender is not None:
                self.providers.add(bytes(block.cid), sender, now)
            codes.append(error_code(outcome))
            message = message or _text(outcome)
        return msg.Stored(tuple(codes), message)

    def read_record_done(self, requester: int, work: ReadRecord, held: bytes | None) -> msg.Response:
        return msg.Record(held, self.closest_peers(id_from_bytes(work.key), requester))

    def keep_record_done(self, error: CasError | None) -> tuple[msg.Response, bool]:
        """``ok`` once durable, or why not; and whether the requester is at
        fault (an invalid record: malformed, forged or misfiled)."""
        if error is None:
            return msg.Ok(), False
        code = error_code(error)
        return msg.Error(code, _text(error)), code == "invalid"

    def error_done(self, error: CasError) -> msg.Response:
        """An unexpected failure while answering: ours, told as ``error``."""
        return msg.Error("error", _text(error))

    # -- the k closest, as wire peers -------------------------------------------

    def closest_peers(self, target: int, requester: int) -> tuple[msg.PeerInfo, ...]:
        """The k contacts closest to ``target``, the requester left out."""
        # _peer inlined for the remembered contacts (nearly all).
        remembered = self._peers.get
        peers = []
        for contact in self.table.closest(target, self.k, exclude=requester):
            found = remembered(contact.node_id)
            peers.append(found[1] if found is not None and found[0] is contact else self._peer(contact))
        return tuple(peers)

    def _peer(self, contact: Contact) -> msg.PeerInfo:
        found = self._peers.get(contact.node_id)
        if found is not None and found[0] is contact:
            return found[1]
        if len(self._peers) >= _PEER_CACHE:
            self._peers.clear()
        peer = contact_to_peer(contact)
        self._peers[contact.node_id] = (contact, peer)
        return peer


def contact_to_peer(contact: Contact) -> msg.PeerInfo:
    return msg.PeerInfo(id_to_bytes(contact.node_id), contact.host, contact.port)
