"""Relay test helpers: an in-process relay on loopback, a raw STUN/TURN client, a UDP echo peer.

The raw client speaks through the relay's own codec, which is fine for driving error paths byte by
byte; interoperability is proven separately with aioice, aiortc and coturn's tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from turnpike.core.credentials import make_username, turn_password
from turnpike.core.filewatch import FileWatcher
from turnpike.core.keyring import parse_keyring
from turnpike.relay import stun
from turnpike.relay.auth import long_term_key
from turnpike.relay.offload import Offload
from turnpike.relay.server import RelayConfig, RelayServer
from turnpike.relay.stun import Attr, Class, Method
from turnpike.relay.transports import Listeners

REALM = "test.turnpike"
SECRET = "test-secret-one"
LOOPBACK = "127.0.0.0/8"
# Wide enough that allocations left over by other tests never exhaust it.
TEST_PORTS = (20000, 29999)


def write_keyring(
    path: Path, keys: Sequence[tuple[str, str, bool]] = (("k1", SECRET, True),)
) -> Path:
    body = {"keys": [{"id": k, "secret": s, "signing": sign} for k, s, sign in keys]}
    path.write_text(json.dumps(body))
    return path


def credentials(secret: str = SECRET, user: str = "alice", ttl: int = 86400) -> tuple[str, str]:
    username = make_username(int(time.time()) + ttl, user)
    return username, turn_password(secret, username)


class RunningRelay:
    def __init__(self, server: RelayServer, address: tuple[str, int], watcher: Any) -> None:
        self.server = server
        self.address = address
        self.keyring = watcher

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]


@contextlib.asynccontextmanager
async def relay_server(
    keyring: Path, allow_peer: Sequence[str] = (LOOPBACK,), **overrides: Any
) -> AsyncIterator[RunningRelay]:
    """A relay in this process on 127.0.0.1 (UDP and TCP on one free port)."""
    watcher = FileWatcher(keyring, parse_keyring, interval=0.1)
    config = RelayConfig(
        realm=REALM,
        relay_ips=overrides.pop("relay_ips", ("127.0.0.1",)),
        relay_ports=overrides.pop("relay_ports", TEST_PORTS),
        allow_peer=tuple(allow_peer),
        **overrides,
    )
    # TURNPIKE_TEST_OFFLOAD=tc runs every in-process relay with the kernel fast path on
    # loopback (root only), so the whole relay suite can be run once with it and once without.
    offload = Offload()
    if os.environ.get("TURNPIKE_TEST_OFFLOAD") == "tc":
        offload = Offload.start("tc", interfaces=[socket.if_nametoindex("lo")])
    server = RelayServer(config, lambda: watcher.current, offload)
    listeners = Listeners(server)
    address = await listeners.listen("127.0.0.1", 0)
    server.start()
    watcher.start()
    try:
        yield RunningRelay(server, address, watcher)
    finally:
        await watcher.stop()
        await listeners.close()
        await server.close()
        offload.close()


class EchoPeer(asyncio.DatagramProtocol):
    """A UDP peer on loopback that echoes every datagram and remembers what it got."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.echo = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))
        if self.echo and self.transport is not None:
            self.transport.sendto(data, addr)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port


@contextlib.asynccontextmanager
async def echo_peer(host: str = "127.0.0.1") -> AsyncIterator[EchoPeer]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(EchoPeer, local_addr=(host, 0))
    try:
        yield peer
    finally:
        transport.close()


class _ClientProtocol(asyncio.DatagramProtocol, asyncio.Protocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.buffer = bytearray()
        self.closed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        while len(buf) >= 4:
            length = int.from_bytes(buf[2:4], "big")
            total = 4 + length + (-length % 4) if 0x40 <= buf[0] <= 0x7F else 20 + length
            if len(buf) < total:
                break
            self.queue.put_nowait(bytes(buf[:total]))
            del buf[:total]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class RawClient:
    """A minimal TURN client: send one message, read what comes back; long-term auth on request."""

    def __init__(self, transport: asyncio.BaseTransport, proto: _ClientProtocol, tcp: bool) -> None:
        self.transport = transport
        self.proto = proto
        self.tcp = tcp
        self.username: str | None = None
        self.password: str | None = None
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None

    @classmethod
    async def connect(
        cls,
        address: tuple[str, int],
        tcp: bool = False,
        tls: ssl.SSLContext | None = None,
        local_host: str | None = None,
    ) -> RawClient:
        """UDP, or TCP when ``tcp``; TLS over TCP when ``tls`` is given; from ``local_host``
        (another loopback address, say) when given."""
        loop = asyncio.get_running_loop()
        proto = _ClientProtocol()
        transport: asyncio.BaseTransport
        tcp = tcp or tls is not None
        local = (local_host, 0) if local_host is not None else None
        if tcp:
            transport, _ = await loop.create_connection(
                lambda: proto, *address, ssl=tls, local_addr=local
            )
        else:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: proto, local_addr=local, remote_addr=address
            )
        return cls(transport, proto, tcp)

    def login(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    @property
    def local_address(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send_raw(self, data: bytes) -> None:
        if self.tcp:
            self.transport.write(data + bytes(-len(data) % 4))  # type: ignore[attr-defined]
        else:
            self.transport.sendto(data)  # type: ignore[attr-defined]

    async def receive(self, timeout: float = 2.0) -> bytes:
        return await asyncio.wait_for(self.proto.queue.get(), timeout)

    async def receive_message(self, timeout: float = 2.0) -> stun.Message:
        while True:
            data = await self.receive(timeout)
            if not stun.is_channel_data(data):
                return stun.parse(data)

    async def transact(
        self, msg: stun.Message, key: bytes | None = None, timeout: float = 2.0
    ) -> stun.Message:
        """Send a request and wait for the response with its transaction id."""
        data = msg.encode(key, fingerprint=True)
        deadline = time.monotonic() + timeout
        for attempt in range(4):
            self.send_raw(data)
            wait = min(0.5 * 2**attempt, max(deadline - time.monotonic(), 0.01))
            try:
                while True:
                    reply = await self.receive_message(wait)
                    if reply.transaction_id == msg.transaction_id:
                        return reply
            except TimeoutError:
                if self.tcp or time.monotonic() >= deadline:
                    raise
        raise TimeoutError("no response")

    async def request(
        self,
        method: int,
        attributes: dict[int, Any] | None = None,
        peers: Sequence[tuple[str, int]] = (),
        authenticate: bool = True,
    ) -> stun.Message:
        """A request with long-term credentials; does the 401/438 round trip when needed."""
        for _ in range(3):
            msg = stun.Message(method, Class.REQUEST, attributes=dict(attributes or {}))
            msg.peer_addresses = list(peers)
            key = None
            if authenticate and self.key is not None:
                assert self.username is not None and self.realm is not None and self.nonce
                msg.attributes[Attr.USERNAME] = self.username
                msg.attributes[Attr.REALM] = self.realm
                msg.attributes[Attr.NONCE] = self.nonce
                key = self.key
            reply = await self.transact(msg, key)
            code = reply.error_code
            if authenticate and code in (401, 438) and self.username and Attr.NONCE in reply:
                if code == 401 and self.key is not None and reply.get(Attr.NONCE) == self.nonce:
                    return reply  # a real refusal, not a challenge
                self.nonce = reply.get(Attr.NONCE)
                self.realm = reply.get(Attr.REALM) or self.realm
                assert self.password is not None and self.realm is not None
                self.key = long_term_key(self.username, self.realm, self.password)
                continue
            return reply
        return reply

    async def allocate(self, extra: dict[int, Any] | None = None) -> tuple[str, int]:
        attrs: dict[int, Any] = {Attr.REQUESTED_TRANSPORT: 17}
        attrs.update(extra or {})
        reply = await self.request(Method.ALLOCATE, attrs)
        assert reply.cls == Class.SUCCESS, reply.get(Attr.ERROR_CODE)
        assert reply.verify_integrity(self.key or b"")
        relayed: tuple[str, int] = reply.attributes[Attr.XOR_RELAYED_ADDRESS]
        return relayed

    def send_channel(self, channel: int, payload: bytes) -> None:
        self.send_raw(stun.channel_header(channel, len(payload)) + payload)

    def close(self) -> None:
        self.transport.close()


@contextlib.asynccontextmanager
async def raw_client(
    address: tuple[str, int],
    tcp: bool = False,
    credentials: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    local_host: str | None = None,
) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(address, tcp, tls, local_host)
    if credentials is not None:
        client.login(*credentials)
    try:
        yield client
    finally:
        client.close()


def error_code(msg: stun.Message) -> int | None:
    return msg.error_code


def write_self_signed(folder: Path, name: str = "relay.test") -> tuple[Path, Path]:
    """A fresh self-signed certificate and key for 127.0.0.1 (PEM files in ``folder``)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
