"""`<Play>`, `<Pause>`, `<Hangup>` and `<Redirect>`."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path

from support import require_tool
from support.media import HttpServer, RtpPeer, WsServer, speech_wav, ulaw_wav
from support.streamgw import Harness


def loud_frames(audio: bytes) -> int:
    """20 ms frames holding speech rather than near-silence (µ-law codes of real magnitude)."""
    return sum(
        any((b & 0x7F) < 0x60 for b in audio[i : i + 160]) for i in range(0, len(audio), 160)
    )


def played(peer: RtpPeer) -> bytes:
    return b"".join(p.payload for p in peer.received)


async def test_play_sends_the_audio_to_the_caller_and_the_outbound_track(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer, speech: bytes
) -> None:
    clip = speech[: 160 * 40]
    wav = http.serve("/prompt.wav", ulaw_wav(clip))
    doc = (
        f'<Response><Start><Stream url="{ws.url("/out")}" track="outbound_track"/></Start>'
        '<Pause length="0.2"/>'
        f"<Play>{wav}</Play>"
        f'<Start><Stream url="{ws.url("/after-play")}"/></Start>'
        '<Pause length="60"/></Response>'
    )
    created = await gw.create_call(peer, twiml=doc)
    out = await ws.accept()
    after = await ws.accept()  # only once the prompt has played
    assert after.path == "/after-play"
    assert clip in played(peer)
    await after.next("start")
    await gw.hangup(created["sid"])
    await out.wait_closed()
    outbound = b"".join(base64.b64decode(m["media"]["payload"]) for m in out.of("media"))
    assert clip in outbound
    assert {m["media"]["track"] for m in out.of("media")} == {"outbound"}


async def test_play_converts_pcm_and_loops(
    gw: Harness, http: HttpServer, peer: RtpPeer, tmp_path: Path
) -> None:
    pcm = speech_wav(tmp_path, "one two three")
    wav = http.serve("/pcm.wav", pcm)
    created = await gw.create_call(
        peer, twiml=f'<Response><Play loop="2">{wav}</Play><Hangup/></Response>'
    )
    await gw.wait_status(created["sid"], timeout=20)
    # 22.05 kHz 16-bit speech arrives as 8 kHz µ-law, played twice: compare with what sox makes.
    sox = require_tool("sox", "apt-get install sox")
    (tmp_path / "in.wav").write_bytes(pcm)
    subprocess.run(
        [
            sox,
            str(tmp_path / "in.wav"),
            "-r",
            "8000",
            "-e",
            "u-law",
            "-t",
            "raw",
            str(tmp_path / "o"),
        ],
        check=True,
    )
    reference = (tmp_path / "o").read_bytes()
    voiced_reference = loud_frames(reference)
    voiced = loud_frames(played(peer))
    assert 1.6 * voiced_reference < voiced < 2.6 * voiced_reference
    assert all(p.payload_type == 0 for p in peer.received)


async def test_play_of_a_bad_file_is_reported_and_the_call_goes_on(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    bad = http.serve("/song.mp3", b"ID3\x03\x00 not a wav", "audio/mpeg")
    doc = (
        f"<Response><Play>{bad}</Play>"
        f'<Start><Stream url="{ws.url("/next")}"/></Start><Pause length="60"/></Response>'
    )
    created = await gw.create_call(peer, twiml=doc)
    await (await ws.accept()).next("start")
    call = await gw.call(created["sid"])
    assert call["errors"][0]["code"] == 12300 and "not a WAV" in call["errors"][0]["message"]
    await gw.hangup(created["sid"])


async def test_redirect_is_relative_to_the_document_and_pause_waits(
    gw: Harness, http: HttpServer, peer: RtpPeer
) -> None:
    http.twiml(
        "/app/start",
        '<Response><Pause length="0.3"/><Redirect method="GET">next</Redirect></Response>',
    )
    http.twiml("/app/next", "<Response><Hangup/><Pause length='60'/></Response>")
    created = await gw.create_call(peer, url=http.url("/app/start"))
    call = await gw.wait_status(created["sid"])
    assert call["errors"] == []
    (hit,) = http.on("/app/next")
    assert hit.method == "GET" and hit.query["CallSid"] == created["sid"]
    assert http.on("/app/start")[0].method == "POST"


async def test_hangup_ends_the_call_and_notifies(
    gw: Harness, http: HttpServer, peer: RtpPeer
) -> None:
    cb = http.url("/status")
    created = await gw.create_call(
        peer,
        twiml="<Response><Hangup/><Pause length='60'/></Response>",
        statusCallback=cb,
        statusCallbackMethod="GET",
    )
    (hit,) = await http.wait_for("/status")
    assert hit.query["CallStatus"] == "completed" and hit.query["CallSid"] == created["sid"]
    assert "ErrorCode" not in hit.query
    assert (await gw.call(created["sid"]))["status"] == "completed"
    assert not gw.gateway.calls


async def test_play_loop_zero_repeats_until_the_call_ends(
    gw: Harness, http: HttpServer, peer: RtpPeer, speech: bytes
) -> None:
    clip = speech[: 160 * 10]  # 0.2 s
    wav = http.serve("/short.wav", ulaw_wav(clip))
    created = await gw.create_call(
        peer, twiml=f'<Response><Play loop="0">{wav}</Play><Hangup/></Response>'
    )
    async with asyncio.timeout(20):
        while played(peer).count(clip) < 6:  # far more than once, and still going
            await peer.arrivals.get()
    assert (await gw.call(created["sid"]))["status"] == "in-progress"  # <Hangup/> never reached
    ended = await gw.hangup(created["sid"])
    assert ended["errors"] == []
