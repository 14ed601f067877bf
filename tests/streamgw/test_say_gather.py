"""`<Say>`, `<Gather>`, `<Reject>` and `<Start action>`, with TwiML written by twilio-python.

The hosted `<Stream>` documentation's own examples run end to end against a real TLS WebSocket
server; speech comes from the gateway's embedded espeak-ng and is checked with sox; digits are
real RFC 4733 events from the test's RTP sender.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path

import pytest
from support import require_tool
from support.media import Conn, HttpServer, RtpPeer, WsServer, ulaw_wav
from support.streamgw import Harness
from twilio.twiml.voice_response import Connect, Gather, Start, VoiceResponse

from turnpike.streamgw import g711

DTMF_EVENTS = {str(n): n for n in range(10)} | {"*": 10, "#": 11}


@pytest.fixture(autouse=True)
def espeak() -> None:
    """The gateway's default <Say> engine is espeak-ng."""
    require_tool("espeak-ng", "apt-get install espeak-ng")


def voiced(audio: bytes) -> int:
    """20 ms frames that carry speech: mean absolute amplitude well above idle noise."""
    frames = (audio[i : i + 160] for i in range(0, len(audio) - 159, 160))
    return sum(sum(abs(s) for s in g711.decode_ulaw(frame)) / 160 > 300 for frame in frames)


def media_of(conn: Conn, track: str) -> bytes:
    return b"".join(
        base64.b64decode(m["media"]["payload"])
        for m in conn.of("media")
        if m["media"]["track"] == track
    )


def played(peer: RtpPeer) -> bytes:
    return b"".join(p.payload for p in peer.received)


# sox effects: cut leading silence, reverse, cut it again (the trailing one), reverse back.
TRIM = ("silence", "1", "0.02", "1%", "reverse", "silence", "1", "0.02", "1%", "reverse")


def speech_seconds(tmp_path: Path, name: str, ulaw: bytes) -> float:
    """Duration of the speech in raw 8 kHz µ-law, leading and trailing silence cut, by sox."""
    sox = require_tool("sox", "apt-get install sox")
    raw = tmp_path / f"{name}.ulaw"
    raw.write_bytes(ulaw)
    trimmed = tmp_path / f"{name}.wav"
    subprocess.run(
        [sox, "-t", "raw", "-r", "8000", "-e", "u-law", "-c", "1", str(raw), str(trimmed), *TRIM],
        check=True,
    )
    out = subprocess.run([sox, "--i", "-D", str(trimmed)], check=True, capture_output=True)
    return float(out.stdout)


def espeak_seconds(tmp_path: Path, text: str) -> float:
    """The same words rendered by espeak-ng directly and measured the same way."""
    espeak = require_tool("espeak-ng", "apt-get install espeak-ng")
    sox = require_tool("sox", "apt-get install sox")
    wav = tmp_path / "espeak.wav"
    subprocess.run([espeak, "-v", "en-us+m3", "-w", str(wav), text], check=True)
    raw = tmp_path / "espeak.ulaw"
    subprocess.run([sox, str(wav), "-r", "8000", "-e", "u-law", "-t", "raw", str(raw)], check=True)
    return speech_seconds(tmp_path, "espeak-ref", raw.read_bytes())


async def test_hosted_start_stream_example_speaks_on_the_outbound_track(
    gw: Harness, ws: WsServer, peer: RtpPeer, tmp_path: Path
) -> None:
    # The <Start><Stream> example of the hosted <Stream> page, with track="both_tracks".
    response = VoiceResponse()
    start = Start()
    start.stream(name="Example Audio Stream", url=ws.url("/audiostream"), track="both_tracks")
    response.append(start)
    response.say("The stream has started.")
    created = await gw.create_call(peer, twiml=str(response))
    conn = await ws.accept()
    ended = await gw.wait_status(created["sid"], timeout=30)  # the document ends after <Say>
    await conn.wait_closed()
    assert ended["errors"] == []
    outbound = media_of(conn, "outbound")
    assert voiced(outbound) > 25  # over half a second of speech
    assert voiced(media_of(conn, "inbound")) == 0  # the caller sent nothing
    assert voiced(played(peer)) == voiced(outbound)  # what the caller heard
    spoken = speech_seconds(tmp_path, "outbound", outbound)
    reference = espeak_seconds(tmp_path, "The stream has started.")
    assert abs(spoken - reference) < 0.25 * reference, (spoken, reference)


async def test_hosted_connect_stream_example_speaks_once_the_server_closes(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    async def close_after_start(conn: Conn) -> None:
        async for msg in conn.ws:
            if '"event":"start"' in msg.data:
                await conn.ws.close()

    ws.behaviours["/audiostream"] = close_after_start
    response = VoiceResponse()
    connect = Connect()
    connect.stream(url=ws.url("/audiostream"))
    response.append(connect)
    response.say(
        "This TwiML instruction is unreachable unless the Stream is ended by your WebSocket server."
    )
    created = await gw.create_call(peer, twiml=str(response))
    await gw.wait_status(created["sid"], timeout=30)
    assert voiced(played(peer)) > 100  # the sentence, a few seconds long, reached the caller


async def test_hosted_parameter_example_reaches_the_start_message(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=ws.url("/example"))
    stream.parameter(name="FirstName", value="Jane")
    stream.parameter(name="LastName", value="Doe")
    response.append(connect)
    created = await gw.create_call(peer, twiml=str(response))
    conn = await ws.accept()
    start = await conn.next("start")
    assert start["start"]["customParameters"] == {"FirstName": "Jane", "LastName": "Doe"}
    await gw.hangup(created["sid"])


async def press(peer: RtpPeer, created: dict[str, object], keys: str) -> None:
    target = Harness.rtp_target(created)  # type: ignore[arg-type]
    for key in keys:
        await peer.send(peer.dtmf_packets(DTMF_EVENTS[key]), target, interval=0.02)


async def test_gather_collects_digits_and_interrupts_its_say(
    gw: Harness, http: HttpServer, peer: RtpPeer
) -> None:
    http.twiml("/digits", "<Response><Hangup/></Response>")
    response = VoiceResponse()
    gather = Gather(num_digits=3, action=http.url("/digits"), method="POST", timeout=5)
    gather.say("Please enter your account number, followed by the pound key. " * 4)
    response.append(gather)
    response.say("We did not receive any input.")
    created = await gw.create_call(peer, url=http.twiml("/voice", str(response)))
    async with asyncio.timeout(20):
        while voiced(played(peer)) < 25:  # the prompt is being spoken
            await peer.arrivals.get()
    await press(peer, created, "472")
    (hit,) = await http.wait_for("/digits", timeout=20)
    assert hit.form["Digits"] == "472"
    assert hit.form["CallSid"] == created["sid"]
    ended = await gw.wait_status(created["sid"], timeout=20)
    assert ended["errors"] == []
    # The prompt is about 15 s long: the first key cut it short.
    assert voiced(played(peer)) < 300


async def test_gather_key_cuts_off_nested_play_and_pause(
    gw: Harness, http: HttpServer, peer: RtpPeer
) -> None:
    tone = bytes([0x10]) * 160
    http.serve("/long.wav", ulaw_wav(tone * 500))  # 10 s
    http.twiml("/digits", "<Response><Hangup/></Response>")
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=http.url("/digits"), timeout=5)
    gather.play(http.url("/long.wav"))
    gather.pause(length=60)
    response.append(gather)
    created = await gw.create_call(peer, twiml=str(response))
    async with asyncio.timeout(20):
        while len(peer.received) < 25:  # the clip is playing
            await peer.arrivals.get()
    await press(peer, created, "7")
    (hit,) = await http.wait_for("/digits", timeout=20)  # not after the clip and the 60 s pause
    assert hit.form["Digits"] == "7"
    await gw.wait_status(created["sid"], timeout=20)
    assert sum(p.payload == tone for p in peer.received) < 400  # the clip was cut short


async def test_gather_finish_on_key_and_relative_action(
    gw: Harness, http: HttpServer, peer: RtpPeer
) -> None:
    http.twiml("/ivr/next", "<Response><Hangup/></Response>")
    response = VoiceResponse()
    response.gather(action="next", finish_on_key="#", timeout=10)
    created = await gw.create_call(peer, url=http.twiml("/ivr/start", str(response)))
    await http.wait_for("/ivr/start")
    await asyncio.sleep(0.3)
    await press(peer, created, "12#9")
    (hit,) = await http.wait_for("/ivr/next", timeout=20)
    assert hit.form["Digits"] == "12"
    await gw.wait_status(created["sid"], timeout=20)


@pytest.mark.parametrize("on_empty", [False, True])
async def test_gather_timeout_falls_through_or_reports_empty(
    gw: Harness, http: HttpServer, peer: RtpPeer, on_empty: bool
) -> None:
    http.twiml("/action", "<Response><Hangup/></Response>")
    http.twiml("/after", "<Response><Hangup/></Response>")
    response = VoiceResponse()
    response.gather(action=http.url("/action"), timeout=1, action_on_empty_result=on_empty)
    response.redirect(http.url("/after"))
    created = await gw.create_call(peer, twiml=str(response))
    await gw.wait_status(created["sid"], timeout=20)
    if on_empty:
        assert [h.form["Digits"] for h in http.on("/action")] == [""]
        assert http.on("/after") == []
    else:
        assert http.on("/action") == []
        assert len(http.on("/after")) == 1


async def test_gather_without_action_goes_on_with_the_next_verb(
    gw: Harness, http: HttpServer, peer: RtpPeer
) -> None:
    http.twiml("/after", "<Response><Hangup/></Response>")
    response = VoiceResponse()
    response.gather(num_digits=1, timeout=10)
    response.redirect(http.url("/after"))
    created = await gw.create_call(peer, twiml=str(response))
    await asyncio.sleep(0.3)
    await press(peer, created, "5")
    (hit,) = await http.wait_for("/after", timeout=20)
    assert "Digits" not in hit.form
    await gw.wait_status(created["sid"], timeout=20)


async def test_gather_without_action_sends_the_digits_to_the_document_url(
    gw: Harness, http: HttpServer, peer: RtpPeer
) -> None:
    response = VoiceResponse()
    response.gather(num_digits=2, timeout=10, method="GET")
    response.say("never reached: the digits go back to this document's URL")
    created = await gw.create_call(peer, url=http.twiml("/menu", str(response)))
    await http.wait_for("/menu")
    await asyncio.sleep(0.3)
    await press(peer, created, "42")
    (hit,) = await http.wait_for("/menu", Digits="42", timeout=20)
    assert hit.method == "GET" and hit.form == {}  # the parameters are in the query
    assert hit.query["CallSid"] == created["sid"]
    await gw.hangup(created["sid"])


@pytest.mark.parametrize(("reason", "status"), [("busy", "busy"), (None, "no-answer")])
async def test_reject_ends_the_call_unanswered(
    gw: Harness, http: HttpServer, reason: str | None, status: str
) -> None:
    response = VoiceResponse()
    response.reject(reason=reason)
    created = await gw.create_call(
        url=http.twiml("/voice", str(response)), statusCallback=http.url("/status")
    )
    ended = await gw.wait_status(created["sid"], status=status, timeout=20)
    assert ended["errors"] == []
    (hit,) = await http.wait_for("/status", timeout=20)
    assert hit.form["CallStatus"] == status


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_start_action_replaces_the_rest_of_the_document(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer, method: str
) -> None:
    http.twiml("/started", '<Response><Pause length="30"/></Response>')
    response = VoiceResponse()
    start = Start(action=http.url("/started"), method=method)
    start.stream(url=ws.url("/fork"))
    response.append(start)
    response.hangup()  # never reached: the action's TwiML runs instead
    created = await gw.create_call(peer, twiml=str(response))
    conn = await ws.accept()
    (hit,) = await http.wait_for("/started")
    start_msg = await conn.next("start")
    assert hit.method == method
    params = hit.form if method == "POST" else hit.query
    assert params["StreamSid"] == start_msg["streamSid"]
    assert params["CallSid"] == created["sid"]
    assert (await gw.call(created["sid"]))["status"] == "in-progress"
    await gw.hangup(created["sid"])


async def test_unsupported_verbs_are_named(gw: Harness) -> None:
    documents = []
    response = VoiceResponse()
    response.dial("+15550003333")
    documents.append((response, "<Dial>"))
    response = VoiceResponse()
    response.record()
    documents.append((response, "<Record>"))
    for noun, name in (("transcription", "<Start><Transcription>"), ("siprec", "<Start><Siprec>")):
        response = VoiceResponse()
        start = Start()
        getattr(start, noun)(name="x")
        response.append(start)
        documents.append((response, name))
    response = VoiceResponse()
    connect = Connect()
    connect.conversation_relay(url="wss://example.com/relay")
    response.append(connect)
    documents.append((response, "<Connect><ConversationRelay>"))
    response = VoiceResponse()
    response.gather(input="speech")
    documents.append((response, "speech"))
    for response, name in documents:
        status, out = await gw.request("POST", "/v1/Calls", json={"twiml": str(response)})
        assert status == 400 and out["code"] == 12200, out
        assert name in out["message"], out
    assert not gw.gateway.calls
