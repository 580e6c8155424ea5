"""The holder index with no sockets and no clock: live copy counts when a
holder is found dead, a newer placement replacing an older one, own blocks
per peer with their sizes, the check against the store after a round, and
node IDs interned and forgotten with their last block."""

from __future__ import annotations

from cas.blocks import Block
from cas.cid import CID, RAW
from cas.dht.holders import HolderIndex
from cas.dht.ids import NodeID
from cas.dht.replication import Placement
from cas.dht.routing import Contact

R = 3
OWN = 1 << 200
A, B, C, D = (OWN + 1, OWN + 2, OWN + 3, OWN + 4)


def cid(n: int) -> CID:
    return Block.of(RAW, b"block %d" % n).cid


def fresh(node_id: int) -> int:
    """An equal int that is another object (as IDs decoded from messages are)."""
    return int(str(node_id))


def test_a_block_is_short_exactly_while_fewer_than_r_holders_are_known() -> None:
    index = HolderIndex(OWN, R)
    index.record(cid(1), [OWN, A, B], size=10)
    index.record(cid(2), [OWN, A], size=10)
    assert (index.copies(cid(1)), index.copies(cid(2)), index.copies(cid(3))) == (3, 2, None)
    assert index.short() == 1 and index.short_cids() == [cid(2)]
    index.record(cid(2), [OWN, A, C])  # a retry placed the third copy
    assert index.short() == 0 and index.copies(cid(2)) == 3


def test_a_holder_found_dead_takes_a_copy_from_every_block_it_held_at_once() -> None:
    index = HolderIndex(OWN, R)
    index.record(cid(1), [OWN, A, B], size=10)
    index.record(cid(2), [A, B, C], size=20)  # this node is not among the R closest
    index.record(cid(3), [OWN, C, D], size=30)
    assert index.short() == 0
    assert sorted(index.lose(fresh(A))) == sorted([cid(1), cid(2)])
    assert (index.copies(cid(1)), index.copies(cid(2)), index.copies(cid(3))) == (2, 2, 3)
    assert sorted(index.short_cids()) == sorted([cid(1), cid(2)])
    assert index.holders(cid(2)) == [B, C]
    assert index.with_peer(A) == (0, 0)
    assert index.lose(A) == [] and index.lose(OWN) == []  # nothing more to lose; this node is never lost
    index.lose(B)
    assert index.copies(cid(1)) == 1 and index.copies(cid(2)) == 1


def test_a_newer_placement_or_round_replaces_the_holders_it_did_not_confirm() -> None:
    index = HolderIndex(OWN, R)
    index.record(cid(1), [OWN, A, B], size=10)
    index.record(cid(1), [OWN, B, C])  # a round: A left the placement set, C took its place
    assert index.holders(cid(1)) == [OWN, B, C]
    assert index.with_peer(A) == (0, 0) and index.with_peer(C) == (1, 10)  # the size is kept
    assert index.lose(A) == []  # A no longer counts for the block
    assert index.copies(cid(1)) == 3


def test_a_peers_share_counts_own_blocks_with_their_bytes_never_this_nodes_copy() -> None:
    index = HolderIndex(OWN, R)
    index.record(cid(1), [OWN, A, B], size=100)
    index.record(cid(2), [A, B, C], size=200)
    index.record(cid(3), [A, B, C], size=400, own=False)  # held for another node: not ours
    index.record(cid(4), [B, A, fresh(B)], size=800)  # a holder listed twice counts once
    assert index.with_peer(A) == (3, 1100)
    assert index.with_peer(B) == (3, 1100)
    assert index.with_peer(C) == (1, 200)
    assert index.with_peer(OWN) == (0, 0)
    index.record(cid(2), [A, B, C])  # `own` and `size` unchanged unless told
    index.record(cid(3), [A, B, C])
    assert index.with_peer(C) == (1, 200)
    index.lose(B)
    assert index.with_peer(A) == (3, 1100) and index.with_peer(B) == (0, 0)


def test_holders_come_from_the_plan_of_the_placement() -> None:
    key = int.from_bytes(cid(1).digest, "big")
    contacts = [Contact(NodeID(n), "127.0.0.1", 1) for n in (A, B, C, D)]
    plan = Placement(key, contacts, own_id=OWN, local=True, replicas=R)
    for action in plan.next_actions():
        plan.on_stored(action.peer)
    index = HolderIndex(OWN, R)
    index.record(cid(1), plan.holders(), size=5)
    assert index.copies(cid(1)) == plan.copies == R
    assert set(index.holders(cid(1))) == set(plan.holders())


def test_the_check_after_a_round_forgets_blocks_gone_and_learns_sizes() -> None:
    index = HolderIndex(OWN, R)
    index.record(cid(1), [OWN, A, B], size=10)
    index.record(cid(2), [OWN, A, B])  # a round that needed no store: size unknown
    index.record(cid(3), [OWN, A])  # dropped or collected since
    assert index.with_peer(A) == (3, 10)
    seen = index.snapshot(index.cids())
    assert index.reconcile(seen, {cid(1): 10, cid(2): 20}) == 1
    assert index.copies(cid(3)) is None and index.short() == 0
    assert index.with_peer(A) == (2, 30)


def test_the_check_leaves_alone_an_entry_recorded_again_since_its_snapshot() -> None:
    index = HolderIndex(OWN, R)
    index.record(cid(1), [OWN, A, B])
    seen = index.snapshot([cid(1), cid(9)])
    assert [c for c, _ in seen] == [cid(1)]  # never recorded: not in the snapshot
    index.record(cid(1), [OWN, A, C], size=7)  # placed again while the store was asked
    assert index.reconcile(seen, {}) == 0
    assert index.holders(cid(1)) == [OWN, A, C]


def test_node_ids_are_interned_and_forgotten_with_their_last_block() -> None:
    index = HolderIndex(OWN, R)
    for n in range(50):
        index.record(cid(n), [OWN, fresh(A), fresh(B)], size=1)
    first = index.holders(cid(0))[1]
    assert all(index.holders(cid(n))[1] is first for n in range(50))  # one object, however many blocks
    assert index.peers() == 2
    for n in range(50):
        index.record(cid(n), [OWN, fresh(A), fresh(C)])
    assert index.peers() == 2  # B went with its last block
    index.forget(cid(n) for n in range(50))
    assert index.peers() == 0 and len(index) == 0


def test_own_and_held_blocks_are_told_apart() -> None:
    index = HolderIndex(OWN, R)
    index.record(cid(1), [OWN, A, B], size=10)  # first placed when its user put it: own
    index.record(cid(2), [A, B, C], size=10, own=False)  # held for another node
    assert index.is_own(cid(1)) and not index.is_own(cid(2)) and not index.is_own(cid(3))
    index.lose(A)  # still told apart once short (the retry places only own blocks afresh)
    assert sorted(index.short_cids()) == sorted([cid(1), cid(2)])
    assert index.is_own(cid(1)) and not index.is_own(cid(2))
