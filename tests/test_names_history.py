"""The history policy and its planner (cas.names.history): which versions
stay, given their times and the time now, passed in."""

from __future__ import annotations

import pytest

from cas.errors import InvalidInputError
from cas.names.history import DEFAULT_POLICY, SECOND, parse_policy, plan

MIN, HOUR, DAY = 60 * SECOND, 3600 * SECOND, 86400 * SECOND
NOW = 1_000 * DAY + 12 * HOUR  # noon UTC, day 1000


def kept(times: list[int], policy=DEFAULT_POLICY, now: int = NOW, protected=frozenset()) -> list[int]:
    """The seqs kept of versions 1..n made at ``times`` (oldest first)."""
    versions = [(seq, t) for seq, t in enumerate(times, 1)][::-1]
    return sorted(seq for seq, keep in plan(versions, policy, now, protected) if keep)


def test_every_version_of_the_last_hour_is_kept():
    times = [NOW - 59 * MIN + i * SECOND for i in range(3000)]
    assert kept(times) == list(range(1, 3001))


def test_one_version_per_hour_for_a_day_the_newest_of_each_hour():
    # One version a minute from 10 hours ago until 70 minutes ago.
    times = [NOW - 10 * HOUR + i * MIN for i in range(0, 9 * 60 - 10)]
    seqs = kept(times)
    # Hours 02:00..10:00 UTC each keep their last minute (xx:59), and hour
    # 10 its newest (10:49): 9 versions.
    assert len(seqs) == 9
    assert [times[s - 1] % HOUR for s in seqs[:-1]] == [59 * MIN] * 8
    assert seqs[-1] == len(times)  # the newest is always kept


def test_daily_then_every_30_days_then_forever():
    # One version every 6 hours for 400 days.
    times = [NOW - 400 * DAY + i * 6 * HOUR for i in range(400 * 4)]
    seqs = kept(times)
    ages = [NOW - times[s - 1] for s in seqs]
    hourly = [a for a in ages if a < DAY]
    daily = [a for a in ages if DAY <= a < 30 * DAY]
    monthly = [a for a in ages if a >= 30 * DAY]
    assert len(hourly) == 3  # 6, 12 and 18 hours old: each in its own hour
    assert len(daily) in (29, 30) and len(daily) == len({(NOW - a) // DAY for a in daily})  # one per UTC day
    assert len(monthly) == len({(NOW - a) // (30 * DAY) for a in monthly})  # one per 30 days
    assert 12 <= len(monthly) <= 14
    assert len(seqs) < 50


def test_the_newest_and_protected_versions_are_always_kept():
    times = [NOW - 100 * DAY + i * SECOND for i in range(10)]  # all in one 30-day bucket
    assert kept(times) == [10]
    assert kept(times, protected=frozenset({3})) == [3, 10]
    assert kept(times, policy=parse_policy("1d:all")) == [10]  # past the last tier: only the newest


def test_a_version_from_the_future_is_kept():
    times = [NOW - 5 * DAY, NOW - 5 * DAY + SECOND, NOW + HOUR, NOW + 2 * HOUR]
    assert kept(times) == [2, 3, 4]


def test_thinning_again_later_keeps_what_it_kept():
    times = [NOW - 3 * DAY + i * 7 * MIN for i in range(3 * 24 * 60 // 7)]
    first = kept(times)
    later = NOW + 2 * DAY
    again = kept([times[s - 1] for s in first], now=later)
    assert sorted(first[i - 1] for i in again) == kept(times, now=later)


def test_a_policy_reads_back_as_written_and_bad_ones_are_refused():
    assert str(DEFAULT_POLICY) == "1h:all 1d:1h 30d:1d forever:30d"
    assert str(parse_policy(["2h:all", "1w:1d"])) == "2h:all 7d:1d"
    for bad, says in [("", "at least one"), ("1h", "AGE:EVERY"), ("1d:1h 1h:all", "ages must grow"),
                      ("forever:1d 1y:1d", "last tier"), ("1d:1h 30d:90m", "multiple"),
                      ("1h:1m 1d:all", "'all' only"), ("1x:all", "duration"), ("0h:all", "duration")]:
        with pytest.raises(InvalidInputError, match=says):
            parse_policy(bad)


def test_thinning_a_repository_pages_through_it_and_keeps_the_newest_and_pinned_roots(tmp_path):
    from cas.names.history import Thin, thin
    from cas.store import LocalStore

    from .histories import add_versions

    repo = tmp_path / "repo"
    now = 2_000_000_000 * SECOND
    start = now - 50 * DAY - 30 * DAY + HOUR  # all within one 30-day bucket
    add_versions(repo, [start + i * 10 * SECOND for i in range(3000)])  # three pages of rows
    with LocalStore.open(repo) as store:
        dry = thin(store, DEFAULT_POLICY, now, protected=[1234], dry_run=True)
        assert (dry.versions, dry.kept, dry.dropped) == (3000, 2, 2998)  # 3000 and the protected 1234 stay
        job = Thin(store, DEFAULT_POLICY, now, protected=[1234])
        steps = 1
        while job.step() is None:
            steps += 1
        assert steps == 3
        assert [row.seq for row in store.roots()] == [3000, 1234]
        assert store.drop_roots([3000, 1234]) == 1  # the newest never goes
        assert [row.seq for row in store.roots()] == [3000]
