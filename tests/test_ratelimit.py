"""Token buckets (cas/ratelimit.py): bursts, then the rate; one bucket per
key in bounded memory; no key ever gets more than its burst plus its rate."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.ratelimit import KeyedBuckets, TokenBucket


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(100.5) and not bucket.take(100.5)
    assert sum(bucket.take(1100.0) for _ in range(10)) == 3  # full again, never more than the burst
    assert bucket.take(1100.0, cost=0.0)


def test_each_key_has_its_own_bucket_and_a_batch_costs_one_token_per_item() -> None:
    buckets: KeyedBuckets[int] = KeyedBuckets(rate=2.0, burst=3)
    assert [buckets.take(7, 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take(8, 0.0)  # another key
    assert not buckets.take(7, 0.2)
    assert buckets.take(7, 0.5)
    assert not buckets.take(9, 0.0, cost=4)  # more than the burst at once
    assert buckets.take(9, 0.0, cost=3)


def test_buckets_full_again_are_forgotten_and_their_number_is_bounded() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(rate=10, burst=5, max_keys=100)
    for i in range(300):
        buckets.take(f"10.0.{i // 256}.{i % 256}", now=0.0)
    assert len(buckets) == 100  # the least recently used went first
    assert buckets.take("10.0.0.0", now=0.0)  # forgotten, so full again
    assert buckets.take("10.9.9.9", now=0.5)  # 0.5 s: every bucket is full again
    assert len(buckets) == 1


def test_an_infinite_rate_limits_nothing_and_a_bad_one_is_refused() -> None:
    assert all(KeyedBuckets(rate=math.inf, burst=1).take("a", now=0.0) for _ in range(1000))
    assert all(TokenBucket(rate=math.inf, burst=1).take(0.0) for _ in range(1000))
    for rate, burst in ((0, 1), (-1, 1), (1, 0)):
        with pytest.raises(ValueError):
            KeyedBuckets(rate=rate, burst=burst)
        with pytest.raises(ValueError):
            TokenBucket(rate=rate, burst=burst)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 2)), max_size=200),
       st.floats(0.5, 50), st.integers(1, 10))
def test_no_key_ever_gets_more_than_its_burst_plus_its_rate(
        events: list[tuple[int, float]], rate: float, burst: int) -> None:
    buckets: KeyedBuckets[int] = KeyedBuckets(rate=rate, burst=burst)
    now = 0.0
    granted: dict[int, list[float]] = {}
    for key, step in events:
        now += step
        if buckets.take(key, now):
            granted.setdefault(key, []).append(now)
    for times in granted.values():
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= burst + rate * (times[j] - start) + 1e-6
