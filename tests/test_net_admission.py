"""The admission policy, without sockets: who gets a handshake slot and a
connection slot, and whose connection a newcomer takes when the pools are
full (cas/net/admission.py states the rule these tests check)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.net.admission import (
    MAX_CONNECTIONS_PER_PEER,
    Admission,
    Admitted,
    Refused,
    Slot,
    address_group,
)


def admit(policy: Admission, host: str, peer: object, now: float = 0.0) -> Admitted:
    """A newcomer from ``host`` proving ``peer``, both decisions admitted."""
    opened = policy.open(host, now)
    assert isinstance(opened, Admitted), opened
    done = policy.authenticated(opened.slot, peer, now)
    assert isinstance(done, Admitted), done
    return done


def peers_of(slots: list[Slot] | tuple[Slot, ...]) -> set[object]:
    return {slot.peer for slot in slots}


# -- handshakes -------------------------------------------------------------------------


def test_an_address_at_its_handshake_limit_replaces_its_own_oldest_handshake() -> None:
    policy = Admission(max_handshakes_per_address=3)
    first, *_ = [policy.open("10.0.0.1", now=t) for t in range(3)]
    assert isinstance(first, Admitted)
    newcomer = policy.open("10.0.0.1", now=10)
    assert isinstance(newcomer, Admitted) and newcomer.evict == (first.slot,)
    assert not first.slot.open and len(policy.handshakes()) == 3


def test_sixteen_addresses_holding_every_handshake_slot_cannot_keep_a_seventeenth_out() -> None:
    policy = Admission(max_handshakes=256)
    attackers = [f"127.0.0.{i}" for i in range(2, 18)]
    for t in range(16):
        for host in attackers:
            assert isinstance(policy.open(host, now=t), Admitted)
    assert len(policy.handshakes()) == 256
    # Another attacker connection finds every address equal: refused, nobody evicted.
    assert isinstance(policy.open("127.0.0.2", now=20), Refused)
    # An honest node's address holds none: it takes the oldest slot of a full address.
    honest = policy.open("127.0.0.1", now=21)
    assert isinstance(honest, Admitted)
    (victim,) = honest.evict
    assert victim.address in attackers and victim.opened == 0
    # Attackers reconnecting cannot push the honest handshake out: its address holds fewer.
    for t in range(22, 22 + 1000):
        decision = policy.open(attackers[t % 16], now=t)
        if isinstance(decision, Admitted):
            assert honest.slot not in decision.evict
    assert honest.slot.open
    assert isinstance(policy.authenticated(honest.slot, "honest", now=2000), Admitted)


def test_a_handshake_evicted_as_it_finishes_is_refused_not_an_error() -> None:
    policy = Admission(max_handshakes_per_address=1)
    first = policy.open("10.0.0.1", 0.0)
    assert isinstance(first, Admitted)
    assert isinstance(policy.open("10.0.0.1", 1.0), Admitted)  # evicts first
    assert isinstance(policy.authenticated(first.slot, "a", 2.0), Refused)
    assert policy.statistics().connections == 0


def test_a_handshake_that_finishes_or_closes_frees_its_slot() -> None:
    policy = Admission(max_handshakes=1)
    first = policy.open("10.0.0.1", 0.0)
    assert isinstance(first, Admitted)
    assert isinstance(policy.open("10.0.0.1", 0.0), Refused)  # full, and its own address is the fullest
    assert isinstance(policy.authenticated(first.slot, "a", 0.0), Admitted)
    second = policy.open("10.0.0.1", 0.0)
    assert isinstance(second, Admitted)
    policy.close(second.slot)
    policy.close(second.slot)  # closing twice changes nothing
    assert isinstance(policy.open("10.0.0.1", 0.0), Admitted)
    assert policy.statistics().handshakes == 1 and policy.statistics().connections == 1


# -- connections --------------------------------------------------------------------------


def test_one_address_holds_at_most_its_share_of_connections() -> None:
    policy = Admission(max_connections=100, max_connections_per_address=10, grace=0.0)
    for i in range(10):
        admit(policy, "127.0.0.2", f"flood{i}", now=i)
    # The 11th identity from the same address replaces one of its own useless ones (the newest).
    eleventh = admit(policy, "127.0.0.2", "flood10", now=20)
    assert peers_of(eleventh.evict) == {"flood9"}
    assert len(policy.connections("127.0.0.2")) == 10


def test_an_address_at_its_limit_never_replaces_a_useful_connection_of_its_own() -> None:
    policy = Admission(max_connections_per_address=2, grace=0.0)
    admit(policy, "10.0.0.1", "a")
    admit(policy, "10.0.0.1", "b")
    policy.served("a")
    policy.served("b")
    opened = policy.open("10.0.0.1", 1.0)
    assert isinstance(opened, Admitted)
    assert isinstance(policy.authenticated(opened.slot, "c", 1.0), Refused)
    assert not opened.slot.open and policy.statistics().handshakes == 0


def test_when_full_a_newcomer_evicts_from_the_address_holding_the_most() -> None:
    policy = Admission(max_connections=6, grace=0.0)
    for i in range(4):
        admit(policy, "10.0.0.66", f"many{i}", now=i)
    admit(policy, "10.0.0.7", "few0", now=5)
    admit(policy, "10.0.0.8", "few1", now=6)
    newcomer = admit(policy, "10.0.0.9", "new", now=10)
    assert peers_of(newcomer.evict) == {"many3"}  # the fullest address's newest
    assert policy.statistics().connections == 6


def test_an_address_holding_many_cannot_evict_one_holding_few() -> None:
    policy = Admission(max_connections=4, max_connections_per_address=10, grace=0.0)
    admit(policy, "10.0.0.1", "honest")
    for i in range(3):
        admit(policy, "10.0.0.66", f"flood{i}")
    decision = policy.open("10.0.0.66", 1.0)
    assert isinstance(decision, Admitted)
    more = policy.authenticated(decision.slot, "flood3", 1.0)
    assert isinstance(more, Admitted) and peers_of(more.evict) <= {"flood0", "flood1", "flood2"}
    assert "honest" in peers_of(policy.connections())


def test_useless_connections_go_before_useful_ones_and_good_contacts_never() -> None:
    in_table = {"contact"}
    policy = Admission(max_connections=3, grace=0.0, protected=lambda peer: peer in in_table)
    admit(policy, "10.0.0.1", "contact", now=0)
    admit(policy, "10.0.0.2", "answered", now=1)
    admit(policy, "10.0.0.3", "asker", now=2)
    policy.served("contact")
    policy.served("answered")
    first = admit(policy, "10.0.0.4", "new1", now=10)
    assert peers_of(first.evict) == {"asker"}  # it never answered us
    second = admit(policy, "10.0.0.5", "new2", now=11)
    assert peers_of(second.evict) == {"new1"}  # useless, newest
    policy.served("new2")
    policy.served("new2")
    third = admit(policy, "10.0.0.6", "new3", now=12)
    assert peers_of(third.evict) == {"answered"}  # fewest answers, and not one of our contacts
    fourth = admit(policy, "10.0.0.7", "new4", now=13)
    assert peers_of(fourth.evict) == {"new3"}  # useless
    for _ in range(3):
        policy.served("new4")
    # The good contact has the fewest answers of all, and still stays.
    fifth = admit(policy, "10.0.0.8", "new5", now=14)
    assert peers_of(fifth.evict) == {"new2"}
    assert "contact" in peers_of(policy.connections())


def test_a_newcomer_in_its_grace_period_outlasts_older_useless_connections() -> None:
    """An honest node behind the same address as a flood gets in, and the
    flood's next identities evict each other, not it, while it joins."""
    policy = Admission(max_connections=4, max_connections_per_address=4, grace=10.0)
    for i in range(4):
        admit(policy, "10.0.0.1", f"flood{i}", now=i)
    honest = admit(policy, "10.0.0.1", "honest", now=100)
    assert len(honest.evict) == 1
    for t in range(101, 109):
        decision = admit(policy, "10.0.0.1", f"flood-{t}", now=t)
        assert "honest" not in peers_of(decision.evict)
    assert honest.slot.open


def test_one_identity_gets_at_most_two_connections() -> None:
    policy = Admission()
    for _ in range(MAX_CONNECTIONS_PER_PEER):
        admit(policy, "10.0.0.1", "same")
    opened = policy.open("10.0.0.2", 0.0)
    assert isinstance(opened, Admitted)
    assert isinstance(policy.authenticated(opened.slot, "same", 0.0), Refused)


def test_a_full_pool_of_good_contacts_refuses_newcomers() -> None:
    policy = Admission(max_connections=2, grace=0.0, protected=lambda peer: True)
    admit(policy, "10.0.0.1", "a")
    admit(policy, "10.0.0.2", "b")
    policy.served("a")
    policy.served("b")
    opened = policy.open("10.0.0.3", 0.0)
    assert isinstance(opened, Admitted)
    assert isinstance(policy.authenticated(opened.slot, "c", 0.0), Refused)
    assert policy.statistics().refused == 1


def test_sources_are_counted_by_address_and_ipv6_by_its_64() -> None:
    assert address_group("127.0.0.2") == "127.0.0.2"
    assert address_group("::ffff:10.1.2.3") == "10.1.2.3"
    assert address_group("2001:db8:1:2:aaaa::1") == address_group("2001:db8:1:2:bbbb::7") == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:3::1") != address_group("2001:db8:1:2::1")
    assert address_group("fe80::1%eth0") == "fe80::/64"
    assert address_group("not an address") == "not an address"


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        Admission(max_connections=0)


# -- the handshake rate per address -------------------------------------------------------


def test_an_address_gets_its_burst_at_once_then_its_rate() -> None:
    policy = Admission(handshake_rate_per_address=4, handshake_burst_per_address=8,
                       max_handshakes_per_address=100)
    first = [policy.open("10.0.0.2", now=100.0) for _ in range(10)]
    assert [isinstance(d, Admitted) for d in first] == [True] * 8 + [False] * 2
    refused = first[-1]
    assert isinstance(refused, Refused) and "handshakes a second" in refused.reason
    assert policy.statistics().rate_limited == 2
    # A quarter of a second later, one more; a second later, four more.
    assert isinstance(policy.open("10.0.0.2", now=100.25), Admitted)
    assert not isinstance(policy.open("10.0.0.2", now=100.25), Admitted)
    later = [policy.open("10.0.0.2", now=101.25) for _ in range(5)]
    assert [isinstance(d, Admitted) for d in later] == [True] * 4 + [False]


def test_a_newcomer_over_its_rate_takes_no_slot_and_evicts_nobody() -> None:
    policy = Admission(handshake_rate_per_address=1, handshake_burst_per_address=2,
                       max_handshakes_per_address=2)
    held = [policy.open("10.0.0.2", now=0.0) for _ in range(2)]
    assert all(isinstance(d, Admitted) for d in held)
    assert isinstance(policy.open("10.0.0.2", now=0.0), Refused)
    assert all(d.slot.open for d in held if isinstance(d, Admitted))  # nobody pushed out
    assert len(policy.handshakes()) == 2


def test_one_address_over_its_rate_does_not_slow_another() -> None:
    policy = Admission(handshake_rate_per_address=1, handshake_burst_per_address=2)
    for _ in range(50):
        policy.open("2001:db8::1", now=0.0)
    assert isinstance(policy.open("2001:db8::2", now=0.0), Refused)  # the same /64
    assert isinstance(policy.open("2001:db8:0:1::1", now=0.0), Admitted)
    assert isinstance(policy.open("10.0.0.1", now=0.0), Admitted)


def test_a_bad_handshake_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        Admission(handshake_rate_per_address=0)


def test_the_total_handshake_limit_still_applies_within_the_rate() -> None:
    policy = Admission(max_handshakes=4, max_handshakes_per_address=4)
    for i in range(4):
        assert isinstance(policy.open(f"10.0.0.{i}", now=0.0), Admitted)
    assert isinstance(policy.open("10.0.0.9", now=0.0), Admitted)  # evicts the oldest of a fullest
    assert len(policy.handshakes()) == 4


# -- invariants under any sequence of events ------------------------------------------------

events = st.lists(
    st.tuples(st.sampled_from(["open", "auth", "close", "served"]), st.integers(0, 5), st.integers(0, 30)),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(events)
def test_the_pools_stay_within_their_limits_and_their_counts_exact(steps: list[tuple[str, int, int]]) -> None:
    policy = Admission(max_handshakes=6, max_handshakes_per_address=3, max_connections=8,
                       max_connections_per_address=4, max_connections_per_peer=2, grace=5.0,
                       protected=lambda peer: peer in {0, 1})
    mine: list[Slot] = []  # every slot handed out
    now = 0.0
    for action, source, value in steps:
        now += 1
        host = f"10.0.0.{source}"
        if action == "open":
            decision = policy.open(host, now)
            if isinstance(decision, Admitted):
                mine.append(decision.slot)
                assert all(not v.open for v in decision.evict)
        elif action == "auth":
            waiting = [s for s in mine if s.open and not s.established]
            if waiting:
                slot = waiting[value % len(waiting)]
                decision = policy.authenticated(slot, value % 12, now)
                if isinstance(decision, Admitted):
                    for victim in decision.evict:
                        assert not victim.open
                        # never a good contact that did work for us
                        assert not (victim.served and victim.peer in {0, 1})
                        # never a useful one of the newcomer's own address
                        assert not (victim.served and victim.address == slot.address)
                else:
                    assert not slot.open
        elif action == "close" and mine:
            policy.close(mine[value % len(mine)])
        elif action == "served":
            policy.served(value % 12)
        stats = policy.statistics()
        live = [s for s in mine if s.open]
        assert stats.handshakes == sum(not s.established for s in live) <= 6
        assert stats.connections == sum(s.established for s in live) <= 8
        assert sorted(map(id, policy.connections() + policy.handshakes())) == sorted(map(id, live))
        for group in {s.address for s in live}:
            assert sum(s.established for s in live if s.address == group) <= 4
            assert sum(not s.established for s in live if s.address == group) <= 3
        for peer in {s.peer for s in live if s.established}:
            assert sum(s.peer == peer for s in live if s.established) <= 2
