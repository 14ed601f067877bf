"""A jitter buffer for one call's inbound RTP: sequence numbers order, timestamps measure time.

- **Order and duplicates** come from sequence numbers (16-bit, wrapping). A packet that arrives
  ahead of a missing one is held; up to ``depth`` packets are held (``DEFAULT_DEPTH``, 100 ms of
  20 ms packets) before the missing one is declared lost. Duplicates, and packets older than what
  was already delivered, are dropped and counted.
- **Time** comes from timestamps. When audio resumes after lost packets, or after a sender that
  stopped sending in silence (DTX, comfort noise), the silence delivered is exactly the timestamps
  that are missing (at most ``MAX_FILL`` samples at once). A sender whose timestamps run *behind*
  what was delivered (it paused without advancing them) is followed: nothing is dropped for that.
- **Wall-clock concealment** keeps media time running when the caller sends nothing at all, as the
  hosted service does: `conceal` delivers silence only once the audio already received would have
  finished playing in real time (a sender counts as at most ``MAX_LEAD`` ahead), plus a grace
  period, and then continues tick by tick, in whole 20 ms frames. A sender that bursts
  (``ffmpeg -re`` sends hundreds of milliseconds at once) is therefore never padded between bursts.

G.711 only: one byte is one sample, so payload lengths are durations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from turnpike.streamgw.rtp import RtpPacket

RATE = 8000
DEFAULT_DEPTH = 5
MAX_FILL = RATE  # one second: a timestamp jump larger than this is a new timeline, not a loss
FRAME = 160  # samples in the 20 ms frames concealment is counted in
FRAME_TIME = FRAME / RATE
MAX_LEAD = 1.0  # seconds a sender may run ahead of real time before quiet counts as quiet


@dataclass(slots=True)
class Delivery:
    """What became playable: audio (payload bytes, or an int count of silent samples) in order,
    and telephone-event packets in sequence order."""

    audio: list[bytes | int] = field(default_factory=list)
    events: list[RtpPacket] = field(default_factory=list)


class JitterBuffer:
    def __init__(
        self, audio_pt: int, event_pt: int | None, now: float, depth: int = DEFAULT_DEPTH
    ) -> None:
        if depth < 1:
            raise ValueError("jitter buffer depth must be at least 1 packet")
        self.audio_pt = audio_pt
        self.event_pt = event_pt
        self.depth = depth
        self._ssrc: int | None = None
        self._next_seq: int | None = None
        self._held: dict[int, RtpPacket] = {}
        self._next_ts: int | None = None
        self._covered_until = now  # when the audio delivered so far ends, played in real time
        self._concealing = False
        self.lost = 0
        self.stale = 0  # duplicates and packets behind what was already delivered
        self.other = 0  # payload types that are neither the codec nor telephone-event

    # ---- packets in -----------------------------------------------------------------------

    def push(self, packet: RtpPacket, now: float) -> Delivery:
        out = Delivery()
        if self._ssrc is not None and packet.ssrc != self._ssrc:
            # A new source (a re-INVITE, a transfer): finish the old one, start a new timeline.
            self._release_all(out, now)
            self._next_seq = None
            self._next_ts = None
        self._ssrc = packet.ssrc
        seq = packet.sequence
        if seq in self._held:
            self.stale += 1
            return out
        if self._next_seq is None:
            # The first packet waits for a second one, so a swapped first pair comes out in order.
            self._held[seq] = packet
            if len(self._held) < 2:
                return out
            self._next_seq = min(self._held, key=lambda s: (s - seq + 0x8000) & 0xFFFF)
        elif (seq - self._next_seq) & 0xFFFF >= 0x8000:
            self.stale += 1  # delivered already, or given up on as lost
            return out
        else:
            self._held[seq] = packet
        self._drain(out, now)
        while len(self._held) > self.depth:
            self._skip_gap(out, now)
        return out

    def conceal(self, now: float, grace: float) -> Delivery:
        """Silence for real time that passed with no audio, once ``grace`` has passed beyond the
        end of the audio already delivered. Held packets are released first (their gaps lost)."""
        out = Delivery()
        if now < self._covered_until + (0.0 if self._concealing else grace):
            return out
        self._release_all(out, now)
        # Whole 20 ms frames: audio that arrives afterwards stays aligned on frame boundaries.
        samples = int((now - self._covered_until) / FRAME_TIME + 1e-6) * FRAME
        if samples > 0:
            self._concealing = True  # until audio comes again, each call continues the silence
            out.audio.append(samples)
            self._covered_until += samples / RATE
            if self._next_ts is not None:
                self._next_ts = (self._next_ts + samples) & 0xFFFFFFFF
        return out

    @property
    def held(self) -> int:
        return len(self._held)

    # ---- internals ------------------------------------------------------------------------

    def _release_all(self, out: Delivery, now: float) -> None:
        if self._next_seq is None and self._held:
            first = next(iter(self._held))
            self._next_seq = min(self._held, key=lambda s: (s - first + 0x8000) & 0xFFFF)
        while self._held:
            self._skip_gap(out, now)

    def _skip_gap(self, out: Delivery, now: float) -> None:
        """Give up on the missing packet(s): move on to the nearest packet held."""
        assert self._next_seq is not None
        start = self._next_seq
        nearest = min(self._held, key=lambda s: (s - start) & 0xFFFF)
        self.lost += (nearest - start) & 0xFFFF
        self._next_seq = nearest
        self._drain(out, now)

    def _drain(self, out: Delivery, now: float) -> None:
        assert self._next_seq is not None
        while self._next_seq in self._held:
            self._deliver(self._held.pop(self._next_seq), out, now)
            self._next_seq = (self._next_seq + 1) & 0xFFFF

    def _deliver(self, packet: RtpPacket, out: Delivery, now: float) -> None:
        if packet.payload_type == self.event_pt:
            out.events.append(packet)
            return
        if packet.payload_type != self.audio_pt:
            self.other += 1  # comfort noise, or a codec that was not agreed: its time is a gap
            return
        if self._next_ts is not None:
            gap = (packet.timestamp - self._next_ts) & 0xFFFFFFFF
            if 0 < gap < 0x80000000:  # ahead: those timestamps are missing
                missing = min(gap, MAX_FILL)
                out.audio.append(missing)
                self._cover(now, missing)
            # behind: the sender's clock paused; follow it rather than drop its audio
        out.audio.append(packet.payload)
        self._concealing = False
        self._next_ts = (packet.timestamp + len(packet.payload)) & 0xFFFFFFFF
        self._cover(now, len(packet.payload))

    def _cover(self, now: float, samples: int) -> None:
        covered = max(self._covered_until, now) + samples / RATE
        self._covered_until = min(covered, now + MAX_LEAD)
