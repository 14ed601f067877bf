"""The kernel fast path's control plane: mirrors bound channels into the eBPF program's maps.

``fastpath.bpf.c`` (next to this module, compiled by ``scripts/install``) relays ChannelData over
UDP, IPv4 or IPv6, in the kernel. This module decides nothing on its own: the relay server calls
``sync`` after a ChannelBind or Refresh succeeded and ``forget`` when an allocation ends, and a
sweep every second drops the entries of channels userspace has expired. Each entry carries the
channel's (or the allocation's, if sooner) expiry, which the program checks itself.

Only what the program relays exactly is offloaded: UDP clients whose listener is of the relayed
address's family (IPv4 or IPv6; peers always are), allocations without ``--max-bps``, peers that
are not this relay's own NAT-advertised addresses. An allocation of the other family than its
client's (REQUESTED-ADDRESS-FAMILY) gets entries that say so: the program hands its packets up
and counts them (punt reason ``family``). Everything else keeps the userspace path, which stays
complete: the program hands every packet it does not handle up unchanged.

With ``--workers`` the supervisor loads and attaches the program (``Offload.start``) and each
worker writes its own channels into the inherited maps (``Offload.adopt``), tagged with its
number so the supervisor can ``purge`` a dead worker's entries before restarting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from turnpike.relay.allocation import Allocation, Traffic
from turnpike.relay.bpf import BpfMap, BpfObject, possible_cpus

log = logging.getLogger("turnpike.relay")

MODES = ("auto", "tc", "off")
PROGRAM = "turnpike_fastpath"
OBJECT_NAME = "fastpath.bpf.o"
# The program's enum punt_reason, in order.
PUNT_REASONS = ("expired", "length", "mtu", "size", "family", "checksum")


# <linux/netlink.h>, <linux/rtnetlink.h>
_NETLINK_ROUTE = 0
_NLM_F_REQUEST = 1
_RTM_NEWROUTE = 24
_RTM_GETROUTE = 26
_RTA_DST = 1
_RTA_OIF = 4
_RTA_PREFSRC = 7


class OffloadError(RuntimeError):
    """``--offload tc`` was asked for and cannot be had."""


# An address as the maps hold it: 16 bytes, IPv6 as is, IPv4 in the first four (then zeros).
Address = ctypes.c_uint8 * 16


def _family(ip: str) -> int:
    """4 or 6, as the program's ``family`` fields say."""
    return 6 if ":" in ip else 4


def _address(ip: str) -> ctypes.Array[ctypes.c_uint8]:
    """``ip`` in the maps' form; a wildcard (0.0.0.0 or ::) is all zeros, as keys want it."""
    if _family(ip) == 6:
        return Address.from_buffer_copy(socket.inet_pton(socket.AF_INET6, ip))
    return Address.from_buffer_copy(socket.inet_aton(ip) + bytes(12))


def _be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), sys.byteorder)


class ClientKey(ctypes.Structure):
    _fields_ = [
        ("client_ip", Address),
        ("server_ip", Address),
        ("client_port", ctypes.c_uint16),
        ("server_port", ctypes.c_uint16),
        ("channel", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class PeerKey(ctypes.Structure):
    _fields_ = [
        ("peer_ip", Address),
        ("relay_ip", Address),
        ("peer_port", ctypes.c_uint16),
        ("relay_port", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class Route(ctypes.Structure):
    _fields_ = [
        ("src_ip", Address),
        ("dst_ip", Address),
        ("src_port", ctypes.c_uint16),
        ("dst_port", ctypes.c_uint16),
        ("channel", ctypes.c_uint16),
        ("family", ctypes.c_uint8),  # unlike the key's: the program hands the packet up
        ("pad", ctypes.c_uint8),
        ("ifindex", ctypes.c_uint32),
        ("owner", ctypes.c_uint32),
        ("expires_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


def object_path() -> Path:
    """Where ``scripts/install`` put the compiled program (it may not exist)."""
    return Path(str(resources.files("turnpike.relay").joinpath(OBJECT_NAME)))


def monotonic_ns(expiry: float) -> int:
    """A ``time.monotonic()`` instant as ``bpf_ktime_get_ns()`` counts (both CLOCK_MONOTONIC)."""
    return max(0, int(expiry * 1e9))


@dataclass(slots=True)
class _Entry:
    """One channel as installed: its two keys and what was written."""

    peer: tuple[str, int]
    expires_ns: int
    client_key: ClientKey
    peer_key: PeerKey
    relays: bool  # False: client and peer differ in family, the program only counts punts


@dataclass(slots=True)
class _Installed:
    entries: dict[int, _Entry] = field(default_factory=dict)
    folded: Traffic = field(default_factory=Traffic)  # counts of entries already deleted


class Routes:
    """The egress interface for a destination, asked of the kernel's routing table.

    One netlink request (RTM_GETROUTE, as ``ip route get`` sends) per new channel. The standard
    library's netlink socket does it in a few lines; pyroute2's synchronous API would need an
    event loop of its own, which cannot run inside the relay's.
    """

    # nlmsghdr, rtmsg, one rtattr (RTA_DST) with an IPv4 or an IPv6 address
    _REQUESTS = {
        4: struct.Struct("=IHHII BBBBBBBBI HH4s"),
        6: struct.Struct("=IHHII BBBBBBBBI HH16s"),
    }

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
        self._sock.settimeout(1.0)
        self._sock.bind((0, 0))
        self._seq = 0

    def lookup(self, ip: str) -> tuple[int, str] | None:
        """(egress interface index, preferred source address) towards ``ip``; None: no route."""
        self._seq += 1
        af = socket.AF_INET6 if _family(ip) == 6 else socket.AF_INET
        packed = socket.inet_pton(af, ip)
        layout = self._REQUESTS[_family(ip)]
        request = layout.pack(
            layout.size, _RTM_GETROUTE, _NLM_F_REQUEST, self._seq, 0,
            af, 8 * len(packed), 0, 0, 0, 0, 0, 0, 0,
            4 + len(packed), _RTA_DST, packed,
        )  # fmt: skip
        try:
            self._sock.send(request)
            while True:
                answer = self._sock.recv(65536)
                length, kind, _, seq, _ = struct.unpack_from("=IHHII", answer)
                if seq == self._seq:
                    break
        except OSError as exc:
            log.debug("no route to %s: %s", ip, exc)
            return None
        if kind != _RTM_NEWROUTE:
            return None  # NLMSG_ERROR: no route
        oif = source = None
        offset = 16 + 12  # nlmsghdr, rtmsg
        while offset + 4 <= length:
            size, attr = struct.unpack_from("=HH", answer, offset)
            if size < 4:
                break
            if attr == _RTA_OIF:
                oif = int(struct.unpack_from("=I", answer, offset + 4)[0])
            elif attr == _RTA_PREFSRC:
                source = socket.inet_ntop(af, answer[offset + 4 : offset + 4 + len(packed)])
            offset += (size + 3) & ~3
        return None if oif is None or source is None else (oif, source)

    def close(self) -> None:
        self._sock.close()


class Offload:
    """The fast path of one relay process; inactive (every method a no-op) unless started."""

    def __init__(self) -> None:
        self.active = False
        self.mode = "off"  # what is in force: "tc" or "off"
        self._object: BpfObject | None = None
        self._to_peer: BpfMap | None = None
        self._to_client: BpfMap | None = None
        self._punted: BpfMap | None = None
        self._routes: Routes | None = None
        self._installed: dict[Allocation, _Installed] = {}
        self._retired = Traffic()  # kernel counts of allocations that have ended
        self._sweeper: asyncio.Task[None] | None = None
        self._follow = False  # attach to interfaces that appear later
        self._full_logged = False
        self._owner = 0  # with --workers: this worker's number in the entries it writes

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def start(
        cls, mode: str, *, shared_ports: bool = False, interfaces: list[int] | None = None
    ) -> Offload:
        """Load and attach the program per ``mode`` (auto, tc or off).

        ``auto`` falls back to the userspace path with one log line when the program cannot be
        had; ``tc`` raises OffloadError instead. ``shared_ports``: this is a ``--workers`` process
        without maps from its supervisor (which logged why). ``interfaces`` defaults to every
        interface of this network namespace, followed as interfaces come and go.
        """
        offload = cls()
        if mode not in MODES:
            raise ValueError(f"--offload must be one of {', '.join(MODES)}")
        if mode == "off":
            log.info("kernel fast path off (--offload off): relaying in userspace")
            return offload
        if shared_ports:  # a --workers process the supervisor gave no maps: it said why
            return offload
        try:
            offload._load(interfaces)
        except (OffloadError, OSError) as exc:
            offload.close()
            if mode == "tc":
                raise OffloadError(f"--offload tc: {exc}") from None
            log.info(
                "kernel fast path unavailable (%s): relaying in userspace",
                exc,
                extra={"event": "offload_unavailable", "reason": str(exc)},
            )
        return offload

    @classmethod
    def adopt(cls, map_fds: tuple[int, int, int], owner: int) -> Offload:
        """A ``--workers`` process's view: the supervisor loaded the program, attached it and
        owns the maps; this process writes its own channels, tagged ``owner``."""
        offload = cls()
        offload._to_peer = BpfMap(map_fds[0], "to_peer")
        offload._to_client = BpfMap(map_fds[1], "to_client")
        offload._punted = BpfMap(map_fds[2], "punted")
        offload._routes = Routes()
        offload._owner = owner
        offload.active = True
        offload.mode = "tc"
        return offload

    @property
    def adopted(self) -> bool:
        """True in a --workers process (the supervisor holds the program and its attachment)."""
        return self.active and self._object is None

    @property
    def map_fds(self) -> tuple[int, int, int]:
        """The maps' descriptors, for the --workers processes this one starts."""
        assert self._to_peer is not None and self._to_client is not None
        assert self._punted is not None
        return self._to_peer.fd, self._to_client.fd, self._punted.fd

    def purge(self, owner: int) -> int:
        """Delete every entry ``owner`` (a dead --workers process) wrote; how many went."""
        if self._to_peer is None or self._to_client is None:
            return 0
        gone = 0
        for table, key_type in ((self._to_peer, ClientKey), (self._to_client, PeerKey)):
            for key, value in table.items(key_type, Route):
                if value.owner == owner:
                    table.delete(key)
                    gone += 1
        return gone

    def _load(self, interfaces: list[int] | None) -> None:
        path = object_path()
        if not path.is_file():
            raise OffloadError(f"{OBJECT_NAME} was not built (scripts/install builds it)")
        obj = self._object = BpfObject(path)
        self._to_peer = obj.map("to_peer")
        self._to_client = obj.map("to_client")
        self._punted = obj.map("punted")
        self._routes = Routes()
        self._follow = interfaces is None
        indexes = interfaces if interfaces is not None else [i for i, _ in socket.if_nameindex()]
        for ifindex in indexes:
            obj.attach_tc_ingress(PROGRAM, ifindex)
        self.active = True
        self.mode = "tc"
        log.info(
            "kernel fast path on: ChannelData over UDP (IPv4 and IPv6) relayed by TC on %d "
            "interfaces",
            len(indexes),
            extra={"event": "offload_active", "interfaces": len(indexes)},
        )

    def start_sweeping(self, interval: float) -> None:
        if (self.active or self._object is not None) and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(interval))

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:  # a bug here must not stop the sweep; the kernel expires anyway
                log.exception("fast path sweep failed")

    async def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    def close(self) -> None:
        """Detach the program and free its maps; relaying continues in userspace only."""
        for alloc in list(self._installed):
            self.forget(alloc)
        if self._routes is not None:
            self._routes.close()
            self._routes = None
        if self._object is not None:
            self._object.close()
            self._object = None
        self.active = False
        self.mode = "off"

    # ---------------------------------------------------------------- entries

    def sync(self, alloc: Allocation) -> None:
        """Make the kernel's entries for ``alloc`` match its channels and lifetimes."""
        if not self.active:
            return
        wanted = self._wanted(alloc)
        installed = self._installed.get(alloc)
        if installed is None:
            if not wanted:
                return
            installed = self._installed[alloc] = _Installed()
        for channel, entry in list(installed.entries.items()):
            target = wanted.get(channel)
            if target is None or target[0] != entry.peer or target[1] != entry.expires_ns:
                self._delete(installed, channel)
        for channel, (peer, expires_ns) in wanted.items():
            if channel not in installed.entries:
                self._insert(alloc, installed, channel, peer, expires_ns)

    def forget(self, alloc: Allocation) -> Traffic:
        """Remove every entry of ``alloc`` (it ended); returns what the kernel relayed for it."""
        installed = self._installed.pop(alloc, None)
        if installed is None:
            return Traffic()
        for channel in list(installed.entries):
            self._delete(installed, channel)
        self._retired.add(installed.folded)
        return installed.folded

    def sweep(self) -> None:
        """Drop the entries of channels userspace expired (the kernel already ignores them);
        follow the namespace's interfaces (a pod's veth on a host-network relay's node)."""
        for alloc in list(self._installed):
            self.sync(alloc)
        if self._follow and self._object is not None:
            self._follow_interfaces()

    def _follow_interfaces(self) -> None:
        assert self._object is not None
        present = {i for i, _ in socket.if_nameindex()}
        for ifindex in self._object.attached - present:
            self._object.release(ifindex)
        for ifindex in present - self._object.attached:
            try:
                self._object.attach_tc_ingress(PROGRAM, ifindex)
            except OSError as exc:  # it may be gone again already; userspace relays meanwhile
                log.debug("fast path not attached to interface %d: %s", ifindex, exc)

    @property
    def interfaces(self) -> int:
        """How many interfaces the program is attached to."""
        return len(self._object.attached) if self._object is not None else 0

    def _wanted(self, alloc: Allocation) -> dict[int, tuple[tuple[str, int], int]]:
        """channel -> (peer, expiry in ns) for every channel the kernel may relay."""
        endpoint = alloc.five_tuple[0]
        if endpoint.name != "udp" or alloc.bandwidth is not None:
            return {}
        if alloc.client.closed or _listener_address(endpoint) is None:
            return {}
        if "%" in alloc.five_tuple[1][0]:  # a link-local client with a scope: userspace's
            return {}
        wanted: dict[int, tuple[tuple[str, int], int]] = {}
        for channel, peer in alloc.channels.items():
            if peer in alloc.hairpin or "%" in peer[0]:
                continue
            expiry = min(alloc.channel_expiry.get(channel, 0.0), alloc.expires)
            wanted[channel] = ((peer[0], int(peer[1])), monotonic_ns(expiry))
        return wanted

    def _insert(
        self,
        alloc: Allocation,
        installed: _Installed,
        channel: int,
        peer: tuple[str, int],
        expires_ns: int,
    ) -> None:
        server = _listener_address(alloc.five_tuple[0])
        client = alloc.five_tuple[1]
        if server is None or time.clock_gettime_ns(time.CLOCK_MONOTONIC) >= expires_ns:
            return
        relayed = alloc.relayed
        client_key = ClientKey(
            _address(client[0]), _address(server[0]), _be16(client[1]), _be16(server[1]),
            _be16(channel), _family(client[0]),
        )  # fmt: skip
        peer_key = PeerKey(
            _address(peer[0]), _address(relayed[0]), _be16(peer[1]), _be16(relayed[1]),
            _family(peer[0]),
        )  # fmt: skip
        if _family(client[0]) != _family(peer[0]):
            # Across families the program relays nothing; these entries only let it count what
            # it hands up (a route of the other family than its key's says so).
            to_peer = Route(family=_family(peer[0]), owner=self._owner, expires_ns=expires_ns)
            to_client = Route(family=_family(client[0]), owner=self._owner, expires_ns=expires_ns)
            entry = _Entry(peer, expires_ns, client_key, peer_key, relays=False)
            self._write(installed, channel, entry, to_peer, to_client)
            return
        assert self._routes is not None
        to_peer_route = self._routes.lookup(peer[0])
        to_client_route = self._routes.lookup(client[0])
        if to_peer_route is None or to_client_route is None:
            return  # no route: userspace relays (and reports) it
        # A socket bound to a wildcard answers from the address the route prefers, as the
        # kernel would for userspace; its key has address 0, which the program tries second.
        wildcard = ("0.0.0.0", "::")
        server_src = to_client_route[1] if server[0] in wildcard else server[0]
        relayed_src = to_peer_route[1] if relayed[0] in wildcard else relayed[0]
        to_peer = Route(
            _address(relayed_src), _address(peer[0]), _be16(relayed[1]), _be16(peer[1]), 0,
            _family(peer[0]), 0, to_peer_route[0], self._owner, expires_ns,
        )  # fmt: skip
        to_client = Route(
            _address(server_src), _address(client[0]), _be16(server[1]), _be16(client[1]),
            _be16(channel), _family(client[0]), 0, to_client_route[0], self._owner, expires_ns,
        )  # fmt: skip
        entry = _Entry(peer, expires_ns, client_key, peer_key, relays=True)
        self._write(installed, channel, entry, to_peer, to_client)

    def _write(
        self, installed: _Installed, channel: int, entry: _Entry, to_peer: Route, to_client: Route
    ) -> None:
        assert self._to_peer is not None and self._to_client is not None
        # The reverse direction first: a peer's answer never races ahead of its entry.
        try:
            self._to_client.update(entry.peer_key, to_client)
            self._to_peer.update(entry.client_key, to_peer)
        except OSError as exc:  # full maps (E2BIG): this channel stays in userspace, correct
            self._to_client.pop(entry.peer_key, Route())
            if not self._full_logged:
                self._full_logged = True
                log.warning(
                    "kernel fast path: cannot add a channel (%s); such channels are relayed in "
                    "userspace",
                    exc,
                    extra={"event": "offload_insert_failed", "reason": str(exc)},
                )
            return
        installed.entries[channel] = entry

    def _delete(self, installed: _Installed, channel: int) -> None:
        assert self._to_peer is not None and self._to_client is not None
        entry = installed.entries.pop(channel)
        held = Route()
        if self._to_peer.pop(entry.client_key, held):
            installed.folded.to_peer_packets += held.packets
            installed.folded.to_peer_bytes += held.bytes
        held = Route()
        if self._to_client.pop(entry.peer_key, held):
            installed.folded.to_client_packets += held.packets
            installed.folded.to_client_bytes += held.bytes

    # ---------------------------------------------------------------- reading

    @property
    def channels(self) -> int:
        """Channels the kernel relays (not those it only counts, across families)."""
        return sum(e.relays for i in self._installed.values() for e in i.entries.values())

    def traffic(self) -> Traffic:
        """Everything the kernel relayed: ended allocations, deleted and live entries."""
        total = Traffic()
        total.add(self._retired)
        for installed in self._installed.values():
            total.add(self._kernel(installed))
        return total

    def total(self, alloc: Allocation) -> Traffic:
        """What ``alloc`` relayed on both paths so far: userspace's counts plus the kernel's."""
        total = Traffic()
        total.add(alloc.traffic)
        installed = self._installed.get(alloc)
        if installed is not None:
            total.add(self._kernel(installed))
        return total

    def _kernel(self, installed: _Installed) -> Traffic:
        """The kernel's counts for one allocation: deleted entries and live ones."""
        total = Traffic()
        total.add(installed.folded)
        for entry in installed.entries.values():
            for packets, octets, direction in self._live(entry):
                if direction == "to_peer":
                    total.to_peer_packets += packets
                    total.to_peer_bytes += octets
                else:
                    total.to_client_packets += packets
                    total.to_client_bytes += octets
        return total

    def _live(self, entry: _Entry) -> Iterator[tuple[int, int, str]]:
        assert self._to_peer is not None and self._to_client is not None
        held = Route()
        if self._to_peer.lookup(entry.client_key, held):
            yield held.packets, held.bytes, "to_peer"
        held = Route()
        if self._to_client.lookup(entry.peer_key, held):
            yield held.packets, held.bytes, "to_client"

    def punted(self) -> dict[str, int]:
        """Packets that matched an entry but were handed to userspace, by reason."""
        if self._punted is None:
            return {}
        cpus = possible_cpus()
        counts: dict[str, int] = {}
        for index, reason in enumerate(PUNT_REASONS):
            values = (ctypes.c_uint64 * cpus)()
            self._punted.lookup(ctypes.c_uint32(index), values)
            counts[reason] = sum(values)
        return counts


def _listener_address(endpoint: Any) -> tuple[str, int] | None:
    """The address (maybe a wildcard) and port a UDP listener is bound to; None when it has
    none, or is bound to a link-local address with a scope (not offloaded)."""
    transport = getattr(endpoint, "transport", None)
    if transport is None:
        return None
    sockname = transport.get_extra_info("sockname")
    if not sockname or (len(sockname) > 3 and sockname[3]):
        return None
    return str(sockname[0]), int(sockname[1])
