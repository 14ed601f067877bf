"""SIP calls into the gateway, placed by SIPp (Debian's sip-tester) with the scenarios in
``tests/streamgw/sipp/``, streamed to a real TLS WebSocket server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import free_dual_port
from support.media import WsServer
from support.sip import SIPP_DATA, pcap_rtp_payloads, run_sipp
from support.streamgw import ACCOUNT, Harness, MakeGateway

from turnpike.core.filewatch import FileWatcher
from turnpike.streamgw import g711
from turnpike.streamgw.sip.bridge import GatewayCalls
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
        entries: list[dict[str, Any]], trust: tuple[str, ...] = ("127.0.0.0/8",), max_calls: int = 0
    ) -> Rig:
        gw = await make_gateway(rtp_fill_after=0.25)
        path = tmp_path / f"numbers{len(servers)}.json"
        path.write_text(json.dumps({"numbers": entries}))
        numbers = FileWatcher(path, parse_numbers)
        config = SipConfig(
            "127.0.0.1", free_dual_port(), "127.0.0.1", trust, Timers(t1=0.1, t2=0.4)
        )
        server = SipServer(
            config, GatewayCalls(gw.gateway, max_calls), lambda: numbers.current, gw.gateway.metrics
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
    call = await rig.gw.call(start["start"]["callSid"])
    assert call["status"] == "completed"
    assert (call["from"], call["to"], call["codec"]) == ("+15550001111", NUMBER, "PCMA")
    assert "200 OK" in result.messages and "a=rtpmap:8 PCMA/8000" in result.messages


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


async def test_reinvite_moves_the_media(make_rig: MakeRig, tmp_path: Path) -> None:
    rig = await make_rig([route('<Response><Pause length="30"/></Response>')])
    sipp = asyncio.create_task(run_sipp("reinvite", rig.server.port, tmp_path / "sipp"))
    await until(lambda: bool(rig.gw.gateway.calls))
    (call,) = rig.gw.gateway.calls.values()
    first = call.media.remote
    assert first is not None
    await until(lambda: call.media.remote != first)
    assert call.media.remote == (first[0], first[1] + 2)
    result = await sipp
    assert result.returncode == 0, result.output + result.messages
    assert result.messages.count("SIP/2.0 200 OK") >= 3  # INVITE, re-INVITE, BYE
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
