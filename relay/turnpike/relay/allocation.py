"""Allocations, permissions, channels, their lifetimes, and the relay ports behind them.

This module owns the per-packet data path in both directions. Each allocation has one plain
``asyncio.DatagramProtocol`` relay socket; forwarding a packet is a header parse, one dict
lookup and one ``sendto``/``write``: no task and no per-packet object beyond the bytes that go
on the wire. Lifetimes are enforced by one sweep per second over all allocations (see
``AllocationTable.sweep``) instead of a timer per permission or channel: cheaper, and a
one-second granularity is far below the minutes-long lifetimes TURN uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from turnpike.relay import stun
from turnpike.relay.fairshare import OUT_OF_RESOURCES
from turnpike.relay.stun import Address

log = logging.getLogger("turnpike.relay")

# Peers whose encoded address an allocation remembers; one peer is the usual case, the bound
# only stops a peer that sends from many ports from growing it.
_PEER_ATTRIBUTE_CACHE = 64

DEFAULT_LIFETIME = 600
MAX_LIFETIME = 3600
PERMISSION_LIFETIME = 300
CHANNEL_LIFETIME = 600
RESERVATION_LIFETIME = 30
UDP_BUFFER = 1 << 20
STREAM_WRITE_LIMIT = 1 << 20  # bytes queued for one TCP/TLS client before we drop


class ClientSink:
    """Where packets for a client go: its UDP source address or its TCP/TLS connection."""

    __slots__ = ("addr", "closed", "stream", "transport")

    def __init__(self, transport: asyncio.BaseTransport, addr: Address, stream: bool) -> None:
        self.transport = transport
        self.addr = addr
        self.stream = stream
        self.closed = False

    def send(self, data: bytes) -> bool:
        """Queue ``data`` for the client; False when it was dropped."""
        if self.stream:
            transport: asyncio.WriteTransport = self.transport  # type: ignore[assignment]
            # A client that reads slower than its peers send must not make us buffer without
            # bound: beyond the limit we drop, as UDP would.
            if transport.get_write_buffer_size() > STREAM_WRITE_LIMIT:
                return False
            pad = -len(data) % 4  # RFC 8656 §12.5: ChannelData over TCP is padded to 4 bytes
            transport.write(data + bytes(pad) if pad else data)
        else:
            self.transport.sendto(data, self.addr)  # type: ignore[attr-defined]
        return True


@dataclass(slots=True)
class Traffic:
    """Counters of relayed traffic; per allocation, and the retired total in the table."""

    to_peer_packets: int = 0
    to_peer_bytes: int = 0
    to_client_packets: int = 0
    to_client_bytes: int = 0
    dropped: int = 0

    def add(self, other: Traffic) -> None:
        self.to_peer_packets += other.to_peer_packets
        self.to_peer_bytes += other.to_peer_bytes
        self.to_client_packets += other.to_client_packets
        self.to_client_bytes += other.to_client_bytes
        self.dropped += other.dropped


class RelayProtocol(asyncio.DatagramProtocol):
    """The allocation's relay socket: datagrams from peers go to the client."""

    __slots__ = ("allocation", "transport")

    def __init__(self) -> None:
        self.allocation: Allocation | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        alloc = self.allocation
        if alloc is not None:
            # IPv6 sockets report (host, port, flowinfo, scope_id); permissions key on (host, port).
            alloc.from_peer(data, addr if len(addr) == 2 else addr[:2])  # type: ignore[arg-type]

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from peers (port unreachable) are normal on UDP; nothing to do.
        pass


class Bandwidth:
    """A token bucket over relayed payload bytes, both directions together (``--max-bps``).

    One second's worth of burst: enough for a video keyframe, small enough to bound abuse.
    """

    __slots__ = ("last", "rate", "tokens")

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self.tokens = bytes_per_second
        self.last = time.monotonic()

    def allow(self, size: int) -> bool:
        now = time.monotonic()
        tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if tokens < size:
            self.tokens = tokens
            return False
        self.tokens = tokens - size
        return True


class Allocation:
    __slots__ = (
        "advertised",
        "bandwidth",
        "channel_expiry",
        "channels",
        "client",
        "created",
        "expires",
        "family",
        "five_tuple",
        "hairpin",
        "key",
        "peer_attributes",
        "peer_channels",
        "permissions",
        "relay",
        "relayed",
        "response",
        "traffic",
        "transaction_id",
        "user",
        "username",
    )

    def __init__(
        self,
        five_tuple: tuple[Any, Any],
        client: ClientSink,
        username: str,
        user: str,
        key: bytes,
        relay: asyncio.DatagramTransport,
        relayed: Address,
        lifetime: int,
        transaction_id: bytes,
        max_bps: int = 0,
    ) -> None:
        self.five_tuple = five_tuple
        self.client = client
        self.username = username
        self.user = user
        self.key = key
        self.relay = relay
        self.relayed = relayed
        self.family = 6 if ":" in relayed[0] else 4
        now = time.monotonic()
        self.created = now
        self.expires = now + lifetime
        self.transaction_id = transaction_id
        self.response = b""  # the Allocate success, resent for a retransmitted request
        self.permissions: dict[str, float] = {}  # peer IP -> expiry
        self.channels: dict[int, Address] = {}  # channel number -> peer
        self.channel_expiry: dict[int, float] = {}
        self.peer_channels: dict[Address, bytes] = {}  # peer -> its 2-byte channel number
        # peer -> its encoded XOR-PEER-ADDRESS, for Data indications (IPv4 peers only)
        self.peer_attributes: dict[Address, bytes] = {}
        self.traffic = Traffic()
        self.bandwidth = Bandwidth(max_bps / 8) if max_bps > 0 else None
        # Behind 1:1 NAT (--external-ip) clients name each other's relays by their external
        # addresses; sending there relies on the NAT hairpinning our own packets back, which
        # many do not. ``hairpin`` maps this process's advertised relay addresses to their
        # allocations so such packets are handed over in process instead (empty without NAT).
        self.advertised = relayed
        self.hairpin: dict[Address, Allocation] = {}

    # ---------------------------------------------------------------- data path

    def to_peer_channel(self, data: bytes, channel: int, length: int) -> None:
        """ChannelData from the client; ``data`` still has its 4-byte header."""
        peer = self.channels.get(channel)
        if (
            peer is None
            or length > len(data) - 4
            or (self.bandwidth is not None and not self.bandwidth.allow(length))
        ):
            self.traffic.dropped += 1
            return
        if self.hairpin and (target := self.hairpin.get(peer)) is not None:
            target.from_peer(data[4 : 4 + length], self.advertised)
        else:
            self.relay.sendto(data[4 : 4 + length], peer)
        traffic = self.traffic
        traffic.to_peer_packets += 1
        traffic.to_peer_bytes += length

    def to_peer_send(self, payload: bytes, peer: Address) -> bool:
        """A Send indication; False when there is no permission for the peer."""
        if peer[0] not in self.permissions:
            self.traffic.dropped += 1
            return False
        if self.bandwidth is not None and not self.bandwidth.allow(len(payload)):
            self.traffic.dropped += 1
            return True
        if self.hairpin and (target := self.hairpin.get(peer)) is not None:
            target.from_peer(payload, self.advertised)
        else:
            self.relay.sendto(payload, peer)
        self.traffic.to_peer_packets += 1
        self.traffic.to_peer_bytes += len(payload)
        return True

    def from_peer(self, data: bytes, peer: Address) -> None:
        if self.bandwidth is not None and not self.bandwidth.allow(len(data)):
            self.traffic.dropped += 1
            return
        prefix = self.peer_channels.get(peer)
        if prefix is not None:
            sent = self.client.send(prefix + len(data).to_bytes(2, "big") + data)
        elif peer[0] in self.permissions:
            tid = os.urandom(12)
            attribute = self.peer_attributes.get(peer)
            if attribute is None:
                attribute = stun.xor_peer_attribute(peer, tid)
                if ":" not in peer[0]:  # IPv4: the same bytes for every transaction id
                    if len(self.peer_attributes) >= _PEER_ATTRIBUTE_CACHE:
                        self.peer_attributes.clear()
                    self.peer_attributes[peer] = attribute
            sent = self.client.send(stun.data_indication(attribute, tid, data))
        else:  # RFC 8656 §10: no permission, silently discard
            sent = False
        if not sent:
            self.traffic.dropped += 1
            return
        self.traffic.to_client_packets += 1
        self.traffic.to_client_bytes += len(data)

    # ---------------------------------------------------------------- state

    def permit(self, ip: str, lifetime: float) -> None:
        expiry = time.monotonic() + lifetime
        if self.permissions.get(ip, 0.0) < expiry:
            self.permissions[ip] = expiry

    def bind_channel(self, channel: int, peer: Address, lifetime: float) -> None:
        self.channels[channel] = peer
        self.channel_expiry[channel] = time.monotonic() + lifetime
        self.peer_channels[peer] = channel.to_bytes(2, "big")
        # RFC 8656 §12.2: a ChannelBind also installs or refreshes the peer's permission. We keep
        # it at least as long as the channel, so a client that only refreshes its channel (aioice
        # rebinds every 500 s, never sends CreatePermission) keeps receiving from the peer.
        self.permit(peer[0], lifetime)

    def expire(self, now: float) -> None:
        """Drop expired channels and permissions."""
        for channel, expiry in list(self.channel_expiry.items()):
            if expiry <= now:
                del self.channel_expiry[channel]
                peer = self.channels.pop(channel)
                self.peer_channels.pop(peer, None)
        for ip, expiry in list(self.permissions.items()):
            if expiry <= now:
                del self.permissions[ip]


class PortPool:
    """Binds relay sockets on ports from a range, remembering which ones we hold."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.in_use: set[tuple[str, int]] = set()

    def bind(self, ip: str, even: bool = False, reserve_next: bool = False) -> list[socket.socket]:
        """A bound socket (two when ``reserve_next``: port and port+1); [] when none is free."""
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        span = self.high - self.low + 1
        start = random.randrange(span)  # noqa: S311 - unpredictable enough; not a secret
        for i in range(span):
            port = self.low + (start + i) % span
            if (even or reserve_next) and port % 2:
                continue
            ports = [port, port + 1] if reserve_next else [port]
            if ports[-1] > self.high or any((ip, p) in self.in_use for p in ports):
                continue
            socks: list[socket.socket] = []
            try:
                for p in ports:
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                    socks.append(sock)
                    _tune(sock)
                    sock.bind((ip, p))
            except OSError as exc:
                for sock in socks:
                    sock.close()
                if exc.errno in OUT_OF_RESOURCES:
                    raise  # no other port would do better: say why instead of trying them all
                continue
            self.in_use.update((ip, p) for p in ports)
            return socks
        return []

    def release(self, ip: str, port: int) -> None:
        self.in_use.discard((ip, port))


# Not exported by Python's socket module; the values are Linux's <linux/in.h> / <linux/in6.h>.
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
_PMTUDISC_DO = 2


def set_dont_fragment(sock: socket.socket) -> bool:
    """Send with the DF bit set and never fragment locally (DONT-FRAGMENT, RFC 8656 §14.8)."""
    if sys.platform != "linux":
        return False
    if sock.family == socket.AF_INET6:
        level, option = socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER
    else:
        level, option = socket.IPPROTO_IP, _IP_MTU_DISCOVER
    try:
        sock.setsockopt(level, option, _PMTUDISC_DO)
    except OSError:
        return False
    return True


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)


@dataclass(slots=True)
class Reservation:
    sock: socket.socket
    ip: str
    expires: float


class AllocationTable:
    """Every allocation of this process, indexed for quotas, plus relay-port reservations."""

    def __init__(self, pool: PortPool) -> None:
        self.pool = pool
        self.by_tuple: dict[tuple[Any, Any], Allocation] = {}
        self.per_user: dict[str, int] = {}
        self.reservations: dict[int, Reservation] = {}
        self.retired = Traffic()
        self.on_removed: Callable[[Allocation, str], None] | None = None

    def __len__(self) -> int:
        return len(self.by_tuple)

    def add(self, alloc: Allocation) -> None:
        self.by_tuple[alloc.five_tuple] = alloc
        self.per_user[alloc.user] = self.per_user.get(alloc.user, 0) + 1

    def remove(self, alloc: Allocation, reason: str) -> None:
        if self.by_tuple.get(alloc.five_tuple) is not alloc:
            return
        del self.by_tuple[alloc.five_tuple]
        left = self.per_user.get(alloc.user, 1) - 1
        if left > 0:
            self.per_user[alloc.user] = left
        else:
            self.per_user.pop(alloc.user, None)
        alloc.relay.close()
        self.pool.release(*alloc.relayed)
        self.retired.add(alloc.traffic)
        if self.on_removed is not None:
            self.on_removed(alloc, reason)

    def reserve(self, sock: socket.socket, ip: str) -> int:
        token = int.from_bytes(os.urandom(8), "big")
        self.reservations[token] = Reservation(sock, ip, time.monotonic() + RESERVATION_LIFETIME)
        return token

    def take_reservation(self, token: int) -> Reservation | None:
        return self.reservations.pop(token, None)

    def release_reservation(self, res: Reservation) -> None:
        port = res.sock.getsockname()[1]
        res.sock.close()
        self.pool.release(res.ip, port)

    def sweep(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for alloc in list(self.by_tuple.values()):
            if alloc.expires <= now:
                self.remove(alloc, "expired")
            else:
                alloc.expire(now)
        for token, res in list(self.reservations.items()):
            if res.expires <= now:
                del self.reservations[token]
                self.release_reservation(res)

    def close(self) -> None:
        for alloc in list(self.by_tuple.values()):
            self.remove(alloc, "shutdown")
        for res in self.reservations.values():
            self.release_reservation(res)
        self.reservations.clear()
