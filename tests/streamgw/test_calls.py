"""The call API (/v1/Calls and the 2010-04-01 Call resource), voice webhooks and call ends."""

from __future__ import annotations

import asyncio

from support.media import HttpServer, RtpPeer, WsServer, reference_signature
from support.streamgw import ACCOUNT, OTHER, OTHER_TOKEN, TOKEN, Harness, basic

PAUSE = '<Pause length="60"/>'


def start_doc(url: str, tail: str = PAUSE, **attrs: str) -> str:
    attributes = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f'<Response><Start><Stream url="{url}"{attributes}/></Start>{tail}</Response>'


async def test_voice_webhook_is_signed_and_its_twiml_runs(
    gw: Harness, http: HttpServer, ws: WsServer, peer: RtpPeer
) -> None:
    hook = http.twiml("/voice", start_doc(ws.url("/fromhook")))
    created = await gw.create_call(peer, url=hook, **{"from": "+15551230000", "to": "+15559870000"})
    (hit,) = await http.wait_for("/voice")
    assert hit.method == "POST"
    assert hit.form == {
        "CallSid": created["sid"],
        "AccountSid": ACCOUNT,
        "From": "+15551230000",
        "To": "+15559870000",
        "Caller": "+15551230000",
        "Called": "+15559870000",
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    assert hit.headers["X-Twilio-Signature"] == reference_signature(TOKEN, hook, hit.form)
    conn = await ws.accept()
    start = await conn.next("start")
    assert start["start"]["callSid"] == created["sid"]
    await gw.hangup(created["sid"])


async def test_get_webhook_signs_the_full_url(gw: Harness, http: HttpServer, peer: RtpPeer) -> None:
    hook = http.twiml("/voice-get", "<Response><Pause length='60'/></Response>")
    created = await gw.create_call(peer, url=hook, method="GET")
    (hit,) = await http.wait_for("/voice-get")
    assert hit.method == "GET" and hit.query["CallSid"] == created["sid"]
    assert hit.headers["X-Twilio-Signature"] == reference_signature(TOKEN, hit.url, {})
    await gw.hangup(created["sid"])


async def test_authentication_and_account_isolation(gw: Harness, peer: RtpPeer) -> None:
    body = {"accountSid": ACCOUNT, "from": "a", "to": "b", "twiml": f"<Response>{PAUSE}</Response>"}
    status, out = await gw.request("POST", "/v1/Calls", json=body, auth=basic(ACCOUNT, "wrong"))
    assert status == 401 and out["code"] == 20003
    status, out = await gw.request("POST", "/v1/Calls", json=body, auth=basic(OTHER, OTHER_TOKEN))
    assert status == 403 and out["code"] == 20403
    created = await gw.create_call(peer, twiml=f"<Response>{PAUSE}</Response>")
    status, out = await gw.request(
        "GET", f"/v1/Calls/{created['sid']}", auth=basic(OTHER, OTHER_TOKEN)
    )
    assert status == 404 and out["code"] == 20404 and out["status"] == 404
    assert out["more_info"] == "https://www.twilio.com/docs/errors/20404"
    status, _ = await gw.request(
        "DELETE", f"/v1/Calls/{created['sid']}", auth=basic(OTHER, OTHER_TOKEN)
    )
    assert status == 404
    assert (await gw.call(created["sid"]))["status"] == "in-progress"
    await gw.hangup(created["sid"])


async def test_invalid_twiml_is_refused_with_a_clear_error(gw: Harness) -> None:
    cases = {
        "<Response><Start>": 12100,
        "<Reply/>": 12100,
        "<Response><Record/></Response>": 12200,
        '<Response><Pause length="soon"/></Response>': 12200,
        '<!DOCTYPE x [<!ENTITY a "b">]><Response/>': 12100,
        '<Response><Start><Stream url="wss://x" colour="red"/></Start></Response>': 12200,
        '<Response><Start><Stream url="wss://x"><Parameter name="a" value="'
        + "v" * 499
        + '"/></Stream></Start></Response>': 12200,
    }
    for doc, code in cases.items():
        body = {"accountSid": ACCOUNT, "from": "a", "to": "b", "twiml": doc}
        status, out = await gw.request("POST", "/v1/Calls", json=body)
        assert status == 400 and out["code"] == code, (doc, out)
    status, out = await gw.request(
        "POST",
        "/v1/Calls",
        json={
            "accountSid": ACCOUNT,
            "from": "a",
            "to": "b",
            "twiml": "<Response><Dial>+15550003333</Dial></Response>",
        },
    )
    assert "<Dial> is not supported" in out["message"]
    assert not gw.gateway.calls


async def test_bad_webhook_document_ends_the_call_visibly(
    gw: Harness, http: HttpServer, peer: RtpPeer
) -> None:
    hook = http.twiml("/bad", "<Response><Dial>+1555</Dial></Response>")
    status_cb = http.url("/call-status")
    created = await gw.create_call(peer, url=hook, statusCallback=status_cb)
    call = await gw.wait_status(created["sid"])
    assert call["errors"][0]["code"] == 12200 and "<Dial>" in call["errors"][0]["message"]
    (hit,) = await http.wait_for("/call-status")
    assert hit.form["CallStatus"] == "completed" and hit.form["ErrorCode"] == "12200"
    assert hit.headers["X-Twilio-Signature"] == reference_signature(TOKEN, status_cb, hit.form)

    missing = http.url("/nothing-here")
    http.routes["/nothing-here"] = (404, "text/plain", b"no")
    created = await gw.create_call(peer, url=missing)
    call = await gw.wait_status(created["sid"])
    assert call["errors"][0]["code"] == 11200 and "404" in call["errors"][0]["message"]


async def test_start_with_nothing_after_it_hangs_up(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    created = await gw.create_call(
        peer, twiml=start_doc(ws.url("/short"), tail=""), statusCallback=http.url("/cs")
    )
    call = await gw.wait_status(created["sid"])
    assert all(s["status"] == "stopped" for s in call["streams"])
    (hit,) = await http.wait_for("/cs")
    assert hit.form["CallStatus"] == "completed"


async def test_hangup_stops_every_stream(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    cb = http.url("/streams")
    doc = (
        "<Response>"
        f'<Start><Stream name="one" url="{ws.url("/1")}" statusCallback="{cb}"/></Start>'
        f'<Start><Stream url="{ws.url("/2")}" statusCallback="{cb}"'
        ' statusCallbackMethod="GET"/></Start>'
        f"{PAUSE}</Response>"
    )
    created = await gw.create_call(peer, twiml=doc)
    conns = [await ws.accept(), await ws.accept()]
    for conn in conns:
        await conn.next("start")
    await http.wait_for("/streams", 2, StreamEvent="stream-started")
    ended = await gw.hangup(created["sid"])
    assert ended["status"] == "completed"
    for conn in conns:
        await conn.wait_closed()
        assert conn.messages[-1]["event"] == "stop" and conn.close_code == 1000
    stopped = await http.wait_for("/streams", 2, StreamEvent="stream-stopped")
    sids = {c.stream_sid for c in conns}
    by_sid = {({**h.form, **h.query})["StreamSid"]: h for h in stopped}
    assert set(by_sid) == sids
    for hit in http.on("/streams"):
        params = {**hit.form, **hit.query}
        assert set(params) == {
            "AccountSid",
            "CallSid",
            "StreamSid",
            "StreamName",
            "StreamEvent",
            "Timestamp",
        }
        assert params["AccountSid"] == ACCOUNT and params["CallSid"] == created["sid"]
        assert params["StreamName"] in ("one", params["StreamSid"])
        if hit.method == "GET":
            assert hit.headers["X-Twilio-Signature"] == reference_signature(TOKEN, hit.url, {})
            assert params["StreamName"] == params["StreamSid"]
        else:
            assert hit.headers["X-Twilio-Signature"] == reference_signature(TOKEN, cb, hit.form)
            assert params["StreamName"] == "one"
        stamp = params["Timestamp"]
        assert len(stamp) == 24 and stamp.endswith("Z") and stamp[10] == "T"
    # started before stopped for each stream
    for sid in sids:
        events = [
            {**h.form, **h.query}["StreamEvent"]
            for h in http.on("/streams")
            if {**h.form, **h.query}["StreamSid"] == sid
        ]
        assert events == ["stream-started", "stream-stopped"]


async def test_rest_call_update_redirect_and_complete(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    created = await gw.create_call(peer, twiml=f"<Response>{PAUSE}</Response>")
    sid = created["sid"]
    status, out = await gw.rest(f"/Calls/{sid}.json", {"Twiml": start_doc(ws.url("/redirected"))})
    assert status == 200 and out["sid"] == sid and out["status"] == "in-progress"
    assert out["account_sid"] == ACCOUNT
    conn = await ws.accept()
    await conn.next("start")

    hook = http.twiml("/next", "<Response><Stop><Stream name='x'/></Stop>" + PAUSE + "</Response>")
    status, out = await gw.rest(f"/Calls/{sid}.json", {"Url": hook, "Method": "POST"})
    assert status == 200
    (hit,) = await http.wait_for("/next")
    assert hit.headers["X-Twilio-Signature"] == reference_signature(TOKEN, hook, hit.form)
    # A redirect does not stop streams started by <Start>.
    assert (await gw.call(sid))["streams"][0]["status"] == "in-progress"

    status, out = await gw.rest(f"/Calls/{sid}.json", {"Twiml": "<Response><Nope/></Response>"})
    assert status == 400 and out["code"] == 12200

    status, out = await gw.rest(f"/Calls/{sid}.json", {"Status": "completed"})
    assert status == 200 and out["status"] == "completed"
    await conn.wait_closed()
    assert conn.messages[-1]["event"] == "stop"
    status, out = await gw.rest(f"/Calls/{sid}.json", {"Url": hook})
    assert status == 400 and out["code"] == 21220
    status, out = await gw.rest("/Calls/CA" + "0" * 32 + ".json", {"Status": "completed"})
    assert status == 404 and out["code"] == 20404


async def test_symmetric_rtp_answers_where_the_caller_sends_from(
    gw: Harness, peer: RtpPeer
) -> None:
    created = await gw.create_call(None, twiml=f"<Response>{PAUSE}</Response>")
    assert (await gw.call(created["sid"]))["rtp"]["remote"] is None
    await peer.send(peer.packets(b"\x7f" * 320), gw.rtp_target(created))
    async with asyncio.timeout(5):
        first = await peer.arrivals.get()
    assert first.payload_type == 0 and len(first.payload) == 160
    assert (await gw.call(created["sid"]))["rtp"]["remote"] == peer.address
    await gw.hangup(created["sid"])


async def test_hosted_rest_is_scoped_to_the_account(gw: Harness, peer: RtpPeer) -> None:
    created = await gw.create_call(peer, twiml=f"<Response>{PAUSE}</Response>")
    sid = created["sid"]
    other = basic(OTHER, OTHER_TOKEN)
    status, out = await gw.request(
        "POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json", data={"Status": "completed"},
        auth=other,
    )  # fmt: skip
    assert status == 403 and out["code"] == 20403  # as the token API: decided in core.errors
    status, out = await gw.request(
        "POST", f"/2010-04-01/Accounts/{OTHER}/Calls/{sid}.json", data={"Status": "completed"},
        auth=other,
    )  # fmt: skip
    assert status == 404 and out["code"] == 20404
    status, out = await gw.request("GET", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json")
    assert status == 200 and out["status"] == "in-progress" and out["sid"] == sid
    assert out["subresource_uris"]["streams"].endswith(f"/Calls/{sid}/Streams.json")
    await gw.hangup(sid)
