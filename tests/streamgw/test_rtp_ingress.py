"""RTP into a REST-created call like a media endpoint: latching cannot be hijacked by a stray
datagram, and a bursty real-world sender (ffmpeg) arrives byte-exact, with no silence inserted."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from support import require_tool
from support.media import RtpPeer, WsServer, speech_wav
from support.streamgw import MakeGateway

HOST = "127.0.0.1"
PAUSE = '<Pause length="60"/>'


def start_doc(url: str) -> str:
    return f'<Response><Start><Stream url="{url}"/></Start>{PAUSE}</Response>'


def inbound_audio(messages: list[dict[str, object]]) -> bytes:
    return b"".join(
        base64.b64decode(m["media"]["payload"])  # type: ignore[index]
        for m in messages
        if m["event"] == "media"
    )


async def test_a_stray_datagram_first_does_not_take_the_call(
    make_gateway: MakeGateway, ws: WsServer, peer: RtpPeer, speech: bytes
) -> None:
    gw = await make_gateway()
    created = await gw.create_call(None, twiml=start_doc(ws.url("/hijack")))
    target = gw.rtp_target(created)
    conn = await ws.accept()
    await conn.next("start")
    stray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stray.bind(("127.0.0.1", 0))
    stray.setblocking(False)
    try:
        # Not RTP: a text datagram, and a SIP INVITE sent to the wrong port.
        stray.sendto(b"hello, is this port open", target)
        stray.sendto(
            b"INVITE sip:+15550002222@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n\r\n", target
        )
        # RTP, but with a payload type nobody negotiated.
        stray.sendto(bytes([0x80, 96, 0, 1]) + b"\x00" * 8 + b"\x55" * 160, target)
        await asyncio.sleep(0.2)
        assert (await gw.call(created["sid"]))["rtp"]["remote"] is None
        clip = speech[: 160 * 50]
        await peer.send(peer.packets(clip), target)
        async with asyncio.timeout(5):
            back = await peer.arrivals.get()  # the gateway answers the real caller
        assert back.payload_type == 0
        assert (await gw.call(created["sid"]))["rtp"]["remote"] == peer.address
        # Once latched, another source is ignored even with valid RTP.
        stray.sendto(bytes([0x80, 0, 0, 1]) + b"\x00" * 8 + b"\x55" * 160, target)
        await asyncio.sleep(0.2)
        with pytest.raises(BlockingIOError):
            stray.recv(2048)  # and the stray source never got the call's audio
        await gw.hangup(created["sid"])
        await conn.wait_closed()
        received = inbound_audio(conn.messages)
        assert clip in received
        assert b"\x55" * 160 not in received
    finally:
        stray.close()


def ffmpeg_reference(ffmpeg: str, wav: Path) -> bytes:
    """What the README's ffmpeg line encodes, as a file instead of RTP: the bytes to expect."""
    return subprocess.run(
        [ffmpeg, "-loglevel", "error", "-i", str(wav), *ENCODE, "-f", "mulaw", "-"],
        check=True,
        capture_output=True,
    ).stdout


ENCODE = ["-ar", "8000", "-ac", "1", "-c:a", "pcm_mulaw"]


async def stream_and_collect(
    make_gateway: MakeGateway, ws: WsServer, send: Callable[[tuple[str, int]], Awaitable[None]]
) -> bytes:
    # The gateway's default fill delay: no more slack than a real deployment has.
    gw = await make_gateway(rtp_fill_after=0.25)
    created = await gw.create_call(None, twiml=start_doc(ws.url("/ffmpeg")))
    conn = await ws.accept()
    await conn.next("start")
    await send(gw.rtp_target(created))
    await asyncio.sleep(0.5)  # let the last packet play out before hanging up
    await gw.hangup(created["sid"])
    await conn.wait_closed()
    return inbound_audio(conn.messages)


@pytest.mark.interop
async def test_the_readme_ffmpeg_line_arrives_byte_exact(
    make_gateway: MakeGateway, ws: WsServer, tmp_path: Path
) -> None:
    ffmpeg = require_tool("ffmpeg", "apt-get install ffmpeg")
    wav = tmp_path / "speech.wav"
    wav.write_bytes(speech_wav(tmp_path, "One two three four five, the audio must not stretch."))
    reference = ffmpeg_reference(ffmpeg, wav)

    async def send(target: tuple[str, int]) -> None:
        sender = await asyncio.create_subprocess_exec(
            *[ffmpeg, "-loglevel", "error", "-re", "-i", str(wav), *ENCODE],
            *["-f", "rtp", f"rtp://{target[0]}:{target[1]}"],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await sender.communicate()
        assert sender.returncode == 0, err.decode()

    received = await stream_and_collect(make_gateway, ws, send)
    assert len(reference) > 8000
    assert reference in received


@pytest.mark.interop
async def test_half_second_bursts_of_ffmpeg_packets_arrive_byte_exact(
    make_gateway: MakeGateway, ws: WsServer, tmp_path: Path
) -> None:
    """ffmpeg's own RTP packets, replayed as a sender that bursts 0.5 s of audio at a time."""
    ffmpeg = require_tool("ffmpeg", "apt-get install ffmpeg")
    wav = tmp_path / "speech.wav"
    wav.write_bytes(speech_wav(tmp_path, "Six seven eight nine ten, bursts must not stretch."))
    reference = ffmpeg_reference(ffmpeg, wav)
    capture = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    capture.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    capture.bind((HOST, 0))
    capture.settimeout(1.0)
    port = capture.getsockname()[1]
    packets: list[bytes] = []
    try:
        subprocess.run(
            [
                ffmpeg,
                "-loglevel",
                "error",
                "-i",
                str(wav),
                *ENCODE,
                "-f",
                "rtp",
                f"rtp://{HOST}:{port}",
            ],
            check=True,
            capture_output=True,
        )
        while True:
            try:
                packets.append(capture.recv(65536))
            except TimeoutError:
                break
    finally:
        capture.close()
    assert b"".join(p[12:] for p in packets) == reference  # plain RTP headers, nothing lost

    async def send(target: tuple[str, int]) -> None:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            burst: list[bytes] = []
            for packet in packets:
                burst.append(packet)
                if sum(len(p) - 12 for p in burst) >= 4000 or packet is packets[-1]:
                    for p in burst:
                        out.sendto(p, target)
                    burst = []
                    await asyncio.sleep(0.5)
        finally:
            out.close()

    received = await stream_and_collect(make_gateway, ws, send)
    assert reference in received
