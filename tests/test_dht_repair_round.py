"""The repair round as a sans-IO planner (cas.dht.repair_round), no sockets
and no clock: events in, actions out, time passed in. A block with R
holders costs nothing; a missing copy is made on the member lacking it; a
holder that knows of a nearer one waits and fills only what is still
missing; a run-out lease is dropped, not repaired; an unanswered HAVE
counts as not holding; own blocks' HAVEs carry the renewal."""

from __future__ import annotations

from collections.abc import Sequence

from cas.cid import CID, RAW
from cas.dht.repair_round import (
    HAVE_BATCH,
    LOOKUP_CONCURRENCY,
    REPAIR_DEFER,
    Action,
    AskHave,
    Copy,
    Drop,
    LookUp,
    Record,
    RepairRound,
    Wait,
)
from cas.dht.routing import Contact

LEASE = 30 * 86400.0
"""The network's lease (the renewal own blocks' HAVEs carry)."""


def block(key: int) -> CID:
    """A block whose key (its digest) is ``key``."""
    return CID(RAW, key.to_bytes(32, "big"))


def contact(node_id: int) -> Contact:
    return Contact(node_id, "127.0.0.1", 1000 + node_id)


# For block(0), distances are the IDs themselves: 1 is nearest; blocks
# whose keys have only high bits set rank these small IDs the same way.
A = block(0)
B, C = block(1 << 100), block(2 << 100)
NEAR = [contact(i) for i in (1, 3, 5, 7, 9, 11)]


def of(kind: type, actions: Sequence[Action]) -> list:
    return [a for a in actions if isinstance(a, kind)]


def asked(actions: Sequence[Action]) -> dict[int, tuple[tuple[CID, ...], int]]:
    """Peer → (blocks, lease) of each HAVE asked."""
    return {a.peer.node_id: (a.cids, a.lease) for a in of(AskHave, actions)}


def answer_haves(repair: RepairRound, actions: Sequence[Action], holds: dict[int, set[CID]], now: float = 0.0,
                 silent: frozenset[int] = frozenset()) -> list[Action]:
    """Answer every HAVE in ``actions`` from ``holds`` (peer → blocks it has);
    peers in ``silent`` do not answer. Returns the actions that follow."""
    out: list[Action] = []
    for ask in of(AskHave, actions):
        if ask.peer.node_id in silent:
            present = None
        else:
            present = [cid in holds.get(ask.peer.node_id, set()) for cid in ask.cids]
        out += repair.on_have(ask.peer, ask.cids, present, now=now)
    return out


def started(own_id: int, blocks: dict[CID, float | None], found: Sequence[Contact] = NEAR,
            now: float = 0.0) -> tuple[RepairRound, list[Action]]:
    """A round over ``blocks`` (CID → seconds of lease left, None: own), its
    lookups answered with ``found`` (this node left out, as a lookup does);
    returns it and its HAVEs."""
    leases = {cid: left for cid, left in blocks.items() if left is not None}
    repair = RepairRound(list(blocks), leases, own_id=own_id, lease=LEASE, replicas=3)
    actions = repair.start(now)
    out: list[Action] = []
    while actions:
        lookup = actions.pop(0)
        if isinstance(lookup, LookUp):
            others = [c for c in found if c.node_id != own_id]
            actions += repair.on_lookup(lookup.cid, others, exhaustive=False, now=now)
        else:
            out.append(lookup)
    return repair, out


def test_a_block_whose_r_nearest_hold_it_costs_only_the_have() -> None:
    repair, haves = started(1, {A: None})  # this node is the nearest; 3 and 5 complete the set
    # The R nearest other nodes are asked (7 too: the set moves past a refusal).
    assert asked(haves) == {3: ((A,), int(LEASE)), 5: ((A,), int(LEASE)), 7: ((A,), int(LEASE))}
    actions = answer_haves(repair, haves, {3: {A}, 5: {A}})
    assert actions == [Record(A, (1, 3, 5), own=True, lease_end=None)]
    assert repair.done
    assert (repair.report.blocks, repair.report.stores, repair.report.short, repair.report.dropped) == (1, 0, 0, 0)


def test_a_block_short_of_a_copy_is_copied_to_the_member_lacking_it() -> None:
    repair, haves = started(1, {A: None})
    actions = answer_haves(repair, haves, {3: {A}})  # 5 lost its copy (or is a newcomer)
    assert actions == [Copy(A, (contact(5),), lease=None)]  # own: the receiver's whole lease
    assert not repair.done
    actions = repair.on_copied(A, [(contact(5), "stored")], now=1.0)
    assert actions == [Record(A, (1, 3, 5), own=True, lease_end=None)]
    assert repair.done and (repair.report.stores, repair.report.short) == (1, 0)


def test_a_refused_copy_moves_to_the_next_closest_and_a_short_held_block_keeps_its_lease_end() -> None:
    repair, haves = started(1, {A: 1000.9}, now=50.0)  # held, 1000.9 s of lease left
    assert asked(haves) == {3: ((A,), 0), 5: ((A,), 0), 7: ((A,), 0)}  # held: no renewal
    actions = answer_haves(repair, haves, {3: {A}}, now=60.0)
    assert actions == [Copy(A, (contact(5),), lease=1000)]  # what is left, in whole seconds
    actions = repair.on_copied(A, [(contact(5), "refused")], now=61.0)
    assert actions == [Copy(A, (contact(7),), lease=1000)]
    actions = repair.on_copied(A, [(contact(7), "failed")], now=62.0)
    assert actions == [Copy(A, (contact(9),), lease=1000)]
    actions = repair.on_copied(A, [(contact(9), "failed")], now=63.0)
    assert actions == [Copy(A, (contact(11),), lease=1000)]
    actions = repair.on_copied(A, [(contact(11), "refused")], now=64.0)
    # Candidates run out: two copies; retried until the lease, counted from the plans.
    assert actions == [Record(A, (1, 3), own=False, lease_end=60.0 + 1000.9)]
    assert repair.done and (repair.report.stores, repair.report.short) == (4, 1)


def test_a_holder_that_knows_a_nearer_holder_leaves_the_copy_to_it_and_fills_only_what_is_missing() -> None:
    repair, haves = started(5, {A: None})  # 1 and 3 are nearer than this node
    assert set(asked(haves)) == {1, 3, 7}
    actions = answer_haves(repair, haves, {1: {A}}, now=10.0)  # 3 lost it; 1, nearer, holds it
    assert actions == [Wait(10.0 + REPAIR_DEFER)]  # no copy yet: 1 makes it
    assert repair.on_time(10.0 + REPAIR_DEFER - 0.1) == []  # too early
    again = repair.on_time(10.0 + REPAIR_DEFER)
    assert set(asked(again)) == {1, 3, 7}
    actions = answer_haves(repair, again, {1: {A}, 3: {A}}, now=16.0)  # 1 made it
    assert actions == [Record(A, (1, 3, 5), own=True, lease_end=None)]
    assert repair.done and repair.report.stores == 0


def test_a_deferring_holder_makes_the_copy_the_nearer_one_did_not() -> None:
    repair, haves = started(5, {A: None})
    [wait] = answer_haves(repair, haves, {1: {A}})
    again = repair.on_time(wait.until)
    actions = answer_haves(repair, again, {1: {A}}, now=wait.until)  # 1 never noticed
    assert actions == [Copy(A, (contact(3),), lease=None)]
    assert repair.on_copied(A, [(contact(3), "stored")], now=wait.until + 1) == [
        Record(A, (1, 3, 5), own=True, lease_end=None)]
    assert repair.done and repair.report.stores == 1


def test_an_expired_lease_is_dropped_not_repaired() -> None:
    gone, kept = B, C
    repair, haves = started(1, {gone: 0.9, kept: 500.0})  # under a second left counts as run out
    assert all(gone not in cids for cids, _ in asked(haves).values())
    actions = answer_haves(repair, haves, {3: {kept}, 5: {kept}})
    assert actions == [Record(kept, (1, 3, 5), own=False, lease_end=None), Drop((gone,), expired=(gone,))]
    assert not repair.done
    assert repair.on_dropped(1, now=1.0) == []
    assert repair.done
    assert (repair.report.blocks, repair.report.expired, repair.report.dropped) == (1, 1, 1)


def test_a_held_copy_outside_the_placement_set_is_dropped_once_r_others_confirm_it() -> None:
    repair, haves = started(9, {A: 500.0})  # 1, 3 and 5 are the set; this node is not in it
    actions = answer_haves(repair, haves, {1: {A}, 3: {A}, 5: {A}})
    assert actions == [Record(A, (1, 3, 5), own=False, lease_end=None), Drop((A,), expired=())]
    # An own block in the same place is never dropped.
    repair, haves = started(9, {A: None})
    assert of(Drop, answer_haves(repair, haves, {1: {A}, 3: {A}, 5: {A}})) == []
    assert repair.done


def test_an_unanswered_have_counts_as_not_holding() -> None:
    repair, haves = started(1, {A: None})
    actions = answer_haves(repair, haves, {3: {A}, 5: {A}}, silent=frozenset({5}))
    assert actions == [Copy(A, (contact(5),), lease=None)]  # a holder just acknowledges
    # An answer of the wrong length says nothing either.
    repair, haves = started(1, {A: None})
    ask3, ask5, ask7 = sorted(of(AskHave, haves), key=lambda a: a.peer.node_id)
    assert repair.on_have(ask3.peer, ask3.cids, [True], now=0.0) == []
    assert repair.on_have(ask7.peer, ask7.cids, [True], now=0.0) == []
    assert repair.on_have(ask5.peer, ask5.cids, [True, True], now=0.0) == [Copy(A, (contact(5),), lease=None)]


def test_own_blocks_haves_carry_the_renewal_and_held_blocks_haves_none() -> None:
    own, held = B, C
    repair, haves = started(1, {own: None, held: 900.0})
    by_lease = {(a.peer.node_id, a.lease): a.cids for a in of(AskHave, haves)}
    assert by_lease == {**{(peer, int(LEASE)): (own,) for peer in (3, 5, 7)},
                        **{(peer, 0): (held,) for peer in (3, 5, 7)}}


def test_haves_go_in_batches_per_peer_and_lookups_a_few_at_a_time() -> None:
    # Keys 1 << 16 apart, so that no lookup's answer provably covers another's key.
    cids = [block(i << 16) for i in range(HAVE_BATCH + 8)]
    repair = RepairRound(cids, {}, own_id=1, lease=LEASE, replicas=3)
    lookups = repair.start(0.0)
    assert [a.cid for a in lookups] == cids[:LOOKUP_CONCURRENCY]
    answer = [contact(3), contact(5)]  # a network of three
    haves: list[Action] = []
    while lookups:
        lookup = lookups.pop(0)
        assert isinstance(lookup, LookUp)
        more = repair.on_lookup(lookup.cid, answer, exhaustive=False, now=0.0)
        lookups += of(LookUp, more)
        haves += of(AskHave, more)
    # Every block's window is {3, 5}: two HAVEs each, of 32 blocks and of 8.
    sizes = sorted((a.peer.node_id, len(a.cids)) for a in of(AskHave, haves))
    assert sizes == [(3, 8), (3, HAVE_BATCH), (5, 8), (5, HAVE_BATCH)]


def test_a_lookup_whose_answer_covers_the_other_keys_is_not_repeated() -> None:
    cids = [block(i << 100) for i in range(10)]  # nodes 1..11 rank alike for every one of them
    repair = RepairRound(cids, {}, own_id=1, lease=LEASE, replicas=3)
    first = repair.start(0.0)
    assert len(first) == LOOKUP_CONCURRENCY
    # A network of fewer than k+1 nodes: the first answer names every node.
    after = repair.on_lookup(first[0].cid, NEAR[1:], exhaustive=True, now=0.0)
    assert of(LookUp, after) == []  # the six still queued are covered
    for lookup in first[1:]:
        after = repair.on_lookup(lookup.cid, NEAR[1:], exhaustive=True, now=0.0)
    haves = of(AskHave, after)
    assert {a.peer.node_id for a in haves} == {3, 5, 7}  # the R nearest other nodes
    assert all(len(a.cids) == 10 for a in haves)


def test_a_failed_lookup_leaves_its_block_out_and_late_reports_are_ignored() -> None:
    b = B
    repair = RepairRound([A, b], {}, own_id=1, lease=LEASE, replicas=3)
    look_a, look_b = repair.start(0.0)
    assert repair.on_lookup_failed(look_b.cid, now=0.0) == []
    haves = repair.on_lookup(look_a.cid, NEAR[1:], exhaustive=False, now=0.0)
    assert repair.on_lookup(look_a.cid, NEAR[1:], exhaustive=False, now=0.0) == []  # a duplicate
    assert all(b not in a.cids for a in of(AskHave, haves))
    actions = answer_haves(repair, haves, {3: {A}, 5: {A}})
    assert of(Record, actions) == [Record(A, (1, 3, 5), own=True, lease_end=None)]
    assert repair.on_have(contact(3), (A,), [True], now=1.0) == []  # answered already
    assert repair.on_copied(A, [(contact(5), "stored")], now=1.0) == []  # never asked
    assert repair.done and repair.report.blocks == 2


def test_a_block_gone_before_its_copies_is_left_out() -> None:
    repair, haves = started(1, {A: None})
    [copy] = answer_haves(repair, haves, {3: {A}})
    assert isinstance(copy, Copy)
    assert repair.on_unreadable(A, now=1.0) == []
    assert repair.done and (repair.report.stores, repair.report.short) == (0, 0)


def test_a_round_with_nothing_to_repair_is_done_at_once() -> None:
    repair = RepairRound([], {}, own_id=1, lease=LEASE)
    assert repair.start(0.0) == [] and repair.done
