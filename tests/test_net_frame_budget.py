"""The frame budget's fair shares, without sockets or clocks: one address
holds at most its share, a waiting frame from the address holding least
goes first, and nothing granted is lost (cas/net/frame_budget.py states the
rules these tests check)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.net.frame_budget import (
    FRAME_MEMORY,
    LARGEST_FRAME,
    FrameBudget,
    FrameClaim,
    default_share,
)

F = LARGEST_FRAME  # one of the largest frames


def claims(budget: FrameBudget, host: str, count: int) -> list[FrameClaim]:
    return [budget.claim(host) for _ in range(count)]


def granted_log(claim: FrameClaim, log: list[FrameClaim]) -> FrameClaim:
    claim.on_grant = lambda: log.append(claim)
    return claim


def test_the_default_share_is_a_quarter_of_the_budget_and_at_least_one_frame() -> None:
    assert FrameBudget().per_address == FRAME_MEMORY // 4 == 4 * F
    assert default_share(F) == F and default_share(3 * F) == F


def test_one_address_holds_at_most_its_share_though_the_budget_has_room() -> None:
    budget = FrameBudget(16 * F)
    flood = claims(budget, "10.0.0.2", 6)
    assert [c.try_reserve(F) for c in flood] == [True] * 4 + [False] * 2
    assert budget.held("10.0.0.2") == 4 * F and budget.used == 4 * F
    honest = budget.claim("10.0.0.1")
    assert honest.try_reserve(F)  # the other three quarters are for others
    assert budget.waiting == 2 and budget.refusals == 2


def test_a_frame_held_back_by_its_own_share_does_not_hold_back_others() -> None:
    budget = FrameBudget(8 * F, per_address=4 * F)
    flood = claims(budget, "10.0.0.2", 5)
    for c in flood:
        c.try_reserve(F)
    others = [budget.claim(f"10.0.0.{i}") for i in range(3, 7)]
    assert all(c.try_reserve(F) for c in others)  # the flood's fifth waits, these do not
    assert budget.used == budget.limit and flood[4].waiting


def test_when_room_frees_the_address_holding_least_goes_first() -> None:
    budget = FrameBudget(8 * F, per_address=4 * F)
    log: list[FrameClaim] = []
    a = claims(budget, "10.0.0.2", 4)
    b = claims(budget, "10.0.0.3", 4)
    for c in a + b:
        assert c.try_reserve(F)
    # All full. Then, in this order: another of a (a holds 4), one of a
    # fresh address c (holds none), another of b.
    a_next = granted_log(budget.claim("10.0.0.2"), log)
    c_first = granted_log(budget.claim("10.0.0.4"), log)
    b_next = granted_log(budget.claim("10.0.0.3"), log)
    assert not a_next.try_reserve(F) and not c_first.try_reserve(F) and not b_next.try_reserve(F)
    a[0].release(F)  # a now holds 3: its next would fit its share, but c holds less
    assert log == [c_first] and c_first.granted == F
    assert c_first.try_reserve(F) and c_first.held == F
    b[0].release(F)  # a holds 3, b 3, c 1: a's waiter has waited longest of the two that hold most
    assert log == [c_first, a_next]
    a[1].release(F)
    assert log == [c_first, a_next, b_next]
    assert budget.waiting == 0


def test_a_newcomer_does_not_jump_the_queue() -> None:
    budget = FrameBudget(2 * F, per_address=2 * F)
    holders = claims(budget, "10.0.0.2", 2)
    for c in holders:
        c.try_reserve(F)
    waiting = budget.claim("10.0.0.3")
    assert not waiting.try_reserve(F)
    holders[0].release(F)  # granted to the waiter, not left for whoever asks next
    assert waiting.granted == F
    assert not budget.claim("10.0.0.4").try_reserve(F)


def test_the_frame_whose_turn_it_is_keeps_the_room_until_it_fits() -> None:
    budget = FrameBudget(2 * F, per_address=2 * F)
    holders = claims(budget, "10.0.0.2", 2)
    for c in holders:
        c.try_reserve(F)
    big = budget.claim("10.0.0.3")
    small = budget.claim("10.0.0.2")  # its address holds more: after big
    assert not big.try_reserve(F) and not small.try_reserve(64 * 1024)
    holders[0].release(F)
    assert big.granted == F and small.waiting
    big.try_reserve(F)
    # Now a waits with a small frame, c (fresh) with a large one: c's turn.
    late = budget.claim("10.0.0.4")
    assert not late.try_reserve(F)
    half = budget.claim("10.0.0.5")
    assert not half.try_reserve(F)
    holders[1].release(F)  # F frees: a holds none, small's turn (it waited longest of those holding 0)
    assert small.granted == 64 * 1024 and not late.granted and not half.granted
    small.try_reserve(64 * 1024)
    big.release(F)  # late (holds none, waited longer than half) gets it; the rest waits
    assert late.granted == F and half.waiting


def test_frames_of_one_address_are_granted_in_the_order_they_came() -> None:
    budget = FrameBudget(F, per_address=F)
    first = budget.claim("10.0.0.2")
    first.try_reserve(F)
    log: list[FrameClaim] = []
    queue = [granted_log(c, log) for c in claims(budget, "10.0.0.2", 3)]
    for c in queue:
        assert not c.try_reserve(F)
    first.release(F)
    for c in queue:
        assert log[-1] is c
        assert c.try_reserve(F)
        c.release(F)
    assert budget.used == 0


def test_asking_again_keeps_a_waiting_frames_place_and_a_grant_is_taken_once() -> None:
    budget = FrameBudget(F, per_address=F)
    holder = budget.claim("10.0.0.2")
    holder.try_reserve(F)
    waiter = budget.claim("10.0.0.3")
    assert not waiter.try_reserve(F) and not waiter.try_reserve(F)
    assert budget.waiting == 1 and budget.refusals == 1
    holder.release(F)
    assert waiter.try_reserve(F) and waiter.held == F and not waiter.granted


def test_a_claim_that_withdraws_gives_back_its_grant_and_its_place() -> None:
    budget = FrameBudget(F, per_address=F)
    holder = budget.claim("10.0.0.2")
    holder.try_reserve(F)
    log: list[FrameClaim] = []
    gone = granted_log(budget.claim("10.0.0.3"), log)
    next_one = granted_log(budget.claim("10.0.0.4"), log)
    assert not gone.try_reserve(F) and not next_one.try_reserve(F)
    holder.release(F)
    assert log == [gone]
    gone.withdraw()  # its connection closed before it took the grant
    gone.withdraw()
    assert log == [gone, next_one] and budget.held("10.0.0.3") == 0 and budget.used == F
    third = budget.claim("10.0.0.5")
    assert not third.try_reserve(F)
    third.withdraw()
    assert budget.waiting == 0


def test_addresses_are_grouped_as_admission_groups_them() -> None:
    budget = FrameBudget(16 * F)
    first = [budget.claim(f"2001:db8::{i}") for i in range(1, 5)]
    assert all(c.try_reserve(F) for c in first)
    assert not budget.claim("2001:db8::ffff").try_reserve(F)  # the same /64
    assert budget.claim("2001:db8:0:1::1").try_reserve(F)


def test_limits_that_cannot_hold_a_frame_are_refused() -> None:
    with pytest.raises(ValueError):
        FrameBudget(F - 1)
    with pytest.raises(ValueError):
        FrameBudget(4 * F, per_address=F - 1)
    with pytest.raises(ValueError):
        FrameBudget(4 * F, per_address=5 * F)


def test_a_claim_asks_for_one_frame_at_a_time() -> None:
    budget = FrameBudget(F, per_address=F)
    budget.claim("10.0.0.2").try_reserve(F)
    waiter = budget.claim("10.0.0.3")
    waiter.try_reserve(F)
    with pytest.raises(Exception, match="waits for"):
        waiter.try_reserve(F // 2)
    with pytest.raises(Exception, match="released"):
        waiter.release(F)


# -- any sequence of events ---------------------------------------------------------

SIZES = [64 * 1024, F // 2, F]
HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1"]

event = st.tuples(st.sampled_from(["reserve", "release", "withdraw"]),
                  st.integers(0, 11), st.sampled_from(SIZES))


@settings(max_examples=500, deadline=None)
@given(st.lists(event, max_size=120), st.integers(2, 8), st.integers(1, 4))
def test_any_sequence_keeps_the_rules(events: list[tuple[str, int, int]], frames: int, shares: int) -> None:
    budget = FrameBudget(frames * F, per_address=max(F, min(frames * F, frames * F // shares)))
    conns = [budget.claim(HOSTS[i % len(HOSTS)]) for i in range(12)]
    bodies: dict[int, list[int]] = {i: [] for i in range(12)}  # what each connection holds
    told: list[FrameClaim] = []
    for c in conns:
        c.on_grant = (lambda c=c: told.append(c))  # type: ignore[misc]
    for kind, i, size in events:
        c = conns[i]
        if kind == "reserve":
            size = c.wanted or c.granted or size  # one frame at a time
            if c.try_reserve(size):
                bodies[i].append(size)
        elif kind == "release" and bodies[i]:
            c.release(bodies[i].pop())
        elif kind == "withdraw":
            c.withdraw()
        # Rule 2: the counts are exact.
        held: dict[str, int] = {}
        for j, other in enumerate(conns):
            assert other.held == sum(bodies[j])
            if other.held + other.granted:
                held[other.address] = held.get(other.address, 0) + other.held + other.granted
        assert budget.held_by_address() == held
        assert budget.used == sum(held.values()) <= budget.limit  # rule 1
        assert all(v <= budget.per_address for v in held.values())  # rule 2 of the essay
        # Nobody waits who could go: the frame whose turn it is does not fit.
        waiting = [o for o in conns if o.waiting]
        assert budget.waiting == len(waiting)
        heads: dict[str, FrameClaim] = {}  # first come first served within an address: the oldest
        for o in sorted(waiting, key=lambda o: o.seq):
            heads.setdefault(o.address, o)
        eligible = [o for o in heads.values() if held.get(o.address, 0) + o.wanted <= budget.per_address]
        if eligible:
            turn = min(eligible, key=lambda o: (held.get(o.address, 0), o.seq))
            assert budget.used + turn.wanted > budget.limit
        # Every grant to a waiter was told, once.
        assert len(told) == budget.granted_after_waiting
