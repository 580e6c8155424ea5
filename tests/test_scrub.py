"""cas.scrub: the scrub's pace, driven with plain numbers for time."""

from __future__ import annotations

import pytest

from cas.scrub import ScrubPace


def test_reading_never_runs_faster_than_the_rate() -> None:
    pace = ScrubPace(rate=1000, period=3600)
    pace.start_pass(0.0)
    now, read = 0.0, 0
    while read < 10_000:
        wait = pace.wait_before(100, now)
        if wait:
            now += wait
            continue
        read += 100
    # 10,000 bytes at 1,000 per second, one second of burst at most
    assert 9.0 <= now <= 10.0


def test_a_block_larger_than_the_burst_still_gets_read() -> None:
    pace = ScrubPace(rate=1000, period=3600)
    pace.start_pass(0.0)
    now = 0.0
    while (wait := pace.wait_before(1_000_000, now)) > 0:
        now += wait
    assert now == pytest.approx(1.0)  # once the bucket is full, not never
    assert pace.wait_before(100, now) > 0  # and what it took is paid back first


def test_a_pass_waits_out_its_period_and_says_when_it_overran() -> None:
    pace = ScrubPace(rate=1000, period=60)
    pace.start_pass(0.0)
    assert pace.end_pass(20.0) == (40.0, False)
    pace.start_pass(60.0)
    assert pace.end_pass(200.0) == (0.0, True)


def test_a_rate_or_period_of_zero_is_refused() -> None:
    with pytest.raises(ValueError):
        ScrubPace(rate=0, period=60)
    with pytest.raises(ValueError):
        ScrubPace(rate=10, period=0)
