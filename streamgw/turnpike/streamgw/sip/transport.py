"""SIP transports (RFC 3261 §18): UDP and TCP on one port, optionally TLS on another.

Each message goes to ``on_message(data, source, send, transport)`` with a ``send`` that answers
on the same way in: the UDP socket toward the source address and port (as with ``rport``), or
the TCP/TLS connection it came on. Stream transports are framed by ``Content-Length``; a stream
that cannot be framed (no length, too large) goes to ``on_broken`` and the connection is closed.
One bad message never stops a listener.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from turnpike.streamgw.sip.message import SipError, split_stream

log = logging.getLogger(__name__)

Address = tuple[str, int]
Send = Callable[[bytes], None]
OnMessage = Callable[[bytes, Address, Send, str], None]
OnBroken = Callable[[bytes, Address, Send, SipError], None]


class Listeners:
    def __init__(self, on_message: OnMessage, on_broken: OnBroken) -> None:
        self._on_message = on_message
        self._on_broken = on_broken
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.Server] = []
        self.port = 0
        self.tls_port = 0

    async def start(
        self,
        host: str,
        port: int,
        tls_listen: tuple[str, int] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """UDP and TCP on ``host:port`` (port 0: a free one, the same for both), TLS if given."""
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(host, port)
        )
        self.port = self._udp.get_extra_info("sockname")[1]
        self._servers.append(await asyncio.start_server(self._tcp_client, host, self.port))
        log.info("SIP listening on %s port %d (UDP and TCP)", host, self.port)
        if tls_listen is not None and tls is not None:
            server = await asyncio.start_server(self._tls_client, *tls_listen, ssl=tls)
            self._servers.append(server)
            self.tls_port = server.sockets[0].getsockname()[1]
            log.info("SIP over TLS listening on %s port %d", tls_listen[0], self.tls_port)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()

    def udp_send(self, addr: Address) -> Send:
        """Send datagrams to ``addr`` from the SIP port."""

        def send(data: bytes) -> None:
            if self._udp is not None and not self._udp.is_closing():
                self._udp.sendto(data, addr)

        return send

    def deliver(self, data: bytes, source: Address, send: Send, transport: str) -> None:
        try:
            self._on_message(data, source, send, transport)
        except Exception:  # one bad message must never stop a listener
            log.exception("SIP/%s from %s: unexpected failure", transport, source[0])

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._stream(reader, writer, "TCP")

    async def _tls_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._stream(reader, writer, "TLS")

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transport: str
    ) -> None:
        """One TCP or TLS connection: messages framed by Content-Length, answers on it."""
        peer = writer.get_extra_info("peername")
        source: Address = (peer[0], peer[1])

        def send(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        buffer = bytearray()
        try:
            while chunk := await reader.read(65536):
                buffer += chunk
                while True:
                    try:
                        data = split_stream(buffer)
                    except SipError as exc:
                        self._on_broken(bytes(buffer), source, send, exc)
                        return
                    if data is None:
                        break
                    self.deliver(data, source, send, transport)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, listeners: Listeners) -> None:
        self.listeners = listeners

    def datagram_received(self, data: bytes, addr: Any) -> None:
        source = (addr[0], addr[1])
        self.listeners.deliver(data, source, self.listeners.udp_send(source), "UDP")
