"""The routing table: buckets, replacement caches, eviction, refresh, saving."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas import dagcbor
from cas.dht.ids import ID_BITS, bucket_index, random_id_in_bucket
from cas.dht.routing import REFRESH_INTERVAL, STALE_AFTER, Contact, RoutingTable, is_valid_contact
from cas.errors import RepositoryError

OWN = 0
ids = st.integers(min_value=0, max_value=2**ID_BITS - 1)
HOUR = 3600.0


def contact(node_id: int, port: int = 4001) -> Contact:
    return Contact(node_id, "192.0.2.1", port)


def in_bucket(index: int, n: int, seed: int = 1) -> list[Contact]:
    """``n`` distinct contacts in bucket ``index`` of ``OWN``."""
    rng = random.Random(seed)
    seen: dict[int, Contact] = {}
    while len(seen) < n:
        node_id = random_id_in_bucket(OWN, index, rng)
        seen[node_id] = contact(node_id)
    return list(seen.values())


# -- contacts --------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [(-1, "h", 1), (2**256, "h", 1), (1, "", 1), (1, "h" * 254, 1), (1, "h", 0), (1, "h", 65536),
     (1, b"h", 1), (True, "h", 1)],
)
def test_a_contact_with_malformed_fields_cannot_be_built(fields: tuple) -> None:
    with pytest.raises(ValueError):
        Contact(*fields)


def test_a_contact_smuggled_past_its_constructor_is_not_valid() -> None:
    fake = object.__new__(Contact)
    object.__setattr__(fake, "node_id", -5)
    object.__setattr__(fake, "host", "h")
    object.__setattr__(fake, "port", 1)
    assert not is_valid_contact(fake)
    assert not is_valid_contact((1, "h", 1))
    assert is_valid_contact(contact(1))


# -- buckets ---------------------------------------------------------------


def test_contacts_land_in_the_bucket_of_their_distance() -> None:
    table = RoutingTable(OWN, k=4)
    for c in in_bucket(7, 3) + in_bucket(200, 2):
        assert table.update(c, 0.0) is None
    assert len(table) == 5
    assert table.nonempty_buckets() == [7, 200]
    assert all(bucket_index(OWN, c.node_id) == 7 for c in table.bucket(7))


def test_the_table_never_holds_its_own_node() -> None:
    table = RoutingTable(12345)
    assert table.update(contact(12345), 0.0) is None
    assert len(table) == 0 and 12345 not in table


def test_a_full_bucket_sends_the_newcomer_to_the_replacement_cache_and_asks_to_ping_the_oldest() -> None:
    table = RoutingTable(OWN, k=3)
    first, second, third, newcomer = in_bucket(100, 4)
    for t, c in enumerate([first, second, third]):
        table.update(c, float(t))
    assert table.update(newcomer, STALE_AFTER + 1.0) == first
    assert newcomer.node_id not in table
    assert table.replacements(100) == [newcomer]
    assert table.bucket(100) == [first, second, third]


def test_a_full_bucket_whose_oldest_contact_was_heard_from_lately_asks_for_no_ping() -> None:
    table = RoutingTable(OWN, k=3, stale_after=60.0)
    first, second, third, newcomer, later = in_bucket(100, 5)
    for t, c in enumerate([first, second, third]):
        table.update(c, float(t))
    assert table.update(newcomer, 59.0) is None  # first was heard from 59 s ago
    assert table.replacements(100) == [newcomer]
    assert table.bucket(100) == [first, second, third]
    assert table.update(later, 60.0) == first  # now it is stale: worth a ping


def test_hearing_from_a_known_contact_moves_it_to_the_tail_and_clears_its_failures() -> None:
    table = RoutingTable(OWN, k=3)
    a, b, c = in_bucket(50, 3)
    for t, x in enumerate([a, b, c]):
        table.update(x, float(t))
    table.record_failure(a.node_id)
    assert table.failures(a.node_id) == 1
    moved = Contact(a.node_id, "198.51.100.7", 9000)
    table.update(moved, 5.0)
    assert table.bucket(50) == [b, c, moved]
    assert table.failures(a.node_id) == 0
    assert table.last_seen(a.node_id) == 5.0


def test_a_contact_is_dropped_after_max_failures_in_a_row_and_the_newest_replacement_promoted() -> None:
    table = RoutingTable(OWN, k=2, max_failures=3)
    a, b, old_spare, new_spare = in_bucket(90, 4)
    table.update(a, 0.0)
    table.update(b, 1.0)
    table.update(old_spare, 2.0)
    table.update(new_spare, 3.0)
    assert not table.record_failure(a.node_id)
    assert not table.record_failure(a.node_id)
    assert table.record_failure(a.node_id)
    assert a.node_id not in table
    assert table.bucket(90) == [b, new_spare]
    assert table.replacements(90) == [old_spare]
    assert len(table) == 2


def test_a_success_between_failures_resets_the_count() -> None:
    table = RoutingTable(OWN, max_failures=2)
    (a,) = in_bucket(10, 1)
    table.update(a, 0.0)
    table.record_failure(a.node_id)
    table.update(a, 1.0)
    assert not table.record_failure(a.node_id)
    assert a.node_id in table


def test_a_failing_replacement_is_dropped_at_once() -> None:
    table = RoutingTable(OWN, k=1)
    a, spare = in_bucket(30, 2)
    table.update(a, 0.0)
    table.update(spare, 1.0)
    assert table.record_failure(spare.node_id)
    assert table.replacements(30) == []


def test_remove_forgets_at_once_and_promotes() -> None:
    table = RoutingTable(OWN, k=1)
    a, spare = in_bucket(30, 2)
    table.update(a, 0.0)
    table.update(spare, 1.0)
    assert table.remove(a.node_id)
    assert table.bucket(30) == [spare]
    assert not table.remove(a.node_id)


def test_the_replacement_cache_is_bounded_and_keeps_the_newest() -> None:
    table = RoutingTable(OWN, k=1, replacement_size=2)
    cs = in_bucket(60, 5)
    for t, c in enumerate(cs):
        table.update(c, float(t))
    assert table.replacements(60) == cs[3:]


ops = st.lists(
    st.tuples(st.sampled_from(["update", "fail", "remove"]), st.integers(0, 60)), max_size=200
)


@settings(max_examples=60, deadline=None)
@given(own=ids, pool_seed=st.integers(), script=ops)
def test_buckets_never_exceed_k_never_hold_self_and_stay_in_their_range(own: int, pool_seed: int, script: list) -> None:
    rng = random.Random(pool_seed)
    # A pool crowded into few buckets, so buckets fill and evictions happen.
    pool = [contact(random_id_in_bucket(own, rng.choice([255, 254, 3]), rng)) for _ in range(60)]
    pool.append(contact(own))
    k = 4
    table = RoutingTable(own, k=k, max_failures=2, replacement_size=3)
    for t, (op, i) in enumerate(script):
        c = pool[i]
        if op == "update":
            table.update(c, float(t))
        elif op == "fail":
            table.record_failure(c.node_id)
        else:
            table.remove(c.node_id)
        assert own not in table
        everything = list(table.contacts())
        assert len(everything) == len(table) == len({c.node_id for c in everything})
        for index in table.nonempty_buckets():
            assert 0 < len(table.bucket(index)) <= k
            assert len(table.replacements(index)) <= 3
            assert all(bucket_index(own, c.node_id) == index for c in table.bucket(index))
            in_table = {c.node_id for c in table.bucket(index)}
            assert not in_table & {c.node_id for c in table.replacements(index)}


@settings(max_examples=100, deadline=None)
@given(own=ids, key=ids, seed=st.integers(), n=st.integers(0, 50), exclude_first=st.booleans())
def test_closest_is_exactly_the_n_nearest_contacts_sorted_by_xor_distance(
    own: int, key: int, seed: int, n: int, exclude_first: bool
) -> None:
    rng = random.Random(seed)
    table = RoutingTable(own, k=5)
    for _ in range(rng.randrange(0, 120)):
        # Mix far and near buckets, and sometimes the key's own neighbourhood.
        index = rng.choice([255, 254, 253, 200, 100, 5, 0, rng.randrange(ID_BITS)])
        table.update(contact(random_id_in_bucket(own, index, rng)), 0.0)
    for _ in range(rng.randrange(0, 5)):
        near = key ^ rng.getrandbits(rng.randrange(1, 40))
        if near != own:
            table.update(contact(near), 0.0)
    everything = sorted(table.contacts(), key=lambda c: c.node_id ^ key)
    exclude = everything[0].node_id if exclude_first and everything else None
    expected = [c for c in everything if c.node_id != exclude][:n]
    assert table.closest(key, n, exclude=exclude) == expected


def test_closest_defaults_to_k_and_works_for_our_own_id() -> None:
    table = RoutingTable(OWN, k=3)
    for c in in_bucket(1, 2) + in_bucket(40, 5):
        table.update(c, 0.0)
    got = table.closest(OWN)
    assert len(got) == 3
    assert got == sorted(table.contacts(), key=lambda c: c.node_id)[:3]


# -- refresh (a fake clock: hours pass in no time) --------------------------


def test_buckets_fall_due_for_refresh_an_hour_after_their_last_lookup() -> None:
    start = 1_000_000.0  # any clock: the table only compares the numbers it is given
    table = RoutingTable(OWN, now=start)
    for c in in_bucket(250, 2) + in_bucket(253, 2):
        table.update(c, start)
    assert table.refresh_due(start + HOUR - 0.001) == []
    due = table.refresh_due(start + HOUR)
    assert due == list(range(250, ID_BITS))
    table.mark_lookup(random_id_in_bucket(OWN, 253, random.Random(1)), start + HOUR)
    assert 253 not in table.refresh_due(start + HOUR + 1)
    assert 253 in table.refresh_due(start + 2 * HOUR)
    assert table.refresh_due(start + 2 * HOUR, interval=2 * HOUR) == [b for b in due if b != 253]


def test_a_day_of_hourly_refreshes_keeps_every_bucket_fresh() -> None:
    rng = random.Random(7)
    table = RoutingTable(OWN, now=0.0)
    for c in in_bucket(252, 3) + in_bucket(255, 3):
        table.update(c, 0.0)
    refreshed = 0
    now = 0.0
    while now < 24 * HOUR:
        now += 60.0  # a timer that fires every simulated minute
        for index in table.refresh_due(now):
            table.mark_lookup(random_id_in_bucket(OWN, index, rng), now)
            refreshed += 1
        assert table.refresh_due(now) == []
    assert refreshed == 4 * 24  # buckets 252..255, once an hour
    assert REFRESH_INTERVAL == HOUR


def test_an_empty_table_has_nothing_to_refresh() -> None:
    assert RoutingTable(OWN).refresh_due(10 * HOUR) == []


# -- saving ----------------------------------------------------------------


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in (bytes, str, int)


def test_a_saved_table_reloads_with_the_same_contacts_order_failures_and_ages() -> None:
    table = RoutingTable(OWN, k=3)
    cs = in_bucket(200, 5) + in_bucket(8, 2)
    for t, c in enumerate(cs):
        table.update(c, 100.0 + t)
    table.record_failure(cs[1].node_id)
    record = table.to_record(now=110.0)
    assert _plain(record)
    # Through canonical DAG-CBOR and back, under a clock that restarted at 0.
    loaded = RoutingTable.from_record(dagcbor.decode(dagcbor.encode(record)), now=5.0)
    assert loaded.own_id == OWN and loaded.k == 3
    for index in (8, 200):
        assert loaded.bucket(index) == table.bucket(index)
        assert loaded.replacements(index) == table.replacements(index)
    assert loaded.failures(cs[1].node_id) == 1
    assert loaded.last_seen(cs[2].node_id) == pytest.approx(5.0 - (110.0 - 102.0))


def test_reloading_with_a_smaller_k_spills_into_the_replacement_cache() -> None:
    table = RoutingTable(OWN, k=5)
    cs = in_bucket(90, 5)
    for t, c in enumerate(cs):
        table.update(c, float(t))
    loaded = RoutingTable.from_record(table.to_record(5.0), 5.0, k=3)
    assert loaded.bucket(90) == cs[:3]
    assert loaded.replacements(90) == cs[3:]


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: "not a dict",
        lambda r: {**r, "version": 99},
        lambda r: {**r, "node_id": b"short"},
        lambda r: {**r, "contacts": "nope"},
        lambda r: {**r, "contacts": [{**r["contacts"][0], "port": 0}]},
        lambda r: {**r, "contacts": [{**r["contacts"][0], "age_ms": -1}]},
        lambda r: {**r, "contacts": [{**r["contacts"][0], "id": r["node_id"]}]},
        lambda r: {**r, "contacts": r["contacts"] * 2},
        lambda r: {k: v for k, v in r.items() if k != "k"},
    ],
)
def test_a_malformed_saved_table_is_refused_with_a_repository_error(damage) -> None:
    table = RoutingTable(OWN)
    table.update(in_bucket(255, 1)[0], 0.0)
    with pytest.raises(RepositoryError, match="routing table is malformed"):
        RoutingTable.from_record(damage(table.to_record(0.0)), 0.0)


def test_a_contact_dropped_for_silence_is_offered_again_until_it_answers_or_its_tries_run_out() -> None:
    from cas.dht.routing import DEPARTED_TRIES, MAX_FAILURES

    table = RoutingTable(0, k=4)
    gone, other = contact(1 << 200), contact(1 << 201)
    table.update(gone, 0.0)
    table.update(other, 0.0)
    assert table.revisit(4) == []  # nothing dropped yet
    for _ in range(MAX_FAILURES):
        table.record_failure(gone.node_id)
    assert gone.node_id not in table
    assert table.revisit(4) == [gone]
    table.update(gone, 5.0)  # it answered: back in the table, no longer departed
    assert gone.node_id in table and table.revisit(4) == []
    for _ in range(MAX_FAILURES):
        table.record_failure(gone.node_id)
    offered = sum(len(table.revisit(4)) for _ in range(DEPARTED_TRIES + 5))
    assert offered == DEPARTED_TRIES
