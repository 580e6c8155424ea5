"""The lookup state machine, driven by hand: no sockets, no clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.dht.ids import ID_BITS
from cas.dht.lookup import Lookup, SendQuery
from cas.dht.routing import Contact

ME = 0


def contact(node_id: int) -> Contact:
    return Contact(node_id, "192.0.2.1", 4001)


class ToyNetwork:
    """Peers that answer with the k nodes nearest the target from the global
    view: a perfect network, so a lookup must find exactly the true k closest."""

    def __init__(self, n: int, seed: int, k: int = 20) -> None:
        rng = random.Random(seed)
        self.contacts = {c.node_id: c for c in (contact(rng.getrandbits(ID_BITS) | 1) for _ in range(n))}
        self.k = k

    def nearest(self, target: int, n: int) -> list[Contact]:
        return sorted(self.contacts.values(), key=lambda c: c.node_id ^ target)[:n]

    def answer(self, target: int) -> list[Contact]:
        return self.nearest(target, self.k)


def drive(lookup: Lookup, answer, rng: random.Random, fail: float = 0.0, slow: float = 0.0) -> list[Contact]:
    """Run a lookup to the end, delivering outcomes in random order. Returns
    every peer queried, in order; checks the invariants on the way."""
    queried: list[Contact] = []
    pending: list[Contact] = []
    late: list[Contact] = []

    def take(actions: list[SendQuery]) -> None:
        for action in actions:
            assert isinstance(action, SendQuery)
            queried.append(action.peer)
            pending.append(action.peer)
        assert len(pending) <= lookup.alpha

    take(lookup.start())
    while pending or late:
        if late and (not pending or rng.random() < 0.3):
            peer = late.pop(rng.randrange(len(late)))
            take(lookup.on_response(peer, answer(peer)))
            continue
        peer = pending.pop(rng.randrange(len(pending)))
        roll = rng.random()
        if roll < fail:
            take(lookup.on_failure(peer))
        elif roll < fail + slow:
            late.append(peer)
            take(lookup.on_timeout(peer))
        else:
            take(lookup.on_response(peer, answer(peer)))
    assert lookup.done
    assert len({c.node_id for c in queried}) == len(queried), "a peer was queried twice"
    return queried


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(), alpha=st.integers(1, 5))
def test_in_a_truthful_network_the_lookup_finds_exactly_the_k_closest(seed: int, alpha: int) -> None:
    rng = random.Random(seed)
    net = ToyNetwork(300, seed)
    target = rng.getrandbits(ID_BITS)
    start = rng.sample(list(net.contacts.values()), 20)
    lookup = Lookup(target, start, k=20, alpha=alpha, exclude=ME)
    drive(lookup, lambda peer: net.answer(target), rng)
    assert list(lookup.result.closest) == net.nearest(target, 20)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(), fail=st.floats(0, 0.5), slow=st.floats(0, 0.3))
def test_with_failures_and_timeouts_alpha_is_respected_and_no_peer_is_asked_twice(
    seed: int, fail: float, slow: float
) -> None:
    rng = random.Random(seed)
    net = ToyNetwork(200, seed)
    target = rng.getrandbits(ID_BITS)
    lookup = Lookup(target, rng.sample(list(net.contacts.values()), 20), k=20, alpha=3)
    queried = drive(lookup, lambda peer: net.answer(target), rng, fail=fail, slow=slow)
    result = lookup.result
    assert result.messages == len(queried)
    assert len(result.closest) <= 20
    ordered = sorted(result.closest, key=lambda c: c.node_id ^ target)
    assert list(result.closest) == ordered


def test_start_queries_the_alpha_closest_initial_contacts() -> None:
    contacts = [contact(i) for i in (1, 2, 4, 8, 16)]
    lookup = Lookup(0, contacts, k=20, alpha=3)
    assert [a.peer.node_id for a in lookup.start()] == [1, 2, 4]
    assert not lookup.done


def test_a_lookup_with_no_contacts_is_done_at_once_with_an_empty_result() -> None:
    lookup = Lookup(5, [])
    assert lookup.start() == []
    assert lookup.done
    assert lookup.result.closest == () and lookup.result.messages == 0


def test_events_before_start_or_a_second_start_are_our_bug() -> None:
    lookup = Lookup(5, [contact(1)])
    with pytest.raises(RuntimeError):
        lookup.on_response(contact(1), [])
    lookup.start()
    with pytest.raises(RuntimeError):
        lookup.start()


def test_the_result_is_not_available_before_the_lookup_ends() -> None:
    lookup = Lookup(5, [contact(1)])
    lookup.start()
    with pytest.raises(RuntimeError):
        _ = lookup.result


def test_it_ends_when_the_k_closest_seen_have_all_answered() -> None:
    near = [contact(i) for i in (1, 2, 3)]
    far = contact(1 << 200)
    lookup = Lookup(0, [far, *near], k=3, alpha=3)
    assert {a.peer for a in lookup.start()} == set(near)
    for peer in near[:2]:
        assert lookup.on_response(peer, [far]) == []
        assert not lookup.done
    assert lookup.on_response(near[2], []) == []
    assert lookup.done
    assert lookup.result.closest == tuple(near)
    assert lookup.result.messages == 3  # `far` was never needed


def test_responses_from_peers_it_did_not_ask_are_ignored() -> None:
    a, b, stranger = contact(1), contact(2), contact(3)
    lookup = Lookup(0, [a, b], k=2, alpha=1)
    assert [x.peer for x in lookup.start()] == [a]
    assert lookup.on_response(stranger, [contact(4)]) == []
    assert lookup.on_response(b, [contact(4)]) == []  # known, but not asked yet
    assert lookup.statistics().responses == 0
    assert [x.peer for x in lookup.on_response(a, [])] == [b]
    assert lookup.on_response(a, [contact(5)]) == []  # a duplicate answer
    assert lookup.statistics().candidates == 2


def test_an_answer_after_a_failure_is_ignored() -> None:
    a, b = contact(1), contact(2)
    lookup = Lookup(0, [a, b], k=2, alpha=1)
    lookup.start()
    assert [x.peer for x in lookup.on_failure(a)] == [b]
    assert lookup.on_response(a, [contact(3)]) == []
    lookup.on_response(b, [])
    assert lookup.done and lookup.result.closest == (b,)
    assert lookup.result.failures == 1


def test_malformed_contacts_in_a_response_are_ignored() -> None:
    a = contact(8)
    smuggled = object.__new__(Contact)
    object.__setattr__(smuggled, "node_id", 2**300)
    object.__setattr__(smuggled, "host", "h")
    object.__setattr__(smuggled, "port", 1)
    lookup = Lookup(0, [a], k=5, alpha=1)
    lookup.start()
    junk = [None, 1, "x", (1, "h", 1), {"node_id": 1}, smuggled, contact(4)]
    assert [x.peer.node_id for x in lookup.on_response(a, junk)] == [4]
    assert lookup.statistics().candidates == 2


def test_a_non_iterable_contact_list_counts_as_empty() -> None:
    a = contact(8)
    lookup = Lookup(0, [a], k=5, alpha=1)
    lookup.start()
    assert lookup.on_response(a, 42) == []  # type: ignore[arg-type]
    assert lookup.done and lookup.result.closest == (a,)


def test_the_searcher_never_queries_itself() -> None:
    me, a = contact(1), contact(2)
    lookup = Lookup(0, [me, a], k=5, alpha=3, exclude=me.node_id)
    assert [x.peer for x in lookup.start()] == [a]
    assert lookup.on_response(a, [me]) == []
    assert lookup.result.closest == (a,)


def test_only_k_contacts_are_read_from_one_response_and_candidates_stay_bounded() -> None:
    a = contact(1 << 255)
    lookup = Lookup(0, [a], k=20, alpha=1, max_candidates=50)
    lookup.start()
    flood = [contact(i) for i in range(1, 10_000)]
    lookup.on_response(a, flood)
    assert lookup.statistics().candidates <= 21
    rng = random.Random(1)
    while lookup.in_flight:
        peer = lookup.in_flight[0]
        lookup.on_response(peer, [contact(rng.getrandbits(ID_BITS)) for _ in range(20)])
        assert lookup.statistics().candidates <= 50


def test_lying_peers_that_point_ever_closer_cannot_make_it_run_forever() -> None:
    # Every peer answers with 20 fresh contacts closer than itself, none real.
    rng = random.Random(3)
    lookup = Lookup(0, [contact(1 << 250)], k=20, alpha=3, max_queries=60)
    pending = [a.peer for a in lookup.start()]
    while pending:
        peer = pending.pop(0)
        closer = [contact(rng.getrandbits(max(1, peer.node_id.bit_length() - 1)) | 1) for _ in range(20)]
        pending += [a.peer for a in lookup.on_response(peer, closer)]
    assert lookup.done
    assert lookup.result.messages <= 60


def test_a_timed_out_peer_frees_its_slot_and_its_late_answer_still_counts() -> None:
    a, b, c = contact(1), contact(2), contact(3)
    lookup = Lookup(0, [a, b], k=3, alpha=1)
    assert [x.peer for x in lookup.start()] == [a]
    assert [x.peer for x in lookup.on_timeout(a)] == [b]
    assert lookup.statistics().timeouts == 1
    assert [x.peer for x in lookup.on_response(a, [c])] == []  # c waits: b in flight, alpha=1
    assert [x.peer for x in lookup.on_response(b, [])] == [c]
    lookup.on_response(c, [])
    assert lookup.done
    assert lookup.result.closest == (a, b, c)
    assert lookup.result.failures == 0


def test_a_timed_out_peer_that_never_answers_is_left_out_of_the_result() -> None:
    a, b = contact(1), contact(2)
    lookup = Lookup(0, [a, b], k=2, alpha=1)
    lookup.start()
    lookup.on_timeout(a)
    lookup.on_response(b, [a])  # learning `a` again does not re-query it
    assert lookup.done
    assert lookup.result.closest == (b,)
    assert lookup.result.failures == 1


def test_a_block_lookup_ends_at_the_first_value() -> None:
    a, b, c = contact(1), contact(2), contact(3)
    lookup = Lookup(0, [a, b, c], k=3, alpha=3, find_value=True)
    lookup.start()
    assert lookup.on_response(b, [], value=b"holders") == []
    assert lookup.done
    result = lookup.result
    assert result.value == b"holders" and result.value_from == b
    assert result.hops == 1
    assert lookup.on_response(a, [], value=b"other") == []


def test_a_node_lookup_ignores_values() -> None:
    a = contact(1)
    lookup = Lookup(0, [a], k=3, alpha=1)
    lookup.start()
    lookup.on_response(a, [], value=b"x")
    assert lookup.done and lookup.result.value is None


def test_hops_count_the_longest_chain_of_answers_behind_the_result() -> None:
    # a (from our table) points to b, b points to c: c is three round trips deep.
    a, b, c = contact(1 << 100), contact(1 << 50), contact(1)
    lookup = Lookup(0, [a], k=1, alpha=1)
    assert [x.peer for x in lookup.start()] == [a]
    assert [x.peer for x in lookup.on_response(a, [b])] == [b]
    assert [x.peer for x in lookup.on_response(b, [c])] == [c]
    lookup.on_response(c, [])
    assert lookup.result.closest == (c,)
    assert lookup.result.hops == 3
    assert lookup.result.messages == 3


def test_parallel_queries_at_the_same_depth_do_not_add_hops() -> None:
    firsts = [contact(1 << i) for i in (100, 101, 102)]
    lookup = Lookup(0, firsts, k=3, alpha=3)
    lookup.start()
    for peer in firsts:
        lookup.on_response(peer, [])
    assert lookup.result.hops == 1 and lookup.result.messages == 3
