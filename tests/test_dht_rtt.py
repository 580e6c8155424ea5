"""Timeouts that learn: RFC 6298's estimator per peer (``cas.dht.rtt``) and
a lookup driven with it, time passed in, no sockets."""

from __future__ import annotations

import heapq
import random

import pytest

from cas.dht.lookup import ALPHA, Lookup
from cas.dht.routing import Contact, K
from cas.dht.rtt import (
    DIAL_ROUND_TRIPS,
    FLOOR_STORE_RATE,
    INITIAL_RTO,
    MAX_RTO,
    MAX_STORE_TIMEOUT,
    MIN_RTO,
    STORE_SLACK,
    STORE_WORK,
    RttEstimator,
    RttTable,
    store_timeout,
)


def test_the_first_sample_sets_srtt_and_half_of_it_as_variance() -> None:
    est = RttEstimator()
    assert est.base_rto() is None and est.rto() == INITIAL_RTO
    est.sample(0.5)
    assert (est.srtt, est.rttvar) == (0.5, 0.25)
    assert est.rto() == pytest.approx(0.5 + 4 * 0.25)


def test_later_samples_follow_rfc_6298_gains() -> None:
    est = RttEstimator()
    est.sample(1.0)
    est.sample(2.0)
    # RTTVAR = 3/4 * 0.5 + 1/4 * |1 - 2|, then SRTT = 7/8 * 1 + 1/8 * 2
    assert est.rttvar == pytest.approx(0.625) and est.srtt == pytest.approx(1.125)
    assert est.rto() == pytest.approx(min(MAX_RTO, 1.125 + 4 * 0.625))


def test_a_steady_path_converges_to_just_above_its_round_trip() -> None:
    est = RttEstimator()
    for _ in range(60):
        est.sample(0.3)
    assert 0.3 < est.rto() < 0.31


def test_a_fast_path_is_floored_and_a_slow_one_capped_below_the_hard_timeout() -> None:
    est = RttEstimator()
    for _ in range(20):
        est.sample(0.0002)  # loopback
    assert est.rto() == MIN_RTO
    est.sample(30.0)  # one answer after a stall
    assert est.rto() == MAX_RTO


def test_a_peer_not_met_yet_gets_the_networks_estimate_and_before_any_the_initial_rto() -> None:
    table = RttTable()
    assert table.rto(1) == INITIAL_RTO
    for peer in range(2, 12):
        for _ in range(10):
            table.sample(peer, 0.08)
    assert table.rto(1) == pytest.approx(table.network_rto())
    assert MIN_RTO <= table.rto(1) < 0.3
    stats = table.statistics()
    assert stats.samples == 100 and stats.peers == 10 and stats.srtt == pytest.approx(0.08)


def test_the_table_forgets_the_least_recently_sampled_peers_first() -> None:
    table = RttTable(max_peers=3)
    for peer, rtt in ((1, 3.0), (2, 0.1), (3, 0.1), (4, 0.1)):
        table.sample(peer, rtt)
    assert table.estimate(1) is None and table.estimate(4) is not None


# -- a lookup over a model network, time passed in --------------------------


def run_lookup(rtt: float, silent: set[int], adaptive: bool, fixed: float = 1.0,
               seed: int = 5) -> tuple[float, int, Lookup, list[int]]:
    """One FIND_NODE over 60 nodes that all know each other, each answering
    after ``rtt``; ``silent`` never answer. Soft timeouts are the table's
    RTO (trained on earlier answers) or ``fixed``. Returns the seconds it
    took, the most queries in flight at once, the lookup, and the ids."""
    rng = random.Random(seed)
    ids = [rng.getrandbits(256) for _ in range(60)]
    target = rng.getrandbits(256)
    contacts = {i: Contact(i, "10.77.0.1", 4001) for i in ids}
    table = RttTable()
    for i in ids:  # earlier lookups timed every peer
        table.sample(i, rtt)
    by_distance = sorted(ids, key=lambda i: i ^ target)
    start = [contacts[i] for i in by_distance[:K]]
    rng.shuffle(start)  # what the routing table knew: the closest, in some order
    lookup = Lookup(target, start[:K], k=K, alpha=ALPHA)
    events: list[tuple[float, int, str, int]] = []
    seq = 0
    in_flight: set[int] = set()
    most = 0

    def send(actions: list, now: float) -> None:  # type: ignore[type-arg]
        nonlocal seq, most
        for action in actions:
            peer = action.peer.node_id
            in_flight.add(peer)
            most = max(most, len(in_flight))
            seq += 1
            if peer not in silent:
                heapq.heappush(events, (now + rtt, seq, "answer", peer))
            seq += 1
            soft = table.rto(peer) if adaptive else fixed
            heapq.heappush(events, (now + soft, seq, "soft", peer))

    now = 0.0
    send(lookup.start(), now)
    while events and not lookup.done:
        now, _, kind, peer = heapq.heappop(events)
        if peer not in in_flight:
            continue
        in_flight.discard(peer)
        if kind == "answer":
            closest = sorted(ids, key=lambda i: i ^ target)[:K]
            send(lookup.on_response(contacts[peer], [contacts[i] for i in closest if i != peer]), now)
        else:
            send(lookup.on_timeout(contacts[peer]), now)
    return now, most, lookup, by_distance


def test_a_lookup_keeps_alpha_in_flight_and_ends_when_the_k_closest_have_answered() -> None:
    seconds, most, lookup, by_distance = run_lookup(0.1, silent=set(), adaptive=True)
    assert most == ALPHA
    assert lookup.done and [c.node_id for c in lookup.result.closest] == by_distance[:K]
    # K / alpha rounds of one round trip each: nobody waited past an answer.
    assert seconds == pytest.approx(0.1 * -(-K // ALPHA))


@pytest.mark.parametrize("rtt", [0.02, 0.1, 0.3])
def test_a_silent_peer_costs_a_lookup_about_one_rto_not_a_fixed_second(rtt: float) -> None:
    healthy, _, _, by_distance = run_lookup(rtt, silent=set(), adaptive=True)
    silent = {by_distance[0]}  # the closest node of all went silent
    learned, _, lookup, _ = run_lookup(rtt, silent=silent, adaptive=True)
    fixed, _, _, _ = run_lookup(rtt, silent=silent, adaptive=False)
    assert by_distance[0] not in [c.node_id for c in lookup.result.closest]
    assert learned - healthy <= max(MIN_RTO, rtt) + rtt + 1e-9
    assert fixed >= 1.0  # the old way: the closest peer's slot held a whole second
    assert learned <= fixed


# -- stores: the round trip, the peer's work and the bytes' transfer ---------------


def test_a_store_waits_the_rto_the_peers_work_and_its_bytes_at_the_peers_measured_rate() -> None:
    table = RttTable()
    for _ in range(10):
        table.sample(7, 0.1)
    rto = table.rto(7)
    # Nothing measured yet: the floor rate.
    assert table.store_timeout(7, 1 << 20, dial=False) == pytest.approx(
        rto + STORE_WORK + STORE_SLACK * (1 << 20) / FLOOR_STORE_RATE)
    table.sample_store(7, 8 << 20, 1.0)  # 8 MiB/s
    assert table.store_timeout(7, 2 << 20, dial=False) == pytest.approx(rto + STORE_WORK + STORE_SLACK * 0.25)
    assert table.rto(7) == rto  # a store is no round-trip sample


def test_a_store_that_must_dial_first_waits_the_dials_round_trips_too() -> None:
    assert store_timeout(0.2, 0, 1e9, dial=True) == pytest.approx((DIAL_ROUND_TRIPS + 1) * 0.2 + STORE_WORK)


def test_a_store_never_waits_longer_than_the_old_fixed_timeout() -> None:
    assert store_timeout(MAX_RTO, 2 << 20, 1000.0, dial=True) == MAX_STORE_TIMEOUT


def test_a_peer_met_only_through_stores_gets_the_networks_rto() -> None:
    table = RttTable()
    table.sample(1, 0.05)
    table.sample_store(2, 1 << 20, 0.5)
    assert table.rto(2) == table.network_rto()
