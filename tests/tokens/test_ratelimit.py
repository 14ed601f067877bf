"""The per-account token bucket, on a clock the test moves."""

from __future__ import annotations

import pytest

from turnpike.tokens.ratelimit import RateLimiter


def test_burst_then_steady_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(per_minute=120, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert limiter.take("b") is None  # every key has its own bucket
    now[0] += 0.5
    assert limiter.take("a") is None
    assert limiter.take("a") is not None
    now[0] += 3600  # a long pause refills only up to the burst
    assert [limiter.take("a") for _ in range(4)][-1] is not None


def test_zero_means_no_limit() -> None:
    limiter = RateLimiter(0)
    assert not limiter.enabled
    assert all(limiter.take("a") is None for _ in range(10_000))


def test_forget_drops_removed_keys() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=1, burst=1, clock=lambda: now[0])
    assert limiter.take("gone") is None
    assert limiter.take("gone") is not None
    limiter.forget(lambda key: key != "gone")
    assert limiter.take("gone") is None


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="negative"):
        RateLimiter(-1)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(10, burst=0)
