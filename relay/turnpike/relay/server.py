"""The relay server: STUN/TURN request dispatch and the handlers (RFC 8489, RFC 8656).

Transports (``transports.py``) hand complete STUN messages here with the endpoint they arrived on;
ChannelData never comes here, it goes straight to the allocation. Every malformed or unexpected
input gets the error the RFCs name, or is dropped; nothing raises out of a handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from turnpike.core.addresses import AddressPolicy
from turnpike.core.keyring import Keyring
from turnpike.core.ratelimit import RateLimiter
from turnpike.relay import allocation as allocs
from turnpike.relay import fairshare as fair
from turnpike.relay import stun
from turnpike.relay.allocation import Allocation, AllocationTable, ClientSink, PortPool
from turnpike.relay.auth import Authenticator, Failure, Identity
from turnpike.relay.fairshare import FairShare, Refusal, Shares
from turnpike.relay.metrics import METHOD_NAMES, RelayStats
from turnpike.relay.offload import Offload
from turnpike.relay.stun import Address, Attr, Class, Method

log = logging.getLogger("turnpike.relay")

UDP_PROTOCOL = 17
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02


class Endpoint(Protocol):
    """What a transport gives the server: how to answer, and its allocations by client address."""

    allocations: dict[Any, Allocation]
    name: str  # "udp", "tcp" or "tls": a metric label
    local_family: int  # 4 or 6, the family the client reached us over

    def reply(self, data: bytes, addr: Any) -> None: ...

    def sink(self, addr: Any) -> ClientSink: ...

    def is_closing(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class RelayConfig:
    realm: str
    relay_ips: tuple[str, ...]  # where relay sockets bind, at most one per family
    external_ips: tuple[str, ...] = ()  # advertised instead, per family (1:1 NAT)
    relay_ports: tuple[int, int] = (49152, 65535)
    allow_peer: tuple[str, ...] = ()
    deny_peer: tuple[str, ...] = ()
    user_quota: int = fair.DEFAULT_TOKEN_QUOTA  # allocations per token; 0 = unlimited
    account_quota: int | None = None  # per account; None: half the ports; 0 = unlimited
    ip_quota: int | None = None  # per client address (IPv6: /64); None: a quarter of the ports
    total_quota: int = 0  # 0 = unlimited
    connections_per_ip: int | None = None  # TCP/TLS; None: a tenth of the fd limit (>= 100)
    reserve_percent: float = fair.DEFAULT_RESERVE_PERCENT  # of ports and fds, for small holders
    worker_of: int = 1  # --workers: the kernel spreads clients evenly, each worker gets its part
    max_bps: int = 0  # per allocation, payload bits per second both ways; 0 = unlimited
    default_lifetime: int = allocs.DEFAULT_LIFETIME
    max_lifetime: int = allocs.MAX_LIFETIME
    permission_lifetime: int = allocs.PERMISSION_LIFETIME
    channel_lifetime: int = allocs.CHANNEL_LIFETIME
    nonce_lifetime: float = 600.0
    max_permissions: int = 1000  # peer IPs per allocation; beyond → 508
    unauthorized_rate: float = 10.0  # UDP 401 replies per second per source IP; 0 = no limit
    sweep_interval: float = 1.0

    def shares(self, ports: int) -> Shares:
        return Shares.resolve(
            ports,
            fair.fd_limit(),
            token=self.user_quota,
            account=self.account_quota,
            ip=self.ip_quota,
            total=self.total_quota,
            connections=self.connections_per_ip,
            reserve_percent=self.reserve_percent,
        )


@dataclass(frozen=True, slots=True)
class _AllocateRequest:
    ip: str  # the relay address to bind
    even: bool
    reserve_next: bool
    token: int | None  # RESERVATION-TOKEN
    dont_fragment: bool
    lifetime: int


UNKNOWN_RESERVATION = Refusal("unknown_reservation", 508, "Insufficient Capacity (no reservation)")


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


class RelayServer:
    def __init__(
        self,
        config: RelayConfig,
        keyring: Callable[[], Keyring],
        offload: Offload | None = None,
    ) -> None:
        self.config = config
        self.offload = offload if offload is not None else Offload()  # the kernel fast path
        self.keyring = keyring
        self.auth = Authenticator(keyring, config.realm, nonce_lifetime=config.nonce_lifetime)
        self.policy = AddressPolicy(config.allow_peer, config.deny_peer)
        self.table = AllocationTable(PortPool(*config.relay_ports))
        low, high = config.relay_ports
        ports = max(1, (high - low + 1) * len(config.relay_ips) // config.worker_of)
        self.fair_share = FairShare(config.shares(ports), ports, fair.fd_limit(), fair.fds_open())
        self.table.on_removed = self._removed
        self.stats = RelayStats()
        self.limiter = RateLimiter(config.unauthorized_rate, burst=max(config.unauthorized_rate, 1))
        self._log_limiter = RateLimiter(5, burst=20)
        self.relay_ip = {_family(ip): ip for ip in config.relay_ips}
        self.advertised_ip = dict(self.relay_ip)
        self.advertised_ip.update({_family(ip): ip for ip in config.external_ips})
        self.draining = False
        self.hairpin: dict[Any, Allocation] = {}  # advertised relay address → allocation (NAT)
        self._pending: set[tuple[int, Any]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._handlers = {
            Method.ALLOCATE: self._allocate,
            Method.REFRESH: self._refresh,
            Method.CREATE_PERMISSION: self._create_permission,
            Method.CHANNEL_BIND: self._channel_bind,
        }

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        self.offload.start_sweeping(self.config.sweep_interval)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                self.table.sweep()
            except Exception:  # a bug here must not stop expiry forever
                log.exception("allocation sweep failed")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.offload.stop_sweeping()
        for task in list(self._tasks):
            task.cancel()
        self.table.close()

    def begin_drain(self) -> None:
        """New Allocates get 403 from now on; existing allocations run until they end."""
        self.draining = True

    async def drained(self, grace: float) -> bool:
        """Wait until no allocation is left (True) or ``grace`` seconds pass (False)."""
        deadline = time.monotonic() + grace
        while len(self.table) or self._pending:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)
        return True

    def endpoint_closed(self, endpoint: Endpoint) -> None:
        """A TCP/TLS connection ended: its allocation ends with it (RFC 8656 §3.1)."""
        for alloc in list(endpoint.allocations.values()):
            self.table.remove(alloc, "connection_closed")

    def connection_opened(self, ip: str) -> bool:
        """A TCP/TLS connection arrived from ``ip``: False when it must be closed at once."""
        refused = self.fair_share.connect(ip, len(self.table.pool.in_use))
        if refused is None:
            return True
        self.stats.connections_refused[refused] += 1
        if self._log_limiter.allow(refused):
            log.warning(
                "connection refused: %s",
                refused,
                extra={"event": "connection_refused", "reason": refused},
            )
        return False

    def connection_closed(self, ip: str) -> None:
        self.fair_share.disconnect(ip)

    def _removed(self, alloc: Allocation, reason: str) -> None:
        endpoint: Endpoint = alloc.five_tuple[0]
        endpoint.allocations.pop(alloc.five_tuple[1], None)
        if self.hairpin.get(alloc.advertised) is alloc:
            del self.hairpin[alloc.advertised]
        alloc.client.closed = True
        kernel = self.offload.forget(alloc)  # the fast path's entries go first
        self.fair_share.give_back_allocation(alloc.user, alloc.five_tuple[1][0])
        self.stats.allocations_removed[reason] += 1
        t = allocs.Traffic()
        t.add(alloc.traffic)
        t.add(kernel)
        seconds = round(time.monotonic() - alloc.created, 1)
        log.info(
            "allocation %s:%d ended (%s) after %.0fs: %d/%d packets to peer/client"
            " (%d/%d of them in the kernel)",
            *alloc.relayed,
            reason,
            seconds,
            t.to_peer_packets,
            t.to_client_packets,
            kernel.to_peer_packets,
            kernel.to_client_packets,
            extra={
                "event": "allocation_ended",
                "relayed": f"{alloc.relayed[0]}:{alloc.relayed[1]}",
                "reason": reason,
                "seconds": seconds,
                "packets_to_peer": t.to_peer_packets,
                "packets_to_client": t.to_client_packets,
                "bytes_to_peer": t.to_peer_bytes,
                "bytes_to_client": t.to_client_bytes,
                "kernel_packets_to_peer": kernel.to_peer_packets,
                "kernel_packets_to_client": kernel.to_client_packets,
            },
        )

    # ---------------------------------------------------------------- entry points

    def handle_stun(self, data: bytes, endpoint: Endpoint, addr: Any) -> bool:
        """One STUN message from a client. False when it was malformed (TCP closes then)."""
        send = stun.parse_send_indication(data)  # the data path first, read lean
        if send is not None:
            try:
                self._relay_send(send[0], send[1], endpoint, addr)
            except Exception:  # as below: a bug costs the packet, never the listener
                log.exception("error relaying a Send indication over %s", endpoint.name)
            return True
        try:
            msg = stun.parse(data)
        except ValueError:
            self.stats.malformed[endpoint.name] += 1
            return False
        try:
            if msg.cls == Class.REQUEST:
                self._request(msg, endpoint, addr)
            elif msg.cls == Class.INDICATION and msg.method == Method.SEND:
                self._send_indication(msg, endpoint, addr)
            # Responses and other indications from clients mean nothing to a server: ignore.
        except Exception:  # a handler bug must cost one request, never the listener
            name = METHOD_NAMES.get(msg.method, hex(msg.method))
            log.exception("error handling %s over %s", name, endpoint.name)
            if msg.cls == Class.REQUEST:
                self._error(msg, endpoint, addr, 500)
        return True

    def _request(self, msg: stun.Message, endpoint: Endpoint, addr: Any) -> None:
        method = msg.method
        if not msg.magic_cookie and method != Method.BINDING:
            return  # RFC 3489 clients only ever get Binding answers
        if msg.unknown_required:
            self._error(msg, endpoint, addr, 420, unknown=tuple(msg.unknown_required))
            return
        if method == Method.BINDING:
            self._binding(msg, endpoint, addr)
            return
        handler = self._handlers.get(method)  # type: ignore[call-overload]
        if handler is None:
            self._error(msg, endpoint, addr, 400)
            return
        alloc = endpoint.allocations.get(addr)
        identity = self._authenticate(msg, endpoint, addr, alloc)
        if identity is not None:
            handler(msg, endpoint, addr, alloc, identity)

    def _authenticate(
        self, msg: stun.Message, endpoint: Endpoint, addr: Any, alloc: Allocation | None
    ) -> Identity | None:
        ip = addr[0]
        if alloc is not None:
            # Requests on a live allocation are checked against the key that created it, so
            # the allocation outlives its credential's expiry and the removal of its keyring
            # key (draft-uberti-behave-turn-rest §4.2).
            failure = self.auth.check_envelope(msg, ip)
            if failure is None:
                if msg.get(Attr.USERNAME) != alloc.username:
                    self._auth_failed(msg, endpoint, addr, Failure.BAD_INTEGRITY, notify=False)
                    code = 437 if msg.method == Method.ALLOCATE else 441
                    self._error(msg, endpoint, addr, code)
                    return None
                if msg.verify_integrity(alloc.key):
                    return Identity(alloc.username, alloc.user, alloc.key)
                failure = Failure.BAD_INTEGRITY
            self._auth_failed(msg, endpoint, addr, failure)
            return None
        result = self.auth.authenticate(msg, ip, check_expiry=msg.method == Method.ALLOCATE)
        if isinstance(result, Failure):
            self._auth_failed(msg, endpoint, addr, result)
            return None
        return result

    def _auth_failed(
        self,
        msg: stun.Message,
        endpoint: Endpoint,
        addr: Any,
        failure: Failure,
        notify: bool = True,
    ) -> None:
        if failure is not Failure.MISSING:  # the first, unauthenticated round trip is normal
            self.stats.auth_failures[failure.value] += 1
            log.debug("auth failure from %s: %s", endpoint.name, failure.value)
        if not notify:
            return
        if failure is Failure.BAD_REQUEST:
            self._error(msg, endpoint, addr, 400)
        elif failure is Failure.STALE_NONCE:
            self._error(msg, endpoint, addr, 438, challenge=True)
        else:
            self._error(msg, endpoint, addr, 401, challenge=True)

    # ---------------------------------------------------------------- replies

    def _success(
        self,
        msg: stun.Message,
        endpoint: Endpoint,
        addr: Any,
        attributes: dict[int, Any],
        key: bytes | None,
    ) -> bytes:
        response = stun.Message(msg.method, Class.SUCCESS, msg.transaction_id, attributes)
        response.magic_cookie = msg.magic_cookie
        data = response.encode(key, fingerprint=msg.has_fingerprint)
        endpoint.reply(data, addr)
        self.stats.request(msg.method, 200)
        return data

    def _error(
        self,
        msg: stun.Message,
        endpoint: Endpoint,
        addr: Any,
        code: int,
        *,
        key: bytes | None = None,
        challenge: bool = False,
        unknown: tuple[int, ...] = (),
        phrase: str | None = None,
    ) -> None:
        self.stats.request(msg.method, code)
        if code in (401, 438) and endpoint.name == "udp" and not self.limiter.allow(addr[0]):
            # A 401 is several times larger than the request that caused it; do not let a
            # spoofed source turn us into an amplifier.
            self.stats.unauthorized_dropped += 1
            return
        response = stun.Message(msg.method, Class.ERROR, msg.transaction_id)
        response.magic_cookie = msg.magic_cookie
        response.attributes[Attr.ERROR_CODE] = (
            code,
            phrase or stun.ERROR_REASONS.get(code, "Error"),
        )
        if unknown:
            response.attributes[Attr.UNKNOWN_ATTRIBUTES] = unknown
        if challenge:
            response.attributes[Attr.REALM] = self.config.realm
            response.attributes[Attr.NONCE] = self.auth.nonce(addr[0])
        endpoint.reply(response.encode(key, fingerprint=msg.has_fingerprint), addr)

    # ---------------------------------------------------------------- handlers

    def _binding(self, msg: stun.Message, endpoint: Endpoint, addr: Any) -> None:
        mapped = (addr[0], addr[1])
        attr = Attr.XOR_MAPPED_ADDRESS if msg.magic_cookie else Attr.MAPPED_ADDRESS
        self._success(msg, endpoint, addr, {attr: mapped}, None)

    def _lifetime(self, msg: stun.Message) -> int:
        requested = msg.get(Attr.LIFETIME)
        if requested is None:
            return self.config.default_lifetime
        return int(min(requested, self.config.max_lifetime))

    def _allocate(
        self,
        msg: stun.Message,
        endpoint: Endpoint,
        addr: Any,
        alloc: Allocation | None,
        identity: Identity,
    ) -> None:
        """Allocate (RFC 8656 §7.2): the request's checks, the fair share, then a relay socket."""
        if alloc is not None:
            self._allocate_again(msg, endpoint, addr, alloc, identity.key)
            return
        five = (id(endpoint), addr)
        if five in self._pending:
            return  # a retransmission while the relay socket is being set up
        request = self._allocate_request(msg, endpoint)
        if isinstance(request, int):
            self._error(msg, endpoint, addr, request, key=identity.key)
            return
        ports_in_use = len(self.table.pool.in_use)
        refusal = self.fair_share.check_allocation(identity.user, addr[0], ports_in_use)
        bound = self._relay_socket(request) if refusal is None else refusal
        if isinstance(bound, Refusal):
            self._refuse(msg, endpoint, addr, identity.key, bound)
            return
        sock, ip, reservation_token = bound
        if request.dont_fragment and not allocs.set_dont_fragment(sock):
            # RFC 8656 §7.2: a server that cannot honour DONT-FRAGMENT treats it as unknown.
            sock.close()
            self.table.pool.release(ip, int(sock.getsockname()[1]))
            self._error(msg, endpoint, addr, 420, key=identity.key, unknown=(Attr.DONT_FRAGMENT,))
            return
        self.fair_share.take_allocation(identity.user, addr[0])
        self._pending.add(five)
        finish = self._finish_allocate(
            msg, endpoint, addr, identity, sock, ip, request.lifetime, reservation_token
        )
        task = asyncio.get_running_loop().create_task(finish)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _allocate_again(
        self, msg: stun.Message, endpoint: Endpoint, addr: Any, alloc: Allocation, key: bytes
    ) -> None:
        if msg.transaction_id == alloc.transaction_id:
            endpoint.reply(alloc.response, addr)  # a retransmission: same answer
        else:
            self._error(msg, endpoint, addr, 437, key=key)

    def _allocate_request(self, msg: stun.Message, endpoint: Endpoint) -> _AllocateRequest | int:
        """What an Allocate asks for, or the error code that refuses it."""
        if self.draining:
            return 403
        transport = msg.get(Attr.REQUESTED_TRANSPORT)
        if transport is None:
            return 400
        if transport != UDP_PROTOCOL:
            return 442
        token = msg.get(Attr.RESERVATION_TOKEN)
        even = msg.get(Attr.EVEN_PORT)
        family_code = msg.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if token is not None and (even is not None or family_code is not None):
            return 400
        if family_code is not None and family_code not in (FAMILY_IPV4, FAMILY_IPV6):
            return 440
        if family_code is not None:
            family = 4 if family_code == FAMILY_IPV4 else 6
            if family not in self.relay_ip:
                return 440
        elif endpoint.local_family in self.relay_ip:
            # Browsers omit REQUESTED-ADDRESS-FAMILY; follow the family they reached us over.
            family = endpoint.local_family
        else:
            family = next(iter(self.relay_ip))
        return _AllocateRequest(
            ip=self.relay_ip[family],
            even=even is not None,
            reserve_next=even is not None and bool(even & 0x80),
            token=token,
            dont_fragment=Attr.DONT_FRAGMENT in msg,
            lifetime=self._lifetime(msg) or self.config.default_lifetime,  # 0 is no request
        )

    def _relay_socket(self, request: _AllocateRequest) -> tuple[socket.socket, str, int] | Refusal:
        """A bound relay socket, its address and a new reservation token (0 when none)."""
        if request.token is not None:
            reservation = self.table.take_reservation(request.token)
            if reservation is None:
                return UNKNOWN_RESERVATION
            return reservation.sock, reservation.ip, 0
        try:
            socks = self.table.pool.bind(
                request.ip, even=request.even, reserve_next=request.reserve_next
            )
        except OSError as exc:  # the pool raises only when the process is out of resources
            self.out_of_fds("allocate", exc)
            return fair.OUT_OF_FDS
        if not socks:
            return fair.NO_PORT
        token = self.table.reserve(socks[1], request.ip) if request.reserve_next else 0
        return socks[0], request.ip, token

    def _refuse(
        self, msg: stun.Message, endpoint: Endpoint, addr: Any, key: bytes, refusal: Refusal
    ) -> None:
        self.stats.refusals[refusal.label] += 1
        if self._log_limiter.allow(refusal.label):
            log.warning(
                "allocation refused: %s (%d %s)",
                refusal.label,
                refusal.code,
                refusal.phrase,
                extra={"event": "allocation_refused", "reason": refusal.label},
            )
        self._error(msg, endpoint, addr, refusal.code, key=key, phrase=refusal.phrase)

    def out_of_fds(self, where: str, exc: OSError) -> None:
        """EMFILE/ENFILE (or no buffer memory): counted and logged as what it is."""
        self.stats.fd_exhausted[where] += 1
        if self._log_limiter.allow("out_of_fds"):
            log.error(
                "out of file descriptors on %s: %s (limit %d); raise the limit (ulimit -n)",
                where,
                errno.errorcode.get(exc.errno or 0, exc),
                fair.fd_limit(),
                extra={"event": "out_of_fds", "where": where},
            )

    async def _finish_allocate(
        self,
        msg: stun.Message,
        endpoint: Endpoint,
        addr: Any,
        identity: Identity,
        sock: socket.socket,
        ip: str,
        lifetime: int,
        reservation_token: int,
    ) -> None:
        five = (id(endpoint), addr)
        bound = (ip, int(sock.getsockname()[1]))
        proto = allocs.RelayProtocol()
        try:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(lambda: proto, sock=sock)
        except OSError as exc:
            sock.close()
            self.table.pool.release(*bound)
            self.fair_share.give_back_allocation(identity.user, addr[0])
            refusal = fair.NO_PORT
            if exc.errno in fair.OUT_OF_RESOURCES:
                self.out_of_fds("allocate", exc)
                refusal = fair.OUT_OF_FDS
            self._refuse(msg, endpoint, addr, identity.key, refusal)
            return
        finally:
            self._pending.discard(five)
        if endpoint.is_closing():
            transport.close()
            self.table.pool.release(*bound)
            self.fair_share.give_back_allocation(identity.user, addr[0])
            return
        alloc = Allocation(
            (endpoint, addr),
            endpoint.sink(addr),
            identity.username,
            identity.user,
            identity.key,
            transport,
            bound,
            lifetime,
            msg.transaction_id,
            self.config.max_bps,
        )
        proto.allocation = alloc
        self.table.add(alloc)
        endpoint.allocations[addr] = alloc
        self.stats.allocations_created += 1
        advertised = (self.advertised_ip.get(alloc.family, ip), bound[1])
        alloc.advertised = advertised
        alloc.hairpin = self.hairpin
        if advertised != bound:
            self.hairpin[advertised] = alloc
        attributes: dict[int, Any] = {
            Attr.XOR_RELAYED_ADDRESS: advertised,
            Attr.LIFETIME: lifetime,
            Attr.XOR_MAPPED_ADDRESS: (addr[0], addr[1]),
        }
        if reservation_token:
            attributes[Attr.RESERVATION_TOKEN] = reservation_token
        alloc.response = self._success(msg, endpoint, addr, attributes, identity.key)
        log.info(
            "allocation %s:%d for user %r over %s, lifetime %ds",
            *advertised,
            identity.user,
            endpoint.name,
            lifetime,
            extra={
                "event": "allocation_created",
                "relayed": f"{advertised[0]}:{advertised[1]}",
                "client": f"{addr[0]}:{addr[1]}",
                "user": identity.user,
                "transport": endpoint.name,
                "lifetime": lifetime,
            },
        )

    def _refresh(
        self,
        msg: stun.Message,
        endpoint: Endpoint,
        addr: Any,
        alloc: Allocation | None,
        identity: Identity,
    ) -> None:
        if alloc is None:
            self._error(msg, endpoint, addr, 437, key=identity.key)
            return
        family_code = msg.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if family_code is not None and family_code != (
            FAMILY_IPV4 if alloc.family == 4 else FAMILY_IPV6
        ):
            self._error(msg, endpoint, addr, 443, key=identity.key)
            return
        lifetime = self._lifetime(msg)
        if lifetime == 0:
            self.table.remove(alloc, "deleted")
        else:
            alloc.expires = time.monotonic() + lifetime
            self.offload.sync(alloc)  # the kernel's entries carry the new expiry
        self._success(msg, endpoint, addr, {Attr.LIFETIME: lifetime}, identity.key)

    def _check_peer(
        self, msg: stun.Message, endpoint: Endpoint, addr: Any, alloc: Allocation, peer: Any
    ) -> bool:
        """The peer filter (403), then the family match (443); True when the peer may be used.

        The filter goes first so every spelling of a forbidden address gets the same 403,
        whatever family the allocation has.
        """
        if not self.policy.permits(peer[0]):
            method = Method(msg.method).name.lower()
            self.stats.peer_denied[method] += 1
            if self._log_limiter.allow("peer_denied"):  # authenticated, but still no log flood
                log.info(
                    "refused peer %s for %s (peer filter)",
                    peer[0],
                    method,
                    extra={"event": "peer_denied", "peer": peer[0], "method": method},
                )
            self._error(msg, endpoint, addr, 403, key=alloc.key)
            return False
        if _family(peer[0]) != alloc.family:
            self._error(msg, endpoint, addr, 443, key=alloc.key)
            return False
        return True

    def _create_permission(
        self,
        msg: stun.Message,
        endpoint: Endpoint,
        addr: Any,
        alloc: Allocation | None,
        identity: Identity,
    ) -> None:
        if alloc is None:
            self._error(msg, endpoint, addr, 437, key=identity.key)
            return
        if not msg.peer_addresses:
            self._error(msg, endpoint, addr, 400, key=alloc.key)
            return
        for peer in msg.peer_addresses:  # all or nothing (RFC 8656 §9.2)
            if not self._check_peer(msg, endpoint, addr, alloc, peer):
                return
        new = {peer[0] for peer in msg.peer_addresses} - alloc.permissions.keys()
        if len(alloc.permissions) + len(new) > self.config.max_permissions:
            self._error(msg, endpoint, addr, 508, key=alloc.key)  # bound one client's memory
            return
        for peer in msg.peer_addresses:
            alloc.permit(peer[0], self.config.permission_lifetime)
        self._success(msg, endpoint, addr, {}, alloc.key)

    def _channel_bind(
        self,
        msg: stun.Message,
        endpoint: Endpoint,
        addr: Any,
        alloc: Allocation | None,
        identity: Identity,
    ) -> None:
        if alloc is None:
            self._error(msg, endpoint, addr, 437, key=identity.key)
            return
        channel = msg.get(Attr.CHANNEL_NUMBER)
        peer = msg.get(Attr.XOR_PEER_ADDRESS)
        problem = None
        if channel is None or peer is None:
            problem = "missing CHANNEL-NUMBER or XOR-PEER-ADDRESS"
        elif not stun.CHANNEL_MIN <= channel <= stun.CHANNEL_MAX:
            problem = "channel number out of range"
        elif alloc.channels.get(channel, peer) != peer:
            problem = "channel number bound to another peer"
        elif alloc.peer_channels.get(peer, channel.to_bytes(2, "big")) != channel.to_bytes(
            2, "big"
        ):
            problem = "peer bound to another channel number"
        if problem is not None:
            log.debug("ChannelBind refused: %s", problem)
            self._error(msg, endpoint, addr, 400, key=alloc.key)
            return
        if not self._check_peer(msg, endpoint, addr, alloc, peer):
            return
        if (
            peer[0] not in alloc.permissions
            and len(alloc.permissions) >= self.config.max_permissions
        ):
            self._error(msg, endpoint, addr, 508, key=alloc.key)
            return
        alloc.bind_channel(channel, peer, self.config.channel_lifetime)
        self.offload.sync(alloc)  # only now may the kernel relay this channel
        self._success(msg, endpoint, addr, {}, alloc.key)

    def _send_indication(self, msg: stun.Message, endpoint: Endpoint, addr: Any) -> None:
        """A Send indication the lean reader passed on (an IPv6 peer, extra attributes...)."""
        peer = msg.get(Attr.XOR_PEER_ADDRESS)
        data = msg.get(Attr.DATA)
        # Indications are never answered (RFC 8656 §11.2); one with an unknown
        # comprehension-required attribute is discarded (RFC 8489 §6.3.3).
        if peer is not None and data is not None and not msg.unknown_required:
            self._relay_send(peer, data, endpoint, addr)

    def _relay_send(self, peer: Address, data: bytes, endpoint: Endpoint, addr: Any) -> None:
        alloc = endpoint.allocations.get(addr)
        if alloc is None:
            return
        if not alloc.to_peer_send(data, peer) and not self.policy.permits(peer[0]):
            self.stats.peer_denied["send"] += 1
