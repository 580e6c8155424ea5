"""The sans-IO replication planner (cas.dht.replication), no sockets: the
placement set is the R nearest willing nodes, a refusal or failure moves it
to the next closest, HAVE answers spare resends, this node fills its own
slot, a held copy is dropped only once R others are confirmed, the
per-peer STORE_BLOCK rate limit refills with time, and a lookup's answer is
reused only for keys it provably covers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cas.dht.replication import (
    Neighbourhood,
    NeighbourhoodCache,
    Placement,
    Slot,
    Store,
    have_batches,
    may_drop,
)
from cas.dht.routing import Contact

KEY = 0


def contact(node_id: int) -> Contact:
    return Contact(node_id, "127.0.0.1", 1000 + node_id)


# Distances to KEY = 0 are the IDs themselves: 1 is nearest.
PEERS = [contact(i) for i in (5, 1, 9, 3, 7, 11)]


def ids(actions: list[Store]) -> list[int]:
    return [a.peer.node_id for a in actions]


def test_placement_asks_the_r_nearest_and_completes_when_they_acknowledge() -> None:
    plan = Placement(KEY, PEERS, replicas=3)
    assert ids(plan.next_actions()) == [1, 3, 5]
    assert plan.next_actions() == []  # each peer asked once
    assert not plan.done
    for peer in (1, 3, 5):
        assert plan.on_stored(contact(peer)) == []
    assert plan.done and plan.complete and plan.copies == 3
    assert plan.holders() == [1, 3, 5]


def test_a_refusal_moves_the_copy_to_the_next_closest() -> None:
    plan = Placement(KEY, PEERS, replicas=3)
    plan.next_actions()
    assert ids(plan.on_refused(contact(3))) == [7]
    assert ids(plan.on_failed(contact(1))) == [9]
    for peer in (5, 7, 9):
        plan.on_stored(contact(peer))
    assert plan.window() == [5, 7, 9]
    assert plan.complete and plan.state(3) is Slot.REFUSED


def test_with_fewer_willing_nodes_than_r_the_plan_ends_short() -> None:
    plan = Placement(KEY, PEERS[:2], replicas=3)
    plan.next_actions()
    plan.on_stored(contact(5))
    plan.on_refused(contact(1))
    assert plan.done and not plan.complete and plan.copies == 1


def test_this_node_fills_its_own_slot_when_it_is_among_the_nearest() -> None:
    plan = Placement(KEY, PEERS, own_id=2, local=True, replicas=3)
    assert ids(plan.next_actions()) == [1, 3]
    plan.on_stored(contact(1))
    plan.on_stored(contact(3))
    assert plan.complete and plan.responsible() and plan.holders() == [1, 2, 3]


def test_known_holders_are_not_sent_the_block_again() -> None:
    plan = Placement(KEY, PEERS, own_id=20, local=True, replicas=3, known={1: True, 3: False, 5: True})
    assert ids(plan.next_actions()) == [3]
    plan.on_stored(contact(3))
    assert plan.complete and not plan.responsible()


def test_a_holder_leaves_the_copies_to_a_nearer_holder_and_the_nearest_makes_them() -> None:
    # 3 died; 1 and 5 hold the block, and so does this node (20, the adder, far away).
    survivors = [c for c in PEERS if c.node_id != 3]
    far = Placement(KEY, survivors, own_id=20, local=True, replicas=3, known={1: True, 5: True, 7: False})
    assert far.defers()  # 1 is nearer and holds it
    nearest = Placement(KEY, [c for c in survivors if c.node_id != 1], own_id=1, local=True, replicas=3,
                        known={5: True, 7: False})
    assert not nearest.defers() and ids(nearest.next_actions()) == [7]
    # Nobody nearer is known to hold it (the HAVE went unanswered): copy now.
    alone = Placement(KEY, survivors, own_id=20, local=True, replicas=3)
    assert not alone.defers()


def test_answers_from_peers_never_asked_or_twice_are_ignored() -> None:
    plan = Placement(KEY, PEERS, replicas=2)
    plan.next_actions()
    assert plan.on_stored(contact(11)) == []
    assert plan.state(11) is Slot.UNKNOWN
    plan.on_stored(contact(1))
    plan.on_failed(contact(1))  # a late duplicate cannot undo the ack
    assert plan.state(1) is Slot.HAS


def test_a_held_copy_is_dropped_only_when_r_others_hold_it_and_never_an_own_one() -> None:
    far = 40
    plan = Placement(KEY, PEERS, own_id=far, local=True, replicas=3, known={1: True, 3: True})
    assert not may_drop(plan, own=False)  # 5 not confirmed yet
    plan.next_actions()
    assert not may_drop(plan, own=False)  # in flight
    plan.on_stored(contact(5))
    assert may_drop(plan, own=False)
    assert not may_drop(plan, own=True)
    near = Placement(KEY, PEERS, own_id=2, local=True, replicas=3, known={1: True, 3: True})
    assert near.done and not may_drop(near, own=False)  # responsible: keeps it


def test_a_held_copy_stays_when_a_closer_node_refuses() -> None:
    plan = Placement(KEY, PEERS[:2], own_id=40, local=True, replicas=3, known={1: True})
    plan.next_actions()
    plan.on_refused(contact(5))
    # 1 and this node hold it; nobody else will: this node is in the set.
    assert plan.done and plan.responsible() and not may_drop(plan, own=False)


def test_have_batches_group_blocks_by_peer() -> None:
    batches = have_batches({"a": [contact(1), contact(3)], "b": [contact(3)]}, 1024)
    assert batches == {1: ["a"], 3: ["a", "b"]}


# -- reusing a lookup's answer for nearby keys --------------------------------------


def nearest(nodes: list[int], key: int, n: int) -> list[int]:
    return sorted(nodes, key=lambda node_id: node_id ^ key)[:n]


@settings(max_examples=300, deadline=None)
@given(nodes=st.sets(st.integers(0, 2**12 - 1), min_size=1, max_size=80),
       target=st.integers(0, 2**12 - 1), key=st.integers(0, 2**12 - 1),
       k=st.integers(1, 20), wanted=st.integers(1, 6))
def test_a_reused_answer_never_ranks_a_node_wrongly(nodes: set[int], target: int, key: int,
                                                     k: int, wanted: int) -> None:
    """Whatever the network, the nodes it returns for another key are
    exactly that key's nearest: no node outside the answer is closer."""
    everyone = sorted(nodes)
    answer = Neighbourhood(target, tuple(contact(n) for n in nearest(everyone, target, k)),
                           exhaustive=len(everyone) < k)
    ranked = answer.ranked_for(key, wanted)
    if ranked is not None:
        assert [c.node_id for c in ranked] == nearest(everyone, key, len(ranked))
        assert len(ranked) >= wanted or answer.exhaustive


def test_an_answer_covers_its_own_key_and_an_exhaustive_one_every_key() -> None:
    nodes = [contact(i) for i in range(0, 256, 8)]  # 32 nodes
    answer = Neighbourhood(16, tuple(sorted(nodes, key=lambda c: c.node_id ^ 16)[:20]), exhaustive=False)
    ranked = answer.ranked_for(16, 3)
    assert ranked is not None and [c.node_id for c in ranked[:3]] == [16, 24, 0]
    assert answer.ranked_for(200, 3) is None  # far away: a lookup is needed
    small = Neighbourhood(16, tuple(nodes[:4]), exhaustive=True)
    ranked = small.ranked_for(200, 3)
    assert ranked is not None and [c.node_id for c in ranked] == nearest([0, 8, 16, 24], 200, 4)


def test_the_cache_forgets_expired_answers_and_those_naming_a_failed_peer() -> None:
    cache = NeighbourhoodCache(ttl=30.0)
    cache.add(Neighbourhood(0, (contact(1), contact(2)), exhaustive=True), now=0.0)
    assert cache.ranked_for(99, 2, now=10.0) is not None
    assert cache.ranked_for(99, 2, now=31.0) is None  # expired
    cache.add(Neighbourhood(0, (contact(1), contact(2)), exhaustive=True), now=40.0)
    cache.forget(2)
    assert cache.ranked_for(99, 2, now=41.0) is None
