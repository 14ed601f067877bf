"""Network namespaces joined by veth pairs, so traffic crosses real interfaces (root only).

``Topology`` builds three namespaces, client — relay — peer, each with its own veth link to the
relay namespace, and always deletes them. Sockets are made inside a namespace with ``inside``
(the calling thread enters it and returns; a socket stays in the namespace it was made in).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from support import IN_CI, require_tool

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def require_root() -> None:
    """Skip (fail under CI=true) unless this process may create namespaces and load eBPF."""
    require_tool("ip", "apt-get install iproute2")
    if os.geteuid() != 0:
        message = "needs root: network namespaces, veth pairs and eBPF programs"
        if IN_CI:
            pytest.fail(f"{message}; CI runs as root")
        pytest.skip(message)


def require_fast_path() -> None:
    """Root, and the relay's eBPF program built (scripts/install does it where clang is)."""
    from turnpike.relay.offload import object_path

    require_root()
    if not object_path().is_file():
        message = "the kernel fast path is not built (scripts/install, with clang and libbpf-dev)"
        if IN_CI:
            pytest.fail(f"{message}; CI must build it")
        pytest.skip(message)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _tentative(namespace: str) -> bool:
    """True while an IPv6 address in ``namespace`` is still being checked for duplicates."""
    out = subprocess.run(
        ["ip", "-n", namespace, "-6", "-o", "addr", "show", "tentative"],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return bool(out.strip())


class Topology:
    """client (10.71.1.2) — relay (10.71.1.1 | 10.71.2.1) — peer (10.71.2.2, 10.71.2.3).

    With ``ipv6`` the same links also carry IPv6 (unique local addresses, no duplicate address
    detection so they work at once): client fd71:1::2 — relay fd71:1::1 | fd71:2::1 — peer
    fd71:2::2, fd71:2::3.
    """

    client_ip = "10.71.1.2"
    relay_ip = "10.71.1.1"  # where the relay listens and relays from
    relay_peer_side = "10.71.2.1"
    peer_ip = "10.71.2.2"
    other_peer_ip = "10.71.2.3"  # a second peer address in the peer namespace
    client_ip6 = "fd71:1::2"
    relay_ip6 = "fd71:1::1"
    relay_peer_side6 = "fd71:2::1"
    peer_ip6 = "fd71:2::2"
    other_peer_ip6 = "fd71:2::3"
    peer_net6 = "fd71:2::/64"

    def __init__(self, tag: str, ipv6: bool = False) -> None:
        self.base = base = f"tp{os.getpid()}{tag}"
        self.client, self.relay, self.peer = f"{base}c", f"{base}r", f"{base}p"
        self.extra: list[str] = []  # namespaces added later by add_host
        self.ipv6 = ipv6

    def create(self) -> None:
        for name in (self.client, self.relay, self.peer):
            ip("netns", "add", name)
        for inner, ns, out in (("c0", self.client, "r0"), ("p0", self.peer, "r1")):
            ip("link", "add", inner, "netns", ns, "type", "veth", "peer", out, "netns", self.relay)
        ip("-n", self.client, "addr", "add", f"{self.client_ip}/24", "dev", "c0")
        ip("-n", self.relay, "addr", "add", f"{self.relay_ip}/24", "dev", "r0")
        ip("-n", self.relay, "addr", "add", f"{self.relay_peer_side}/24", "dev", "r1")
        ip("-n", self.peer, "addr", "add", f"{self.peer_ip}/24", "dev", "p0")
        ip("-n", self.peer, "addr", "add", f"{self.other_peer_ip}/24", "dev", "p0")
        for name, links in ((self.client, ("lo", "c0")), (self.relay, ("lo", "r0", "r1")),
                            (self.peer, ("lo", "p0"))):  # fmt: skip
            for link in links:
                ip("-n", name, "link", "set", link, "up")
        ip("-n", self.client, "route", "add", "default", "via", self.relay_ip)
        ip("-n", self.peer, "route", "add", "default", "via", self.relay_peer_side)
        if self.ipv6:
            self._add_ipv6()

    def _add_ipv6(self) -> None:
        for ns, link, address in (
            (self.client, "c0", self.client_ip6),
            (self.relay, "r0", self.relay_ip6),
            (self.relay, "r1", self.relay_peer_side6),
            (self.peer, "p0", self.peer_ip6),
            (self.peer, "p0", self.other_peer_ip6),
        ):
            ip("-n", ns, "-6", "addr", "add", f"{address}/64", "dev", link, "nodad")
        ip("-n", self.client, "-6", "route", "add", "default", "via", self.relay_ip6)
        ip("-n", self.peer, "-6", "route", "add", "default", "via", self.relay_peer_side6)
        # Neighbour discovery on a link fails until its link-local addresses have passed
        # duplicate address detection (about a second after the link came up): wait for that.
        for _ in range(100):
            if not any(_tentative(ns) for ns in (self.client, self.relay, self.peer)):
                return
            time.sleep(0.05)
        raise RuntimeError("IPv6 link-local addresses still tentative after 5 s")

    def add_host(self, index: int) -> tuple[str, str]:
        """One more namespace on a new veth link to the relay (10.71.<10+index>.0/24), made
        while the relay runs; returns (namespace, its address)."""
        name, net = f"{self.base}x{index}", f"10.71.{10 + index}"
        ip("netns", "add", name)
        self.extra.append(name)
        outer = f"r{10 + index}"
        ip("link", "add", "x0", "netns", name, "type", "veth", "peer", outer, "netns", self.relay)
        ip("-n", name, "addr", "add", f"{net}.2/24", "dev", "x0")
        ip("-n", self.relay, "addr", "add", f"{net}.1/24", "dev", outer)
        for ns, link in ((name, "lo"), (name, "x0"), (self.relay, outer)):
            ip("-n", ns, "link", "set", link, "up")
        ip("-n", name, "route", "add", "default", "via", f"{net}.1")
        return name, f"{net}.2"

    def delete(self) -> None:
        for name in (*self.extra, self.client, self.relay, self.peer):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)

    @staticmethod
    @contextlib.contextmanager
    def inside(name: str) -> Iterator[None]:
        """Run the block with this thread in namespace ``name`` (nests)."""
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            there = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                _setns(there)
            finally:
                os.close(there)
            try:
                yield
            finally:
                _setns(here)
        finally:
            os.close(here)

    def interfaces(self, name: str) -> int:
        """How many network interfaces namespace ``name`` has."""
        out = subprocess.run(
            ["ip", "-n", name, "-o", "link", "show"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return len(out.splitlines())

    def exec_prefix(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", name]

    def snmp6(self, name: str) -> dict[str, int]:
        """/proc/net/snmp6 of namespace ``name``: {"Udp6InCsumErrors": 0, ...}."""
        text = subprocess.run(
            [*self.exec_prefix(name), "cat", "/proc/net/snmp6"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return {name_: int(value) for name_, value in (line.split() for line in text.splitlines())}

    def snmp(self, name: str) -> dict[str, dict[str, int]]:
        """/proc/net/snmp of namespace ``name``: {"Udp": {"InCsumErrors": 0, ...}, ...}."""
        text = subprocess.run(
            [*self.exec_prefix(name), "cat", "/proc/net/snmp"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        tables: dict[str, dict[str, int]] = {}
        lines = text.splitlines()
        for header, values in zip(lines[::2], lines[1::2], strict=True):
            name_, *fields = header.split()
            tables[name_.rstrip(":")] = dict(
                zip(fields, (int(v) for v in values.split()[1:]), strict=True)
            )
        return tables


@contextlib.contextmanager
def topology(tag: str = "", ipv6: bool = False) -> Iterator[Topology]:
    require_root()
    topo = Topology(tag, ipv6)
    topo.delete()  # left over from a killed run with the same pid
    try:
        topo.create()
        yield topo
    finally:
        topo.delete()
