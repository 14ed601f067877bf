"""`turnpike dev call`: place a call into the local gateway and check the audio came through.

It plays a WAV file as RTP (20 ms PCMU packets paced in real time) into the gateway of a running
`turnpike dev`, with TwiML that forks the call's audio to the sample consumer, hangs up when the
audio has been sent, and compares what the consumer recorded with what was sent. The call is
handed over with ``POST /v1/Calls``, or with ``--via-sip`` placed over SIP to the dev number.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import aiohttp

from turnpike.streamgw.wav import wav_to_ulaw

FRAME = 160  # 20 ms of 8 kHz µ-law
SILENCE = 0xFF


def default_clip() -> bytes:
    return wav_to_ulaw(resources.files("turnpike.dev").joinpath("hello.wav").read_bytes())


@dataclass(frozen=True, slots=True)
class CallResult:
    call_sid: str
    sent: int
    received: int
    offset: int  # where the sent audio starts in the recording, -1 if not found
    files: dict[str, str]

    @property
    def matches(self) -> bool:
        return self.offset >= 0


class _RtpSink(asyncio.DatagramProtocol):
    """Takes (and drops) the gateway's outbound RTP so the socket never backs up."""

    def __init__(self) -> None:
        self.packets = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets += 1


async def send_rtp(
    transport: asyncio.DatagramTransport, remote: tuple[str, int], audio: bytes
) -> None:
    """Send ``audio`` as RFC 3550 PCMU packets, one per 20 ms on an absolute schedule."""
    loop = asyncio.get_running_loop()
    ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
    if pad := -len(audio) % FRAME:
        audio += bytes([SILENCE]) * pad
    start = loop.time()
    for n, offset in enumerate(range(0, len(audio), FRAME)):
        marker = 0x80 if n == 0 else 0
        header = struct.pack(
            "!BBHII", 0x80, marker, (seq + n) & 0xFFFF, (ts + n * FRAME) & 0xFFFFFFFF, ssrc
        )
        transport.sendto(header + audio[offset : offset + FRAME], remote)
        delay = start + (n + 1) * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def place_call(state: dict[str, Any], audio: bytes, twiml: str | None) -> CallResult:
    host = state["host"]
    credentials = f"{state['accountSid']}:{state['authToken']}".encode()
    auth = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
    consumer_ssl = ssl.create_default_context(cafile=state["consumer"]["caFile"])
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(
        _RtpSink, local_addr=(host, 0), family=family
    )
    local = transport.get_extra_info("sockname")
    default_twiml = twiml is None
    if twiml is None:
        url = quoteattr(state["consumer"]["record"])
        twiml = (
            f'<Response><Start><Stream url={url} name="dev-call"/></Start>'
            '<Pause length="600"/></Response>'
        )
    body = {
        "accountSid": state["accountSid"],
        "from": "+15005550001",
        "to": "+15005550002",
        "twiml": twiml,
        "rtp": {
            "remote": f"{local[0]}:{local[1]}"
            if family == socket.AF_INET
            else f"[{local[0]}]:{local[1]}"
        },
    }
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.post(state["streamgw"]["callsUrl"], json=body) as resp:
                answer = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"the gateway refused the call: {resp.status} {answer}")
            call_sid = answer["sid"]
            if default_twiml:
                # <Start><Stream> forks asynchronously: audio from before the consumer's socket
                # is up is not streamed (as with the hosted service), so wait for it first.
                await _wait_recording(http, state, call_sid, consumer_ssl, complete=False)
            await send_rtp(transport, _host_port(answer["rtp"]["local"]), audio)
            await asyncio.sleep(0.3)  # let the last frames clear the gateway's jitter buffer
            async with http.delete(f"{state['streamgw']['callsUrl']}/{call_sid}") as resp:
                if resp.status not in (200, 204, 404):
                    raise RuntimeError(f"hang-up failed: {resp.status} {await resp.text()}")
            recording = await _wait_recording(http, state, call_sid, consumer_ssl)
    finally:
        transport.close()
    return await _result(call_sid, audio, recording)


async def place_sip_call(state: dict[str, Any], audio: bytes) -> CallResult:
    """The same call over SIP: INVITE the dev number, stream, then BYE (see `sipcall`)."""
    from turnpike.dev.sipcall import SipLeg

    host = state["host"]
    sip = state["streamgw"]["sip"]
    consumer_ssl = ssl.create_default_context(cafile=state["consumer"]["caFile"])
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(
        _RtpSink, local_addr=(host, 0), family=family
    )
    leg = SipLeg(host, (sip["host"], sip["port"]), sip["uri"], "+15005550001")
    try:
        await leg.open()
        media, call_sid = await leg.invite(host, transport.get_extra_info("sockname")[1])
        if call_sid is None or media.remote is None:
            raise RuntimeError("the gateway's 200 OK named no call or no media address")
        async with aiohttp.ClientSession() as http:
            await _wait_recording(http, state, call_sid, consumer_ssl, complete=False)
            await send_rtp(transport, media.remote, audio)
            await asyncio.sleep(0.3)  # let the last frames clear the gateway's jitter buffer
            status = await leg.bye()
            if status != 200:
                raise RuntimeError(f"the gateway answered the BYE with {status}")
            recording = await _wait_recording(http, state, call_sid, consumer_ssl)
    except TimeoutError:
        raise RuntimeError(f"no answer from the gateway's SIP port {sip['uri']}") from None
    finally:
        leg.close()
        transport.close()
    return await _result(call_sid, audio, recording)


async def _result(call_sid: str, audio: bytes, recording: dict[str, Any]) -> CallResult:
    files = recording.get("files", {})
    received = (
        wav_to_ulaw(await asyncio.to_thread(Path(files["inbound"]).read_bytes))
        if ("inbound" in files)
        else b""
    )
    return CallResult(call_sid, len(audio), len(received), received.find(audio), files)


async def _wait_recording(
    http: aiohttp.ClientSession,
    state: dict[str, Any],
    call_sid: str,
    context: ssl.SSLContext,
    complete: bool = True,
) -> dict[str, Any]:
    """The consumer's record of the call's stream once it has started (or completed)."""
    deadline = time.monotonic() + 10
    url = state["consumer"]["recordings"]
    while time.monotonic() < deadline:
        async with http.get(url, params={"callSid": call_sid}, ssl=context) as resp:
            items = (await resp.json())["recordings"]
        done = [r for r in items if r["complete"] or not complete]
        if done:
            result: dict[str, Any] = done[0]
            return result
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the sample consumer recorded nothing for call {call_sid} within 10 s")


def run_call(state_file: Path, wav: Path | None, twiml_file: Path | None, sip: bool = False) -> int:
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        print(f"no running `turnpike dev` found ({state_file} does not exist)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"cannot read the state file {state_file}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(state, dict) or not isinstance(state.get("pid", 0), int):
        print(f"{state_file} is not a `turnpike dev` state file", file=sys.stderr)
        return 1
    if not _alive(state.get("pid", 0)):
        print(f"the `turnpike dev` that wrote {state_file} is not running", file=sys.stderr)
        return 1
    try:
        audio = wav_to_ulaw(wav.read_bytes()) if wav else default_clip()
    except (OSError, ValueError) as exc:
        print(f"cannot use {wav}: {exc}", file=sys.stderr)
        return 1
    try:
        twiml = twiml_file.read_text() if twiml_file else None
    except (OSError, ValueError) as exc:
        print(f"cannot use {twiml_file}: {exc}", file=sys.stderr)
        return 1
    if sip and twiml is not None:
        print("--via-sip calls the dev number, whose TwiML is in the numbers file", file=sys.stderr)
        return 2
    how = "over SIP" if sip else "through the REST API"
    print(f"calling the gateway {how} with {len(audio) / 8000:.2f} s of audio…", flush=True)
    try:
        if sip:
            result = asyncio.run(place_sip_call(state, audio))
        else:
            result = asyncio.run(place_call(state, audio, twiml))
    except (RuntimeError, aiohttp.ClientError, OSError) as exc:
        print(f"call failed: {exc}", file=sys.stderr)
        return 1
    except (KeyError, TypeError) as exc:
        print(f"{state_file} is not a complete `turnpike dev` state file ({exc})", file=sys.stderr)
        return 1
    print(f"call {result.call_sid}: sent {result.sent} bytes, consumer recorded {result.received}")
    for track, path in result.files.items():
        print(f"  {track}: {path}")
    if twiml is not None:
        return 0
    if result.matches:
        print(f"audio matches byte for byte (starts after {result.offset} bytes of silence)")
        return 0
    print("audio does NOT match what was sent", file=sys.stderr)
    return 1


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
