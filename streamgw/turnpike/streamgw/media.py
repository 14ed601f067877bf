"""The call's media side: its RTP session, the 20 ms media clock, and the playout of prompts.

`MediaSession` owns one call's UDP endpoint, where RTP goes (signalled, or latched by the rule in
`latch`), the inbound path (the `jitter` buffer → µ-law → 160-byte frames, behind the
`InboundPath` slot) and the clock. Inbound frames are handed on as soon as they are in order, so
audio reaches the WebSockets with no added delay. The clock ticks every 20 ms of real time: it
sends the next outbound frame to the caller (a bidirectional stream's audio first, then
`<Play>`/`<Say>` audio from the `Playout`, else silence), and when the caller has gone quiet it
has the jitter buffer conceal the missing time with silence so media time keeps running, as the
hosted service does. What the call
does with frames, digits and silence is behind `MediaEvents`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from turnpike.streamgw import g711, rtp
from turnpike.streamgw.jitter import Delivery, JitterBuffer
from turnpike.streamgw.latch import Latch
from turnpike.streamgw.metrics import Metrics

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


class InboundPath(Protocol):
    """RTP packets in, 20 ms µ-law frames and DTMF keys out (the jitter-buffer slot)."""

    def accept(self, packet: rtp.RtpPacket, now: float) -> tuple[list[bytes], list[str]]:
        """Frames completed and keys pressed because of this packet."""

    def conceal(self, now: float, grace: float) -> tuple[list[bytes], list[str]]:
        """Called every tick: what was held, then silence once the caller has gone quiet."""


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


class Playout:
    """Prompt audio (``<Play>``, ``<Say>``) waiting for the clock, in 20 ms frames."""

    def __init__(self) -> None:
        self._audio = bytearray()
        self._done = asyncio.Event()
        self._done.set()

    async def play(self, audio: bytes) -> None:
        """Queue ``audio`` and wait until the clock has sent all of it (or `clear` was called)."""
        if not audio:
            return
        self._done.clear()
        self._audio += audio
        await self._done.wait()

    def next_frame(self) -> bytes | None:
        if not self._audio:
            return None
        frame = bytes(self._audio[:FRAME])
        del self._audio[:FRAME]
        if len(frame) < FRAME:
            frame += g711.SILENCE_FRAME[: FRAME - len(frame)]
        if not self._audio:
            self._done.set()
        return frame

    def clear(self) -> None:
        self._audio.clear()
        self._done.set()


@dataclass(frozen=True, slots=True)
class MediaSettings:
    rtp_timeout: float = 5.0  # no RTP for this long: warning 31953
    rtp_fill_after: float = 0.25  # audio received played out this long ago: silence frames
    rtp_idle_hangup: float = 60.0  # no RTP for this long: hang up (0: never)


class MediaEvents(Protocol):
    """What the media session tells its call, and asks of it."""

    def inbound_frame(self, index: int, frame: bytes, arrival: float) -> None:
        """The caller's frame number ``index``; ``arrival`` is 0.0 for filled silence."""

    def outbound_frame(self, index: int, frame: bytes) -> None:
        """Frame number ``index`` just sent to the caller."""

    def dtmf(self, key: str) -> None: ...

    def stream_frame(self) -> bytes | None:
        """Audio from a bidirectional stream for the caller, ahead of prompts."""

    def rtp_timeout(self, detail: str) -> None:
        """No RTP for ``rtp_timeout`` seconds (once per silence)."""

    def rtp_idle(self) -> None:
        """No RTP for ``rtp_idle_hangup`` seconds."""


class MediaSession:
    """One call's RTP: endpoint, remote address, inbound path, outbound sender and clock."""

    def __init__(
        self,
        settings: MediaSettings,
        metrics: Metrics,
        events: MediaEvents,
        codec: str,
        dtmf_pt: int,
        remote: tuple[str, int] | None,
        inbound: InboundPath | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.events = events
        self.codec = codec
        codec_pt = rtp.PT_PCMA if codec == "PCMA" else rtp.PT_PCMU
        self._latch = Latch(remote, (codec_pt, dtmf_pt))
        self.inbound: InboundPath = inbound or InboundAssembler(codec_pt, dtmf_pt, time.monotonic())
        self.playout = Playout()
        self.accepting = True  # False once the call is ending: RTP in is ignored
        self.sending = True  # False while the caller holds the call (see `move`)
        self.local_port = 0
        self._sender = RtpSender(codec)
        self._endpoint: RtpEndpoint | None = None
        self._index = {"inbound": 0, "outbound": 0}
        self._last_rtp = time.monotonic()
        self._rtp_warned = False
        self._clock: asyncio.Task[None] | None = None

    async def open(self, ip: str, ports: tuple[int, int]) -> None:
        self._endpoint, self.local_port = await open_endpoint(ip, ports, self.on_rtp)

    def start(self, name: str) -> None:
        if not self.accepting:
            return  # halted before it started: the call is already ending
        self._clock = asyncio.get_running_loop().create_task(self._run_clock(), name=name)

    def halt(self) -> None:
        """The call is ending: from now on no RTP is taken in or sent, and the clock stops at
        once, not when `close` runs after the call's streams have said goodbye (a caller that
        sent BYE must not be sent media meanwhile, and the clocks of calls ending together must
        not hold up the event loop)."""
        self.accepting = False
        self.sending = False
        if self._clock is not None:
            self._clock.cancel()

    async def close(self) -> None:
        self.playout.clear()
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        if self._endpoint is not None:
            self._endpoint.close()

    def frame_index(self, track: str) -> int:
        return self._index[track]

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where the caller's RTP goes: signalled, or latched to (see `latch`)."""
        return self._latch.remote

    def move(
        self,
        remote: tuple[str, int] | None,
        codec_pt: int,
        dtmf_pt: int | None,
        sending: bool = True,
    ) -> None:
        """A new offer or answer (SIP re-INVITE, UPDATE) moved the caller's media; ``sending``
        False while the caller holds the call (our direction recvonly or inactive): the clock
        keeps running, no RTP goes out."""
        self._latch.resignal(remote, (codec_pt,) if dtmf_pt is None else (codec_pt, dtmf_pt))
        self.sending = sending

    # ---- RTP in ----------------------------------------------------------------------------

    def on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.accepting:
            return
        try:
            packet = rtp.parse(data)
        except ValueError:
            self.metrics.dropped("rtp_malformed")
            return
        if not self._latch.admit(packet, addr):
            self.metrics.dropped("rtp_foreign_source")
            return
        now = time.monotonic()
        self._last_rtp = now
        self._rtp_warned = False
        frames, keys = self.inbound.accept(packet, now)
        if frames:
            self.metrics.rx_rtp.inc(len(frames))
        self._emit_inbound(frames, now)
        for key in keys:
            self.events.dtmf(key)

    def _emit_inbound(self, frames: list[bytes], arrival: float) -> None:
        for frame in frames:
            index = self._index["inbound"]
            self._index["inbound"] = index + 1
            self.events.inbound_frame(index, frame, arrival)

    # ---- the 20 ms clock -------------------------------------------------------------------

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += TICK
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                deadline = loop.time()  # far behind (a stalled host): resync rather than burst
            try:
                self._tick()
            except Exception:  # the clock must survive any one bad frame
                log.exception("%s: clock tick failed", asyncio.current_task())

    def _tick(self) -> None:
        self._send_outbound()
        now = time.monotonic()
        # Keep inbound media time running through silence, once the audio received has played out.
        frames, keys = self.inbound.conceal(now, self.settings.rtp_fill_after)
        self._emit_inbound(frames, 0.0)
        for key in keys:
            self.events.dtmf(key)
        self._watch_silence(now)

    def _send_outbound(self) -> None:
        frame = self.events.stream_frame() or self.playout.next_frame() or g711.SILENCE_FRAME
        if self.sending and self.remote is not None and self._endpoint is not None:
            self._endpoint.send(self._sender.packet(frame), self.remote)
            self.metrics.tx_rtp.inc()
        index = self._index["outbound"]
        self._index["outbound"] = index + 1
        self.events.outbound_frame(index, frame)

    def _watch_silence(self, now: float) -> None:
        settings = self.settings
        idle = now - self._last_rtp
        if idle >= settings.rtp_timeout and not self._rtp_warned:
            self._rtp_warned = True
            self.events.rtp_timeout(f"no RTP from the caller for {settings.rtp_timeout:g} s")
        if settings.rtp_idle_hangup and idle >= settings.rtp_idle_hangup:
            self.events.rtp_idle()
