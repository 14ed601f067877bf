"""`<Start><Stream>`: real speech over RTP arrives byte-exact in hosted-format messages."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import warnings
from pathlib import Path
from typing import Any

from support.media import RtpPeer, WsServer, reference_signature
from support.streamgw import ACCOUNT, TOKEN, Harness, MakeGateway

# WebSocket text frames a real hosted Media Stream sent to a customer's server, one JSON object a
# line: the first five lines (connected, start, three media) and the last two (media, stop) of
# tests/fixtures/stream1.txt in github.com/edward-cates/twilio_phone_calls at commit
# 1696e4df6161fe069ee866bc6a1f079799412b93 (MIT licence), whose author anonymised the streamSid
# ("test_stream"). Lines are unchanged.
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "hosted-stream1-excerpt.txt"


def shape(value: Any) -> Any:
    """Key order and JSON types, without the values."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return ["list", *sorted({json.dumps(shape(v)) for v in value})]
    return type(value).__name__


def reference_shapes() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in FIXTURE.read_text().splitlines():
        msg = json.loads(line)
        shaped = shape(msg)
        assert out.setdefault(msg["event"], shaped) == shaped, line  # one shape per event
    return out


# The hosted service's shapes, as captured; the other tests compare the gateway's messages to them.
CAPTURED = {
    "connected": [("event", "str"), ("protocol", "str"), ("version", "str")],
    "media": [
        ("event", "str"),
        ("sequenceNumber", "str"),
        ("media", [("track", "str"), ("chunk", "str"), ("timestamp", "str"), ("payload", "str")]),
        ("streamSid", "str"),
    ],
    "stop": [
        ("event", "str"),
        ("sequenceNumber", "str"),
        ("streamSid", "str"),
        ("stop", [("accountSid", "str"), ("callSid", "str")]),
    ],
    "start": [
        ("event", "str"),
        ("sequenceNumber", "str"),
        (
            "start",
            [
                ("accountSid", "str"),
                ("streamSid", "str"),
                ("callSid", "str"),
                ("tracks", ["list", '"str"']),
                ("mediaFormat", [("encoding", "str"), ("sampleRate", "int"), ("channels", "int")]),
            ],
        ),
        ("streamSid", "str"),
    ],
}


def test_inline_shapes_match_the_capture() -> None:
    """The inline shapes are what the captured hosted stream shows."""
    assert reference_shapes() == CAPTURED


def stream_doc(url: str, extra: str = '<Pause length="60"/>', **attrs: str) -> str:
    attributes = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return (
        f'<Response><Start><Stream url="{url}"{attributes}>'
        '<Parameter name="tenant" value="acme"/><Parameter name="agentId" value="42"/>'
        f"</Stream></Start>{extra}</Response>"
    )


async def test_speech_arrives_byte_exact_in_hosted_format(
    gw: Harness, ws: WsServer, peer: RtpPeer, speech: bytes
) -> None:
    url = ws.url("/media")
    created = await gw.create_call(peer, twiml=stream_doc(url))
    assert created["status"] == "in-progress" and created["sid"].startswith("CA")
    conn = await ws.accept()
    start = await conn.next("start")
    await peer.send(peer.packets(speech), gw.rtp_target(created), interval=0.005)

    frames = len(speech) // 160
    joined = b""
    async with asyncio.timeout(20):
        while speech not in joined:
            msg = await conn.next("media")
            joined += base64.b64decode(msg["media"]["payload"])
    await gw.hangup(created["sid"])
    await conn.wait_closed()

    msgs = conn.messages
    # Order: connected, start, media…, stop; then a normal close.
    assert [m["event"] for m in msgs[:2]] == ["connected", "start"]
    assert msgs[-1]["event"] == "stop"
    assert {m["event"] for m in msgs[2:-1]} == {"media"}
    assert conn.close_code == 1000
    assert conn.other_frames == []  # text frames only
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    sid = start["streamSid"]
    assert sid.startswith("MZ") and len(sid) == 34
    assert start["start"] == {
        "accountSid": ACCOUNT,
        "streamSid": sid,
        "callSid": created["sid"],
        "tracks": ["inbound"],
        "customParameters": {"tenant": "acme", "agentId": "42"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    assert msgs[-1]["stop"] == {"accountSid": ACCOUNT, "callSid": created["sid"]}
    assert all(m["streamSid"] == sid for m in msgs[1:])

    # Strings where the hosted service has strings, gap-free counters, 20 ms steps.
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(n) for n in range(1, len(msgs))]
    media = conn.of("media")
    assert [m["media"]["chunk"] for m in media] == [str(n) for n in range(1, len(media) + 1)]
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert all(isinstance(m["media"]["timestamp"], str) for m in media)
    assert [b - a for a, b in itertools.pairwise(stamps)] == [20] * (len(stamps) - 1)
    assert {m["media"]["track"] for m in media} == {"inbound"}
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)

    # The speech arrives whole and in order; anything around it is µ-law silence.
    everything = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    at = everything.index(speech)
    assert set(everything[:at]) <= {0xFF} and set(everything[at + len(speech) :]) <= {0xFF}
    assert len(media) >= frames

    # Same keys, key order and JSON types as a captured hosted stream.
    shapes = CAPTURED
    for event in ("connected", "media", "stop"):
        assert shape(conn.of(event)[0]) == shapes[event], event
    ours = shape(start)
    start_body = dict(ours)["start"]
    expected_start_body = [
        ("accountSid", "str"),
        ("streamSid", "str"),
        ("callSid", "str"),
        ("tracks", ["list", '"str"']),
        ("customParameters", [("tenant", "str"), ("agentId", "str")]),
        ("mediaFormat", [("encoding", "str"), ("sampleRate", "int"), ("channels", "int")]),
    ]
    assert start_body == expected_start_body
    assert [k for k, _ in ours] == ["event", "sequenceNumber", "start", "streamSid"]
    # The capture has no parameters, so it lacks customParameters; the rest is the same.
    captured = [(k, v) for k, v in shapes["start"] if k != "start"]
    captured_body = dict(shapes["start"])["start"]
    assert [(k, v) for k, v in ours if k != "start"] == captured
    assert [kv for kv in start_body if kv[0] != "customParameters"] == captured_body

    # The upgrade request looks like the hosted service's and is signed over the wss URL.
    assert conn.headers["User-Agent"] == "Twilio.TmeWs/1.0"
    assert conn.headers["X-Twilio-Signature"] == reference_signature(TOKEN, url, {})
    assert "Origin" not in conn.headers


async def test_query_string_is_dropped_from_stream_url(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    created = await gw.create_call(peer, twiml=stream_doc(ws.url("/q") + "?secret=1"))
    conn = await ws.accept()
    await conn.next("start")
    assert conn.path == "/q"
    assert conn.headers["X-Twilio-Signature"] == reference_signature(TOKEN, ws.url("/q"), {})
    await gw.hangup(created["sid"])


async def test_reordered_duplicated_and_lost_packets(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    created = await gw.create_call(peer, twiml=stream_doc(ws.url("/jitter")))
    conn = await ws.accept()
    await conn.next("start")
    frames = [bytes([n]) * 160 for n in range(1, 31)]  # distinct, never silence
    packets = peer.packets(b"".join(frames))
    order = list(range(30))
    for i in range(0, 28, 4):  # swap neighbours (the very first pair too): jitter
        order[i], order[i + 1] = order[i + 1], order[i]
    order.remove(17)  # lost
    order.insert(10, 3)  # a late duplicate
    await peer.send([packets[i] for i in order], gw.rtp_target(created), interval=0.002)
    got: list[bytes] = []
    async with asyncio.timeout(10):
        while frames[-1] not in got:
            msg = await conn.next("media")
            got.append(base64.b64decode(msg["media"]["payload"]))
    audio = [f for f in got if f != b"\xff" * 160]
    assert audio == [f for n, f in enumerate(frames) if n != 17]  # in order, each once
    # The lost packet's time is kept as a silence frame, so media time stays right.
    at = got.index(frames[16])
    assert got[at + 1] == b"\xff" * 160 and got[at + 2] == frames[18]
    await gw.hangup(created["sid"])


async def test_pcma_calls_are_converted_both_ways(gw: Harness, ws: WsServer, peer: RtpPeer) -> None:
    created = await gw.create_call(peer, twiml=stream_doc(ws.url("/pcma")), codec="PCMA")
    conn = await ws.accept()
    await conn.next("start")
    alaw = bytes(range(0x80, 0x80 + 80)) * 2  # A-law codes, none of them silence
    await peer.send(peer.packets(alaw, pt=8), gw.rtp_target(created))
    msg = await conn.next("media")
    while base64.b64decode(msg["media"]["payload"]) == b"\xff" * 160:
        msg = await conn.next("media")
    ulaw = base64.b64decode(msg["media"]["payload"])
    assert len(ulaw) == 160 and 0xFF not in ulaw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the reference codec (standard library up to Python 3.12)
    assert ulaw == audioop.lin2ulaw(audioop.alaw2lin(alaw, 2), 2)
    async with asyncio.timeout(5):
        packet = await peer.arrivals.get()
    assert packet.payload_type == 8 and packet.payload == b"\xd5" * 160  # A-law silence
    await gw.hangup(created["sid"])


async def test_silent_caller_gets_silence_frames_then_a_hangup(
    make_gateway: MakeGateway, ws: WsServer, peer: RtpPeer
) -> None:
    gw = await make_gateway(rtp_fill_after=0.2, rtp_timeout=0.4, rtp_idle_hangup=1.0)
    created = await gw.create_call(peer, twiml=stream_doc(ws.url("/silent")))
    conn = await ws.accept()
    await conn.next("start")
    await conn.wait_closed()
    call = await gw.wait_status(created["sid"])
    assert 31953 in [e["code"] for e in call["errors"]]
    media = conn.of("media")
    assert media and all(base64.b64decode(m["media"]["payload"]) == b"\xff" * 160 for m in media)
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert all(b - a == 20 for a, b in itertools.pairwise(stamps))
    assert conn.messages[-1]["event"] == "stop"
