"""Call options and malformed requests: a custom DTMF payload type, clear 400s, no crashes."""

from __future__ import annotations

from typing import Any

from support.media import RtpPeer, WsServer
from support.streamgw import ACCOUNT, Harness

PAUSE = '<Pause length="60"/>'


async def test_dtmf_payload_type_is_the_one_the_call_names(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    doc = f'<Response><Connect><Stream url="{ws.url("/pt")}"/></Connect></Response>'
    created = await gw.create_call(peer, twiml=doc, dtmfPayloadType=96)
    conn = await ws.accept()
    await conn.next("start")
    target = gw.rtp_target(created)
    await peer.send(peer.packets(b"\x7f" * 320), target)
    await peer.send(peer.dtmf_packets(3, pt=101), target)  # not this call's event type: ignored
    await peer.send(peer.packets(b"\x7f" * 320), target)
    await peer.send(peer.dtmf_packets(10, pt=96), target)
    digit = await conn.next("dtmf")
    assert digit["dtmf"] == {"track": "inbound_track", "digit": "*"}
    await gw.hangup(created["sid"])
    await conn.wait_closed()
    assert [m["dtmf"]["digit"] for m in conn.of("dtmf")] == ["*"]


async def test_malformed_call_requests_get_a_clear_400(gw: Harness) -> None:
    doc = f"<Response>{PAUSE}</Response>"
    base: dict[str, Any] = {"accountSid": ACCOUNT, "from": "a", "to": "b", "twiml": doc}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "from": 5}, "from must be a string"),
        ({**base, "url": "https://example.com/voice"}, "exactly one of twiml"),
        ({k: v for k, v in base.items() if k != "twiml"}, "exactly one of twiml"),
        ({**base, "codec": "OPUS"}, "codec must be PCMU or PCMA"),
        ({**base, "dtmfPayloadType": "101"}, "dtmfPayloadType"),
        ({**base, "dtmfPayloadType": 0}, "dtmfPayloadType"),
        ({**base, "dtmfPayloadType": True}, "dtmfPayloadType"),
        ({**base, "rtp": "127.0.0.1:4000"}, "rtp must be an object"),
        ({**base, "rtp": {"remote": 4000}}, "rtp must be an object"),
        ({**base, "rtp": {"remote": "nowhere:4000"}}, "rtp.remote must be IP:PORT"),
        ({**base, "rtp": {"remote": "127.0.0.1:70000"}}, "rtp.remote must be IP:PORT"),
        ({**base, "rtp": {"remote": "127.0.0.1"}}, "rtp.remote must be IP:PORT"),
        ({**base, "method": "PUT"}, "method must be GET or POST"),
    ]
    for body, words in cases:
        status, out = await gw.request("POST", "/v1/Calls", json=body)
        assert status == 400 and out["code"] == 20001 and words in out["message"], (body, out)
    for raw in (b"{nope", b"[1, 2]", b"\xff\xfe"):
        status, out = await gw.request("POST", "/v1/Calls", data=raw)
        assert status == 400 and "JSON object" in out["message"], (raw, out)
    assert not gw.gateway.calls


async def test_rest_stream_parameters_are_limited(gw: Harness, ws: WsServer, peer: RtpPeer) -> None:
    created = await gw.create_call(peer, twiml=f"<Response>{PAUSE}</Response>")
    sid = created["sid"]
    too_long = {"Url": ws.url("/p"), "Parameter1.Name": "n", "Parameter1.Value": "v" * 499}
    status, out = await gw.rest(f"/Calls/{sid}/Streams.json", too_long)
    assert status == 400 and "under 500 characters" in out["message"], out
    status, out = await gw.rest(
        f"/Calls/{sid}/Streams.json", {"Url": ws.url("/p"), "StatusCallbackMethod": "PUT"}
    )
    assert status == 400 and "StatusCallbackMethod" in out["message"], out
    form = {
        "Url": ws.url("/p"),
        "Parameter1.Name": "first",
        "Parameter1.Value": "v" * (499 - len("first")),  # exactly at the limit: accepted
        "Parameter99.Name": "last",
        "Parameter99.Value": "99",
        "Parameter100.Name": "beyond",  # ParameterN goes up to 99; the 100th is not read
        "Parameter100.Value": "100",
    }
    status, out = await gw.rest(f"/Calls/{sid}/Streams.json", form)
    assert status == 200, out
    conn = await ws.accept()
    start = await conn.next("start")
    assert start["start"]["customParameters"] == {"first": "v" * 494, "last": "99"}
    assert (await gw.call(sid))["status"] == "in-progress"
    await gw.hangup(sid)
    await conn.wait_closed()
