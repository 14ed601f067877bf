"""Corners of the wire contract: each invalid server message, trust store, refused destinations."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.media import Conn, HttpServer, RtpPeer, TestCA, WsServer
from support.streamgw import Harness, MakeGateway, sample

PAUSE = '<Pause length="60"/>'
OTHER_SID = "MZ" + "0" * 32


async def errors_with(gw: Harness, sid: str, code: int, count: int = 1) -> list[dict[str, Any]]:
    async with asyncio.timeout(10):
        while True:
            errors = (await gw.call(sid))["errors"]
            if len([e for e in errors if e["code"] == code]) >= count:
                return list(errors)
            await asyncio.sleep(0.05)


# Each one alone must give 31951; the stream then carries on (a valid mark still comes back).
INVALID: list[tuple[str, Any, str]] = [
    ("array", [1, 2], "not a JSON object"),
    ("no-event", {"streamSid": "SID"}, "unknown event"),
    ("unknown-event", {"event": "dance", "streamSid": "SID"}, "unknown event 'dance'"),
    ("extra-field", {"event": "clear", "streamSid": "SID", "extra": 1}, "fields must be exactly"),
    ("missing-field", {"event": "mark", "streamSid": "SID"}, "fields must be exactly"),
    ("no-stream-sid", {"event": "clear"}, "fields must be exactly"),
    ("wrong-sid", {"event": "clear", "streamSid": OTHER_SID}, "another streamSid"),
    ("payload-missing", {"event": "media", "streamSid": "SID", "media": {}}, "media.payload"),
    ("payload-number", {"event": "media", "streamSid": "SID", "media": {"payload": 7}}, "payload"),
    ("bad-base64", {"event": "media", "streamSid": "SID", "media": {"payload": "%%"}}, "base64"),
    ("mark-name-number", {"event": "mark", "streamSid": "SID", "mark": {"name": 5}}, "mark.name"),
    (
        "mark-extra",
        {"event": "mark", "streamSid": "SID", "mark": {"name": "a", "x": 1}},
        "mark.name",
    ),
]


def with_sid(value: Any, sid: str) -> Any:
    if isinstance(value, dict):
        return {k: with_sid(v, sid) for k, v in value.items()}
    return sid if value == "SID" else value


@pytest.mark.parametrize(("case", "message", "words"), INVALID, ids=[c[0] for c in INVALID])
async def test_each_invalid_message_is_31951(
    gw: Harness, ws: WsServer, peer: RtpPeer, case: str, message: Any, words: str
) -> None:
    async def send_invalid(conn: Conn) -> None:
        async for msg in conn.ws:
            body = json.loads(msg.data)
            conn.messages.append(body)
            conn.inbox.put_nowait(body)
            if body["event"] == "start":
                sid = body["streamSid"]
                await conn.ws.send_str(json.dumps(with_sid(message, sid)))
                await conn.send({"event": "mark", "streamSid": sid, "mark": {"name": "ok"}})

    ws.behaviours["/bidi"] = send_invalid
    doc = f'<Response><Connect><Stream url="{ws.url("/bidi")}"/></Connect></Response>'
    created = await gw.create_call(peer, twiml=doc)
    conn = await ws.accept()
    echoed = await conn.next("mark")
    assert echoed["mark"] == {"name": "ok"}  # only the valid mark: the invalid one was dropped
    assert list(echoed) == ["event", "sequenceNumber", "streamSid", "mark"]
    errors = await errors_with(gw, created["sid"], 31951)
    assert [e["code"] for e in errors] == [31951], case
    assert words in errors[0]["message"], errors[0]["message"]
    assert (await gw.call(created["sid"]))["status"] == "in-progress"
    assert conn.of("mark") == [echoed]
    await gw.hangup(created["sid"])


async def test_start_with_an_unknown_track_is_31941_and_the_call_goes_on(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    cb = http.url("/cb")
    doc = (
        f'<Response><Start><Stream name="odd" url="{ws.url("/odd")}" track="sideways"'
        f' statusCallback="{cb}"/></Start>'
        f'<Start><Stream url="{ws.url("/next")}"/></Start>{PAUSE}</Response>'
    )
    created = await gw.create_call(peer, twiml=doc)
    conn = await ws.accept()
    assert conn.path == "/next"
    await conn.next("start")
    (hit,) = await http.wait_for("/cb", StreamEvent="stream-error")
    assert hit.form["StreamError"].startswith("31941 ") and hit.form["StreamName"] == "odd"
    errors = (await gw.call(created["sid"]))["errors"]
    assert [e["code"] for e in errors] == [31941]
    assert (await gw.call(created["sid"]))["status"] == "in-progress"
    await gw.hangup(created["sid"])
    assert [c.path for c in ws.connections] == ["/next"]


async def test_the_system_trust_store_is_used_so_ssl_cert_file_works(
    make_gateway: MakeGateway,
    ws: WsServer,
    peer: RtpPeer,
    ca: TestCA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = f'<Response><Start><Stream url="{ws.url("/trust")}"/></Start>{PAUSE}</Response>'
    # Without --ca-file and without SSL_CERT_FILE the test CA is unknown: a TLS error.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    plain = await make_gateway(ca_file=None)
    created = await plain.create_call(peer, twiml=doc)
    errors = await errors_with(plain, created["sid"], 31910)
    assert "CERTIFICATE_VERIFY_FAILED" in errors[0]["message"]
    await plain.hangup(created["sid"])
    # The same gateway started with SSL_CERT_FILE naming the CA trusts the server.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    trusting = await make_gateway(ca_file=None)
    created = await trusting.create_call(peer, twiml=doc)
    conn = await ws.accept()
    assert (await conn.next("start"))["start"]["callSid"] == created["sid"]
    assert (await trusting.call(created["sid"]))["errors"] == []
    await trusting.hangup(created["sid"])


async def test_link_local_metadata_and_private_destinations_are_refused(
    make_gateway: MakeGateway, http: HttpServer, peer: RtpPeer
) -> None:
    gw = await make_gateway(allow_destinations=())
    refused = (
        "169.254.169.254",  # cloud metadata
        "[fd00:ec2::254]",  # cloud metadata over IPv6
        "[fe80::1]",  # link-local
        "192.168.1.10",
        "172.16.0.1",
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "[::]",
    )
    # At most four at a time: a stream still connecting holds its track.
    for group in (refused[:4], refused[4:]):
        streams = "".join(f'<Start><Stream url="wss://{host}/x"/></Start>' for host in group)
        created = await gw.create_call(peer, twiml=f"<Response>{streams}{PAUSE}</Response>")
        errors = await errors_with(gw, created["sid"], 31904, count=len(group))
        assert [e["code"] for e in errors] == [31904] * len(group)
        assert all("not an address this gateway may reach" in e["message"] for e in errors)
        assert (await gw.call(created["sid"]))["status"] == "in-progress"
        await gw.hangup(created["sid"])
    doc = f"<Response><Play>http://169.254.169.254/a.wav</Play>{PAUSE}</Response>"
    created = await gw.create_call(peer, twiml=doc)
    (error,) = await errors_with(gw, created["sid"], 11200)
    assert "not an address this gateway may reach" in error["message"]
    assert (await gw.call(created["sid"]))["status"] == "in-progress"
    await gw.hangup(created["sid"])

    # The voice webhook and status callbacks go through the same filter.
    hooked = await gw.create_call(peer, url="http://169.254.169.254/voice")
    call = await gw.wait_status(hooked["sid"])
    assert call["errors"][0]["code"] == 11200
    assert "not an address this gateway may reach" in call["errors"][0]["message"]
    before = sample(gw.gateway.metrics.callbacks, "refused")
    doc = (
        '<Response><Start><Stream url="wss://10.1.2.3/x"'
        ' statusCallback="http://[fe80::1]/cb"/></Start>' + PAUSE + "</Response>"
    )
    created = await gw.create_call(peer, twiml=doc)
    await errors_with(gw, created["sid"], 31904)
    async with asyncio.timeout(10):
        while sample(gw.gateway.metrics.callbacks, "refused") == before:
            assert (await gw.call(created["sid"]))["status"] == "in-progress"
            await asyncio.sleep(0.05)
    await gw.hangup(created["sid"])
    assert http.hits == []


async def test_a_failed_connect_stream_requests_action_with_its_error(
    gw: Harness, http: HttpServer, peer: RtpPeer
) -> None:
    action = http.twiml("/after", "<Response><Hangup/></Response>")
    doc = (
        f'<Response><Connect action="{action}"><Stream url="wss://10.9.8.7/agent"/></Connect>'
        f"{PAUSE}</Response>"
    )
    created = await gw.create_call(peer, twiml=doc)
    (hit,) = await http.wait_for("/after")
    assert hit.form["CallSid"] == created["sid"] and hit.form["StreamSid"].startswith("MZ")
    assert hit.form["StreamError"].startswith("31904 ")
    call = await gw.wait_status(created["sid"])  # the action's <Hangup/> ran
    assert [e["code"] for e in call["errors"]] == [31904]
    assert call["streams"][0]["sid"] == hit.form["StreamSid"]


async def test_rest_stream_tracks_methods_and_refusals(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    created = await gw.create_call(peer, twiml=f"<Response>{PAUSE}</Response>")
    sid = created["sid"]
    cb = http.url("/get-cb")
    form = {"Url": ws.url("/both"), "Track": "both_tracks", "Name": "both"}
    status, out = await gw.rest(
        f"/Calls/{sid}/Streams.json", {**form, "StatusCallback": cb, "StatusCallbackMethod": "GET"}
    )
    assert status == 200 and out["name"] == "both"
    conn = await ws.accept()
    assert (await conn.next("start"))["start"]["tracks"] == ["inbound", "outbound"]
    (hit,) = await http.wait_for("/get-cb", StreamEvent="stream-started")
    assert hit.method == "GET" and hit.query["StreamName"] == "both" and hit.form == {}

    status, out = await gw.rest(
        f"/Calls/{sid}/Streams.json", {"Url": ws.url("/x"), "StatusCallbackMethod": "PUT"}
    )
    assert status == 400 and "GET or POST" in out["message"]
    status, out = await gw.rest(f"/Calls/{sid}/Streams/both.json", {"Status": "in-progress"})
    assert status == 400 and "stopped" in out["message"]
    assert not conn.closed.is_set()

    await gw.hangup(sid)
    await conn.wait_closed()
    status, out = await gw.rest(f"/Calls/{sid}/Streams.json", {"Url": ws.url("/late")})
    assert status == 400 and out["code"] == 31900 and "ended" in out["message"]
    assert out["more_info"] == "https://www.twilio.com/docs/errors/31900" and out["status"] == 400
    assert [c.path for c in ws.connections] == ["/both"]
