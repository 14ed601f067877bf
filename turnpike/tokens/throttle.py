"""Failed-authentication throttle: per source IP and per account, never slowing a valid caller.

Credentials are checked first (a constant-time compare, cheap), so a caller with valid credentials
is never refused or delayed however hard someone else hammers its account or shares its address.
A failed attempt spends one token from its source's bucket and from its account's bucket; once
either is empty, failures are answered 429 with ``Retry-After`` instead of 401. The account of a
failed attempt is the SID it claimed (Basic user name or the URL), so the per-account bucket slows
a guesser spread over many addresses, while the per-source bucket slows one address guessing many
accounts. Both tables are bounded (`RateLimiter`'s least-recently-used eviction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from turnpike.core.ratelimit import RateLimiter

DEFAULT_PER_SOURCE = 20.0  # failed logins a minute per source IP, after a burst of as many
DEFAULT_PER_ACCOUNT = 60.0  # failed logins a minute per claimed account, after a burst of as many


def _limiter(per_minute: float) -> RateLimiter:
    return RateLimiter.per_minute(per_minute, max_keys=16384)


@dataclass(slots=True)
class AuthThrottle:
    per_source: RateLimiter = field(default_factory=lambda: _limiter(DEFAULT_PER_SOURCE))
    per_account: RateLimiter = field(default_factory=lambda: _limiter(DEFAULT_PER_ACCOUNT))

    @classmethod
    def per_minute(cls, source: float, account: float) -> AuthThrottle:
        return cls(_limiter(source), _limiter(account))

    def failed(self, source: str, account: str) -> float | None:
        """Record one failed attempt; seconds to wait when it is over a limit, else None."""
        waits = [
            wait
            for wait in (self.per_source.take(source), self.per_account.take(account))
            if wait is not None
        ]
        return max(waits) if waits else None
