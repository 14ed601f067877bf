"""Tracks, limits, names, `<Stop>`, and the Streams REST resource."""

from __future__ import annotations

import asyncio
import base64

from support.media import HttpServer, RtpPeer, WsServer, reference_signature
from support.streamgw import ACCOUNT, TOKEN, Harness

PAUSE = '<Pause length="60"/>'


def start(url: str, **attrs: str) -> str:
    attributes = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f'<Start><Stream url="{url}"{attributes}/></Start>'


async def test_both_tracks_carry_per_track_counters(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    created = await gw.create_call(
        peer, twiml=f"<Response>{start(ws.url('/both'), track='both_tracks')}{PAUSE}</Response>"
    )
    conn = await ws.accept()
    first = await conn.next("start")
    assert first["start"]["tracks"] == ["inbound", "outbound"]
    speech = bytes(range(0, 256, 2)) * 5  # 640 bytes: 4 frames, none of them silence
    await peer.send(peer.packets(speech), gw.rtp_target(created))
    async with asyncio.timeout(10):
        while len([m for m in conn.of("media") if m["media"]["track"] == "inbound"]) < 4:
            await conn.next("media")
        while len([m for m in conn.of("media") if m["media"]["track"] == "outbound"]) < 10:
            await conn.next("media")
    await gw.hangup(created["sid"])
    await conn.wait_closed()
    media = conn.of("media")
    for track in ("inbound", "outbound"):
        mine = [m["media"] for m in media if m["media"]["track"] == track]
        assert [m["chunk"] for m in mine] == [str(n) for n in range(1, len(mine) + 1)]
        stamps = [int(m["timestamp"]) for m in mine]
        assert stamps == list(range(stamps[0], stamps[0] + 20 * len(stamps), 20))
    inbound = b"".join(
        base64.b64decode(m["media"]["payload"]) for m in media if m["media"]["track"] == "inbound"
    )
    assert speech in inbound
    outbound = b"".join(
        base64.b64decode(m["media"]["payload"]) for m in media if m["media"]["track"] == "outbound"
    )
    assert set(outbound) == {0xFF}  # nothing played: the caller hears silence, sent as frames
    seqs = [int(m["sequenceNumber"]) for m in conn.messages[1:]]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_four_track_limit_and_unique_names(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    cb = http.url("/cb")
    doc = (
        "<Response>"
        + start(ws.url("/a"), name="a", track="both_tracks")
        + start(ws.url("/b"), name="b")
        + start(ws.url("/dup"), name="b", statusCallback=cb)
        + start(ws.url("/c"), name="c", track="outbound_track")
        + start(ws.url("/over"), name="over", statusCallback=cb)
        + PAUSE
        + "</Response>"
    )
    created = await gw.create_call(peer, twiml=doc)
    sid = created["sid"]
    errors = await http.wait_for("/cb", 2, StreamEvent="stream-error")
    messages = sorted(h.form["StreamName"] + ": " + h.form["StreamError"] for h in errors)
    assert messages[0].startswith("b: 31900") and "already running" in messages[0]
    assert messages[1].startswith("over: 31900") and "at most 4 tracks" in messages[1]
    conns = {}
    for _ in range(3):
        conn = await ws.accept()
        conns[conn.path] = conn
        await conn.next("start")
    assert set(conns) == {"/a", "/b", "/c"}
    assert conns["/c"].messages[1]["start"]["tracks"] == ["outbound"]

    # REST obeys the same rules.
    status, out = await gw.rest(f"/Calls/{sid}/Streams.json", {"Url": ws.url("/rest")})
    assert status == 400 and out["code"] == 31900
    status, out = await gw.rest(
        f"/Calls/{sid}/Streams.json", {"Url": ws.url("/rest"), "Track": "sideways"}
    )
    assert status == 400 and out["code"] == 31941

    # Stopping one frees its tracks and its name.
    status, out = await gw.rest(f"/Calls/{sid}/Streams/b.json", {"Status": "stopped"})
    assert status == 200 and out["status"] == "stopped" and out["name"] == "b"
    assert out["sid"] == conns["/b"].stream_sid
    await conns["/b"].wait_closed()
    assert conns["/b"].messages[-1]["event"] == "stop"
    status, out = await gw.rest(
        f"/Calls/{sid}/Streams.json", {"Url": ws.url("/again"), "Name": "b"}
    )
    assert status == 200 and out["status"] == "in-progress"
    await (await ws.accept()).next("start")
    call = await gw.call(sid)
    assert [e["code"] for e in call["errors"]] == [31900, 31900]
    await gw.hangup(sid)


async def test_stop_verb_stops_the_named_stream(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    cb = http.url("/stop-cb")
    hook = http.twiml(
        "/second",
        "<Response><Stop><Stream name='keep-not'/></Stop>" + PAUSE + "</Response>",
    )
    doc = (
        "<Response>"
        + start(ws.url("/keep"), name="keep")
        + start(ws.url("/drop"), name="keep-not", statusCallback=cb)
        + f'<Pause length="0.3"/><Redirect>{hook}</Redirect></Response>'
    )
    created = await gw.create_call(peer, twiml=doc)
    conns = {}
    for _ in range(2):
        conn = await ws.accept()
        conns[conn.path] = conn
    await conns["/drop"].wait_closed()
    drop = conns["/drop"].messages
    assert [m["event"] for m in drop[:2]] == ["connected", "start"] and drop[-1]["event"] == "stop"
    await http.wait_for("/stop-cb", 1, StreamEvent="stream-stopped")
    assert not conns["/keep"].closed.is_set()
    call = await gw.call(created["sid"])
    states = {s["name"]: s["status"] for s in call["streams"]}
    assert states == {"keep": "in-progress", "keep-not": "stopped"}
    await gw.hangup(created["sid"])
    await conns["/keep"].wait_closed()


async def test_rest_stream_create_and_stop_by_sid(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    created = await gw.create_call(peer, twiml=f"<Response>{PAUSE}</Response>")
    sid = created["sid"]
    cb = http.url("/rest-cb")
    form = {
        "Url": ws.url("/rest"),
        "Track": "inbound_track",
        "StatusCallback": cb,
        "Parameter1.Name": "tenant",
        "Parameter1.Value": "acme",
        "Parameter7.Name": "agent",
        "Parameter7.Value": "42",
    }
    status, out = await gw.rest(f"/Calls/{sid}/Streams.json", form)
    assert status == 200
    assert set(out) == {"account_sid", "call_sid", "sid", "name", "status", "date_updated", "uri"}
    assert out["account_sid"] == ACCOUNT and out["call_sid"] == sid and out["name"] is None
    assert out["status"] == "in-progress" and out["sid"].startswith("MZ")
    assert out["uri"] == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}/Streams/{out['sid']}.json"
    assert out["date_updated"].endswith("+0000")
    conn = await ws.accept()
    msg = await conn.next("start")
    assert msg["streamSid"] == out["sid"]
    assert msg["start"]["customParameters"] == {"tenant": "acme", "agent": "42"}
    (started,) = await http.wait_for("/rest-cb", StreamEvent="stream-started")
    assert started.form["StreamName"] == out["sid"]
    assert started.headers["X-Twilio-Signature"] == reference_signature(TOKEN, cb, started.form)

    status, stopped = await gw.rest(
        f"/Calls/{sid}/Streams/{out['sid']}.json", {"Status": "stopped"}
    )
    assert status == 200 and stopped["status"] == "stopped" and stopped["sid"] == out["sid"]
    await conn.wait_closed()
    assert conn.messages[-1]["event"] == "stop"
    await http.wait_for("/rest-cb", StreamEvent="stream-stopped")

    status, bad = await gw.rest(f"/Calls/{sid}/Streams/nope.json", {"Status": "stopped"})
    assert status == 404 and bad["code"] == 20404
    status, bad = await gw.rest(f"/Calls/{sid}/Streams.json", {"Url": "ws://127.0.0.1/x"})
    assert status == 400 and bad["code"] == 31922
    status, bad = await gw.rest(f"/Calls/{sid}/Streams.json", {})
    assert status == 400
    # The call itself carried on throughout.
    assert (await gw.call(sid))["status"] == "in-progress"
    await gw.hangup(sid)


async def test_status_callbacks_are_retried(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    http.fail_first["/flaky"] = 2
    cb = http.url("/flaky")
    created = await gw.create_call(
        peer, twiml=f"<Response>{start(ws.url('/r'), statusCallback=cb)}{PAUSE}</Response>"
    )
    hits = await http.wait_for("/flaky", 3, StreamEvent="stream-started")
    assert len({h.form["Timestamp"] for h in hits}) == 1  # the same event, delivered again
    await gw.hangup(created["sid"])
    await http.wait_for("/flaky", 1, StreamEvent="stream-stopped")
