"""Token buckets: how often something may happen, on average and at once.

One bucket allows ``rate`` events a second on average and ``burst`` at
once: it holds up to ``burst`` tokens, refills at ``rate`` a second, and an
event takes its cost in tokens or is refused. :class:`TokenBucket` is one
(a connection's inbound requests); :class:`KeyedBuckets` is one per key,
bounded in memory (a peer's stores and records, an address's handshakes).

Sans-IO, as the rest of the core is: time comes in as ``now`` (seconds, on
whatever monotonic clock the caller uses), so trio's clock, the simulator's
and a test's drive the same code. Never reads a clock, never sleeps, never
raises for a refusal (the caller decides what a refusal means).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def _check(rate: float, burst: float) -> None:
    if not rate > 0 or burst < 1:
        raise ValueError("a rate must be positive, with a burst of at least 1")


class TokenBucket:
    """``rate`` events a second on average, ``burst`` at once; ``rate``
    ``math.inf`` limits nothing."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        _check(rate, burst)
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens at ``now`` if there are that many; whether it did."""
        if self.rate == math.inf:
            return True
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._last) * self.rate)
        self._last = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class KeyedBuckets(Generic[K]):
    """A :class:`TokenBucket` per key (a peer, an address), in bounded
    memory: a bucket left alone long enough to be full again is forgotten
    (it would be full anyway), and beyond ``max_keys`` the least recently
    used goes first."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, *, max_keys: int = 4096) -> None:
        _check(rate, burst)
        if max_keys < 1:
            raise ValueError("room for at least one key is needed")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        # key -> (tokens, when last counted), least recently counted first
        self._buckets: OrderedDict[K, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """Keys tracked now (those whose bucket may not be full)."""
        return len(self._buckets)

    def take(self, key: K, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket at ``now`` if it has
        them (a request, or one per item of a batch); whether it did."""
        if self.rate == math.inf:
            return True
        buckets = self._buckets
        refill = self.burst / self.rate  # an untouched bucket is full again after this
        while buckets:
            oldest, (_, last) = next(iter(buckets.items()))
            if now - last < refill:
                break
            del buckets[oldest]
        tokens, last = buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= cost
        buckets[key] = (tokens - cost if allowed else tokens, now)
        if len(buckets) > self.max_keys:
            buckets.popitem(last=False)
        return allowed
