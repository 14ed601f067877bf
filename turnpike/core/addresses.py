"""Which network addresses a Turnpike component may send traffic to.

The relay uses it for TURN peers (the SSRF defence: CreatePermission, ChannelBind, Send), the stream
gateway for customers' WebSocket, webhook, callback and audio URLs. Closed by default: everything
that is not a global unicast address is refused, in every spelling an attacker can find for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DENIED_IPV4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.31.196.0/24",
    "192.52.193.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "192.175.48.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
DENIED_IPV6 = (
    "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form
    "::ffff:0:0/96",  # IPv4-mapped: only ever judged after unmapping
    "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765 SIIT): never a destination on the wire
    "64:ff9b::/96",  # NAT64
    "64:ff9b:1::/48",
    "100::/64",
    "100:0:0:1::/64",
    "2001::/23",  # includes Teredo 2001::/32
    "2001:db8::/32",
    "2002::/16",  # 6to4
    "2620:4f:8000::/48",
    "3fff::/20",
    "5f00::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",  # site-local, deprecated (RFC 3879) but still routed inside some sites
    "ff00::/8",
)

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDRs (or bare addresses); ``ValueError`` names the bad entry."""
    out: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP network: {cidr!r} ({exc})") from None
    return tuple(out)


def unmap(ip: IPAddress) -> IPAddress:
    """``::ffff:a.b.c.d`` is the IPv4 address a.b.c.d on the wire (CVE-2026-27624)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64, 6to4 or Teredo address leads to, if ``ip`` is one."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    value = int(ip)
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    if ip in _TEREDO:  # the client's address is stored inverted in the low 32 bits
        return ipaddress.IPv4Address(~value & 0xFFFFFFFF)
    return None


class AddressPolicy:
    """Deny every non-global address plus ``deny``; ``allow`` re-opens ranges (allow beats deny).

    An IPv6 address that embeds an IPv4 address (NAT64, 6to4, Teredo) is refused whenever the
    embedded IPv4 address is refused, whatever the allow-list says about the IPv6 form.
    """

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = parse_networks(allow)
        self.deny = parse_networks((*DENIED_IPV4, *DENIED_IPV6, *deny))
        self.permits = lru_cache(maxsize=4096)(self._permits)

    @staticmethod
    def _within(ip: IPAddress, nets: tuple[IPNetwork, ...]) -> bool:
        return any(ip.version == net.version and ip in net for net in nets)

    def _permits(self, address: IPAddress | str) -> bool:
        try:
            ip = unmap(ipaddress.ip_address(address))
        except ValueError:
            return False
        inner = embedded_ipv4(ip)
        if inner is not None and not self._permits(inner):
            return False
        if self._within(ip, self.allow):
            return True
        return not self._within(ip, self.deny) and ip.is_global
