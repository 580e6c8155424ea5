"""Round-trip estimates per peer, as TCP keeps them (RFC 6298), and the
timeouts they set. No I/O: samples and timeouts are passed in.

Theory of operation
===================

A fixed timeout is wrong everywhere: on a LAN a silent peer holds a
lookup's slot a thousand round trips too long, across an ocean a slow but
healthy one is given up too soon. TCP solved this in 1988 (Jacobson) and
RFC 6298 fixed the recipe: keep a smoothed round trip ``SRTT`` and its mean
deviation ``RTTVAR``; on each sample ``R``::

    first sample:  SRTT = R,                         RTTVAR = R / 2
    afterwards:    RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|
                   SRTT   = 7/8 SRTT   + 1/8 R
    RTO = SRTT + max(G, 4 RTTVAR), clamped to [MIN_RTO, MAX_RTO]

TCP also doubles the RTO on each timeout (§5.5), because it resends the
same segment and must not flood a congested path. A lookup never resends:
its soft timeout only frees one of the alpha slots, and a late answer is
still used. So there is no back-off here: a silent peer should cost each
lookup one RTO, not ever more (the routing table, told of hard failures,
is what stops asking it).

A :class:`RttTable` keeps one :class:`RttEstimator` per peer (bounded: the
least recently sampled are forgotten first) and one more fed by every
sample: the *network's* estimate, which is a peer's RTO until that peer has
answered once (a node that has seen 80 ms round trips everywhere should not
wait RFC 6298's initial second for a peer it has not met). Before any
sample at all the RTO is :data:`INITIAL_RTO`.

Who uses it: a lookup gives each query ``rto(peer)`` before it stops
holding one of the alpha slots (the soft timeout, :mod:`.lookups`); a
silent peer therefore costs a lookup about one RTO. A query that must dial
first waits :data:`DIAL_ROUND_TRIPS` times as long (TCP's handshake and
Noise XX's before the request's own round trip).

Stores (STORE_BLOCKS) carry up to 2 MiB and are answered once the peer
has made them durable, so their timeout is the RTO plus the work and the
transfer: :func:`store_timeout`, from each peer's *store rate* (bytes per
second of its answered stores, smoothed; the time includes the transfer,
the queueing behind the message before it and the peer's fsync), or
:data:`FLOOR_STORE_RATE` before it has answered one, capped at the old
fixed timeout. A peer across a partition then costs an add a couple of
seconds, not ten.

What a sample is: the time from sending a small request on an open
connection to its answer. Answers that carry a block, and requests that had
to dial, are not samples (their time is the transfer's or the handshake's,
not the path's). A late answer (after its timeout) is still a sample: the
request was sent once, so Karn's ambiguity does not arise.

What may live in this file: the arithmetic of estimates and timeouts. Not
here: clocks, timers, which requests are sampled (the callers decide).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

ALPHA_GAIN = 1 / 8
"""RFC 6298's alpha: SRTT's weight of a new sample."""
BETA_GAIN = 1 / 4
"""RFC 6298's beta: RTTVAR's weight of a new deviation."""
K_VARIANCE = 4
"""RFC 6298's K: deviations of margin in the RTO."""
GRANULARITY = 0.001
"""RFC 6298's G: the clock's granularity (trio's clock is finer; 1 ms keeps
the RTO above SRTT when the deviation is nil)."""
MIN_RTO = 0.2
"""The floor. RFC 6298 says 1 s, for 1980s clocks and delayed ACKs; Linux's
TCP uses 200 ms, which also covers a busy peer's scheduling on loopback.
Only the *soft* timeout uses it: a query past it still gets its answer."""
MAX_RTO = 4.0
"""The ceiling: below the hard request timeout
(``pool.REQUEST_TIMEOUT``, 5 s), after which a query is given up."""
INITIAL_RTO = 1.0
"""Before any sample (RFC 6298 §2.1), and the old fixed soft timeout."""
DIAL_ROUND_TRIPS = 3
"""Round trips a query costs when it must connect first: TCP's handshake,
Noise XX's three messages (the last one travels with the request), and the
request's own."""
STORE_WORK = 3.0
"""Seconds a store's answer may take beyond its round trip and its bytes'
transfer: the peer verifies and fsyncs before it answers (a shared disk's
fsync takes a second or two under load)."""
STORE_SLACK = 2.0
"""Transfers allowed per store: a message may queue behind the one before it."""
FLOOR_STORE_RATE = 1 << 20
"""Bytes per second assumed of a peer that has answered no store yet."""
MAX_STORE_TIMEOUT = 10.0
"""The most a store waits (the old fixed timeout: 2 MiB, verified and fsynced)."""
RATE_GAIN = 1 / 4
"""The weight of a new store's rate in the smoothed one."""
MAX_PEERS = 4096
"""Per-peer estimates kept; beyond, the least recently sampled go (they
fall back on the network's estimate)."""


class RttEstimator:
    """One path's SRTT / RTTVAR and back-off (RFC 6298)."""

    __slots__ = ("rttvar", "samples", "srtt", "store_rate")

    def __init__(self) -> None:
        self.srtt = 0.0
        self.rttvar = 0.0
        self.samples = 0
        self.store_rate: float | None = None  # bytes per second of answered stores, smoothed

    def sample(self, rtt: float) -> None:
        """A measured round trip, in seconds."""
        rtt = max(0.0, rtt)
        if self.samples == 0:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - BETA_GAIN) * self.rttvar + BETA_GAIN * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA_GAIN) * self.srtt + ALPHA_GAIN * rtt
        self.samples += 1

    def base_rto(self) -> float | None:
        """The RTO the samples give, without back-off (``None``: no sample)."""
        if self.samples == 0:
            return None
        return self.srtt + max(GRANULARITY, K_VARIANCE * self.rttvar)

    def rto(self, fallback: float = INITIAL_RTO, ceiling: float = MAX_RTO) -> float:
        """The timeout now: the samples' RTO (or ``fallback``) within
        [MIN_RTO, ``ceiling``]."""
        base = self.base_rto()
        return min(ceiling, max(MIN_RTO, fallback if base is None else base))


def store_timeout(rto: float, nbytes: int, rate: float | None, *, dial: bool) -> float:
    """How long a store of ``nbytes`` may take to be answered by a peer
    with this ``rto`` and store ``rate`` (None: none measured yet); ``dial``:
    it must be connected to first."""
    transfer = nbytes / (FLOOR_STORE_RATE if rate is None else max(rate, 1.0))
    rounds = DIAL_ROUND_TRIPS + 1 if dial else 1
    return min(MAX_STORE_TIMEOUT, rounds * rto + STORE_WORK + STORE_SLACK * transfer)


@dataclass(frozen=True)
class RttStatistics:
    """What ``dht stats`` shows of the estimates."""

    peers: int
    samples: int
    srtt: float | None  # the network's, seconds
    rttvar: float | None
    rto: float  # for a peer not met yet


class RttTable:
    """Every peer's estimate (by node ID) and the network's."""

    def __init__(self, initial_rto: float = INITIAL_RTO, max_peers: int = MAX_PEERS) -> None:
        self.initial_rto = initial_rto
        self.ceiling = max(MAX_RTO, initial_rto)
        self.max_peers = max_peers
        self.network = RttEstimator()
        self._peers: OrderedDict[int, RttEstimator] = OrderedDict()

    def _entry(self, peer: int) -> RttEstimator:
        found = self._peers.get(peer)
        if found is None:
            found = self._peers[peer] = RttEstimator()
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return found

    def sample(self, peer: int, rtt: float) -> None:
        """``peer`` answered a small request ``rtt`` seconds after it was sent."""
        self._entry(peer).sample(rtt)
        self.network.sample(rtt)

    def sample_store(self, peer: int, nbytes: int, seconds: float) -> None:
        """``peer`` answered a store of ``nbytes`` ``seconds`` after it was sent."""
        entry = self._entry(peer)
        rate = nbytes / max(seconds, 1e-6)
        entry.store_rate = rate if entry.store_rate is None else \
            (1 - RATE_GAIN) * entry.store_rate + RATE_GAIN * rate

    def store_timeout(self, peer: int, nbytes: int, *, dial: bool) -> float:
        """How long a store of ``nbytes`` to ``peer`` may take (:func:`store_timeout`)."""
        found = self._peers.get(peer)
        return store_timeout(self.rto(peer), nbytes, None if found is None else found.store_rate, dial=dial)

    def network_rto(self) -> float:
        """The RTO for a peer never sampled and never timed out."""
        if self.network.samples == 0:
            return self.initial_rto
        return self.network.rto(ceiling=self.ceiling)

    def rto(self, peer: int) -> float:
        """How long to wait for ``peer``'s answer before searching around it."""
        found = self._peers.get(peer)
        if found is None or found.samples == 0:
            return self.network_rto()
        return found.rto(ceiling=self.ceiling)

    def estimate(self, peer: int) -> RttEstimator | None:
        return self._peers.get(peer)

    def statistics(self) -> RttStatistics:
        net = self.network
        return RttStatistics(len(self._peers), net.samples, net.srtt if net.samples else None,
                             net.rttvar if net.samples else None, self.network_rto())
