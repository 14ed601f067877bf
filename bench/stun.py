"""A small, independent STUN/TURN client codec for the load generator's control path.

Only what the benchmark needs: build requests and indications (with MESSAGE-INTEGRITY for the
long-term credential mechanism), parse responses, and ChannelData framing. It deliberately shares
no code with the relay under test, so a bug in one cannot hide a bug in the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field

MAGIC = 0x2112A442
MAGIC_BYTES = MAGIC.to_bytes(4, "big")
HEADER = struct.Struct("!HHI12s")

# methods
BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009

# classes
REQUEST = 0x000
INDICATION = 0x010
SUCCESS = 0x100
ERROR = 0x110

# attributes
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_TRANSPORT = 0x0019
XOR_MAPPED_ADDRESS = 0x0020
FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E

UDP_TRANSPORT = (17 << 24).to_bytes(4, "big")

Address = tuple[str, int]


def message_type(method: int, klass: int) -> int:
    """The 14-bit STUN type with the class bits interleaved (RFC 8489 §5)."""
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | klass


def split_type(mtype: int) -> tuple[int, int]:
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    return method, mtype & 0x0110


def xor_address(addr: Address) -> bytes:
    host, port = addr
    raw = socket.inet_aton(host)
    xip = bytes(a ^ b for a, b in zip(raw, MAGIC_BYTES, strict=True))
    return struct.pack("!BBH", 0, 1, port ^ (MAGIC >> 16)) + xip


def parse_xor_address(value: bytes) -> Address:
    family = value[1]
    if family != 1 or len(value) < 8:
        raise ValueError("only IPv4 XOR addresses are supported here")
    port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
    ip = bytes(a ^ b for a, b in zip(value[4:8], MAGIC_BYTES, strict=True))
    return socket.inet_ntoa(ip), port


def _attr(kind: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\x00" * pad


@dataclass
class Credentials:
    username: str
    password: str
    realm: str = ""
    nonce: bytes = b""

    @property
    def key(self) -> bytes:
        text = f"{self.username}:{self.realm}:{self.password}"
        return hashlib.md5(text.encode(), usedforsecurity=False).digest()


def rest_credentials(secret: str, user: str, ttl: int = 86400) -> Credentials:
    """TURN REST credentials: ``<expiry>:<user>`` and base64(HMAC-SHA1(secret, username))."""
    username = f"{int(time.time()) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return Credentials(username, base64.b64encode(digest).decode("ascii"))


def build(
    method: int,
    klass: int,
    attrs: list[tuple[int, bytes]],
    creds: Credentials | None = None,
    txid: bytes | None = None,
) -> bytes:
    """Encode a message; ``creds`` with a nonce add USERNAME, REALM, NONCE, MESSAGE-INTEGRITY."""
    tid = txid if txid is not None else os.urandom(12)
    body = b"".join(_attr(k, v) for k, v in attrs)
    if creds is not None and creds.nonce:
        body += _attr(USERNAME, creds.username.encode())
        body += _attr(REALM, creds.realm.encode())
        body += _attr(NONCE, creds.nonce)
        head = HEADER.pack(message_type(method, klass), len(body) + 24, MAGIC, tid)
        mac = hmac.new(creds.key, head + body, hashlib.sha1).digest()
        body += _attr(MESSAGE_INTEGRITY, mac)
    if klass == INDICATION:  # kept minimal: ChannelData's alternative on the data path
        return HEADER.pack(message_type(method, klass), len(body), MAGIC, tid) + body
    # FINGERPRINT, as browsers and most TURN clients send it (RFC 8489 §14.7)
    head = HEADER.pack(message_type(method, klass), len(body) + 8, MAGIC, tid)
    crc = (zlib.crc32(head + body) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    return head + body + _attr(FINGERPRINT, crc.to_bytes(4, "big"))


@dataclass
class Message:
    method: int
    klass: int
    txid: bytes
    attrs: dict[int, bytes] = field(default_factory=dict)

    @property
    def error(self) -> int:
        value = self.attrs.get(ERROR_CODE)
        if value is None or len(value) < 4:
            return 0
        return (value[2] & 0x7) * 100 + value[3]


def parse(data: bytes) -> Message:
    if len(data) < 20:
        raise ValueError("short STUN message")
    mtype, length, magic, txid = HEADER.unpack_from(data)
    if magic != MAGIC or mtype & 0xC000 or 20 + length > len(data):
        raise ValueError("not a STUN message")
    method, klass = split_type(mtype)
    attrs: dict[int, bytes] = {}
    pos = 20
    end = 20 + length
    while pos + 4 <= end:
        kind, size = struct.unpack_from("!HH", data, pos)
        attrs.setdefault(kind, bytes(data[pos + 4 : pos + 4 + size]))
        pos += 4 + size + ((-size) % 4)
    return Message(method, klass, txid, attrs)


def channel_data(channel: int, payload: bytes, stream: bool = False) -> bytes:
    """A ChannelData message; over TCP (``stream``) it is padded to a multiple of 4."""
    frame = struct.pack("!HH", channel, len(payload)) + payload
    if stream:
        frame += b"\x00" * ((-len(frame)) % 4)
    return frame


def send_indication(peer: Address, payload: bytes) -> bytes:
    return build(SEND, INDICATION, [(XOR_PEER_ADDRESS, xor_address(peer)), (DATA_ATTR, payload)])


class TurnError(RuntimeError):
    pass


class ControlClient:
    """Blocking request/response over one socket (UDP or TCP), for setting up allocations."""

    def __init__(self, sock: socket.socket, server: Address, tcp: bool) -> None:
        self.sock = sock
        self.server = server
        self.tcp = tcp
        self._buf = b""

    def _send(self, data: bytes) -> None:
        if self.tcp:
            self.sock.sendall(data)
        else:
            self.sock.sendto(data, self.server)

    def _recv_one(self, deadline: float) -> bytes:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no STUN response")
            self.sock.settimeout(left)
            if not self.tcp:
                return self.sock.recv(65536)
            while len(self._buf) >= 4:
                if self._buf[0] & 0xC0 == 0:  # STUN
                    if len(self._buf) < 20:
                        break
                    size = 20 + struct.unpack_from("!H", self._buf, 2)[0]
                else:  # ChannelData, padded
                    n = struct.unpack_from("!H", self._buf, 2)[0]
                    size = 4 + n + ((-n) % 4)
                if len(self._buf) < size:
                    break
                frame, self._buf = self._buf[:size], self._buf[size:]
                return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the TCP connection")
            self._buf += chunk

    def transact(self, request: bytes, timeout: float = 3.0) -> Message:
        txid = request[8:20]
        deadline = time.monotonic() + timeout
        interval = 0.25
        attempt_at = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError("STUN transaction timed out")
            if now >= attempt_at:
                self._send(request)
                attempt_at = now + (interval if not self.tcp else timeout)
                interval *= 2
            try:
                data = self._recv_one(min(deadline, attempt_at))
            except TimeoutError:
                continue
            try:
                msg = parse(data)
            except ValueError:
                continue
            if msg.txid == txid:
                return msg

    def request(
        self, method: int, attrs: list[tuple[int, bytes]], creds: Credentials | None
    ) -> Message:
        """A request with the 401/438 challenge dance; raises ``TurnError`` on a final error."""
        for _ in range(3):
            msg = self.transact(build(method, REQUEST, attrs, creds))
            if msg.klass == SUCCESS:
                return msg
            code = msg.error
            if creds is not None and code in (401, 438) and NONCE in msg.attrs:
                creds.nonce = msg.attrs[NONCE]
                if REALM in msg.attrs:
                    creds.realm = msg.attrs[REALM].decode()
                continue
            raise TurnError(f"method {method:#x} failed with {code}")
        raise TurnError(f"method {method:#x}: authentication did not converge")

    def allocate(self, creds: Credentials, lifetime: int = 600) -> Address:
        attrs = [(REQUESTED_TRANSPORT, UDP_TRANSPORT), (LIFETIME, struct.pack("!I", lifetime))]
        msg = self.request(ALLOCATE, attrs, creds)
        relayed = msg.attrs.get(XOR_RELAYED_ADDRESS)
        if relayed is None:
            raise TurnError("Allocate success without XOR-RELAYED-ADDRESS")
        return parse_xor_address(relayed)

    def channel_bind(self, creds: Credentials, channel: int, peer: Address) -> None:
        attrs = [
            (CHANNEL_NUMBER, struct.pack("!HH", channel, 0)),
            (XOR_PEER_ADDRESS, xor_address(peer)),
        ]
        self.request(CHANNEL_BIND, attrs, creds)

    def create_permission(self, creds: Credentials, peer: Address) -> None:
        self.request(CREATE_PERMISSION, [(XOR_PEER_ADDRESS, xor_address(peer))], creds)

    def refresh(self, creds: Credentials, lifetime: int) -> None:
        self.request(REFRESH, [(LIFETIME, struct.pack("!I", lifetime))], creds)

    def binding(self) -> Address:
        msg = self.transact(build(BINDING, REQUEST, []))
        mapped = msg.attrs.get(XOR_MAPPED_ADDRESS)
        if mapped is None:
            raise TurnError("Binding success without XOR-MAPPED-ADDRESS")
        return parse_xor_address(mapped)
