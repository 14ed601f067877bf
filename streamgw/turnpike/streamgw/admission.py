"""Admission of new calls: concurrent calls per account and in total (fair share of RTP ports).

Every call holds one RTP port until it ends, so without a cap one account could take the whole
port range and every other account's call would fail. A slot is taken *before* the port is opened
(no two concurrent requests can both slip under a cap) and given back exactly once when the call
ends or fails to start. Refusals carry the hosted API's semantics: the account over its share gets
429 (20429, its own limit, retry later), the gateway at capacity 503 (20503, try another replica).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


def rtp_capacity(ports: tuple[int, int]) -> int:
    """Calls a port range can hold: one even port per call (odd ones are left for RTCP)."""
    low, high = ports
    first = low + (low % 2)
    return max(1, (high - first) // 2 + 1) if high >= first else 1


def default_caps(ports: tuple[int, int]) -> tuple[int, int]:
    """(total, per account): every port, and a tenth of them for any single account."""
    total = rtp_capacity(ports)
    return total, max(1, total // 10)


class Refused(Exception):
    """A call was not admitted; ``scope`` is "account" or "total" (a metric label)."""

    def __init__(self, scope: str, message: str) -> None:
        super().__init__(message)
        self.scope = scope


@dataclass(slots=True)
class Slot:
    account: str
    released: bool = False


class Admission:
    def __init__(self, max_calls: int, max_account_calls: int) -> None:
        if max_calls < 1 or max_account_calls < 1:
            raise ValueError("call caps must be at least 1")
        self.max_calls = max_calls
        self.max_account_calls = max_account_calls
        self.per_account: Counter[str] = Counter()
        self.total = 0

    def admit(self, account: str) -> Slot:
        """Take one slot for ``account`` or raise `Refused`."""
        if self.per_account[account] >= self.max_account_calls:
            raise Refused(
                "account",
                f"this account already has {self.max_account_calls} calls in progress, "
                "its concurrent call limit; end one or retry later",
            )
        if self.total >= self.max_calls:
            raise Refused("total", "the gateway is at capacity; retry later or on another replica")
        self.per_account[account] += 1
        self.total += 1
        return Slot(account)

    def release(self, slot: Slot) -> None:
        if slot.released:
            return
        slot.released = True
        self.total -= 1
        left = self.per_account[slot.account] - 1
        if left > 0:
            self.per_account[slot.account] = left
        else:
            del self.per_account[slot.account]
