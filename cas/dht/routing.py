"""The Kademlia routing table: k-buckets with replacement caches.

Owns: which peers a node remembers, in which bucket, in what order; when a
peer is dropped (after ``max_failures`` failures in a row) and who replaces it;
which buckets are due for a refresh lookup; the saved form of the table.

Must never: read a clock, draw random numbers, touch a socket, or pickle.
Every method that needs the time takes ``now`` (seconds, from whatever clock
the driver uses); the node feeds it trio's clock, the simulator its simulated
clock, the tests a number they choose.

Layout. Bucket ``i`` holds contacts at XOR distance ``[2**i, 2**(i+1))`` from
our own ID (see :func:`cas.dht.ids.bucket_index`): a flat array of 256 buckets,
not the paper's splitting binary tree. The two hold the same contacts in
practice (a tree only ever splits the bucket containing our own ID, and all the
buckets a flat layout keeps below that are empty when IDs are random), and the
flat layout needs no split logic. Empty buckets cost nothing: only buckets with
contacts exist.

Each bucket holds at most ``k`` contacts ordered least-recently-seen first, as
in the paper: a new contact for a full bucket never displaces a live one (old
contacts are the ones most likely to stay up). It goes to the bucket's
replacement cache instead, and :meth:`RoutingTable.update` hands back the
bucket's least-recently-seen contact for the driver to ping, but only when
that contact is stale (not heard from for ``stale_after`` seconds): one heard
from a moment ago is known to be alive, and pinging it again only costs a
round trip. When a contact
fails ``max_failures`` times in a row it is dropped and the most recently seen
contact of the replacement cache takes its place.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import RepositoryError
from .ids import ID_BITS, NodeID, bucket_index, id_from_bytes, id_to_bytes, is_valid_id

K = 20
"""Bucket size and lookup width (DESIGN.md; the Kademlia paper's k = 20)."""

MAX_FAILURES = 3
"""Failures in a row after which a contact is dropped. The paper drops a
contact on its first missed ping; later deployments (BEP 5, libp2p) tolerate a
few, because a lost packet is far more common than a dead peer."""

STALE_AFTER = 60.0
"""Seconds without hearing from a contact after which a full bucket's oldest
entry is worth a ping when a newcomer wants its place (BEP 5 calls a node
"questionable" after 15 minutes of silence; a minute keeps the table
fresher). Pinging on every newcomer instead, as the paper does, cost a
quarter more exchanges than the lookups themselves in a 50-node network,
where the far bucket is always full and every lookup hears from contacts
that did not fit."""

MAX_DEPARTED = 64
"""Contacts dropped for not answering, remembered to be tried again: after
a partition each side has dropped the other, and with nobody left to tell
them, only these tries bring the halves back together (no refresh can: it
asks only contacts still in the table)."""

DEPARTED_TRIES = 30
"""Tries before a departed contact is forgotten (at the driver's pace, an
hour or more)."""

REFRESH_INTERVAL = 3600.0
"""Seconds without a lookup in a bucket's range after which the bucket is due
for refresh: the paper's tRefresh of one hour."""

MAX_HOST_LENGTH = 253
"""Longest host accepted in a contact: a DNS name's limit (RFC 1035); IP
literals are shorter."""

RECORD_VERSION = 1
"""Version of the saved form written by :meth:`RoutingTable.to_record`."""


@dataclass(frozen=True, slots=True)
class Contact:
    """A peer as the DHT knows it: its ID and where to reach it.

    The ID is authenticated by the channel (it is the hash of the key the
    handshake proved); host and port are only a hint where to dial.
    """

    node_id: NodeID
    host: str
    port: int

    def __post_init__(self) -> None:
        if not is_valid_contact_fields(self.node_id, self.host, self.port):
            raise ValueError(
                f"malformed contact: id={self.node_id!r} host={self.host!r} port={self.port!r}"
            )


def is_valid_contact_fields(node_id: object, host: object, port: object) -> bool:
    """The rules a contact's fields obey, for callers that must check data from
    outside without raising."""
    return (
        is_valid_id(node_id)
        and type(host) is str
        and 0 < len(host) <= MAX_HOST_LENGTH
        and type(port) is int
        and 0 < port < 65536
    )


def is_valid_contact(value: object) -> bool:
    """True if ``value`` is a :class:`Contact` whose fields hold (one built by
    bypassing the constructor, or any other object, is not)."""
    return type(value) is Contact and is_valid_contact_fields(value.node_id, value.host, value.port)


class _Entry:
    """One remembered contact: mutable bookkeeping around a frozen contact."""

    __slots__ = ("contact", "last_seen", "failures")

    def __init__(self, contact: Contact, last_seen: float, failures: int = 0) -> None:
        self.contact = contact
        self.last_seen = last_seen
        self.failures = failures


class RoutingTable:
    """The k-buckets of one node. See the module docstring for the rules."""

    def __init__(
        self,
        own_id: int,
        *,
        k: int = K,
        max_failures: int = MAX_FAILURES,
        replacement_size: int | None = None,
        stale_after: float = STALE_AFTER,
        now: float = 0.0,
    ) -> None:
        if not is_valid_id(own_id):
            raise ValueError(f"not a 256-bit ID: {own_id!r}")
        if k < 1 or max_failures < 1:
            raise ValueError("k and max_failures must be at least 1")
        self._own = NodeID(own_id)
        self._k = k
        self._max_failures = max_failures
        self._replacement_size = k if replacement_size is None else replacement_size
        self._stale_after = stale_after
        # bucket index -> {node_id: entry}, least recently seen first.
        self._buckets: dict[int, dict[int, _Entry]] = {}
        # bucket index -> {node_id: entry}, most recently seen last.
        self._replacements: dict[int, dict[int, _Entry]] = {}
        # bucket index -> time of the last lookup into its range.
        self._looked_up: dict[int, float] = {}
        self._created = now
        self._size = 0
        self._order: list[int] | None = None  # sorted bucket indices, cached
        # node_id -> [contact, tries left]: dropped for silence, longest untried first.
        self._departed: OrderedDict[int, list[Any]] = OrderedDict()

    # -- reading ----------------------------------------------------------

    @property
    def own_id(self) -> NodeID:
        return self._own

    @property
    def k(self) -> int:
        return self._k

    def __len__(self) -> int:
        """Number of contacts in the buckets (not counting replacement caches)."""
        return self._size

    def __contains__(self, node_id: object) -> bool:
        return self._find(node_id) is not None

    def get(self, node_id: int) -> Contact | None:
        entry = self._find(node_id)
        return None if entry is None else entry.contact

    def last_seen(self, node_id: int) -> float | None:
        entry = self._find(node_id)
        return None if entry is None else entry.last_seen

    def failures(self, node_id: int) -> int:
        entry = self._find(node_id)
        return 0 if entry is None else entry.failures

    def contacts(self) -> Iterator[Contact]:
        """Every contact in the buckets, nearest bucket first."""
        for index in sorted(self._buckets):
            for entry in self._buckets[index].values():
                yield entry.contact

    def bucket(self, index: int) -> list[Contact]:
        """The contacts of bucket ``index``, least recently seen first."""
        return [e.contact for e in self._buckets.get(index, {}).values()]

    def replacements(self, index: int) -> list[Contact]:
        """The replacement cache of bucket ``index``, most recently seen last."""
        return [e.contact for e in self._replacements.get(index, {}).values()]

    def nonempty_buckets(self) -> list[int]:
        return sorted(self._buckets)

    def closest(self, key: int, n: int | None = None, *, exclude: int | None = None) -> list[Contact]:
        """Up to ``n`` (default k) contacts sorted by XOR distance to ``key``,
        nearest first, leaving out ``exclude`` (e.g. the peer who asked).

        Whole buckets are visited in distance order instead of sorting the
        table. With ``D = own_id ^ key``, a contact in bucket ``j`` has a
        distance to ``key`` that agrees with ``D`` above bit ``j`` and differs
        from it at bit ``j``. So the buckets where bit ``j`` of ``D`` is 1 come
        first, highest ``j`` first (the highest is the bucket ``key`` itself
        falls in), then the buckets where it is 0, lowest ``j`` first; only
        the contacts inside each bucket need sorting.
        """
        want = self._k if n is None else n
        if want <= 0:
            return []
        buckets = self._buckets
        order = self._order
        if order is None:
            order = self._order = sorted(buckets)
        own = self._own
        d = own ^ key
        # The bucket ``exclude`` would be in (-1: none), to drop it there.
        skip = -1 if exclude is None or exclude == own else (own ^ exclude).bit_length() - 1
        xor = key.__xor__
        found: list[Contact] = []
        for j in reversed(order):
            if d >> j & 1:
                bucket = buckets[j]
                ids = sorted(bucket, key=xor)
                if j == skip and exclude in bucket:
                    ids.remove(exclude)
                found += [bucket[nid].contact for nid in ids[: want - len(found)]]
                if len(found) >= want:
                    return found
        for j in order:
            if not d >> j & 1:
                bucket = buckets[j]
                ids = sorted(bucket, key=xor)
                if j == skip and exclude in bucket:
                    ids.remove(exclude)
                found += [bucket[nid].contact for nid in ids[: want - len(found)]]
                if len(found) >= want:
                    return found
        return found

    # -- learning and forgetting ------------------------------------------

    def update(self, contact: Contact, now: float) -> Contact | None:
        """Record that we heard from ``contact`` directly (it answered us, or it
        sent us a request over an authenticated channel) at time ``now``.

        A known contact moves to the tail of its bucket with its failure count
        cleared, and takes the address it was heard from. A new one joins its
        bucket if there is room. Otherwise it goes to the replacement cache and,
        if the bucket's least-recently-seen contact has not been heard from for
        ``stale_after`` seconds, that contact is returned: the driver should
        ping it and report the outcome (:meth:`update` on an answer,
        :meth:`record_failure` on silence). Returns ``None`` in every other case,
        including a contact carrying our own ID, which is ignored.
        """
        node_id = contact.node_id
        if node_id == self._own:
            return None
        index = (self._own ^ node_id).bit_length() - 1
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = {}
            self._order = None
        self._departed.pop(node_id, None)
        entry = bucket.pop(node_id, None)
        if entry is not None:
            entry.contact = contact
            entry.last_seen = now
            entry.failures = 0
            bucket[node_id] = entry
            return None
        if len(bucket) < self._k:
            cache = self._replacements.get(index)
            if cache:
                cache.pop(node_id, None)
            bucket[node_id] = _Entry(contact, now)
            self._size += 1
            return None
        cache = self._replacements.get(index)
        if cache is None:
            cache = self._replacements[index] = {}
        cache.pop(node_id, None)
        cache[node_id] = _Entry(contact, now)
        while len(cache) > self._replacement_size:
            del cache[next(iter(cache))]
        oldest = next(iter(bucket.values()))
        if now - oldest.last_seen < self._stale_after:
            return None  # heard from lately: alive, no ping needed
        return oldest.contact

    def record_failure(self, node_id: int) -> bool:
        """Record that ``node_id`` failed to answer. Returns True if that
        dropped it: a replacement-cache entry goes at once, a bucket entry after
        ``max_failures`` failures in a row, its place taken by the replacement
        cache's most recently seen contact."""
        index = self._index_or_none(node_id)
        if index is None:
            return False
        cache = self._replacements.get(index)
        if cache and cache.pop(node_id, None) is not None:
            return True
        bucket = self._buckets.get(index)
        entry = bucket.get(node_id) if bucket else None
        if entry is None:
            return False
        entry.failures += 1
        if entry.failures < self._max_failures:
            return False
        self._drop(index, node_id)
        self._departed[node_id] = [entry.contact, DEPARTED_TRIES]
        while len(self._departed) > MAX_DEPARTED:
            self._departed.popitem(last=False)
        return True

    def remove(self, node_id: int) -> bool:
        """Forget ``node_id`` at once (e.g. it proved to be someone else, or
        sent garbage). Returns True if it was known."""
        index = self._index_or_none(node_id)
        if index is None:
            return False
        cache = self._replacements.get(index)
        if cache and cache.pop(node_id, None) is not None:
            return True
        bucket = self._buckets.get(index)
        if not bucket or node_id not in bucket:
            return False
        self._drop(index, node_id)
        return True

    def revisit(self, n: int) -> list[Contact]:
        """Up to ``n`` contacts dropped for silence, the longest untried
        first, to be tried again (each tried one goes to the back; after
        DEPARTED_TRIES it is forgotten). One that answers comes back through
        :meth:`update`."""
        out = []
        for node_id in list(self._departed)[:n]:
            item = self._departed.pop(node_id)
            out.append(item[0])
            item[1] -= 1
            if item[1] > 0:
                self._departed[node_id] = item
        return out

    # -- refresh ----------------------------------------------------------

    def mark_lookup(self, target: int, now: float) -> None:
        """Record that a lookup for ``target`` started at ``now``: it refreshes
        the bucket whose range holds ``target``."""
        if target != self._own:
            self._looked_up[(self._own ^ target).bit_length() - 1] = now

    def refresh_due(self, now: float, interval: float = REFRESH_INTERVAL) -> list[int]:
        """Indices of buckets with no lookup into their range for ``interval``
        seconds, from the nearest non-empty bucket up to 255.

        Buckets nearer than our nearest contact are left out: a flat table has
        up to 255 of them and almost all are empty for ever. That region is
        kept fresh by lookups of our own ID, which the driver makes at join.
        The driver refreshes bucket ``i`` by a lookup of
        :func:`cas.dht.ids.random_id_in_bucket` ``(own_id, i, rng)``.
        """
        if not self._buckets:
            return []
        default = self._created
        looked_up = self._looked_up
        return [
            i
            for i in range(min(self._buckets), ID_BITS)
            if now - looked_up.get(i, default) >= interval
        ]

    # -- saving -----------------------------------------------------------

    def to_record(self, now: float) -> dict[str, Any]:
        """The table as plain CBOR-able data (dicts, lists, bytes, str, ints).

        Times are saved as ages in whole milliseconds before ``now``, so a
        table saved under one clock (say, a monotonic clock that restarts with
        the process) reloads correctly under another: :meth:`from_record` turns
        them back into times before its own ``now``.
        """

        def entries(groups: dict[int, dict[int, _Entry]]) -> list[dict[str, Any]]:
            return [
                {
                    "id": id_to_bytes(e.contact.node_id),
                    "host": e.contact.host,
                    "port": e.contact.port,
                    "age_ms": max(0, round((now - e.last_seen) * 1000)),
                    "failures": e.failures,
                }
                for index in sorted(groups)
                for e in groups[index].values()
            ]

        return {
            "version": RECORD_VERSION,
            "node_id": id_to_bytes(self._own),
            "k": self._k,
            "contacts": entries(self._buckets),
            "replacements": entries(self._replacements),
        }

    @classmethod
    def from_record(
        cls,
        record: Any,
        now: float,
        *,
        k: int | None = None,
        max_failures: int = MAX_FAILURES,
        replacement_size: int | None = None,
    ) -> RoutingTable:
        """Rebuild a table saved by :meth:`to_record`. ``k`` defaults to the
        saved one; if it is smaller now, the surplus goes to the replacement
        caches. Raises :class:`RepositoryError` if the record is malformed."""
        try:
            if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
                raise ValueError("unknown version")
            own = id_from_bytes(record["node_id"])
            saved_k = record["k"]
            if type(saved_k) is not int or saved_k < 1:
                raise ValueError("bad k")
            table = cls(
                own,
                k=saved_k if k is None else k,
                max_failures=max_failures,
                replacement_size=replacement_size,
                now=now,
            )
            for key, into_cache in (("contacts", False), ("replacements", True)):
                items = record[key]
                if not isinstance(items, list):
                    raise ValueError(f"{key} is not a list")
                for item in items:
                    table._restore(item, now, into_cache)
        except (KeyError, TypeError, ValueError) as exc:
            raise RepositoryError(
                f"the saved routing table is malformed ({exc}); delete it to start from the bootstrap peers"
            ) from None
        return table

    def _restore(self, item: Any, now: float, into_cache: bool) -> None:
        if not isinstance(item, dict):
            raise ValueError("contact is not a map")
        age, failures = item["age_ms"], item["failures"]
        if type(age) is not int or age < 0 or type(failures) is not int or failures < 0:
            raise ValueError("bad age or failure count")
        contact = Contact(id_from_bytes(item["id"]), item["host"], item["port"])
        if contact.node_id == self._own:
            raise ValueError("table contains its own node")
        last_seen = now - age / 1000
        index = bucket_index(self._own, contact.node_id)
        bucket = self._buckets.setdefault(index, {})
        self._order = None
        if contact.node_id in bucket:
            raise ValueError("duplicate contact")
        if not into_cache and len(bucket) < self._k:
            bucket[contact.node_id] = _Entry(contact, last_seen, min(failures, self._max_failures - 1))
            self._size += 1
        else:
            if not bucket:
                del self._buckets[index]
            cache = self._replacements.setdefault(index, {})
            cache[contact.node_id] = _Entry(contact, last_seen)
            while len(cache) > self._replacement_size:
                del cache[next(iter(cache))]

    # -- internals --------------------------------------------------------

    def _index_or_none(self, node_id: object) -> int | None:
        if not is_valid_id(node_id) or node_id == self._own:
            return None
        return (self._own ^ node_id).bit_length() - 1  # type: ignore[operator]  # is_valid_id: an int

    def _find(self, node_id: object) -> _Entry | None:
        index = self._index_or_none(node_id)
        if index is None:
            return None
        bucket = self._buckets.get(index)
        return bucket.get(node_id) if bucket else None  # type: ignore[call-overload]  # an unchecked ID: a miss, as any non-int

    def _drop(self, index: int, node_id: int) -> None:
        bucket = self._buckets[index]
        del bucket[node_id]
        self._size -= 1
        cache = self._replacements.get(index)
        if cache:
            promoted = cache.pop(next(reversed(cache)))
            promoted.failures = 0
            # Keep least-recently-seen-first order: the promoted contact may be
            # older than the bucket's newest.
            ordered = sorted([*bucket.values(), promoted], key=lambda e: e.last_seen)
            bucket.clear()
            for e in ordered:
                bucket[e.contact.node_id] = e
            self._size += 1
            if not cache:
                del self._replacements[index]
        if not bucket:
            del self._buckets[index]
            self._order = None


def bulk_load(table: RoutingTable, contacts: Iterable[Contact], now: float) -> None:
    """Insert many contacts as if each had just been heard from, ignoring the
    ping suggestions (a helper for the simulator and for tests)."""
    for contact in contacts:
        table.update(contact, now)

