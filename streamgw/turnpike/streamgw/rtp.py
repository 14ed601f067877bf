"""RTP (RFC 3550) packets and RFC 4733 telephone events."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEADER = struct.Struct("!BBHII")

PT_PCMU = 0
PT_PCMA = 8

# RFC 4733 §3.2: events 0-15 are the DTMF keys.
DTMF_KEYS = "0123456789*#ABCD"


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False


def parse(data: bytes) -> RtpPacket:
    """Parse one RTP packet; ``ValueError`` for anything that is not RTP version 2."""
    if len(data) < 12:
        raise ValueError("RTP packet shorter than its header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError("RTP version is not 2")
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(data) < offset + 4:
            raise ValueError("RTP header extension truncated")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding: the last byte says how much
        end -= data[-1]
    if offset > end:
        raise ValueError("RTP packet truncated")
    return RtpPacket(
        second & 0x7F, sequence, timestamp, ssrc, data[offset:end], bool(second & 0x80)
    )


def build(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
) -> bytes:
    second = (0x80 if marker else 0) | (payload_type & 0x7F)
    header = _HEADER.pack(
        0x80, second, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF
    )
    return header + payload


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int
    duration: int

    @property
    def key(self) -> str | None:
        return DTMF_KEYS[self.event] if self.event < len(DTMF_KEYS) else None


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    if len(payload) < 4:
        raise ValueError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def build_telephone_event(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration)
