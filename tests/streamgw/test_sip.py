"""SIP calls into the gateway, placed by SIPp (Debian's sip-tester) with the scenarios in
``tests/streamgw/sipp/``, streamed to a real TLS WebSocket server."""

from __future__ import annotations

import array
import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import free_dual_port, free_port, turnpike
from support.media import (
    HttpServer,
    RtpPeer,
    TestCA,
    WsServer,
    raw_server,
    reference_signature,
    speech_ulaw,
)
from support.sip import (
    SIPP_DATA,
    pcap_rtp_payloads,
    require_raw_sockets,
    run_baresip,
    run_sipp,
    send_udp,
)
from support.streamgw import ACCOUNT, TOKEN, Harness, MakeGateway, write_accounts
from twilio.twiml.voice_response import VoiceResponse

from turnpike.core.accounts import Accounts
from turnpike.core.filewatch import FileWatcher
from turnpike.streamgw import g711
from turnpike.streamgw.sip.bridge import GatewayCalls
from turnpike.streamgw.sip.digest import Digest
from turnpike.streamgw.sip.numbers import Numbers, parse_numbers
from turnpike.streamgw.sip.server import SipConfig, SipServer
from turnpike.streamgw.sip.transaction import Timers

NUMBER = "+15550002222"

pytestmark = pytest.mark.interop


@dataclass
class Rig:
    gw: Harness
    server: SipServer
    numbers: FileWatcher[Numbers]
    path: Path

    def set_numbers(self, entries: list[dict[str, Any]]) -> None:
        self.path.write_text(json.dumps({"numbers": entries}))
        self.numbers.check()


MakeRig = Callable[..., Awaitable[Rig]]


def route(twiml: str, number: str = NUMBER) -> dict[str, Any]:
    return {"number": number, "accountSid": ACCOUNT, "twiml": twiml}


@pytest.fixture
async def make_rig(make_gateway: MakeGateway, tmp_path: Path) -> AsyncIterator[MakeRig]:
    servers: list[SipServer] = []

    async def make(
        entries: list[dict[str, Any]],
        trust: tuple[str, ...] = ("127.0.0.0/8",),
        max_calls: int = 0,
        digest: Digest | None = None,
        invite_rate: tuple[float, float] = (10.0, 50.0),
    ) -> Rig:
        gw = await make_gateway(rtp_fill_after=0.25, max_calls=max_calls or None)
        path = tmp_path / f"numbers{len(servers)}.json"
        path.write_text(json.dumps({"numbers": entries}))
        numbers = FileWatcher(path, parse_numbers)
        config = SipConfig(
            "127.0.0.1",
            free_dual_port(),
            "127.0.0.1",
            trust,
            Timers(t1=0.1, t2=0.4),
            invite_rate=invite_rate[0],
            invite_burst=invite_rate[1],
        )
        server = SipServer(
            config, GatewayCalls(gw.gateway), lambda: numbers.current, gw.gateway.metrics, digest
        )
        await server.start()
        servers.append(server)
        return Rig(gw, server, numbers, path)

    yield make
    for server in servers:
        await server.close()


async def until(condition: Callable[[], bool], timeout: float = 15) -> None:
    """Poll a condition of the gateway's state (the SIP side has no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def inbound(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(m["media"]["payload"]) for m in messages if m["event"] == "media"
    )


def refused(rig: Rig, reason: str) -> float:
    value: float = rig.gw.gateway.metrics.sip_refusals.labels(reason)._value.get()
    return value


async def test_a_sipp_call_streams_audio_byte_exact_dtmf_and_stop(
    make_rig: MakeRig, ws: WsServer, tmp_path: Path
) -> None:
    require_raw_sockets()
    rig = await make_rig(
        [route(f'<Response><Connect><Stream url="{ws.url("/sip")}"/></Connect></Response>')]
    )
    sipp = asyncio.create_task(run_sipp("call_pcma_dtmf", rig.server.port, tmp_path / "sipp"))
    conn = await ws.accept(timeout=15)
    start = await conn.next("start")
    await conn.wait_closed(timeout=30)
    result = await sipp
    assert result.returncode == 0, result.output + result.messages
    # The caller's A-law, from the pcap SIPp played, arrives as µ-law, byte for byte.
    alaw = b"".join(p for pt, _, p in pcap_rtp_payloads(SIPP_DATA / "g711a.pcap") if pt == 8)
    assert len(alaw) > 8000 * 5
    assert alaw.translate(g711.ALAW_TO_ULAW) in inbound(conn.messages)
    assert [m["dtmf"]["digit"] for m in conn.of("dtmf")] == ["1"]
    assert conn.messages[-1]["event"] == "stop"
    call = await rig.gw.wait_status(start["start"]["callSid"])
    assert (call["from"], call["to"], call["codec"]) == ("+15550001111", NUMBER, "PCMA")
    assert "200 OK" in result.messages and "a=rtpmap:8 PCMA/8000" in result.messages


async def test_gather_collects_the_digit_sipp_sends(
    make_rig: MakeRig, http: HttpServer, tmp_path: Path
) -> None:
    """<Gather> over a SIP call: SIPp's RFC 4733 digit (from its own pcap) ends a <Say> and
    reaches the action URL with the hosted call parameters."""
    require_raw_sockets()
    http.twiml("/digits", '<Response><Pause length="30"/></Response>')
    response = VoiceResponse()
    gather = response.gather(num_digits=1, action=http.url("/digits"), timeout=20)
    gather.say("Press one to continue.")
    rig = await make_rig([route(str(response))])
    result = await run_sipp("call_pcma_dtmf", rig.server.port, tmp_path / "sipp")
    assert result.returncode == 0, result.output + result.messages
    (hit,) = http.on("/digits")
    assert hit.form["Digits"] == "1"
    assert (hit.form["From"], hit.form["To"], hit.form["Direction"]) == (
        "+15550001111",
        NUMBER,
        "inbound",
    )


async def test_hangup_in_twiml_sends_bye_over_tcp(
    make_rig: MakeRig, ws: WsServer, tmp_path: Path
) -> None:
    stream = f'<Start><Stream url="{ws.url("/bye")}"/></Start>'
    doc = f'<Response>{stream}<Pause length="1"/><Hangup/></Response>'
    rig = await make_rig([route(doc)])
    sipp = asyncio.create_task(
        run_sipp("gateway_hangs_up", rig.server.port, tmp_path / "sipp", transport="t1")
    )
    conn = await ws.accept(timeout=15)
    await conn.wait_closed(timeout=20)
    result = await sipp
    assert result.returncode == 0, result.output + result.messages
    assert conn.messages[-1]["event"] == "stop"
    assert "BYE sip:sipp@127.0.0.1" in result.messages


@pytest.mark.parametrize("scenario", ["reinvite", "update"])
async def test_reinvite_or_update_moves_the_media(
    make_rig: MakeRig, tmp_path: Path, scenario: str
) -> None:
    rig = await make_rig([route('<Response><Pause length="30"/></Response>')])
    sipp = asyncio.create_task(run_sipp(scenario, rig.server.port, tmp_path / "sipp"))
    await until(lambda: bool(rig.gw.gateway.calls))
    (call,) = rig.gw.gateway.calls.values()
    first = call.media.remote
    assert first is not None
    await until(lambda: call.media.remote != first)
    assert call.media.remote == (first[0], first[1] + 2)
    result = await sipp
    assert result.returncode == 0, result.output + result.messages
    assert result.messages.count("SIP/2.0 200 OK") >= 3  # INVITE, re-INVITE or UPDATE, BYE
    await call.done.wait()


async def test_unknown_number_is_404(make_rig: MakeRig, tmp_path: Path) -> None:
    rig = await make_rig([route("<Response><Hangup/></Response>")])
    result = await run_sipp(
        "refused_404", rig.server.port, tmp_path / "sipp", service="+15559990000"
    )
    assert result.returncode == 0, result.output + result.messages
    assert refused(rig, "unknown_number") == 1
    assert not rig.gw.gateway.calls and not rig.gw.gateway.ended


async def test_untrusted_source_is_403_and_counted(make_rig: MakeRig, tmp_path: Path) -> None:
    rig = await make_rig([route("<Response><Hangup/></Response>")], trust=("192.0.2.0/24",))
    result = await run_sipp("refused_403", rig.server.port, tmp_path / "sipp")
    assert result.returncode == 0, result.output + result.messages
    assert refused(rig, "untrusted") == 1
    assert not rig.gw.gateway.calls and not rig.gw.gateway.ended


async def test_cancel_before_answer_is_487_and_no_call_goes_on(
    make_rig: MakeRig, tmp_path: Path
) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # a voice webhook that takes its time: the call is not answered

    async with raw_server(slow, None) as port:
        hook = f"http://127.0.0.1:{port}/voice"
        rig = await make_rig([{"number": NUMBER, "accountSid": ACCOUNT, "voiceUrl": hook}])
        result = await run_sipp("cancel", rig.server.port, tmp_path / "sipp")
        assert result.returncode == 0, result.output + result.messages
        await until(lambda: not rig.gw.gateway.calls)
    (call,) = rig.gw.gateway.ended.values()
    assert call.status == "completed" and not call.answered
    assert "SIP/2.0 200 OK" not in result.messages.split("SIP/2.0 487")[0].split("CANCEL sip")[0]


async def test_voice_url_is_fetched_signed_with_the_call_parameters(
    make_rig: MakeRig, http: HttpServer, tmp_path: Path
) -> None:
    hook = http.twiml("/voice", '<Response><Pause length="1"/><Hangup/></Response>')
    callback = http.url("/status")
    rig = await make_rig(
        [{"number": NUMBER, "accountSid": ACCOUNT, "voiceUrl": hook, "statusCallback": callback}]
    )
    result = await run_sipp("late_offer", rig.server.port, tmp_path / "sipp")
    assert result.returncode == 0, result.output + result.messages
    (hit,) = await http.wait_for("/voice")
    assert hit.headers["X-Twilio-Signature"] == reference_signature(TOKEN, hook, hit.form)
    assert hit.form["From"] == hit.form["Caller"] == "+15550001111"
    assert hit.form["To"] == hit.form["Called"] == NUMBER
    assert hit.form["Direction"] == "inbound" and hit.form["AccountSid"] == ACCOUNT
    (status,) = await http.wait_for("/status")
    assert status.form["CallSid"] == hit.form["CallSid"]
    assert status.form["CallStatus"] == "completed"


INVITE = (
    "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{branch}\r\n"
    "From: <sip:+15550001111@127.0.0.1>;tag=abc\r\n"
    "To: <sip:{number}@127.0.0.1>\r\n"
    "Call-ID: {branch}@test\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:caller@127.0.0.1:5999>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def status_line(answer: bytes | None) -> str:
    assert answer is not None, "no answer"
    return answer.split(b"\r\n", 1)[0].decode()


async def test_malformed_and_oversized_messages_never_crash_the_server(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig([route("<Response><Hangup/></Response>")])
    port = rig.server.port
    # Readable enough to answer: 400.
    bad_cseq = INVITE.format(number=NUMBER, branch="b1").replace("CSeq: 1 INVITE", "CSeq: x")
    assert status_line(await send_udp(port, bad_cseq.encode())).startswith("SIP/2.0 400")
    # Not SIP at all, or binary: dropped, counted.
    assert await send_udp(port, b"\x00\x01garbage\xff" * 10) is None
    assert await send_udp(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is None
    # Oversized: 513 when it can be addressed.
    huge = INVITE.format(number=NUMBER, branch="b2").replace(
        "Content-Length: 0", "X-Pad: " + "a" * 20000 + "\r\nContent-Length: 0"
    )
    assert status_line(await send_udp(port, huge.encode())).startswith("SIP/2.0 513")
    # Over TCP a message that never ends is cut off at the size limit.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKt\r\n")
    writer.write(b"X-Pad: " + b"a" * 20000)
    await writer.drain()
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed by the gateway
    writer.close()
    assert refused(rig, "malformed") >= 3 and refused(rig, "oversized") == 2
    # Still serving: OPTIONS (a trunk's keepalive) is answered 200 with what we allow.
    options = INVITE.format(number=NUMBER, branch="o1").replace("INVITE", "OPTIONS")
    answer = await send_udp(port, options.encode())
    assert status_line(answer) == "SIP/2.0 200 OK" and b"Allow: INVITE" in (answer or b"")


async def test_a_full_or_draining_gateway_answers_503_with_retry_after(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig([route('<Response><Pause length="30"/></Response>')], max_calls=1)
    port = rig.server.port
    # The first call is answered (its 200 is the final answer) and holds the only place.
    first = await send_udp(port, INVITE.format(number=NUMBER, branch="c1").encode())
    assert status_line(first) == "SIP/2.0 200 OK"
    second = await send_udp(port, INVITE.format(number=NUMBER, branch="c2").encode())
    assert status_line(second).startswith("SIP/2.0 503")
    assert b"Retry-After: 5" in (second or b"")
    rig.gw.gateway.draining = True
    third = await send_udp(port, INVITE.format(number=NUMBER, branch="c3").encode())
    assert status_line(third).startswith("SIP/2.0 503")
    assert refused(rig, "over_capacity") == 1 and refused(rig, "draining") == 1
    assert len(rig.gw.gateway.calls) == 1
    # A trunk's OPTIONS ping learns it too, and routes new calls elsewhere.
    options = INVITE.format(number=NUMBER, branch="c4").replace("INVITE", "OPTIONS")
    pinged = await send_udp(port, options.encode())
    assert status_line(pinged) == "SIP/2.0 503 Service Unavailable"


async def test_the_numbers_file_is_hot_reloaded(make_rig: MakeRig, tmp_path: Path) -> None:
    rig = await make_rig([route("<Response><Hangup/></Response>", number="+15550003333")])
    result = await run_sipp("refused_404", rig.server.port, tmp_path / "before")
    assert result.returncode == 0, result.output + result.messages
    rig.set_numbers([route('<Response><Pause length="1"/><Hangup/></Response>')])
    result = await run_sipp("gateway_hangs_up", rig.server.port, tmp_path / "after")
    assert result.returncode == 0, result.output + result.messages


async def test_udp_final_answers_are_retransmitted_until_the_ack(make_rig: MakeRig) -> None:
    """§17.2.1 Timer G for a non-2xx final answer, and §13.3.1.4 for the 2xx, both until ACK."""
    rig = await make_rig([route('<Response><Pause length="30"/></Response>')])
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Caller(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
    target = ("127.0.0.1", rig.server.port)

    async def finals(status: bytes, count: int) -> bytes:
        seen = []
        async with asyncio.timeout(10):
            while len(seen) < count:
                data = await got.get()
                if data.startswith(b"SIP/2.0 " + status):
                    seen.append(data)
        assert len(set(seen)) == 1  # the same answer, again
        return seen[0]

    def ack_for(answer: bytes, branch: str, number: str, body: str = "") -> bytes:
        tag = answer.split(b";tag=")[1].split(b"\r\n")[0].decode()
        invite = INVITE.format(number=number, branch=branch)
        ack = invite.replace("INVITE sip", "ACK sip").replace("1 INVITE", "1 ACK")
        if body:  # the answer to the offer in our 200 (the INVITE had none)
            ack = ack.replace("Content-Length: 0\r\n\r\n", "")
            ack += f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        return ack.replace(
            f"<sip:{number}@127.0.0.1>\r\n", f"<sip:{number}@127.0.0.1>;tag={tag}\r\n"
        ).encode()

    try:
        transport.sendto(INVITE.format(number="+15559990000", branch="r1").encode(), target)
        answer = await finals(b"404", 3)
        transport.sendto(ack_for(answer, "r1", "+15559990000"), target)
        transport.sendto(INVITE.format(number=NUMBER, branch="r2").encode(), target)
        ok = await finals(b"200", 3)
        assert b"m=audio" in ok  # our offer
        answer_sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 9 RTP/AVP 0\r\n"
        transport.sendto(ack_for(ok, "r2", NUMBER, answer_sdp), target)
        await until(lambda: [leg.state for leg in rig.server.legs.values()] == ["confirmed"])
        (call,) = rig.gw.gateway.calls.values()
        assert call.answered and call.live
    finally:
        transport.close()


@pytest.mark.e2e
async def test_the_streamgw_command_answers_sip(tmp_path: Path, ws: WsServer, ca: TestCA) -> None:
    """``turnpike streamgw --sip … --numbers … --sip-trust …``: a SIPp call reaches the consumer,
    and the gateway's ``<Hangup/>`` ends it with BYE; metrics count the SIP requests."""
    accounts = write_accounts(tmp_path / "accounts.json")
    stream = f'<Start><Stream url="{ws.url("/cli")}"/></Start>'
    numbers = tmp_path / "numbers.json"
    numbers.write_text(
        json.dumps(
            {"numbers": [route(f'<Response>{stream}<Pause length="1"/><Hangup/></Response>')]}
        )
    )
    api, metrics, sip = free_port(), free_port(), free_dual_port()
    args = [
        "streamgw",
        "--listen", f"127.0.0.1:{api}",
        "--accounts", str(accounts),
        "--rtp-ip", "127.0.0.1",
        "--rtp-ports", "41000-41100",
        "--allow-destination", "127.0.0.0/8",
        "--ca-file", str(ca.ca_file),
        "--metrics", f"127.0.0.1:{metrics}",
        "--sip", f"127.0.0.1:{sip}",
        "--numbers", str(numbers),
        "--sip-trust", "127.0.0.1/32",
    ]  # fmt: skip
    async with turnpike(args, ready_url=f"http://127.0.0.1:{metrics}/ready") as proc:
        result = await run_sipp("gateway_hangs_up", sip, tmp_path / "sipp")
        assert result.returncode == 0, result.output + result.messages + proc.text
        conn = await ws.accept()
        await conn.wait_closed()
        assert conn.messages[-1]["event"] == "stop"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics}/metrics") as resp:
                text = await resp.text()
        assert 'turnpike_streamgw_sip_requests_total{method="INVITE"} 1.0' in text
        assert 'turnpike_streamgw_sip_requests_total{method="ACK"} 1.0' in text


def sip_accounts(password: str) -> Accounts:
    doc = {
        "accounts": [
            {
                "sid": ACCOUNT,
                "authToken": TOKEN,
                "sipCredentials": [{"username": "pbx1", "password": password}],
            },
            {"sid": "AC" + "2" * 32, "authToken": "other"},
        ]
    }
    return Accounts.parse(json.dumps(doc))


def wav_8k(path: Path, ulaw: bytes) -> Path:
    """A 16-bit 8 kHz WAV of µ-law audio (baresip's aufile source reads only that)."""
    pcm = array.array("h", (g711.ulaw_to_linear(b) for b in ulaw)).tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    path.write_bytes(header + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return path


async def test_baresip_with_digest_auth_both_directions(
    make_rig: MakeRig, ws: WsServer, tmp_path: Path, speech: bytes
) -> None:
    """A second, independent UA (baresip) authenticates with digest from outside the trusted
    range; its audio reaches the WebSocket server byte-exact, and what the server sends back over
    ``<Connect><Stream>`` is what baresip hears."""
    digest = Digest("turnpike", lambda: sip_accounts("pbx-secret"))
    doc = f'<Response><Connect><Stream url="{ws.url("/agent")}"/></Connect></Response>'
    rig = await make_rig([route(doc)], trust=("192.0.2.0/24",), digest=digest)
    said = speech[: 160 * 100]
    reply = speech_ulaw(tmp_path, "This is the agent speaking back to the caller.")[: 160 * 75]
    target = f"sip:{NUMBER}@127.0.0.1:{rig.server.port}"
    ua = asyncio.create_task(
        run_baresip(tmp_path / "ua", target, wav_8k(tmp_path / "said.wav", said), "pbx1",
                    "pbx-secret", seconds=6)
    )  # fmt: skip
    conn = await ws.accept(timeout=15)
    start = await conn.next("start")
    for i in range(0, len(reply), 160):
        await conn.send(
            {
                "event": "media",
                "streamSid": start["streamSid"],
                "media": {"payload": base64.b64encode(reply[i : i + 160]).decode()},
            }
        )
    await conn.wait_closed(timeout=30)
    result = await ua
    assert result.returncode == 0, result.output
    assert said in inbound(conn.messages)
    # baresip's µ-law decoder rounds a little differently from ours; re-encoded, its samples are
    # the very codes the server sent.
    heard = array.array("h")
    heard.frombytes(result.heard())
    assert reply in g711.pcm16_to_ulaw(heard)
    assert refused(rig, "untrusted") == 0


async def test_wrong_digest_credentials_are_403(make_rig: MakeRig, tmp_path: Path) -> None:
    digest = Digest("turnpike", lambda: sip_accounts("right"))
    rig = await make_rig([route("<Response><Hangup/></Response>")], trust=(), digest=digest)
    target = f"sip:{NUMBER}@127.0.0.1:{rig.server.port}"
    silence = wav_8k(tmp_path / "s.wav", b"\xff" * 1600)
    result = await run_baresip(tmp_path / "ua", target, silence, "pbx1", "wrong", seconds=3)
    assert "403" in result.output
    assert refused(rig, "bad_credentials") >= 1
    assert not rig.gw.gateway.calls and not rig.gw.gateway.ended


@pytest.mark.parametrize(("reason", "status"), [("busy", 486), ("rejected", 603)])
async def test_reject_in_twiml_is_the_final_answer(
    make_rig: MakeRig, http: HttpServer, tmp_path: Path, reason: str, status: int
) -> None:
    callback = http.url("/status")
    doc = f'<Response><Reject reason="{reason}"/></Response>'
    rig = await make_rig(
        [{"number": NUMBER, "accountSid": ACCOUNT, "twiml": doc, "statusCallback": callback}]
    )
    result = await run_sipp(f"refused_{status}", rig.server.port, tmp_path / "sipp")
    assert result.returncode == 0, result.output + result.messages
    (hit,) = await http.wait_for("/status")
    assert hit.form["CallStatus"] == ("busy" if reason == "busy" else "no-answer")
    assert "SIP/2.0 200 OK" not in result.messages


async def test_invites_from_one_source_are_rate_limited(make_rig: MakeRig) -> None:
    rig = await make_rig([route("<Response><Hangup/></Response>")], invite_rate=(0.5, 2.0))
    port = rig.server.port
    answers = [
        status_line(await send_udp(port, INVITE.format(number="+15559990000", branch=b).encode()))
        for b in ("l1", "l2", "l3")
    ]
    assert answers[:2] == ["SIP/2.0 404 Not Found"] * 2
    assert answers[2] == "SIP/2.0 503 Too Many Calls"
    third = await send_udp(port, INVITE.format(number="+15559990000", branch="l4").encode())
    assert b"Retry-After: 2" in (third or b"")
    assert refused(rig, "rate_limited") == 2 and refused(rig, "unknown_number") == 2


@pytest.mark.e2e
async def test_sip_over_tls_with_baresip(
    tmp_path: Path, ws: WsServer, ca: TestCA, speech: bytes
) -> None:
    """``--sip-tls`` with ``--tls-cert``/``--tls-key``: baresip verifies the certificate against
    the test CA, its call streams to the consumer, and the gateway's BYE after ``<Hangup/>`` comes
    back over the same TLS connection."""
    accounts = write_accounts(tmp_path / "accounts.json")
    stream = f'<Start><Stream url="{ws.url("/tls")}"/></Start>'
    numbers = tmp_path / "numbers.json"
    numbers.write_text(
        json.dumps(
            {"numbers": [route(f'<Response>{stream}<Pause length="2"/><Hangup/></Response>')]}
        )
    )
    api, metrics, sip, sip_tls = free_port(), free_port(), free_dual_port(), free_port()
    args = [
        "streamgw",
        "--listen", f"127.0.0.1:{api}",
        "--accounts", str(accounts),
        "--rtp-ip", "127.0.0.1",
        "--rtp-ports", "41200-41300",
        "--allow-destination", "127.0.0.0/8",
        "--ca-file", str(ca.ca_file),
        "--metrics", f"127.0.0.1:{metrics}",
        "--sip", f"127.0.0.1:{sip}",
        "--sip-tls", f"127.0.0.1:{sip_tls}",
        "--tls-cert", str(ca.cert_file),
        "--tls-key", str(ca.key_file),
        "--numbers", str(numbers),
        "--sip-trust", "127.0.0.1/32",
    ]  # fmt: skip
    said = wav_8k(tmp_path / "said.wav", speech[: 160 * 150])
    async with turnpike(args, ready_url=f"http://127.0.0.1:{metrics}/ready") as proc:
        target = f"sip:{NUMBER}@127.0.0.1:{sip_tls};transport=tls"
        ua = asyncio.create_task(
            run_baresip(tmp_path / "ua", target, said, "pbx1", "x", seconds=8, ca_file=ca.ca_file)
        )
        conn = await ws.accept(timeout=15)
        await conn.wait_closed(timeout=20)
        result = await ua
        assert "Call established" in result.output, result.output + proc.text
        # by the gateway's BYE, before baresip's own timer
        assert "terminated" in result.output, result.output + proc.text
        assert conn.messages[-1]["event"] == "stop" and inbound(conn.messages), conn.messages[-3:]


async def test_rest_status_completed_sends_bye(make_rig: MakeRig, tmp_path: Path) -> None:
    """A SIP call ended through the hosted REST API (Status=completed): the gateway sends BYE."""
    rig = await make_rig([route('<Response><Pause length="30"/></Response>')])
    sipp = asyncio.create_task(run_sipp("gateway_hangs_up", rig.server.port, tmp_path / "sipp"))
    await until(lambda: [leg.state for leg in rig.server.legs.values()] == ["confirmed"])
    (call,) = rig.gw.gateway.calls.values()
    status, out = await rig.gw.rest(f"/Calls/{call.sid}.json", {"Status": "completed"})
    assert status == 200, out
    result = await sipp
    assert result.returncode == 0, result.output + result.messages
    assert f"X-Twilio-CallSid: {call.sid}" in result.messages


async def test_refusals_of_untrusted_sources_are_not_retransmitted(make_rig: MakeRig) -> None:
    """A spoofed source must not make the gateway an amplifier: the 403 goes out once, not on
    Timer G, although the 404 of a trusted caller is retransmitted (see above)."""
    rig = await make_rig([route("<Response><Hangup/></Response>")], trust=("192.0.2.0/24",))
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Caller(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
    try:
        transport.sendto(
            INVITE.format(number=NUMBER, branch="u1").encode(), ("127.0.0.1", rig.server.port)
        )
        first = await asyncio.wait_for(got.get(), 5)
        assert status_line(first) == "SIP/2.0 403 Forbidden"
        # Timer G would resend at 0.1, 0.3, 0.7, 1.1 s (T1 0.1 s in this rig); nothing comes.
        await asyncio.sleep(1.5)
        assert got.empty()
    finally:
        transport.close()


async def test_ipv6_signalling_and_media(make_gateway: MakeGateway, tmp_path: Path) -> None:
    """SIP on [::1] with an IPv6 SDP offer: the answer announces the gateway's IPv6 RTP address
    and the call's media goes to the offered IPv6 address."""
    gw = await make_gateway(rtp_ip="::1")
    path = tmp_path / "numbers.json"
    path.write_text(json.dumps({"numbers": [route('<Response><Pause length="30"/></Response>')]}))
    numbers = FileWatcher(path, parse_numbers)
    config = SipConfig("::1", 0, "::1", ("::1/128",), Timers(t1=0.1, t2=0.4))
    server = SipServer(
        config, GatewayCalls(gw.gateway), lambda: numbers.current, gw.gateway.metrics
    )
    await server.start()
    try:
        offer = (
            "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
            "m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        invite = (
            INVITE.format(number=NUMBER, branch="v6")
            .replace("127.0.0.1", "[::1]")
            .replace("Content-Length: 0\r\n\r\n", "")
        )
        invite += f"Content-Type: application/sdp\r\nContent-Length: {len(offer)}\r\n\r\n{offer}"
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()

        class Caller(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                if not data.startswith(b"SIP/2.0 1") and not answer.done():
                    answer.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Caller, local_addr=("::1", 0))
        try:
            transport.sendto(invite.encode(), ("::1", server.port))
            ok = (await asyncio.wait_for(answer, 10)).decode()
        finally:
            transport.close()
        assert ok.startswith("SIP/2.0 200 OK")
        assert "c=IN IP6 ::1" in ok and f"Contact: <sip:[::1]:{server.port};transport=udp>" in ok
        (call,) = gw.gateway.calls.values()
        assert call.media.remote == ("::1", 40002)
    finally:
        await server.close()


async def test_hold_stops_the_gateways_rtp_and_resume_restarts_it(
    make_rig: MakeRig, peer: RtpPeer
) -> None:
    """A re-INVITE with ``a=sendonly`` (the caller holds): the answer is ``recvonly`` and the
    gateway stops sending RTP; ``a=sendrecv`` again resumes it."""
    rig = await make_rig([route('<Response><Pause length="30"/></Response>')])
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Caller(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not data.startswith(b"SIP/2.0 1"):
                answers.put_nowait(data)

    sip, _ = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
    target = ("127.0.0.1", rig.server.port)
    rtp_port = int(peer.address.rsplit(":", 1)[1])
    tag = ""

    def request(method: str, cseq: int, direction: str = "") -> bytes:
        sdp_body = (
            f"v=0\r\no=- 1 {cseq} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0\r\na={direction}\r\n"
        )
        branch = f"h{cseq}{method}"
        text = INVITE.format(number=NUMBER, branch=branch)
        text = text.replace("1 INVITE", f"{cseq} {method}").replace(f"{branch}@test", "hold@test")
        text = text.replace("INVITE sip:", f"{method} sip:", 1)
        if tag:
            to = f"<sip:{NUMBER}@127.0.0.1>"
            text = text.replace(f"To: {to}\r\n", f"To: {to};tag={tag}\r\n")
        if direction:
            text = text.replace("Content-Length: 0\r\n\r\n", "")
            text += "Content-Type: application/sdp\r\n"
            text += f"Content-Length: {len(sdp_body)}\r\n\r\n{sdp_body}"
        return text.encode()

    async def offer(cseq: int, direction: str) -> str:
        sip.sendto(request("INVITE", cseq, direction), target)
        ok = (await asyncio.wait_for(answers.get(), 10)).decode()
        assert ok.startswith("SIP/2.0 200 OK"), ok
        sip.sendto(request("ACK", cseq), target)
        return ok

    async def quiet() -> bool:
        await asyncio.sleep(0.3)  # packets already on their way
        while not peer.arrivals.empty():
            peer.arrivals.get_nowait()
        await asyncio.sleep(0.5)
        return peer.arrivals.empty()

    try:
        ok = await offer(1, "sendrecv")
        to_line = next(line for line in ok.split("\r\n") if line.startswith("To:"))
        tag = to_line.split(";tag=")[1]
        await asyncio.wait_for(peer.arrivals.get(), 5)  # the gateway sends to the caller
        held = await offer(2, "sendonly")
        assert "a=recvonly" in held
        assert await quiet()
        resumed = await offer(3, "sendrecv")
        assert "a=sendrecv" in resumed
        await asyncio.wait_for(peer.arrivals.get(), 5)
    finally:
        sip.close()


async def test_the_announced_media_address_can_differ_from_the_bound_one(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    """Behind a 1:1 NAT (``--sip-announce-ip``) SDP names the public address, while RTP is
    still received on the bound one."""
    gw = await make_gateway()
    path = tmp_path / "numbers.json"
    path.write_text(json.dumps({"numbers": [route('<Response><Pause length="30"/></Response>')]}))
    numbers = FileWatcher(path, parse_numbers)
    config = SipConfig("127.0.0.1", 0, "198.51.100.77", ("127.0.0.1/32",), Timers(t1=0.1, t2=0.4))
    server = SipServer(
        config, GatewayCalls(gw.gateway), lambda: numbers.current, gw.gateway.metrics
    )
    await server.start()
    try:
        offer = "v=0\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40010 RTP/AVP 0\r\n"
        invite = INVITE.format(number=NUMBER, branch="nat").replace("Content-Length: 0\r\n\r\n", "")
        invite += f"Content-Type: application/sdp\r\nContent-Length: {len(offer)}\r\n\r\n{offer}"
        ok = (await send_udp(server.port, invite.encode()) or b"").decode()
        assert ok.startswith("SIP/2.0 200 OK"), ok
        (call,) = gw.gateway.calls.values()
        assert "c=IN IP4 198.51.100.77" in ok
        assert f"m=audio {call.media.local_port} RTP/AVP 0" in ok
        assert (await gw.call(call.sid))["rtp"]["local"] == f"127.0.0.1:{call.media.local_port}"
    finally:
        await server.close()


async def test_after_bye_no_rtp_goes_to_the_caller_while_the_streams_close(
    make_rig: MakeRig, peer: RtpPeer, ws: WsServer
) -> None:
    """The caller's BYE is answered at once, but the call ends only when its streams have sent
    their stop; a slow WebSocket server (here one that never answers the close) must not keep
    the call's media clock sending RTP to a caller that has gone."""
    release = asyncio.Event()

    async def hold(conn: Any) -> None:
        await release.wait()  # reads nothing: the gateway's close waits out its grace

    ws.behaviours["/hold"] = hold
    twiml = (
        f'<Response><Start><Stream url="{ws.url("/hold")}"/></Start><Pause length="30"/></Response>'
    )
    rig = await make_rig([route(twiml)])
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Caller(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not data.startswith(b"SIP/2.0 1"):
                answers.put_nowait(data)

    sip, _ = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
    target = ("127.0.0.1", rig.server.port)
    rtp_port = int(peer.address.rsplit(":", 1)[1])
    sdp_body = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0\r\na=sendrecv\r\n"
    )
    invite = INVITE.format(number=NUMBER, branch="bye1").replace("Content-Length: 0\r\n\r\n", "")
    invite += f"Content-Type: application/sdp\r\nContent-Length: {len(sdp_body)}\r\n\r\n{sdp_body}"

    def in_dialog(method: str, cseq: int, tag: str) -> bytes:
        text = INVITE.format(number=NUMBER, branch=f"bye{cseq}{method}")
        text = text.replace("1 INVITE", f"{cseq} {method}").replace("INVITE sip:", f"{method} sip:")
        text = text.replace(f"bye{cseq}{method}@test", "bye1@test")
        to = f"<sip:{NUMBER}@127.0.0.1>"
        return text.replace(f"To: {to}\r\n", f"To: {to};tag={tag}\r\n").encode()

    try:
        sip.sendto(invite.encode(), target)
        ok = (await asyncio.wait_for(answers.get(), 10)).decode()
        assert ok.startswith("SIP/2.0 200 OK"), ok
        tag = next(line for line in ok.split("\r\n") if line.startswith("To:")).split(";tag=")[1]
        sip.sendto(in_dialog("ACK", 1, tag), target)
        await ws.accept()
        await asyncio.wait_for(peer.arrivals.get(), 5)  # the gateway sends to the caller
        sip.sendto(in_dialog("BYE", 2, tag), target)
        bye_ok = (await asyncio.wait_for(answers.get(), 10)).decode()
        assert bye_ok.startswith("SIP/2.0 200 OK"), bye_ok
        assert len(rig.gw.gateway.calls) == 1  # still closing its stream
        await asyncio.sleep(0.1)  # packets sent before the BYE, still on their way
        while not peer.arrivals.empty():
            peer.arrivals.get_nowait()
        await asyncio.sleep(0.5)  # 25 ticks of a clock that should have stopped
        assert peer.arrivals.empty()
        assert len(rig.gw.gateway.calls) == 1  # the stream's close was still pending throughout
    finally:
        release.set()
        sip.close()
