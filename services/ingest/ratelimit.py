"""A token bucket per bearer token: how many events an authority system may send, and when.

The unit is the event, not the request: a batch of 500 costs 500, so splitting a backfill
into single posts or packing it into batches is the same to the limit, and a 429 says how
long until the whole request fits. A request whose events cannot be read (a 4xx before
decoding) still costs one, so a client looping on a broken request is slowed too.

Buckets live in the service's memory, one per token id (ids only exist for issued tokens, so
the map is bounded); each column service limits on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``capacity`` tokens at most, refilled at ``rate`` a second."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens: 0 when taken, else the seconds until they would be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key (a token id), each full when first used."""

    def __init__(
        self, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, cost: int) -> int:
        """Charge ``cost`` events to ``key``: 0 if allowed, else whole seconds to wait."""
        now = self._monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.burst, now)
        wait = bucket.take(cost, now)
        return math.ceil(wait) if wait > 0 else 0
