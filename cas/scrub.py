"""The scrub's pace: when to re-verify the next stored block.

A disk can rot a block long after it was written and verified, and nobody
may read it for months. The node's scrub re-reads and re-hashes every
stored block in passes (``Node._scrub_loop`` does the reading; a block
that fails is quarantined and fetched again, cas/store/_quarantine.py),
and this object decides only *when*:

1. **Bounded rate.** Reading runs at most ``rate`` bytes per second, as a
   token bucket with one second of burst: the scrub never takes the disk
   from the user's own reads for long.
2. **Every block once per period.** A pass starts at most once per
   ``period`` seconds; a pass that ends sooner waits for the period to
   run out. A pass that takes longer than the period (too many bytes for
   the rate) is reported by :meth:`end_pass`, so the node can say that
   the rate is too low, and the next pass starts at once.

Time is passed in (seconds, any monotonic clock); no I/O, no trio, so the
tests drive it with plain numbers. Never reads a block, never decides what
to do with a bad one.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SCRUB_RATE = 16 * 1024 * 1024
"""Bytes per second the scrub reads at most (16 MiB/s: a terabyte a day
on a disk that reads ten times that)."""

DEFAULT_SCRUB_PERIOD = 24 * 3600.0
"""Seconds within which every stored block is verified again: a day, so a
block that rots is found within a day (if the rate allows: see rule 2)."""


@dataclass
class ScrubPace:
    """See the module docstring. ``rate`` in bytes per second, ``period``
    in seconds; both must be positive."""

    rate: float = DEFAULT_SCRUB_RATE
    period: float = DEFAULT_SCRUB_PERIOD

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.period > 0:
            raise ValueError("a scrub needs a positive rate and period")
        self._pass_started: float | None = None
        self._tokens = 0.0
        self._last: float | None = None

    def start_pass(self, now: float) -> None:
        """A pass over every block begins now."""
        self._pass_started = now
        self._tokens = 0.0
        self._last = now

    def wait_before(self, size: int, now: float) -> float:
        """Seconds to wait before reading a block of ``size`` bytes (0: read
        it now). The read is charged when this returns 0; ask again after
        waiting."""
        assert self._last is not None, "start_pass first"
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)  # one second of burst
        self._last = now
        # A block larger than the burst is let through once the bucket is full.
        needed = min(float(size), self.rate)
        if self._tokens >= needed * (1 - 1e-9):  # (a float short of full is full)
            self._tokens -= size
            return 0.0
        return (needed - self._tokens) / self.rate

    def end_pass(self, now: float) -> tuple[float, bool]:
        """The pass is over: (seconds until the next may start, whether this
        one overran the period)."""
        assert self._pass_started is not None, "start_pass first"
        took = now - self._pass_started
        return max(0.0, self.period - took), took > self.period
