"""Client-facing transports: a UDP DatagramProtocol and TCP/TLS stream framing.

Both hand STUN messages to ``RelayServer.handle_stun`` and ChannelData straight to the client's
allocation, so the ChannelData path is: header check, one dict lookup, one ``sendto``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

from turnpike.relay.allocation import Allocation, ClientSink
from turnpike.relay.fairshare import OUT_OF_RESOURCES
from turnpike.relay.server import RelayServer

# A STUN message over TCP is at most this large; anything claiming more is garbage.
MAX_STUN_LENGTH = 8192
MAX_BUFFER = 2 * 65536
ALLOCATE_TIMEOUT = 60.0  # seconds a TCP/TLS connection may stay open without an allocation
SNIFF_TIMEOUT = 10.0  # seconds a TLS-port connection has to send its first byte and handshake


async def _peek(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The first byte the client sent, left in the socket for whoever reads it next."""
    conn.setblocking(False)
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await readable
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv(1, socket.MSG_PEEK)


def _family_of(host: str) -> int:
    return 6 if ":" in host else 4


class UdpListener(asyncio.DatagramProtocol):
    name = "udp"

    def __init__(self, server: RelayServer, family: int) -> None:
        self.server = server
        self.local_family = family
        self.allocations: dict[Any, Allocation] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 4:
            return
        first = data[0]
        if 0x40 <= first <= 0x7F:  # ChannelData: the hot path
            alloc = self.allocations.get(addr)
            if alloc is not None:
                alloc.to_peer_channel(data, (first << 8) | data[1], (data[2] << 8) | data[3])
        elif first < 0x40:
            self.server.handle_stun(data, self, addr)
        # Anything else is not ours: dropped silently, as RFC 8489 asks for UDP.

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP from a client that went away; its allocation expires on its own

    def reply(self, data: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def sink(self, addr: Any) -> ClientSink:
        assert self.transport is not None
        return ClientSink(self.transport, addr, stream=False)

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS client connection: frames STUN messages and ChannelData (RFC 8656 §12.5)."""

    def __init__(self, server: RelayServer, name: str, family: int) -> None:
        self.server = server
        self.name = name
        self.local_family = family
        self.allocations: dict[Any, Allocation] = {}
        self.transport: asyncio.Transport | None = None
        self.addr: Any = None
        self.buffer = bytearray()
        self._idle: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.addr = transport.get_extra_info("peername")
        if not self.server.connection_opened(self.addr[0]):
            self._abort()  # over its address's share: closed before it costs more than its fd
            return
        self._counted = True
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(ALLOCATE_TIMEOUT, self._close_if_unallocated)

    def _close_if_unallocated(self) -> None:
        # A connection that never got an allocation only holds a socket and a buffer:
        # close it, as coturn does after its allocate timeout.
        if not self.allocations:
            self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self._counted:
            self._counted = False
            self.server.connection_closed(self.addr[0])
        self.server.endpoint_closed(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        while len(buf) >= 4:
            first = buf[0]
            length = (buf[2] << 8) | buf[3]
            if 0x40 <= first <= 0x7F:
                # RFC 8656 §12.5: on streams ChannelData is padded to a multiple of 4 bytes.
                total = 4 + length + (-length % 4)
                if len(buf) < total:
                    break
                frame = bytes(buf[:total])
                del buf[:total]
                alloc = self.allocations.get(self.addr)
                if alloc is not None:
                    alloc.to_peer_channel(frame, (first << 8) | frame[1], length)
            elif first < 0x40 and length <= MAX_STUN_LENGTH and not length % 4:
                total = 20 + length
                if len(buf) < total:
                    break
                frame = bytes(buf[:total])
                del buf[:total]
                if not self.server.handle_stun(frame, self, self.addr):
                    self._abort()
                    return
            else:
                self.server.stats.malformed[self.name] += 1
                self._abort()  # garbage on a stream: we can never find the next frame again
                return
        if len(buf) > MAX_BUFFER:
            self._abort()

    def _abort(self) -> None:
        self.buffer.clear()
        if self.transport is not None:
            self.transport.abort()

    def reply(self, data: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def sink(self, addr: Any) -> ClientSink:
        assert self.transport is not None
        return ClientSink(self.transport, addr, stream=True)

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()


def _tcp_listener(host: str, port: int, reuse_port: bool, family: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _udp_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if _family_of(host) == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listeners:
    """The sockets a relay process listens on; closed together."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.udp: list[tuple[UdpListener, asyncio.DatagramTransport]] = []
        self.accepting: list[tuple[socket.socket, asyncio.Task[None]]] = []
        self._sniffing: set[asyncio.Task[None]] = set()

    async def listen(
        self,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """UDP and TCP on ``host:port`` (TLS or plain TCP when ``tls``); returns the address.

        With port 0 the UDP port is chosen first and TCP takes the same number, so tests can
        listen on a free port for both.
        """
        loop = asyncio.get_running_loop()
        family = _family_of(host)
        if tls is not None:
            return await self._listen_tls_or_plain(host, port, reuse_port, tls, family)
        # With port 0 the UDP port may be taken for TCP by someone else: try a few numbers.
        for attempt in range(20 if port == 0 else 1):
            udp_sock = _udp_socket(host, port, reuse_port)
            chosen = int(udp_sock.getsockname()[1])
            try:
                tcp_sock = _tcp_listener(host, chosen, reuse_port, family)
            except OSError:
                udp_sock.close()
                if attempt == 19 or port != 0:
                    raise
                continue
            break
        listener = UdpListener(self.server, family)
        transport, _ = await loop.create_datagram_endpoint(lambda: listener, sock=udp_sock)
        self.udp.append((listener, transport))
        self.accepting.append((tcp_sock, loop.create_task(self._accept(tcp_sock, None, family))))
        bound = tcp_sock.getsockname()
        return str(bound[0]), int(bound[1])

    async def _listen_tls_or_plain(
        self, host: str, port: int, reuse_port: bool, tls: ssl.SSLContext, family: int
    ) -> tuple[str, int]:
        """A TLS listener that also speaks plain TURN over TCP.

        The hosted token format lists ``turn:host:443?transport=tcp`` (plain TURN) for the port
        that ``turns:`` clients reach with TLS, so one port must serve both. The first byte tells
        them apart: a TLS record starts with 0x16, STUN with 0x00/0x01, ChannelData 0x40-0x7F.
        """
        loop = asyncio.get_running_loop()
        sock = _tcp_listener(host, port, reuse_port, family)
        self.accepting.append((sock, loop.create_task(self._accept(sock, tls, family))))
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

    async def _accept(
        self, listener: socket.socket, tls: ssl.SSLContext | None, family: int
    ) -> None:
        """Accept connections ourselves (not ``create_server``), so running out of descriptors
        is seen, counted and logged here: uvloop would drop such connections silently."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                if exc.errno in OUT_OF_RESOURCES:
                    self.server.out_of_fds("accept", exc)
                await asyncio.sleep(0.1)
                continue
            if tls is None:
                await self._serve(conn, "tcp", family)
                continue
            # One task per new connection (not per packet) until it has said which protocol.
            task = loop.create_task(self._sniff(conn, tls, family))
            self._sniffing.add(task)
            task.add_done_callback(self._sniffing.discard)

    async def _sniff(self, conn: socket.socket, tls: ssl.SSLContext, family: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(SNIFF_TIMEOUT):
                first = await _peek(loop, conn)
                if not first:
                    conn.close()
                    return
                use_tls = first[0] == 0x16
                name = "tls" if use_tls else "tcp"
                await loop.connect_accepted_socket(
                    lambda: StreamConnection(self.server, name, family),
                    conn,
                    ssl=tls if use_tls else None,
                )
        except (OSError, TimeoutError, ssl.SSLError):
            conn.close()

    async def _serve(
        self, conn: socket.socket, name: str, family: int, tls: ssl.SSLContext | None = None
    ) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: StreamConnection(self.server, name, family), conn, ssl=tls
            )
        except (OSError, ssl.SSLError):
            conn.close()

    async def close(self) -> None:
        for listener, task in self.accepting:
            task.cancel()
            listener.close()
        for task in list(self._sniffing):
            task.cancel()
        for _, transport in self.udp:
            transport.close()
