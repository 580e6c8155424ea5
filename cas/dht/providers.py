"""Provider records: who else is known to hold a block this node lacks.

A block lives on the R nodes closest to its key, so a reader's FIND_BLOCK
lookup, which converges on those nodes, finds it. Until its copies are
placed, though, the only holder may be the node that added it, which is
usually *not* among them: with more than k nodes, a lookup never asks it.
That happens when the closest nodes refuse the copies (their quota or the
disk reserve is full, or they are busy). So a node that refuses a block it
was offered, and verified, remembers who offered it: a **provider record**
``block → that node``, kept for :data:`PROVIDER_TTL`. A FIND_BLOCK for a
block it lacks but has a record of is answered ``providers`` (and the usual
closer peers), and the reader asks the providers directly. The adder's
retries of its short placements (every 30 s) refresh the record; once the
copies are placed, lookups find them and the record lapses.

A record costs the node that refused nothing but a few bytes, and it
vouches for nothing: the reader verifies whatever a provider sends, as it
verifies every block.

Owns: the bounded table and its expiry. No I/O, no clock (time comes in as
arguments), no knowledge of messages; the driver (:mod:`.driver`) records
refusals here and answers FIND_BLOCK from it.
"""

from __future__ import annotations

from collections import OrderedDict

from .routing import Contact

PROVIDER_TTL = 600.0
"""Seconds a provider record lasts without being refreshed: long enough
for an adder's next retry (every 30 s) to refresh it many times over,
short enough that a departed adder is soon forgotten."""

MAX_RECORDS = 65536
"""Provider records kept at most (a few MB); beyond it the oldest go."""

MAX_PROVIDERS_PER_BLOCK = 8
"""Providers remembered per block (the newest); a reader needs one that answers."""

MAX_RECORDS_PER_PROVIDER = 16384
"""Records one provider may have here at most, so that one node offering
endless junk cannot push every other record out."""


class ProviderRecords:
    """``block key → providers``, each with when it was last seen."""

    def __init__(self, *, ttl: float = PROVIDER_TTL, max_records: int = MAX_RECORDS,
                 max_per_block: int = MAX_PROVIDERS_PER_BLOCK,
                 max_per_provider: int = MAX_RECORDS_PER_PROVIDER) -> None:
        self.ttl = ttl
        self.max_records = max_records
        self.max_per_block = max_per_block
        self.max_per_provider = max_per_provider
        # (block key, provider node ID) -> (contact, expiry); oldest first
        self._records: OrderedDict[tuple[bytes, int], tuple[Contact, float]] = OrderedDict()
        self._by_block: dict[bytes, list[int]] = {}
        self._per_provider: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._records)

    def add(self, block: bytes, provider: Contact, now: float) -> bool:
        """``provider`` holds ``block`` (it offered it, verified, just now).
        False if the provider has too many records here already."""
        record = (block, provider.node_id)
        if record in self._records:
            self._records.move_to_end(record)
            self._records[record] = (provider, now + self.ttl)
            return True
        self._expire(now)
        if self._per_provider.get(provider.node_id, 0) >= self.max_per_provider:
            return False
        providers = self._by_block.setdefault(block, [])
        if len(providers) >= self.max_per_block:
            self._remove((block, providers[0]))  # the oldest of this block's
            providers = self._by_block.setdefault(block, [])
        while len(self._records) >= self.max_records:
            self._remove(next(iter(self._records)))
            providers = self._by_block.setdefault(block, [])
        self._records[record] = (provider, now + self.ttl)
        providers.append(provider.node_id)
        self._per_provider[provider.node_id] = self._per_provider.get(provider.node_id, 0) + 1
        return True

    def providers(self, block: bytes, now: float) -> list[Contact]:
        """The live providers of ``block``, newest first."""
        out = []
        for node_id in reversed(self._by_block.get(block, ())):
            contact, expires = self._records[(block, node_id)]
            if expires > now:
                out.append(contact)
        return out

    def _expire(self, now: float) -> None:
        while self._records:
            record, (_, expires) = next(iter(self._records.items()))
            if expires > now:
                return
            self._remove(record)

    def _remove(self, record: tuple[bytes, int]) -> None:
        del self._records[record]
        block, node_id = record
        providers = self._by_block[block]
        providers.remove(node_id)
        if not providers:
            del self._by_block[block]
        left = self._per_provider[node_id] - 1
        if left:
            self._per_provider[node_id] = left
        else:
            del self._per_provider[node_id]
