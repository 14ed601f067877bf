"""One token-bucket limiter, keyed (by source IP, account SID, …), used by every component.

Each key gets ``burst`` tokens that refill at ``rate`` per second. The table of keys is bounded:
past ``max_keys`` the least recently used key is forgotten, which at worst gives that key a fresh
burst; the table never grows without limit, whatever an attacker sends from however many sources.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_KEYS = 4096


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` events a second per key on average, up to ``burst`` at once; rate 0 = no limit."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must not be negative")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate)))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @classmethod
    def per_minute(
        cls,
        per_minute: float,
        burst: float | None = None,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> RateLimiter:
        """``per_minute`` a minute; the burst defaults to one minute's worth."""
        if per_minute < 0:
            raise ValueError("per_minute must not be negative")
        if burst is None:
            burst = max(1, math.ceil(per_minute))
        return cls(per_minute / 60.0, burst, max_keys=max_keys, clock=clock)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

    def take(self, key: str) -> float | None:
        """Spend one token of ``key``: None when allowed, else seconds until one is available."""
        if not self.enabled:
            return None
        bucket = self._bucket(key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate

    def allow(self, key: str) -> bool:
        return self.take(key) is None

    def blocked(self, key: str) -> float | None:
        """Seconds until ``key`` may act again, without spending anything; None when it may now."""
        if not self.enabled or key not in self._buckets:
            return None
        bucket = self._bucket(key)
        return None if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the buckets of keys no longer wanted (accounts removed from the file)."""
        for key in [k for k in self._buckets if not keep(k)]:
            del self._buckets[key]
