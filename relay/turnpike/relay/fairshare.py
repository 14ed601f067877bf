"""Fair share of a relay process's ports and file descriptors among tokens, accounts and addresses.

Quotas count what each holder has *now* (allocations, TCP/TLS connections), never rates:

- per token (a REST username's user part, ``<AccountSid>:<token id>``): ``token``;
- per account (``turnpike.core.credentials.account_of``): ``account``, by default half the port
  range, so one account can never take every port;
- per client address (an IPv6 client counts per /64, what one subscriber gets): ``ip``
  allocations, a quarter of the range by default, and ``connections`` TCP/TLS connections;
- a reserve: once no more than ``reserve_percent`` of the ports (or of the file descriptors)
  are free, only accounts and addresses holding fewer than ``token`` allocations (addresses
  holding fewer than ``SMALL_CONNECTIONS`` connections) get more, so the last ones always go to
  clients that have little.

Every refusal is a `Refusal` with its own STUN error code and reason phrase and a metric label
that names the rule, never the holder. This module only counts; the server decides.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import resource
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from turnpike.core.credentials import account_of

DEFAULT_TOKEN_QUOTA = 100
DEFAULT_RESERVE_PERCENT = 10.0
SMALL_CONNECTIONS = 8  # connections an address may still open when descriptors are scarce
MIN_CONNECTIONS_PER_IP = 100


@dataclass(frozen=True, slots=True)
class Refusal:
    label: str  # the metric label and log reason
    code: int  # the STUN error code
    phrase: str  # the ERROR-CODE reason phrase


TOKEN_QUOTA = Refusal("token_quota", 486, "Allocation Quota Reached (credential)")
ACCOUNT_QUOTA = Refusal("account_quota", 486, "Allocation Quota Reached (account)")
IP_QUOTA = Refusal("ip_quota", 486, "Allocation Quota Reached (client address)")
TOTAL_QUOTA = Refusal("total_quota", 508, "Insufficient Capacity (relay quota)")
PORT_RESERVE = Refusal("port_reserve", 508, "Insufficient Capacity (ports reserved)")
FD_RESERVE = Refusal("fd_reserve", 508, "Insufficient Capacity (descriptors reserved)")
NO_PORT = Refusal("no_port", 508, "Insufficient Capacity (no relay port free)")
OUT_OF_FDS = Refusal("out_of_fds", 508, "Insufficient Capacity (out of file descriptors)")
ALLOCATION_REFUSALS = (
    TOKEN_QUOTA,
    ACCOUNT_QUOTA,
    IP_QUOTA,
    TOTAL_QUOTA,
    PORT_RESERVE,
    FD_RESERVE,
    NO_PORT,
    OUT_OF_FDS,
)
CONNECTION_LIMIT = "ip_connections"
CONNECTION_RESERVE = "fd_reserve"


OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def fds_open() -> int:
    """Descriptors open now (counted once, at start: listeners, logs, the event loop…)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


@lru_cache(maxsize=65536)
def source_key(ip: str) -> str:
    """What one client address counts as: the IPv4 address, or the IPv6 address's /64."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)


def fd_limit() -> int:
    """This process's soft limit on open file descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


@dataclass(frozen=True, slots=True)
class Shares:
    """The limits, resolved to numbers (0 = no limit)."""

    token: int
    account: int
    ip: int
    total: int
    connections: int
    reserve_percent: float

    @classmethod
    def resolve(
        cls,
        ports: int,
        fds: int,
        *,
        token: int = DEFAULT_TOKEN_QUOTA,
        account: int | None = None,
        ip: int | None = None,
        total: int = 0,
        connections: int | None = None,
        reserve_percent: float = DEFAULT_RESERVE_PERCENT,
    ) -> Shares:
        """Fill the defaults: half the ports per account, a quarter per address (never fewer
        than one token's quota), a tenth of the descriptors (at least 100) in connections."""
        floor = token or DEFAULT_TOKEN_QUOTA
        return cls(
            token=token,
            account=max(floor, ports // 2) if account is None else account,
            ip=max(floor, ports // 4) if ip is None else ip,
            total=total,
            connections=max(MIN_CONNECTIONS_PER_IP, fds // 10)
            if connections is None
            else connections,
            reserve_percent=reserve_percent,
        )


class FairShare:
    """What every token, account and address holds, and whether it may take one more."""

    def __init__(self, shares: Shares, ports: int, fds: int, fds_at_start: int = 0) -> None:
        self.shares = shares
        self.ports = ports  # relay ports this process may bind, over all relay addresses
        self.fds = fds
        self.fds_at_start = fds_at_start  # listeners, logs, the event loop…
        self.per_token: Counter[str] = Counter()
        self.per_account: Counter[str] = Counter()
        self.per_ip: Counter[str] = Counter()
        self.connections: Counter[str] = Counter()
        self.allocations = 0
        self.open_connections = 0

    def _reserve(self, size: int) -> int:
        return int(size * self.shares.reserve_percent / 100)

    def fds_free(self, ports_in_use: int) -> int:
        return self.fds - self.fds_at_start - ports_in_use - self.open_connections

    def _small(self, account: str, ip: str) -> bool:
        small = self.shares.token or DEFAULT_TOKEN_QUOTA
        return self.per_account[account] < small and self.per_ip[ip] < small

    def check_allocation(self, user: str, ip: str, ports_in_use: int) -> Refusal | None:
        """Why ``user`` from ``ip`` may not have one more allocation now, or None."""
        s, account, ip = self.shares, account_of(user), source_key(ip)
        if s.token and self.per_token[user] >= s.token:
            return TOKEN_QUOTA
        if s.account and self.per_account[account] >= s.account:
            return ACCOUNT_QUOTA
        if s.ip and self.per_ip[ip] >= s.ip:
            return IP_QUOTA
        if s.total and self.allocations >= s.total:
            return TOTAL_QUOTA
        if self._small(account, ip):
            return None
        if self.ports - ports_in_use <= self._reserve(self.ports):
            return PORT_RESERVE
        if self.fds_free(ports_in_use) <= self._reserve(self.fds):
            return FD_RESERVE
        return None

    def take_allocation(self, user: str, ip: str) -> None:
        self.per_token[user] += 1
        self.per_account[account_of(user)] += 1
        self.per_ip[source_key(ip)] += 1
        self.allocations += 1

    def give_back_allocation(self, user: str, ip: str) -> None:
        self.allocations -= 1
        for table, key in (
            (self.per_token, user),
            (self.per_account, account_of(user)),
            (self.per_ip, source_key(ip)),
        ):
            table[key] -= 1
            if table[key] <= 0:
                del table[key]

    def connect(self, ip: str, ports_in_use: int) -> str | None:
        """Count a new TCP/TLS connection from ``ip``; the refusal label when it must close."""
        ip = source_key(ip)
        held = self.connections[ip]
        if self.shares.connections and held >= self.shares.connections:
            return CONNECTION_LIMIT
        if held >= SMALL_CONNECTIONS and self.fds_free(ports_in_use) <= self._reserve(self.fds):
            return CONNECTION_RESERVE
        self.connections[ip] = held + 1
        self.open_connections += 1
        return None

    def disconnect(self, ip: str) -> None:
        ip = source_key(ip)
        self.open_connections -= 1
        self.connections[ip] -= 1
        if self.connections[ip] <= 0:
            del self.connections[ip]
