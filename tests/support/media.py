"""Loopback peers for the stream gateway's tests: a test CA, TLS WebSocket servers (well-behaved
and hostile), an HTTP server for webhooks and callbacks, an RTP peer, and real speech audio."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import random
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support import free_port, require_tool

# ---- certificates ----------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass
class TestCA:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it."""

    __test__ = False  # not a test class, despite the name

    directory: Path
    ca_file: Path = field(init=False)
    cert_file: Path = field(init=False)
    key_file: Path = field(init=False)

    def __post_init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Turnpike test CA"))
            .issuer_name(_name("Turnpike test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.directory / "ca.pem"
        self.cert_file = self.directory / "server.pem"
        self.key_file = self.directory / "server.key"
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


# ---- WebSocket servers -----------------------------------------------------------------------


@dataclass
class Conn:
    """One WebSocket connection the gateway opened, as the customer's server saw it."""

    path: str
    headers: dict[str, str]
    ws: web.WebSocketResponse
    messages: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    other_frames: list[str] = field(default_factory=list)  # anything but text (must stay empty)

    async def next(self, event: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next message (of type ``event`` if given, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if event is None or msg.get("event") == event:
                    return msg

    async def wait_closed(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == event]

    async def send(self, body: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(body))

    @property
    def stream_sid(self) -> str:
        return str(self.messages[1]["streamSid"])


Behaviour = Callable[[Conn], Awaitable[None]]


async def read_all(conn: Conn) -> None:
    """The default behaviour: record every text message until the gateway closes."""
    async for msg in conn.ws:
        if msg.type == web.WSMsgType.TEXT:
            conn.texts.append(msg.data)
            body = json.loads(msg.data)
            conn.messages.append(body)
            conn.inbox.put_nowait(body)
        else:
            conn.other_frames.append(msg.type.name)


class WsServer:
    """TLS WebSocket server on 127.0.0.1; each path runs a behaviour (default: record)."""

    def __init__(self, ca: TestCA) -> None:
        self.ca = ca
        self.behaviours: dict[str, Behaviour] = {}
        self.connections: list[Conn] = []
        self.arrivals: asyncio.Queue[Conn] = asyncio.Queue()
        self.statuses: dict[str, int] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"wss://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path in self.statuses:
            return web.Response(status=self.statuses[request.path], text="no")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = Conn(request.path, dict(request.headers), ws)
        self.connections.append(conn)
        self.arrivals.put_nowait(conn)
        try:
            await self.behaviours.get(request.path, read_all)(conn)
        finally:
            conn.close_code = ws.close_code
            conn.closed.set()
        return ws

    async def accept(self, timeout: float = 10.0) -> Conn:
        async with asyncio.timeout(timeout):
            return await self.arrivals.get()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, ssl_context=self.ca.server_context()
        )
        await site.start()

    async def stop(self) -> None:
        for conn in self.connections:
            if not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.ws.close(), 1)
        if self._runner is not None:
            await self._runner.cleanup()


def ws_accept_key(key: str) -> str:
    magic = key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    return base64.b64encode(hashlib.sha1(magic).digest()).decode()  # noqa: S324 - RFC 6455


RawBehaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(
    handler: RawBehaviour,
    ssl_context: ssl.SSLContext | None,
    *,
    limit: int = 65536,
    rcvbuf: int | None = None,
) -> AsyncIterator[int]:
    """A bare TCP (or TLS) server for misbehaviour aiohttp will not produce; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the gateway hung up on us, or the test is over
        finally:
            writer.close()
            tasks.discard(task)

    sock = socket.socket()
    if rcvbuf is not None:  # a small window makes a server that does not read stall quickly
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(on_client, sock=sock, ssl=ssl_context, limit=limit)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def ws_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer a WebSocket upgrade by hand."""
    head = await reader.readuntil(b"\r\n\r\n")
    key = ""
    for line in head.decode().split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            key = value.strip()
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + ws_accept_key(key).encode() + b"\r\n\r\n"
    )
    await writer.drain()


# ---- HTTP: webhooks and status callbacks ------------------------------------------------------


@dataclass
class Hit:
    method: str
    url: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    query: dict[str, str]


class HttpServer:
    """Plain HTTP on 127.0.0.1: serves TwiML/audio per path and records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.hits: list[Hit] = []
        self.arrivals: asyncio.Queue[Hit] = asyncio.Queue()
        self.fail_first: dict[str, int] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def twiml(self, path: str, document: str) -> str:
        self.routes[path] = (200, "application/xml", document.encode())
        return self.url(path)

    def serve(self, path: str, body: bytes, content_type: str = "audio/wav") -> str:
        self.routes[path] = (200, content_type, body)
        return self.url(path)

    async def _handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        hit = Hit(
            request.method,
            str(request.url),
            request.path,
            dict(request.headers),
            form,
            dict(request.query),
        )
        self.hits.append(hit)
        self.arrivals.put_nowait(hit)
        if self.fail_first.get(request.path, 0) > 0:
            self.fail_first[request.path] -= 1
            return web.Response(status=503)
        status, content_type, body = self.routes.get(request.path, (200, "text/plain", b"ok"))
        return web.Response(status=status, body=body, content_type=content_type)

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def wait_for(
        self, path: str, count: int = 1, timeout: float = 10.0, **form: str
    ) -> list[Hit]:
        """Wait until ``count`` requests to ``path`` (matching ``form`` values) have arrived."""

        def matching() -> list[Hit]:
            return [
                h
                for h in self.on(path)
                if all({**h.form, **h.query}.get(k) == v for k, v in form.items())
            ]

        async with asyncio.timeout(timeout):
            while len(matching()) < count:
                await self.arrivals.get()
        return matching()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def reference_signature(token: str, url: str, params: dict[str, str]) -> str:
    """The request-validation algorithm as customers' helper libraries implement it."""
    import hmac

    data = url
    for name in sorted(params):
        data += name + params[name]
    mac = hmac.new(token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


# ---- RTP peer (the media server's side) -------------------------------------------------------


@dataclass
class Packet:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> Packet:
    first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    assert first >> 6 == 2, "not RTP v2"
    offset = 12 + 4 * (first & 0x0F)
    return Packet(second & 0x7F, seq, ts, ssrc, bool(second & 0x80), data[offset:])


def rtp_packet(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    second = (0x80 if marker else 0) | pt
    return struct.pack("!BBHII", 0x80, second, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


class RtpPeer(asyncio.DatagramProtocol):
    """A media server's end of a call: sends RTP to the gateway and keeps what comes back."""

    def __init__(self) -> None:
        self.received: list[Packet] = []
        self.times: list[float] = []
        self.arrivals: asyncio.Queue[Packet] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.seq = random.randrange(0x10000)
        self.ts = random.randrange(0x100000000)
        self.ssrc = random.randrange(1, 0x7FFFFFFF)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        packet = parse_rtp(data)
        self.times.append(time.monotonic())
        self.received.append(packet)
        self.arrivals.put_nowait(packet)

    @property
    def address(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def packets(self, audio: bytes, pt: int = 0, frame: int = 160) -> list[bytes]:
        out = []
        for i in range(0, len(audio), frame):
            out.append(rtp_packet(pt, self.seq, self.ts, self.ssrc, audio[i : i + frame]))
            self.seq = (self.seq + 1) & 0xFFFF
            self.ts = (self.ts + frame) & 0xFFFFFFFF
        return out

    def dtmf_packets(self, event: int, pt: int = 101) -> list[bytes]:
        """One key press as RFC 4733 sends it: several updates, the end packet three times."""
        out = []
        for n, (end, duration) in enumerate(
            [(False, 160), (False, 320), (False, 480), (True, 640), (True, 640), (True, 640)]
        ):
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
            out.append(rtp_packet(pt, self.seq, self.ts, self.ssrc, payload, marker=n == 0))
            self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 640) & 0xFFFFFFFF
        return out

    async def send(self, packets: list[bytes], to: tuple[str, int], interval: float = 0.01) -> None:
        assert self.transport is not None
        for packet in packets:
            self.transport.sendto(packet, to)
            if interval:
                await asyncio.sleep(interval)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def rtp_peer() -> RtpPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(
        RtpPeer, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    return peer


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


# ---- audio -----------------------------------------------------------------------------------


def speech_ulaw(directory: Path, text: str) -> bytes:
    """Real speech: espeak-ng → 8 kHz mono µ-law, no header."""
    espeak = require_tool("espeak-ng", "apt-get install espeak-ng")
    sox = require_tool("sox", "apt-get install sox")
    wav = directory / "speech.wav"
    raw = directory / "speech.ulaw"
    subprocess.run([espeak, "-w", str(wav), text], check=True, capture_output=True)
    subprocess.run(
        [sox, str(wav), "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(raw)],
        check=True,
        capture_output=True,
    )
    return raw.read_bytes()


def speech_wav(directory: Path, text: str) -> bytes:
    """Real speech as espeak-ng writes it: a 16-bit PCM WAV at 22050 Hz."""
    espeak = require_tool("espeak-ng", "apt-get install espeak-ng")
    wav = directory / "speech-pcm.wav"
    subprocess.run([espeak, "-w", str(wav), text], check=True, capture_output=True)
    return wav.read_bytes()


def ulaw_wav(audio: bytes, rate: int = 8000) -> bytes:
    """Wrap raw µ-law in a WAV container (format 7), as telephony prompt files are stored."""
    fmt = struct.pack("<HHIIHH", 7, 1, rate, rate, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(audio)) + audio
    return b"RIFF" + struct.pack("<I", len(body)) + body
