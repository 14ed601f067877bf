"""The pure parts: G.711, RTP, TwiML, signatures, message formatting."""

from __future__ import annotations

import array
import json
import random
import warnings

import pytest
from support.media import reference_signature

from turnpike.streamgw import g711, messages, rtp, signature, twiml
from turnpike.streamgw.wav import WavError, wav_to_ulaw


def test_g711_matches_the_reference_codec() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    codes = bytes(range(256))
    assert array.array("h", audioop.ulaw2lin(codes, 2)).tolist() == [
        g711.ulaw_to_linear(c) for c in codes
    ]
    assert array.array("h", audioop.alaw2lin(codes, 2)).tolist() == [
        g711.alaw_to_linear(c) for c in codes
    ]
    samples = array.array("h", range(-32768, 32768, 7))
    pcm = samples.tobytes()
    assert audioop.lin2ulaw(pcm, 2) == g711.pcm16_to_ulaw(samples)
    assert audioop.lin2alaw(pcm, 2) == bytes(g711.linear_to_alaw(s) for s in samples)


def test_g711_known_values_and_transcoding() -> None:
    assert g711.linear_to_ulaw(0) == 0xFF and g711.ulaw_to_linear(0xFF) == 0
    assert g711.linear_to_ulaw(32767) == 0x80 and g711.linear_to_ulaw(-32768) == 0x00
    assert g711.linear_to_alaw(0) == 0xD5
    # A-law → µ-law → A-law is the identity for every code but the two smallest magnitudes.
    round_trip = g711.ulaw_to_alaw(g711.alaw_to_ulaw(bytes(range(256))))
    assert sum(a != b for a, b in zip(round_trip, range(256), strict=True)) <= 16
    assert g711.alaw_to_ulaw(b"\xd5" * 4) == b"\xfe" * 4  # A-law has no exact zero: +8


def test_rtp_round_trip_and_malformed() -> None:
    data = rtp.build(0, 65535, 0xFFFFFFFF, 1234, b"\x01\x02", marker=True)
    packet = rtp.parse(data)
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (
        0,
        65535,
        0xFFFFFFFF,
        1234,
    )
    assert packet.marker and packet.payload == b"\x01\x02"
    # CSRCs, an extension and padding are all skipped.
    fancy = bytearray(rtp.build(8, 1, 2, 3, b""))
    fancy[0] = 0x80 | 0x20 | 0x10 | 1
    fancy += b"\x00\x00\x00\x09" + b"\xbe\xde\x00\x01" + b"\x00\x00\x00\x00" + b"AB" + b"\x00\x02"
    parsed = rtp.parse(bytes(fancy))
    assert parsed.payload == b"AB" and parsed.payload_type == 8
    for bad in (b"", b"\x80" * 11, b"\x40" + b"\x00" * 11, b"\x8f" + b"\x00" * 11):
        with pytest.raises(ValueError, match="RTP"):
            rtp.parse(bad)


def test_telephone_event() -> None:
    event = rtp.parse_telephone_event(rtp.build_telephone_event(11, True, 800))
    assert event.key == "#" and event.end and event.duration == 800
    assert rtp.parse_telephone_event(bytes([16, 0, 0, 0])).key is None


def test_signature_matches_the_published_vector_and_reference() -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature.compute("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert signature.compute("12345", url, params) == reference_signature("12345", url, params)
    ws_url = "wss://example.com/media"
    assert signature.compute("tok", ws_url) == reference_signature("tok", ws_url, {})


def test_media_template_equals_json() -> None:
    rng = random.Random(7)
    payload = bytes(rng.randrange(256) for _ in range(160))
    import base64

    b64 = base64.b64encode(payload).decode()
    text = messages.media(12, "outbound", 5, 80, b64, "MZ" + "a" * 32)
    body = {
        "event": "media",
        "sequenceNumber": "12",
        "media": {"track": "outbound", "chunk": "5", "timestamp": "80", "payload": b64},
        "streamSid": "MZ" + "a" * 32,
    }
    assert text == json.dumps(body, separators=(",", ":"))
    assert json.loads(messages.stop(3, "MZ1", "AC1", "CA1")) == {
        "event": "stop",
        "sequenceNumber": "3",
        "streamSid": "MZ1",
        "stop": {"accountSid": "AC1", "callSid": "CA1"},
    }
    # Names from customers are escaped properly in the JSON-built messages.
    assert json.loads(messages.mark(4, "MZ1", 'quote " and \\'))["mark"]["name"] == 'quote " and \\'


def test_twiml_parses_every_supported_verb() -> None:
    doc = twiml.parse(
        """<?xml version="1.0" encoding="UTF-8"?>
        <Response>
          <Start><Stream url="wss://a/b" name="n" track="both_tracks"
                 statusCallback="https://cb" statusCallbackMethod="get">
            <Parameter name="k" value="v"/></Stream></Start>
          <Stop><Stream name="n"/></Stop>
          <Connect action="/next" method="GET"><Stream url="wss://c"/></Connect>
          <Pause length="2"/><Pause/>
          <Play loop="2">https://x/a.wav</Play>
          <Redirect method="GET">/again</Redirect>
          <Hangup/>
        </Response>"""
    )
    assert doc.verbs == (
        twiml.Start(
            twiml.Stream("wss://a/b", "n", "both_tracks", "https://cb", "GET", (("k", "v"),))
        ),
        twiml.StopStream("n"),
        twiml.Connect(twiml.Stream("wss://c"), "/next", "GET"),
        twiml.Pause(2.0),
        twiml.Pause(1.0),
        twiml.Play("https://x/a.wav", 2),
        twiml.Redirect("/again", "GET"),
        twiml.Hangup(),
    )
    # An unknown track is kept so the stream can fail with 31941 while the call goes on.
    assert twiml.parse('<Response><Start><Stream url="wss://x" track="odd"/></Start></Response>')


@pytest.mark.parametrize(
    ("doc", "code", "words"),
    [
        ("not xml", 12100, "well-formed"),
        ("<Response><Dial>+15550001111</Dial></Response>", 12200, "<Dial> is not supported"),
        ("<Response><Start/></Response>", 12200, "exactly one <Stream>"),
        ("<Response><Start><Stream/></Start></Response>", 12200, "needs a url"),
        ("<Response><Stop><Stream/></Stop></Response>", 12200, "name of the stream"),
        ("<Response><Play/></Response>", 12200, "needs a URL"),
        ('<Response><Redirect method="PUT">/x</Redirect></Response>', 12200, "GET or POST"),
        (
            '<Response><Start><Stream url="wss://x" connectorName="c"/></Start></Response>',
            31940,
            "connectors",
        ),
    ],
)
def test_twiml_errors_are_clear(doc: str, code: int, words: str) -> None:
    with pytest.raises(twiml.TwimlError, match=words) as info:
        twiml.parse(doc)
    assert info.value.code == code


def wav(tag: int, channels: int, rate: int, bits: int, data: bytes) -> bytes:
    import struct

    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd-sized chunk, padded
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_conversion() -> None:
    ulaw = bytes(range(256))
    assert wav_to_ulaw(wav(7, 1, 8000, 8, ulaw)) == ulaw
    assert wav_to_ulaw(wav(6, 1, 8000, 8, b"\xd5" * 10)) == b"\xfe" * 10
    # 16 kHz stereo PCM: mixed to mono, halved in rate.
    samples = array.array("h", [1000, 3000] * 1600)
    out = wav_to_ulaw(wav(1, 2, 16000, 16, samples.tobytes()))
    assert len(out) == 800 and set(out) == {g711.linear_to_ulaw(2000)}
    with pytest.raises(WavError, match="unsupported"):
        wav_to_ulaw(wav(3, 1, 8000, 32, b"\x00" * 8))
    with pytest.raises(WavError, match="not a WAV"):
        wav_to_ulaw(b"ID3 mp3 data")


def test_stream_urls_relative_to_the_document() -> None:
    from turnpike.streamgw.errors import StreamFailure
    from turnpike.streamgw.stream import validate_url

    base = "https://app.example.com/voice/twiml?call=1"
    assert str(validate_url("/media", base)) == "wss://app.example.com/media"
    assert str(validate_url("media", base)) == "wss://app.example.com/voice/media"
    assert str(validate_url("wss://other.example.com/s", base)) == "wss://other.example.com/s"
    for raw, doc, code in [
        ("/media", "http://app.example.com/twiml", 31922),  # only wss, also when relative
        ("https://app.example.com/media", base, 31922),  # an absolute https URL is not wss
        ("/media", None, 31922),
    ]:
        with pytest.raises(StreamFailure) as failure:
            validate_url(raw, doc)
        assert failure.value.code == code
