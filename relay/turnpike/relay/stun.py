"""STUN message codec (RFC 8489, with the TURN attributes of RFC 8656).

Table-driven: every attribute the relay understands has one row in ``ATTRIBUTES`` giving its name
and a decoder/encoder pair, so adding one is one line plus two small functions. Anything malformed
raises ``ValueError`` with a precise message; callers drop or answer 400, they never crash.

A parsed ``Message`` keeps the raw bytes so MESSAGE-INTEGRITY can be checked over exactly what the
client sent, and remembers the type of every attribute it did not understand so the server can
answer 420 for unknown comprehension-required ones.
"""

from __future__ import annotations

import binascii
import hmac
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_XOR_PORT = MAGIC_COOKIE >> 16  # X-Port is the port XORed with the cookie's top 16 bits
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E
_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")

Address = tuple[str, int]


class Method(IntEnum):
    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class Class(IntEnum):
    REQUEST = 0x000
    INDICATION = 0x010
    SUCCESS = 0x100
    ERROR = 0x110


class Attr(IntEnum):
    MAPPED_ADDRESS = 0x0001
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    # 0x8000-0xFFFF: comprehension-optional, ignored when not understood.
    ADDITIONAL_ADDRESS_FAMILY = 0x8000
    ADDRESS_ERROR_CODE = 0x8001
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    ICMP = 0x8004
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


ERROR_REASONS = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    500: "Server Error",
    508: "Insufficient Capacity",
}

# ---------------------------------------------------------------- attribute value codecs


def _decode_uint32(value: bytes, _tid: bytes) -> int:
    if len(value) != 4:
        raise ValueError("STUN attribute must be 4 bytes")
    return int.from_bytes(value, "big")


def _encode_uint32(value: int, _tid: bytes) -> bytes:
    return value.to_bytes(4, "big")


def _decode_uint64(value: bytes, _tid: bytes) -> int:
    if len(value) != 8:
        raise ValueError("STUN attribute must be 8 bytes")
    return int.from_bytes(value, "big")


def _encode_uint64(value: int, _tid: bytes) -> bytes:
    return value.to_bytes(8, "big")


def _decode_text(value: bytes, _tid: bytes) -> str:
    if len(value) > 763:  # RFC 8489: fewer than 128 characters, at most 763 bytes
        raise ValueError("STUN text attribute is too long")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("STUN text attribute is not UTF-8") from None


def _encode_text(value: str, _tid: bytes) -> bytes:
    return value.encode("utf-8")


def _decode_bytes(value: bytes, _tid: bytes) -> bytes:
    return value


def _encode_bytes(value: bytes, _tid: bytes) -> bytes:
    return value


def _decode_empty(value: bytes, _tid: bytes) -> bool:
    if value:
        raise ValueError("STUN flag attribute must be empty")
    return True


def _encode_empty(_value: bool, _tid: bytes) -> bytes:
    return b""


def _decode_channel(value: bytes, _tid: bytes) -> int:
    if len(value) != 4:
        raise ValueError("CHANNEL-NUMBER must be 4 bytes")
    return int.from_bytes(value[:2], "big")  # the last two bytes are RFFU


def _encode_channel(value: int, _tid: bytes) -> bytes:
    return value.to_bytes(2, "big") + b"\x00\x00"


def _decode_first_byte(value: bytes, _tid: bytes) -> int:
    """REQUESTED-TRANSPORT / REQUESTED-ADDRESS-FAMILY / EVEN-PORT: one byte then RFFU."""
    if len(value) not in (1, 4):
        raise ValueError("STUN attribute must be 4 bytes")
    return value[0]


def _encode_first_byte(value: int, _tid: bytes) -> bytes:
    return bytes((value, 0, 0, 0))


def _decode_error(value: bytes, _tid: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise ValueError("ERROR-CODE is too short")
    code = (value[2] & 0x7) * 100 + value[3]
    return code, _decode_text(value[4:], b"")


def _encode_error(value: tuple[int, str], _tid: bytes) -> bytes:
    code, reason = value
    return bytes((0, 0, code // 100, code % 100)) + reason.encode("utf-8")


def _decode_unknown(value: bytes, _tid: bytes) -> tuple[int, ...]:
    if len(value) % 2:
        raise ValueError("UNKNOWN-ATTRIBUTES has an odd length")
    return struct.unpack(f"!{len(value) // 2}H", value)


def _encode_unknown(value: tuple[int, ...], _tid: bytes) -> bytes:
    return struct.pack(f"!{len(value)}H", *value)


def _decode_address(value: bytes, _tid: bytes) -> Address:
    if len(value) < 4:
        raise ValueError("STUN address is too short")
    family, port = value[1], int.from_bytes(value[2:4], "big")
    raw = value[4:]
    if family == 0x01:
        if len(raw) != 4:
            raise ValueError("STUN address has invalid length for IPv4")
        return socket.inet_ntoa(raw), port
    if family == 0x02:
        if len(raw) != 16:
            raise ValueError("STUN address has invalid length for IPv6")
        # ipaddress, not inet_ntop: the peer filter and permissions key on its canonical form
        # (inet_ntop writes IPv4-mapped addresses differently).
        return str(ipaddress.IPv6Address(raw)), port
    raise ValueError("STUN address has unknown family")


def _pack_ip(ip: str) -> tuple[int, bytes]:
    """(STUN family, packed address) of an address string."""
    if ":" in ip:  # a link-local client's address may carry its zone ("fe80::1%eth0")
        return 0x02, socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])
    return 0x01, socket.inet_pton(socket.AF_INET, ip)


def _encode_address(value: Address, _tid: bytes) -> bytes:
    family, packed = _pack_ip(value[0])
    return bytes((0, family)) + value[1].to_bytes(2, "big") + packed


def _xor_mask(length: int, tid: bytes) -> bytes:
    return (_COOKIE_BYTES + tid)[:length]


def _xor(data: bytes, mask: bytes) -> bytes:
    size = len(data)
    value = int.from_bytes(data, "big") ^ int.from_bytes(mask[:size], "big")
    return value.to_bytes(size, "big")


def _decode_xor_address(value: bytes, tid: bytes) -> Address:
    if len(value) < 4:
        raise ValueError("STUN address is too short")
    raw = _xor(value[4:], _xor_mask(len(value) - 4, tid))
    port = int.from_bytes(value[2:4], "big") ^ _XOR_PORT
    return _decode_address(value[:2] + port.to_bytes(2, "big") + raw, tid)


def _encode_xor_address(value: Address, tid: bytes) -> bytes:
    family, packed = _pack_ip(value[0])
    port = value[1] ^ _XOR_PORT
    return bytes((0, family)) + port.to_bytes(2, "big") + _xor(packed, _COOKIE_BYTES + tid)


Decoder = Callable[[bytes, bytes], Any]
Encoder = Callable[[Any, bytes], bytes]

_U32 = (_decode_uint32, _encode_uint32)
_TEXT = (_decode_text, _encode_text)
_RAW = (_decode_bytes, _encode_bytes)
_XADDR = (_decode_xor_address, _encode_xor_address)

ATTRIBUTES: dict[int, tuple[Decoder, Encoder]] = {
    Attr.MAPPED_ADDRESS: (_decode_address, _encode_address),
    Attr.USERNAME: _TEXT,
    Attr.MESSAGE_INTEGRITY: _RAW,
    Attr.ERROR_CODE: (_decode_error, _encode_error),
    Attr.UNKNOWN_ATTRIBUTES: (_decode_unknown, _encode_unknown),
    Attr.CHANNEL_NUMBER: (_decode_channel, _encode_channel),
    Attr.LIFETIME: _U32,
    Attr.XOR_PEER_ADDRESS: _XADDR,
    Attr.DATA: _RAW,
    Attr.REALM: _TEXT,
    Attr.NONCE: _TEXT,
    Attr.XOR_RELAYED_ADDRESS: _XADDR,
    Attr.REQUESTED_ADDRESS_FAMILY: (_decode_first_byte, _encode_first_byte),
    Attr.EVEN_PORT: (_decode_first_byte, _encode_first_byte),
    Attr.REQUESTED_TRANSPORT: (_decode_first_byte, _encode_first_byte),
    Attr.DONT_FRAGMENT: (_decode_empty, _encode_empty),
    Attr.MESSAGE_INTEGRITY_SHA256: _RAW,
    Attr.PASSWORD_ALGORITHM: _RAW,
    Attr.USERHASH: _RAW,
    Attr.XOR_MAPPED_ADDRESS: _XADDR,
    Attr.RESERVATION_TOKEN: (_decode_uint64, _encode_uint64),
    Attr.PRIORITY: _U32,
    Attr.USE_CANDIDATE: (_decode_empty, _encode_empty),
    Attr.PADDING: _RAW,
    Attr.RESPONSE_PORT: _RAW,
    Attr.ADDITIONAL_ADDRESS_FAMILY: (_decode_first_byte, _encode_first_byte),
    Attr.ADDRESS_ERROR_CODE: _RAW,
    Attr.PASSWORD_ALGORITHMS: _RAW,
    Attr.ALTERNATE_DOMAIN: _TEXT,
    Attr.ICMP: _RAW,
    Attr.SOFTWARE: _TEXT,
    Attr.ALTERNATE_SERVER: (_decode_address, _encode_address),
    Attr.FINGERPRINT: _U32,
    Attr.ICE_CONTROLLED: (_decode_uint64, _encode_uint64),
    Attr.ICE_CONTROLLING: (_decode_uint64, _encode_uint64),
    Attr.RESPONSE_ORIGIN: (_decode_address, _encode_address),
    Attr.OTHER_ADDRESS: (_decode_address, _encode_address),
}

# Attributes the relay acts on. Anything else below 0x8000 is "unknown comprehension-required"
# for the purpose of 420 (RFC 8489 §14), even if the codec can parse it: the relay must not
# pretend to honour, say, USERHASH or PASSWORD-ALGORITHM that it does not implement.
UNDERSTOOD = frozenset(
    {
        Attr.MAPPED_ADDRESS,
        Attr.USERNAME,
        Attr.MESSAGE_INTEGRITY,
        Attr.ERROR_CODE,
        Attr.UNKNOWN_ATTRIBUTES,
        Attr.CHANNEL_NUMBER,
        Attr.LIFETIME,
        Attr.XOR_PEER_ADDRESS,
        Attr.DATA,
        Attr.REALM,
        Attr.NONCE,
        Attr.XOR_RELAYED_ADDRESS,
        Attr.REQUESTED_ADDRESS_FAMILY,
        Attr.EVEN_PORT,
        Attr.REQUESTED_TRANSPORT,
        Attr.DONT_FRAGMENT,
        Attr.XOR_MAPPED_ADDRESS,
        Attr.RESERVATION_TOKEN,
        # ICE connectivity checks sent to a STUN server carry these; harmless to accept.
        Attr.PRIORITY,
        Attr.USE_CANDIDATE,
    }
)

# ---------------------------------------------------------------- messages


def message_type(method: int, cls: int) -> int:
    """Interleave the 12 method bits with the 2 class bits (RFC 8489 §5)."""
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


def split_type(msg_type: int) -> tuple[int, int]:
    method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)
    return method, msg_type & 0x0110


def new_transaction_id() -> bytes:
    return os.urandom(12)


def _padding(length: int) -> int:
    return -length % 4


@dataclass(slots=True)
class Message:
    """One STUN message. ``attributes`` maps attribute type to its decoded value (first wins)."""

    method: int
    cls: int
    transaction_id: bytes = field(default_factory=new_transaction_id)
    attributes: dict[int, Any] = field(default_factory=dict)
    # Every value of an attribute that may repeat (XOR-PEER-ADDRESS in CreatePermission).
    peer_addresses: list[Address] = field(default_factory=list)
    unknown_required: list[int] = field(default_factory=list)
    # Set by parse(): the raw message and where MESSAGE-INTEGRITY starts, for verification.
    raw: bytes = b""
    integrity_offset: int = -1
    has_fingerprint: bool = False
    magic_cookie: bool = True

    def get(self, attr: int, default: Any = None) -> Any:
        return self.attributes.get(attr, default)

    def __contains__(self, attr: int) -> bool:
        return attr in self.attributes

    @property
    def error_code(self) -> int | None:
        value = self.attributes.get(Attr.ERROR_CODE)
        return None if value is None else int(value[0])

    def verify_integrity(self, key: bytes) -> bool:
        """Check MESSAGE-INTEGRITY (HMAC-SHA1) with ``key``, in constant time."""
        if self.integrity_offset < 0:
            return False
        expected = self.attributes[Attr.MESSAGE_INTEGRITY]
        if len(expected) != 20:
            return False
        return hmac.compare_digest(_integrity(self.raw, self.integrity_offset, key), expected)

    def encode(self, integrity_key: bytes | None = None, fingerprint: bool = False) -> bytes:
        body = bytearray()
        tid = self.transaction_id
        items: Iterable[tuple[int, Any]] = self.attributes.items()
        if self.peer_addresses and Attr.XOR_PEER_ADDRESS not in self.attributes:
            items = [*items, *((Attr.XOR_PEER_ADDRESS, a) for a in self.peer_addresses)]
        for attr, value in items:
            if attr in (Attr.MESSAGE_INTEGRITY, Attr.FINGERPRINT):
                continue
            encoded = value if isinstance(value, bytes) else ATTRIBUTES[attr][1](value, tid)
            body += _ATTR.pack(attr, len(encoded)) + encoded + bytes(_padding(len(encoded)))
        msg_type = message_type(self.method, self.cls)
        cookie = MAGIC_COOKIE if self.magic_cookie else int.from_bytes(tid[:4], "big")
        tid_tail = tid if self.magic_cookie else tid[4:]
        if self.magic_cookie:
            header = _HEADER.pack(msg_type, len(body), cookie, tid_tail)
        else:
            header = struct.pack("!HH16s", msg_type, len(body), tid)
        data = bytearray(header) + body
        if integrity_key is not None:
            data += _ATTR.pack(Attr.MESSAGE_INTEGRITY, 20) + bytes(20)
            offset = len(data) - 24
            # The length field covers MESSAGE-INTEGRITY on the wire too, not only in the HMAC
            # input: strict parsers (libwebrtc) drop a message whose length stops short of it.
            struct.pack_into("!H", data, 2, len(data) - HEADER_LENGTH)
            data[offset + 4 :] = _integrity(bytes(data), offset, integrity_key)
        if fingerprint:
            struct.pack_into("!H", data, 2, len(data) - HEADER_LENGTH + 8)
            crc = (binascii.crc32(bytes(data)) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            data += _ATTR.pack(Attr.FINGERPRINT, 4) + crc.to_bytes(4, "big")
        return bytes(data)


def _integrity(raw: bytes, offset: int, key: bytes) -> bytes:
    """HMAC-SHA1 over the message up to MESSAGE-INTEGRITY, length field covering it (§14.5)."""
    head = raw[:2] + (offset + 24 - HEADER_LENGTH).to_bytes(2, "big") + raw[4:offset]
    return hmac.digest(key, head, "sha1")


def is_stun(data: bytes) -> bool:
    """Cheap check: the first two bits are zero, the length is plausible and 4-aligned."""
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and not data[3] & 0x3


def parse(data: bytes) -> Message:
    """Decode one STUN message; ``ValueError`` when anything is malformed.

    Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are ignored (RFC 8489 §14.5), and a
    wrong FINGERPRINT is an error, which the caller treats as "not STUN".
    """
    if len(data) < HEADER_LENGTH:
        raise ValueError("STUN message is shorter than its header")
    msg_type, length, cookie, tid_tail = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise ValueError("STUN message type has its top bits set")
    if length % 4:
        raise ValueError("STUN message length is not a multiple of 4")
    if HEADER_LENGTH + length != len(data):
        raise ValueError("STUN message length does not match the datagram")
    method, cls = split_type(msg_type)
    magic = cookie == MAGIC_COOKIE
    tid = tid_tail if magic else data[4:20]
    msg = Message(method, cls, tid, raw=data, magic_cookie=magic)
    pos = HEADER_LENGTH
    end = len(data)
    after_integrity = False
    while pos < end:
        if end - pos < 4:
            raise ValueError("STUN attribute header is truncated")
        attr, alen = _ATTR.unpack_from(data, pos)
        vstart = pos + 4
        vend = vstart + alen
        if vend > end:
            raise ValueError("STUN attribute value is truncated")
        value = data[vstart:vend]
        next_pos = vend + _padding(alen)
        if attr == Attr.FINGERPRINT:
            if next_pos != end:
                raise ValueError("FINGERPRINT is not the last attribute")
            check = binascii.crc32(data[:2] + (pos + 8 - 20).to_bytes(2, "big") + data[4:pos])
            if _decode_uint32(value, tid) != (check ^ FINGERPRINT_XOR) & 0xFFFFFFFF:
                raise ValueError("STUN FINGERPRINT does not match")
            msg.has_fingerprint = True
        elif not after_integrity:
            if attr == Attr.MESSAGE_INTEGRITY:
                if alen != 20:
                    raise ValueError("MESSAGE-INTEGRITY must be 20 bytes")
                msg.integrity_offset = pos
                msg.attributes[attr] = value
                after_integrity = True
            elif attr in ATTRIBUTES:
                decoded = ATTRIBUTES[attr][0](value, tid)
                if attr == Attr.XOR_PEER_ADDRESS:
                    msg.peer_addresses.append(decoded)
                msg.attributes.setdefault(attr, decoded)
                if attr < 0x8000 and attr not in UNDERSTOOD:
                    msg.unknown_required.append(attr)
            elif attr < 0x8000:
                msg.unknown_required.append(attr)
        pos = next_pos
    if pos != end:
        raise ValueError("STUN attribute padding runs past the message")
    return msg


# ---------------------------------------------------------------- Send and Data indications
#
# The data path for clients that do not use channels: one Send indication in, one datagram out;
# one datagram in, one Data indication out. Both skip the general codec: no Message object, no
# attribute table, only the bytes that change.

SEND_INDICATION = message_type(Method.SEND, Class.INDICATION)
DATA_INDICATION = message_type(Method.DATA, Class.INDICATION)
_SEND_TYPE = SEND_INDICATION.to_bytes(2, "big")
_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")  # by -length % 4
_IPV4_VALUE = struct.Struct("!xBHI")  # reserved, family, port, address
_U32BE = struct.Struct("!I")
# Plain ints: comparing against IntEnum members costs an attribute lookup per packet.
_XOR_PEER_ADDRESS, _DATA = int(Attr.XOR_PEER_ADDRESS), int(Attr.DATA)
_FINGERPRINT, _DONT_FRAGMENT = int(Attr.FINGERPRINT), int(Attr.DONT_FRAGMENT)


def parse_send_indication(data: bytes) -> tuple[Address, bytes] | None:
    """Peer and payload of a plain Send indication: magic cookie, one IPv4 XOR-PEER-ADDRESS, one
    DATA, optionally DONT-FRAGMENT and a correct FINGERPRINT, which is what clients send.

    Anything else (IPv6 peers, other attributes, repeats, any malformation) gives None and goes
    to ``parse``, so what this accepts is exactly what ``parse`` would have read the same way.
    """
    end = len(data)
    if data[:2] != _SEND_TYPE or end < HEADER_LENGTH or data[4:8] != _COOKIE_BYTES:
        return None
    if end - HEADER_LENGTH != ((data[2] << 8) | data[3]) or end % 4:
        return None
    peer: Address | None = None
    payload: bytes | None = None
    pos = HEADER_LENGTH
    while pos < end:
        if end - pos < 4:
            return None
        attr, alen = _ATTR.unpack_from(data, pos)
        vstart = pos + 4
        next_pos = vstart + alen + (-alen % 4)
        if next_pos > end:
            return None
        if attr == _XOR_PEER_ADDRESS:
            if peer is not None or alen != 8:
                return None
            family, port, ip = _IPV4_VALUE.unpack_from(data, vstart)
            if family != 0x01:
                return None
            peer = (socket.inet_ntoa(_U32BE.pack(ip ^ MAGIC_COOKIE)), port ^ _XOR_PORT)
        elif attr == _DATA:
            if payload is not None:
                return None
            payload = data[vstart : vstart + alen]
        elif attr == _FINGERPRINT:
            if next_pos != end or alen != 4:
                return None
            # Last, so the length field already covers it as the CRC input must (RFC 8489 §14.7).
            crc = (binascii.crc32(data[:pos]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if _U32BE.unpack_from(data, vstart)[0] != crc:
                return None
        elif attr != _DONT_FRAGMENT or alen:
            return None
        pos = next_pos
    if peer is None or payload is None:
        return None
    return peer, payload


def xor_peer_attribute(peer: Address, tid: bytes) -> bytes:
    """The whole XOR-PEER-ADDRESS attribute (type, length, value). For an IPv4 peer it does not
    depend on ``tid`` (the mask is the magic cookie alone), so callers may reuse it."""
    value = _encode_xor_address(peer, tid)
    return _ATTR.pack(Attr.XOR_PEER_ADDRESS, len(value)) + value


def data_indication(peer_attribute: bytes, tid: bytes, payload: bytes) -> bytes:
    """A Data indication carrying ``payload`` from the peer ``peer_attribute`` describes."""
    size = len(payload)
    pad = -size % 4
    length = len(peer_attribute) + 4 + size + pad
    head = _HEADER.pack(DATA_INDICATION, length, MAGIC_COOKIE, tid)
    return b"".join((head, peer_attribute, _ATTR.pack(Attr.DATA, size), payload, _PADS[pad]))


# ---------------------------------------------------------------- ChannelData

CHANNEL_MIN = 0x4000
# RFC 8656 narrowed channels to 0x4000-0x4FFF, but RFC 5766 clients (coturn 4.6's uclient among
# them) still pick numbers up to 0x7FFF. Nothing else we receive starts with the bits 01, so
# accepting the old range costs nothing and keeps those clients working.
CHANNEL_MAX = 0x7FFF


def is_channel_data(data: bytes) -> bool:
    return len(data) >= 4 and 0x40 <= data[0] <= 0x7F


def channel_header(channel: int, length: int) -> bytes:
    return ((channel << 16) | length).to_bytes(4, "big")
