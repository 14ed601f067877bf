"""The ingress seam as a second ingress (SIP) uses it: a `CallRequest` in, answered/ended out."""

from __future__ import annotations

import asyncio

from support.media import RtpPeer, WsServer
from support.streamgw import ACCOUNT, TOKEN, Harness
from twilio.twiml.voice_response import Start, VoiceResponse

from turnpike.core.accounts import Account
from turnpike.streamgw import twiml
from turnpike.streamgw.call import Call
from turnpike.streamgw.ingress import CallOutcome, CallRequest, Source


class RecordingIngress:
    """What a SIP ingress would do with the events: here, remember them."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.outcome: CallOutcome | None = None
        self.done = asyncio.Event()

    def answered(self, call: Call) -> None:
        self.events.append("answered")

    def ended(self, call: Call, outcome: CallOutcome) -> None:
        self.events.append("ended")
        self.outcome = outcome
        self.done.set()


def request(document: str, remote: tuple[str, int] | None = None) -> CallRequest:
    account = Account(sid=ACCOUNT, auth_token=TOKEN)
    return CallRequest(
        account, "+15550001111", "+15550002222", Source(document=twiml.parse(document)), remote,
        codec="PCMA", dtmf_pt=96,
    )  # fmt: skip


async def test_reject_before_answer_is_reported_unanswered(gw: Harness) -> None:
    response = VoiceResponse()
    response.reject(reason="busy")
    ingress = RecordingIngress()
    call = await gw.gateway.create_call(request(str(response)), ingress)
    await asyncio.wait_for(ingress.done.wait(), 10)
    assert ingress.events == ["ended"]  # never answered
    assert ingress.outcome == CallOutcome("busy", "rejected (busy)", False, "busy", None)
    assert call.status == "busy"


async def test_an_answered_call_reports_answer_then_end(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    response = VoiceResponse()
    start = Start()
    start.stream(url=ws.url("/seam"))
    response.append(start)
    response.pause(length=30)
    ingress = RecordingIngress()
    host, port = peer.address.split(":")
    call = await gw.gateway.create_call(request(str(response), (host, int(port))), ingress)
    assert call.media.local_port  # the ingress answers its wire with this RTP port
    conn = await ws.accept()
    await conn.next("start")
    assert ingress.events == ["answered"]
    first = await asyncio.wait_for(peer.arrivals.get(), 5)
    assert first.payload_type == 8  # PCMA was negotiated: the gateway's RTP is payload type 8
    await call.end("BYE from the caller")
    assert ingress.events == ["answered", "ended"]
    assert ingress.outcome == CallOutcome("completed", "BYE from the caller", True, None, None)
    await conn.wait_closed()
    assert conn.messages[-1]["event"] == "stop"
