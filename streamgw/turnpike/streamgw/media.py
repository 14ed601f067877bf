"""The call's RTP side: a UDP endpoint per call, and the 20 ms clock that paces audio out.

Inbound packets go through the call's jitter buffer (`jitter`), are converted to µ-law and cut
into 160-byte frames as soon as they are in order, so audio reaches the WebSockets with no added
delay. The clock ticks every 20 ms of real time: it sends the next outbound frame to the caller,
and when the caller has gone quiet it has the jitter buffer conceal the missing time with silence
so media time keeps running, as the hosted service does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from typing import Any, cast

from turnpike.streamgw import g711, rtp
from turnpike.streamgw.jitter import Delivery, JitterBuffer

log = logging.getLogger(__name__)

FRAME = 160
TICK = 0.02


class RtpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._on_packet = on_packet
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's UDP transport subclasses DatagramTransport; it has the same methods.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_packet(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a caller that went away: nothing to do but keep going.
        log.debug("RTP socket error: %s", exc)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_endpoint(
    ip: str, ports: tuple[int, int], on_packet: Callable[[bytes, tuple[str, int]], None]
) -> tuple[RtpEndpoint, int]:
    """Bind a free even port in ``ports`` (odd ports are left for RTCP, by convention)."""
    loop = asyncio.get_running_loop()
    low, high = ports
    first = low + (low % 2)
    candidates = list(range(first, high + 1, 2)) or [low]
    start = random.randrange(len(candidates))  # noqa: S311 - spreading calls, not security
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    for i in range(len(candidates)):
        port = candidates[(start + i) % len(candidates)]
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: RtpEndpoint(on_packet), local_addr=(ip, port), family=family
            )
        except OSError:
            continue
        return protocol, port
    raise OSError(f"no free RTP port in {low}-{high} on {ip}")


class RtpSender:
    """Builds the outbound RTP stream: one packet per 20 ms frame, in the call's codec."""

    def __init__(self, codec: str) -> None:
        self.payload_type = rtp.PT_PCMA if codec == "PCMA" else rtp.PT_PCMU
        self._translate = g711.ULAW_TO_ALAW if codec == "PCMA" else None
        self._seq = random.randrange(0x10000)  # noqa: S311 - RFC 3550 asks for a random start
        self._ts = random.randrange(0x100000000)  # noqa: S311
        self.ssrc = random.randrange(1, 0x100000000)  # noqa: S311
        self._first = True

    def packet(self, frame: bytes) -> bytes:
        payload = frame.translate(self._translate) if self._translate else frame
        data = rtp.build(self.payload_type, self._seq, self._ts, self.ssrc, payload, self._first)
        self._first = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME) & 0xFFFFFFFF
        return data


class InboundAssembler:
    """RTP in → µ-law 20 ms frames and DTMF keys, through the call's jitter buffer."""

    def __init__(self, codec_pt: int, dtmf_pt: int, now: float) -> None:
        self.codec_pt = codec_pt
        self.dtmf_pt = dtmf_pt
        self._translate = g711.ALAW_TO_ULAW if codec_pt == rtp.PT_PCMA else None
        self.jitter = JitterBuffer(codec_pt, dtmf_pt, now)
        self._pending = bytearray()
        self._last_event_ts: int | None = None

    def accept(self, packet: rtp.RtpPacket, now: float) -> tuple[list[bytes], list[str]]:
        """Frames completed and DTMF keys pressed because of this packet."""
        return self._take(self.jitter.push(packet, now))

    def conceal(self, now: float, grace: float) -> tuple[list[bytes], list[str]]:
        """Frames of silence for real time with no audio (see `JitterBuffer.conceal`), after
        whatever was held for a missing packet, and the keys among what was held."""
        return self._take(self.jitter.conceal(now, grace))

    def _take(self, delivery: Delivery) -> tuple[list[bytes], list[str]]:
        keys: list[str] = []
        for packet in delivery.events:
            try:
                event = rtp.parse_telephone_event(packet.payload)
            except ValueError:
                continue
            # One key press is many packets sharing a timestamp (RFC 4733 §2.5): report it once.
            if packet.timestamp != self._last_event_ts and event.key is not None:
                self._last_event_ts = packet.timestamp
                keys.append(event.key)
        pending = self._pending
        for piece in delivery.audio:
            if isinstance(piece, int):
                pending += g711.SILENCE_FRAME[:1] * piece
            else:
                pending += piece.translate(self._translate) if self._translate else piece
        frames: list[bytes] = []
        while len(pending) >= FRAME:
            frames.append(bytes(pending[:FRAME]))
            del pending[:FRAME]
        return frames, keys
