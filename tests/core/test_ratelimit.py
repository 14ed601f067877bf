"""The one token-bucket limiter (relay 401 replies, token API requests and failed logins)."""

from __future__ import annotations

import pytest

from turnpike.core.ratelimit import RateLimiter


def test_burst_then_steady_rate() -> None:
    now = [100.0]
    limiter = RateLimiter.per_minute(120, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert limiter.take("b") is None  # every key has its own bucket
    now[0] += 0.5
    assert limiter.take("a") is None
    assert limiter.take("a") is not None
    now[0] += 3600  # a long pause refills only up to the burst
    assert [limiter.take("a") for _ in range(4)][-1] is not None


def test_per_second_allow() -> None:
    now = [0.0]
    limiter = RateLimiter(2, burst=2, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, False, False]
    assert limiter.allow("b")
    now[0] += 0.5
    assert limiter.allow("a")
    assert not limiter.allow("a")


def test_blocked_spends_nothing() -> None:
    now = [0.0]
    limiter = RateLimiter(1, burst=1, clock=lambda: now[0])
    assert limiter.blocked("a") is None  # an unknown key is never blocked
    assert limiter.take("a") is None
    assert limiter.blocked("a") == pytest.approx(1.0)
    assert limiter.blocked("a") == pytest.approx(1.0)  # asking twice costs nothing
    now[0] += 1
    assert limiter.blocked("a") is None
    assert limiter.take("a") is None


def test_table_stays_bounded_and_forgets_the_oldest() -> None:
    now = [0.0]
    limiter = RateLimiter(1, burst=1, max_keys=3, clock=lambda: now[0])
    limiter.take("a")
    for key in "bcdefg":
        limiter.take(key)
        limiter.take("a")  # "a" stays recent, so it is never the one forgotten
    assert len(limiter) == 3
    assert limiter.take("a") is not None


def test_zero_means_no_limit() -> None:
    limiter = RateLimiter.per_minute(0)
    assert not limiter.enabled
    assert all(limiter.take("a") is None for _ in range(10_000))
    assert limiter.blocked("a") is None


def test_forget_drops_removed_keys() -> None:
    now = [0.0]
    limiter = RateLimiter.per_minute(1, burst=1, clock=lambda: now[0])
    assert limiter.take("gone") is None
    assert limiter.take("gone") is not None
    limiter.forget(lambda key: key != "gone")
    assert limiter.take("gone") is None


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="negative"):
        RateLimiter.per_minute(-1)
    with pytest.raises(ValueError, match="negative"):
        RateLimiter(-1)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter.per_minute(10, burst=0)
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter(1, max_keys=0)
