"""Who may hold a connection to this node: the admission policy, sans-IO.

Theory of operation
===================

An open network cannot tell a stranger from an attacker before it has
talked to it, and an attacker's identities cost nothing (a key pair each).
What it can count is *where connections come from* and *what they have done
for us*. This module keeps that count for the connections peers open to us
(inbound), in two pools, and answers two questions: may this newcomer
have a slot, and if the pool is full, whose slot does it take?

* **Handshakes** (half-open: TCP accepted, identity not yet proven). At
  most :data:`MAX_HANDSHAKES` in total and :data:`MAX_HANDSHAKES_PER_ADDRESS`
  per source address. Nothing is known about them but their address and
  age, so when a newcomer finds a pool full it takes the slot of the
  **oldest** handshake of the address holding the most, provided that
  address holds more than the newcomer's own (its own oldest, when its own
  address is the one at its limit). An honest handshake takes milliseconds
  and one that lingers is the suspect; an address that holds many cannot
  push out one that holds few, so 16 addresses holding every slot cannot
  keep a 17th out, and the handshake timeout bounds the rest.
* **New handshakes per address per second.** A handshake costs the node
  three Diffie-Hellman operations and an Ed25519 verification (~1 ms of
  CPU), and identities cost an attacker nothing, so one address could make
  the node do hundreds a second, all of them finishing in time to be
  counted as honest. Each address has a token bucket
  (:data:`HANDSHAKE_RATE_PER_ADDRESS` a second on average,
  :data:`HANDSHAKE_BURST_PER_ADDRESS` at once); a newcomer whose address's
  bucket is empty is refused as TCP accepts it, before any byte of the
  handshake is read, so it costs no cryptography at all. The pools' limits
  are unchanged and still apply to what gets through.
* **Connections** (established: the handshake proved a node ID). At most
  :data:`MAX_CONNECTIONS` in total, :data:`MAX_CONNECTIONS_PER_ADDRESS` per
  source address and :data:`MAX_CONNECTIONS_PER_PEER` per node ID. Over
  the per-peer limit a newcomer is refused (an identity needs no more). Over
  the per-address or total limit it may **evict** one connection, chosen by
  the rule below; if nobody may be evicted it is refused.

The eviction rule
-----------------

A connection is *useful* once the peer has answered one of our requests
with something other than PONG (:meth:`Admission.served`, fed by the
driver): it did work for us. Being pinged, or answering our pings, proves
only that it is alive, and costs an attacker nothing. A useful connection
to a peer that our routing table holds (``protected``, asked of the driver
at decision time) is one of our long-lived good contacts and is **never
evicted**. Among the rest, a newcomer from address ``a`` may evict a
connection ``v`` only if

* ``v`` comes from an address holding more connections than ``a`` (so an
  address that holds many can never push out one that holds few: fairness
  between addresses), or
* ``v`` comes from ``a`` itself and is not useful (an address at its limit
  may replace its own dead weight, so an honest node behind the same
  address as a flood still gets in);

and it evicts the first of these in the order:

1. not useful before useful (answers to our requests, fewest first);
2. past its grace period (:data:`NEW_CONNECTION_GRACE`) before still in it,
   so a newcomer has time to join before churn can push it out;
3. from the address holding the most connections first;
4. newest first (Kademlia's preference: the peers that stayed longest are
   the likeliest to stay).

Rules for this file (as h11's state module has):

1. No I/O, no clocks, no tasks: time comes in as ``now`` (seconds, never
   going back), the routing
   table's view as the ``protected`` predicate; decisions go out as return
   values, and the driver closes what they name.
2. Every slot handed out is in exactly one pool until :meth:`Admission.close`
   (idempotent) or an eviction removes it; the counts are always the pools'
   sizes.
3. Everything is bounded: the pools by their limits, the work per decision
   by the pool's size, the rate's buckets by the addresses seen in the last
   few seconds (a bucket that has filled up again is forgotten: a full
   bucket and none are the same) and at most :data:`MAX_RATE_ADDRESSES`.

Only inbound connections are admitted here. The connections this node dials
are its own choice (lookups, placement, pings of its routing table) and are
bounded by its own activity and the idle timeout; they are not counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..ratelimit import KeyedBuckets

# -- limits -------------------------------------------------------------------------

MAX_HANDSHAKES = 256
"""Inbound handshakes in progress at once. A handshake is two round trips
and ~1 ms of CPU; 256 is far more than any honest burst (a network of
thousands joining through one bootstrap node), and with oldest-first
eviction the pool can be full without keeping anyone out."""

MAX_HANDSHAKES_PER_ADDRESS = 32
"""Inbound handshakes in progress from one source address: generous,
because many nodes may share one (NAT, or a test's loopback network of 30
daemons bootstrapping at once)."""

HANDSHAKE_RATE_PER_ADDRESS = 16.0
"""New inbound handshakes per second from one source address, on average
(``--handshake-rate-per-address``). An honest node opens one connection to
a peer and keeps it (it is pooled, and reopened after the idle timeout), so
even a NAT of hundreds of nodes opens a handful a second; one address at
this rate costs the node ~2 % of a core in handshakes."""

HANDSHAKE_BURST_PER_ADDRESS = 64
"""New inbound handshakes from one source address at once, above the rate:
a loopback test network of 50 daemons (bench/dht_lookup.py) bootstrapping
through one of them at the same moment fits."""

MAX_RATE_ADDRESSES = 65536
"""Addresses whose handshake rate is tracked at once; past it, the address
seen least recently is forgotten (it gets a full bucket again: the limit
errs towards letting in). Only addresses seen within the last
HANDSHAKE_BURST_PER_ADDRESS / HANDSHAKE_RATE_PER_ADDRESS seconds are
tracked anyway."""

MAX_CONNECTIONS = 512
"""Established inbound connections at once: a routing table holds a few
hundred contacts (k = 20 per bucket), each worth at most one connection
here; the rest of the room is for peers that only ask."""

MAX_CONNECTIONS_PER_ADDRESS = 128
"""Established inbound connections from one source address (an IPv6 /64):
a quarter of the total, so one address can never hold every slot, while a
NAT or a loopback network of 50 daemons (bench/dht_lookup.py) fits."""

MAX_CONNECTIONS_PER_PEER = 2
"""Established inbound connections per node ID: one, plus one while two
nodes that dialled each other at once settle on one."""

NEW_CONNECTION_GRACE = 10.0
"""Seconds a new connection ranks after older useless ones for eviction:
joining is a ping and a few lookups (milliseconds on a LAN, a few round
trips across the world), done well within this."""

IPV6_GROUP_PREFIX = 64
"""IPv6 addresses are counted by their /64: a host is routinely given a
whole /64, so counting single IPv6 addresses would count nothing."""


def address_group(host: str) -> str:
    """The key a source address is counted under: an IPv4 address itself
    (also when written as IPv4-mapped IPv6), an IPv6 address's /64, any
    other string (a test's stream) as it is."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_GROUP_PREFIX), strict=False)
        return str(network)
    return str(address)


# -- slots and decisions ------------------------------------------------------------


class Slot:
    """One inbound connection's place: a handshake, then (once
    :meth:`Admission.authenticated` admits it) an established connection.
    Its fields are the policy's; the driver only holds it and hands it
    back."""

    __slots__ = ("address", "established", "open", "opened", "peer", "served")

    def __init__(self, address: str, opened: float) -> None:
        self.address = address
        self.peer: Hashable | None = None
        self.opened = opened  # when it was accepted, then when it was established
        self.served = 0  # our requests (not pings) the peer answered on it
        self.established = False
        self.open = True  # False once closed or evicted

    def __repr__(self) -> str:
        state = "established" if self.established else "handshake"
        return f"Slot({self.address}, {state}, peer={self.peer!r}, served={self.served})"


@dataclass(frozen=True)
class Admitted:
    """The newcomer has ``slot``; the driver must close every slot in
    ``evict`` (already removed from the pools)."""

    slot: Slot
    evict: tuple[Slot, ...] = ()


@dataclass(frozen=True)
class Refused:
    """The newcomer gets no slot (any it held is released): ``reason``
    says which limit."""

    reason: str


Decision = Admitted | Refused


@dataclass
class AdmissionStatistics:
    handshakes: int = 0  # in progress now
    connections: int = 0  # established now
    addresses: int = 0  # source addresses holding an established connection now
    admitted: int = 0  # handshakes that became connections, ever
    refused: int = 0  # newcomers refused, ever (both pools, and over the rate)
    rate_limited: int = 0  # of those, refused at accept for their address's handshake rate
    evicted_handshakes: int = 0
    evicted_connections: int = 0


def _never(peer: Hashable) -> bool:
    return False


class _Pool:
    """Slots by address, with per-address counts (insertion order = age)."""

    __slots__ = ("by_address", "size")

    def __init__(self) -> None:
        self.by_address: dict[str, dict[Slot, None]] = {}
        self.size = 0

    def count(self, address: str) -> int:
        slots = self.by_address.get(address)
        return 0 if slots is None else len(slots)

    def add(self, slot: Slot) -> None:
        self.by_address.setdefault(slot.address, {})[slot] = None
        self.size += 1

    def remove(self, slot: Slot) -> bool:
        slots = self.by_address.get(slot.address)
        if slots is None or slot not in slots:
            return False
        del slots[slot]
        if not slots:
            del self.by_address[slot.address]
        self.size -= 1
        return True

    def slots(self) -> list[Slot]:
        return [slot for slots in self.by_address.values() for slot in slots]


class Admission:
    """The policy for one node's inbound connections; see the module
    docstring. ``protected(peer)`` says whether a node ID is in our routing
    table (a useful connection to such a peer is never evicted)."""

    def __init__(
        self,
        *,
        max_handshakes: int = MAX_HANDSHAKES,
        max_handshakes_per_address: int = MAX_HANDSHAKES_PER_ADDRESS,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
        max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER,
        grace: float = NEW_CONNECTION_GRACE,
        protected: Callable[[Hashable], bool] = _never,
        handshake_rate_per_address: float = HANDSHAKE_RATE_PER_ADDRESS,
        handshake_burst_per_address: int = HANDSHAKE_BURST_PER_ADDRESS,
    ) -> None:
        if min(max_handshakes, max_handshakes_per_address, max_connections,
               max_connections_per_address, max_connections_per_peer) < 1:
            raise ValueError("every connection limit must be at least 1")
        self.max_handshakes = max_handshakes
        self.max_handshakes_per_address = max_handshakes_per_address
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.max_connections_per_peer = max_connections_per_peer
        self.grace = grace
        self.protected = protected
        self.handshake_rate: KeyedBuckets[str] = KeyedBuckets(
            handshake_rate_per_address, handshake_burst_per_address, max_keys=MAX_RATE_ADDRESSES)
        """New handshakes per address (a token bucket each, cas/ratelimit.py)."""
        self._handshakes = _Pool()
        self._connections = _Pool()
        self._by_peer: dict[Hashable, list[Slot]] = {}
        self.stats = AdmissionStatistics()

    def __repr__(self) -> str:
        return f"Admission(handshakes={self._handshakes.size}, connections={self._connections.size})"

    def statistics(self) -> AdmissionStatistics:
        self.stats.handshakes = self._handshakes.size
        self.stats.connections = self._connections.size
        self.stats.addresses = len(self._connections.by_address)
        return self.stats

    def connections(self, address: str | None = None) -> list[Slot]:
        """The established slots (from ``address``'s group only, if given),
        oldest first within an address."""
        if address is None:
            return self._connections.slots()
        return list(self._connections.by_address.get(address_group(address), {}))

    def handshakes(self) -> list[Slot]:
        return self._handshakes.slots()

    # -- the two questions ----------------------------------------------------------

    def open(self, host: str, now: float) -> Decision:
        """A TCP connection from ``host`` was accepted: may it handshake?
        Asked before any byte of it is read: a newcomer over its address's
        handshake rate is refused here, and costs no cryptography."""
        address = address_group(host)
        if not self.handshake_rate.take(address, now):
            self.stats.refused += 1
            self.stats.rate_limited += 1
            return Refused(f"over {self.handshake_rate.rate:g} new handshakes a second from {address}")
        pool = self._handshakes
        evict: tuple[Slot, ...] = ()
        if pool.count(address) >= self.max_handshakes_per_address:
            evict = (self._oldest(address),)
        elif pool.size >= self.max_handshakes:
            fullest = max(pool.by_address, key=pool.count)
            if pool.count(fullest) <= pool.count(address):
                self.stats.refused += 1
                return Refused(f"{pool.size} handshakes in progress, {pool.count(address)} from {address}")
            evict = (self._oldest(fullest),)
        for victim in evict:
            pool.remove(victim)
            victim.open = False
            self.stats.evicted_handshakes += 1
        slot = Slot(address, now)
        pool.add(slot)
        return Admitted(slot, evict)

    def authenticated(self, slot: Slot, peer: Hashable, now: float) -> Decision:
        """``slot``'s handshake proved node ID ``peer``: may it stay? On
        :class:`Refused` the slot is released. A handshake evicted while it
        finished (its driver had not yet noticed) is refused."""
        if slot.established:
            raise ValueError(f"{slot!r} is established already")
        if not slot.open:
            self.stats.refused += 1
            return Refused("evicted during its handshake")
        self._handshakes.remove(slot)
        pool = self._connections
        held = self._by_peer.get(peer, ())
        evict: tuple[Slot, ...] = ()
        if len(held) >= self.max_connections_per_peer:
            return self._refuse(slot, f"{len(held)} connections from that node already")
        if pool.count(slot.address) >= self.max_connections_per_address:
            victim = self._victim(slot.address, now, own_only=True)
            if victim is None:
                return self._refuse(slot, f"{pool.count(slot.address)} connections from {slot.address}, "
                                          "none of them evictable")
            evict = (victim,)
        elif pool.size >= self.max_connections:
            victim = self._victim(slot.address, now, own_only=False)
            if victim is None:
                return self._refuse(slot, f"{pool.size} connections, none of them evictable")
            evict = (victim,)
        for victim in evict:
            self._drop_connection(victim)
            self.stats.evicted_connections += 1
        slot.peer = peer
        slot.established = True
        slot.opened = now
        pool.add(slot)
        self._by_peer.setdefault(peer, []).append(slot)
        self.stats.admitted += 1
        return Admitted(slot, evict)

    def served(self, peer: Hashable) -> None:
        """``peer`` answered one of our requests (not a ping): its
        connections are useful."""
        for slot in self._by_peer.get(peer, ()):
            slot.served += 1

    def close(self, slot: Slot) -> None:
        """``slot``'s connection ended (any number of times; a slot already
        evicted is left alone)."""
        if not slot.open:
            return
        slot.open = False
        if slot.established:
            self._drop_connection(slot)
        else:
            self._handshakes.remove(slot)

    # -- the rules ------------------------------------------------------------------

    def _refuse(self, slot: Slot, reason: str) -> Refused:
        slot.open = False
        self.stats.refused += 1
        return Refused(reason)

    def _oldest(self, address: str) -> Slot:
        return next(iter(self._handshakes.by_address[address]))

    def _drop_connection(self, slot: Slot) -> None:
        slot.open = False
        self._connections.remove(slot)
        held = self._by_peer.get(slot.peer)
        if held is not None:
            held.remove(slot)
            if not held:
                del self._by_peer[slot.peer]

    def _victim(self, address: str, now: float, *, own_only: bool) -> Slot | None:
        """The connection a newcomer from ``address`` may evict, by the
        module docstring's rule, or None."""
        pool = self._connections
        own = pool.count(address)
        best: Slot | None = None
        best_rank: tuple[int, bool, int, float] | None = None
        for group, slots in pool.by_address.items():
            count = len(slots)
            if group == address:
                pass
            elif own_only or count <= own:
                continue
            for slot in slots:
                if slot.served and (group == address or self.protected(slot.peer)):
                    continue  # a useful one of its own address, or a good contact: never
                rank = (slot.served, now - slot.opened < self.grace, -count, -slot.opened)
                if best_rank is None or rank < best_rank:
                    best, best_rank = slot, rank
        return best
