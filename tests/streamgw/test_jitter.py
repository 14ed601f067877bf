"""The jitter buffer and the latching rule, packet by packet (the RTP ingress tests drive them
through real sockets)."""

from __future__ import annotations

import pytest

from turnpike.streamgw import rtp
from turnpike.streamgw.jitter import DEFAULT_DEPTH, MAX_FILL, MAX_LEAD, Delivery, JitterBuffer
from turnpike.streamgw.latch import Latch
from turnpike.streamgw.media import InboundAssembler

SSRC = 0x1234


def audio(seq: int, ts: int, fill: int, size: int = 160, ssrc: int = SSRC) -> rtp.RtpPacket:
    return rtp.RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, bytes([fill]) * size)


def event(seq: int, ts: int) -> rtp.RtpPacket:
    return rtp.RtpPacket(101, seq, ts, SSRC, rtp.build_telephone_event(5, False, 160))


def flat(deliveries: list[Delivery]) -> list[bytes | int]:
    """Audio pieces as (first byte of each payload) or (silent sample counts)."""
    out: list[bytes | int] = []
    for d in deliveries:
        out += [p[:1] if isinstance(p, bytes) else p for p in d.audio]
    return out


def test_reorders_across_the_sequence_wrap_and_drops_duplicates() -> None:
    buf = JitterBuffer(0, 101, now=0.0)
    order = [65533, 65535, 65534, 0, 2, 1, 1, 3, 65534]
    got = [buf.push(audio(s, 1000 + 160 * ((s - 65533) & 0xFFFF), s & 0xFF), 0.0) for s in order]
    assert flat(got) == [bytes([s & 0xFF]) for s in (65533, 65534, 65535, 0, 1, 2, 3)]
    assert buf.stale == 2 and buf.lost == 0


def test_silence_only_for_the_timestamps_of_lost_packets() -> None:
    buf = JitterBuffer(0, 101, now=0.0, depth=2)
    got = [buf.push(audio(s, 160 * s, s), 0.0) for s in (10, 11, 13, 14, 15)]
    # Packet 12 never comes: once more than two packets wait, its 160 samples become silence.
    assert flat(got) == [b"\x0a", b"\x0b", 160, b"\x0d", b"\x0e", b"\x0f"]
    assert buf.lost == 1
    assert buf.push(audio(12, 160 * 12, 12), 0.0).audio == []  # too late now
    assert buf.stale == 1


def test_a_telephone_event_keeps_its_place_and_takes_no_audio_time() -> None:
    buf = JitterBuffer(0, 101, now=0.0)
    got = [
        buf.push(p, 0.0)
        for p in (audio(1, 0, 1), audio(2, 160, 2), event(3, 320), audio(4, 320, 4))
    ]
    assert flat(got) == [b"\x01", b"\x02", b"\x04"]
    assert [e.sequence for d in got for e in d.events] == [3]


def test_a_timestamp_jump_is_filled_exactly_and_at_most_a_second() -> None:
    buf = JitterBuffer(0, None, now=0.0)
    got = [buf.push(p, 0.0) for p in (audio(1, 0, 1), audio(2, 160, 2), audio(3, 160 + 480, 3))]
    assert flat(got) == [b"\x01", b"\x02", 320, b"\x03"]  # comfort noise / DTX: 40 ms missing
    jump = buf.push(audio(4, 10 * MAX_FILL, 4), 0.0)
    got2 = buf.push(audio(5, 10 * MAX_FILL + 160, 5), 0.0)
    assert flat([jump, got2]) == [MAX_FILL, b"\x04", b"\x05"]


def test_a_sender_behind_the_clock_loses_nothing() -> None:
    buf = JitterBuffer(0, None, now=0.0)
    buf.push(audio(1, 0, 1), 0.0)
    buf.push(audio(2, 160, 2), 0.0)
    assert flat([buf.conceal(5.0, 0.25)]) == [round((5.0 - 0.04) * 8000)]
    # The sender resumes with the timestamps it left off at: its audio is kept, in order.
    got = [buf.push(audio(s, 160 * s - 160, s), 5.0) for s in (3, 4)]
    assert flat(got) == [b"\x03", b"\x04"]


def test_concealment_waits_until_a_burst_has_played_out() -> None:
    buf = JitterBuffer(0, None, now=0.0)
    # Half a second of audio arrives at once (ffmpeg -re sends like this).
    burst = [buf.push(audio(s, 4000 * s, s, size=4000), 0.0) for s in (1, 2)]
    assert flat(burst) == [b"\x01", b"\x02"]
    assert buf.conceal(0.9, 0.25).audio == []  # 1 s of audio: still playing
    assert buf.conceal(1.2, 0.25).audio == []
    assert flat([buf.conceal(1.3, 0.25)]) == [round(0.3 * 8000)]
    assert flat([buf.conceal(1.32, 0.25)]) == [160]  # then one frame's worth per tick


def test_a_lone_first_packet_is_released_by_concealment_and_a_new_ssrc_starts_afresh() -> None:
    buf = JitterBuffer(0, None, now=0.0)
    assert buf.push(audio(7, 0, 7), 0.0).audio == []  # waits for a second packet
    assert buf.held == 1
    assert flat([buf.conceal(0.3, 0.25)])[0] == b"\x07"
    other = [buf.push(audio(s, 99 + 160 * s, s & 0xFF, ssrc=9), 0.4) for s in (500, 501)]
    assert flat(other) == [b"\xf4", b"\xf5"]  # no silence: a new timeline
    assert buf.stale == 0 and buf.lost == 0


def test_the_default_depth_holds_100_ms_of_20_ms_packets() -> None:
    assert DEFAULT_DEPTH == 5
    with pytest.raises(ValueError, match="depth"):
        JitterBuffer(0, None, now=0.0, depth=0)


def test_latching_needs_valid_rtp_with_a_negotiated_payload_type() -> None:
    caller, nat, stray = ("192.0.2.1", 4000), ("198.51.100.7", 6000), ("203.0.113.9", 9)
    latch = Latch(caller, (0, 101))
    assert not latch.admit(rtp.RtpPacket(96, 1, 0, SSRC, b"x"), stray)  # not negotiated
    assert latch.remote == caller
    assert latch.admit(audio(1, 0, 0), nat)  # behind NAT: latched
    assert latch.remote == nat
    assert not latch.admit(audio(2, 160, 0), stray)  # only once
    assert not latch.admit(audio(2, 160, 0), caller)


def test_no_latching_after_the_signalled_address_has_spoken() -> None:
    caller, other = ("192.0.2.1", 4000), ("192.0.2.1", 4002)
    latch = Latch(caller, (8,))
    assert latch.admit(rtp.RtpPacket(8, 1, 0, SSRC, b"x"), caller)
    assert not latch.admit(rtp.RtpPacket(8, 2, 0, SSRC, b"x"), other)
    latch.resignal(other, (8,))  # a re-INVITE moves the media
    assert latch.admit(rtp.RtpPacket(8, 3, 0, SSRC, b"x"), other)
    unsignalled = Latch(None, (0,))
    assert unsignalled.admit(audio(1, 0, 0), other) and unsignalled.remote == other


def test_a_sender_far_ahead_of_real_time_counts_as_at_most_max_lead_ahead() -> None:
    buf = JitterBuffer(0, None, now=0.0)
    for s in range(1, 500):  # ten seconds of audio within one instant
        buf.push(audio(s, 160 * s, 1), 0.0)
    assert buf.conceal(MAX_LEAD + 0.2, 0.25).audio == []
    assert flat([buf.conceal(MAX_LEAD + 0.3, 0.25)]) == [round(0.3 * 8000)]


def test_a_key_held_when_the_caller_goes_quiet_is_still_reported() -> None:
    assembler = InboundAssembler(8, 101, now=0.0)
    assembler.accept(
        rtp.RtpPacket(101, 50, 800, SSRC, rtp.build_telephone_event(1, True, 800)), 0.0
    )
    frames, keys = assembler.conceal(1.0, 0.25)
    assert keys == ["1"] and frames


def test_concealment_keeps_frames_aligned_with_the_packets_that_follow() -> None:
    assembler = InboundAssembler(0, 101, now=0.0)
    silence, _ = assembler.conceal(0.2537, 0.25)  # an instant between two frame boundaries
    assert silence == [b"\xff" * 160] * 12
    frames = []
    for seq in range(1, 4):
        got, _ = assembler.accept(audio(seq, 160 * seq, seq), 0.26)
        frames += got
    got, _ = assembler.conceal(0.27, 0.25)  # the lone first packet is held until the next tick
    frames += got
    assert frames == [bytes([n]) * 160 for n in (1, 2, 3)]
