"""Per-account request limits for the token API: one token bucket per account SID."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows ``per_minute`` requests a minute per key on average, up to ``burst`` at once.

    ``per_minute`` of 0 turns the limit off. Keys are account SIDs of authenticated callers only,
    so the table is bounded by the accounts file.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must not be negative")
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, math.ceil(per_minute)))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float | None:
        """Spend one request for ``key``: None when allowed, else seconds until one is allowed."""
        if not self.enabled:
            return None
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the buckets of keys no longer wanted (accounts removed from the file)."""
        for key in [k for k in self._buckets if not keep(k)]:
            del self._buckets[key]
