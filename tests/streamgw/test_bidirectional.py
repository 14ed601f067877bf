"""`<Connect><Stream>`: audio from the server played to the caller, marks, clear, DTMF."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json

from aiohttp import web
from support.media import Conn, HttpServer, RtpPeer, WsServer, reference_signature
from support.streamgw import TOKEN, Harness


def connect_doc(url: str, tail: str = "", **attrs: str) -> str:
    attributes = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f'<Response><Connect{attributes}><Stream url="{url}"/></Connect>{tail}</Response>'


def media(sid: str, audio: bytes) -> dict[str, object]:
    return {
        "event": "media",
        "streamSid": sid,
        "media": {"payload": base64.b64encode(audio).decode()},
    }


def mark(sid: str, name: str) -> dict[str, object]:
    return {"event": "mark", "streamSid": sid, "mark": {"name": name}}


async def echo(conn: Conn) -> None:
    """Send every received media payload straight back."""
    async for msg in conn.ws:
        if msg.type != web.WSMsgType.TEXT:
            continue
        body = json.loads(msg.data)
        conn.messages.append(body)
        conn.inbox.put_nowait(body)
        if body["event"] == "media":
            await conn.send(media(body["streamSid"], base64.b64decode(body["media"]["payload"])))


def played(peer: RtpPeer) -> bytes:
    return b"".join(p.payload for p in peer.received)


async def test_echo_reaches_the_caller_byte_exact_and_paced(
    gw: Harness, ws: WsServer, peer: RtpPeer, speech: bytes
) -> None:
    ws.behaviours["/echo"] = echo
    clip = speech[: 160 * 60]  # 1.2 s of real speech
    created = await gw.create_call(peer, twiml=connect_doc(ws.url("/echo")))
    conn = await ws.accept()
    start = await conn.next("start")
    assert start["start"]["tracks"] == ["inbound"]
    await peer.send(peer.packets(clip), gw.rtp_target(created), interval=0.005)
    async with asyncio.timeout(15):
        while clip not in played(peer):
            await peer.arrivals.get()
    await gw.hangup(created["sid"])

    packets = peer.received
    assert all(p.payload_type == 0 and len(p.payload) == 160 for p in packets)
    assert packets[0].marker
    for a, b in itertools.pairwise(packets):
        assert (b.sequence - a.sequence) & 0xFFFF == 1
        assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160
    assert len({p.ssrc for p in packets}) == 1
    # Played in real time: 60 frames cannot arrive much faster than 1.2 s (they were sent in 0.3 s).
    everything = played(peer)
    first = everything.index(clip) // 160
    assert packets[first + 59].payload == clip[-160:]
    # A lower bound only (a loaded machine can only make it slower): not sent as a burst.
    assert peer.times[first + 59] - peer.times[first] > 0.6


async def test_marks_return_after_their_audio_in_order(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    created = await gw.create_call(peer, twiml=connect_doc(ws.url("/marks")))
    conn = await ws.accept()
    sid = (await conn.next("start"))["streamSid"]
    a, b = bytes([0x11]) * 1600, bytes([0x22]) * 1600
    await conn.send(mark(sid, "nothing-queued"))
    assert (await conn.next("mark"))["mark"] == {"name": "nothing-queued"}
    await conn.send(media(sid, a))
    await conn.send(mark(sid, "after-a"))
    await conn.send(media(sid, b[:700]))
    await conn.send(media(sid, b[700:]))
    await conn.send(mark(sid, "after-b"))

    echoed = await conn.next("mark")
    assert echoed["mark"] == {"name": "after-a"}
    async with asyncio.timeout(2):
        while a not in played(peer):
            await peer.arrivals.get()
    assert b not in played(peer)  # b was queued behind the mark and has not all played yet
    echoed = await conn.next("mark")
    assert echoed["mark"] == {"name": "after-b"}
    async with asyncio.timeout(2):
        while b not in played(peer):
            await peer.arrivals.get()
    assert played(peer).index(a) < played(peer).index(b)
    assert set(echoed) == {"event", "sequenceNumber", "streamSid", "mark"}
    assert isinstance(echoed["sequenceNumber"], str) and echoed["streamSid"] == sid
    await gw.hangup(created["sid"])


async def test_clear_drops_audio_and_returns_pending_marks_at_once(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    created = await gw.create_call(peer, twiml=connect_doc(ws.url("/clear")))
    conn = await ws.accept()
    sid = (await conn.next("start"))["streamSid"]
    long_audio = bytes([0x33]) * (160 * 250)  # 5 s
    await conn.send(media(sid, long_audio))
    await conn.send(mark(sid, "x"))
    await conn.send(media(sid, long_audio))
    await conn.send(mark(sid, "y"))
    async with asyncio.timeout(5):
        while sum(p.payload == long_audio[:160] for p in peer.received) < 3:
            await peer.arrivals.get()
    await conn.send({"event": "clear", "streamSid": sid})
    assert (await conn.next("mark"))["mark"]["name"] == "x"
    assert (await conn.next("mark"))["mark"]["name"] == "y"
    await asyncio.sleep(0.3)
    count = sum(p.payload == long_audio[:160] for p in peer.received)
    await asyncio.sleep(0.3)
    assert sum(p.payload == long_audio[:160] for p in peer.received) == count
    assert count < 250  # far from the 10 s that was queued: the rest was dropped
    assert peer.received[-1].payload == b"\xff" * 160
    await gw.hangup(created["sid"])


async def test_dtmf_reaches_bidirectional_streams_only(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    doc = (
        f'<Response><Start><Stream url="{ws.url("/uni")}"/></Start>'
        f'<Connect><Stream url="{ws.url("/bidi")}"/></Connect></Response>'
    )
    created = await gw.create_call(peer, twiml=doc)
    conns = {}
    for _ in range(2):
        conn = await ws.accept()
        conns[conn.path] = conn
        await conn.next("start")
    target = gw.rtp_target(created)
    await peer.send(peer.packets(b"\x7f" * 320), target)
    await peer.send(peer.dtmf_packets(5), target)
    await peer.send(peer.packets(b"\x7f" * 320), target)
    await peer.send(peer.dtmf_packets(11), target)
    first = await conns["/bidi"].next("dtmf")
    second = await conns["/bidi"].next("dtmf")
    assert first["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert second["dtmf"] == {"track": "inbound_track", "digit": "#"}
    assert list(first) == ["event", "streamSid", "sequenceNumber", "dtmf"]
    assert isinstance(first["sequenceNumber"], str)
    await peer.send(peer.packets(b"\x7f" * 320), target)
    await gw.hangup(created["sid"])
    for conn in conns.values():
        await conn.wait_closed()
    assert len(conns["/bidi"].of("dtmf")) == 2
    assert conns["/uni"].of("dtmf") == []


async def test_server_close_moves_on_to_action(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    async def close_soon(conn: Conn) -> None:
        await read_until_start(conn)
        await conn.ws.close()

    ws.behaviours["/bye"] = close_soon
    action = http.twiml("/after", "<Response><Hangup/></Response>")
    created = await gw.create_call(
        peer, twiml=connect_doc(ws.url("/bye"), tail='<Pause length="60"/>', action=action)
    )
    (hit,) = await http.wait_for("/after")
    assert hit.form["CallSid"] == created["sid"]
    assert hit.headers["X-Twilio-Signature"] == reference_signature(TOKEN, action, hit.form)
    call = await gw.wait_status(created["sid"])
    assert call["streams"][0]["kind"] == "bidirectional"
    assert call["errors"] == []  # closing a bidirectional stream is its normal end
    conn = ws.connections[0]
    assert [m["event"] for m in conn.messages] == ["connected", "start"]  # no stop after close
    assert hit.form["StreamSid"] == conn.stream_sid and "StreamError" not in hit.form


async def test_connect_without_action_runs_the_next_verb(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    async def close_soon(conn: Conn) -> None:
        await read_until_start(conn)
        await conn.ws.close()

    ws.behaviours["/first"] = close_soon
    tail = f'<Start><Stream url="{ws.url("/second")}"/></Start><Pause length="60"/>'
    created = await gw.create_call(peer, twiml=connect_doc(ws.url("/first"), tail=tail))
    await ws.accept()
    second = await ws.accept()
    assert second.path == "/second"
    await second.next("start")
    await gw.hangup(created["sid"])


async def test_connect_accepts_only_the_inbound_track(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    doc = (
        f'<Response><Connect><Stream url="{ws.url("/x")}" track="both_tracks"/></Connect>'
        f'<Start><Stream url="{ws.url("/next")}"/></Start><Pause length="60"/></Response>'
    )
    created = await gw.create_call(peer, twiml=doc)
    conn = await ws.accept()
    assert conn.path == "/next"
    call = await gw.call(created["sid"])
    assert call["errors"][0]["code"] == 31941
    await gw.hangup(created["sid"])


async def read_until_start(conn: Conn) -> None:
    async for msg in conn.ws:
        body = json.loads(msg.data)
        conn.messages.append(body)
        if body["event"] == "start":
            return


async def test_rest_redirect_ends_a_bidirectional_stream(
    gw: Harness, ws: WsServer, peer: RtpPeer
) -> None:
    doc = (
        f'<Response><Start><Stream url="{ws.url("/fork")}"/></Start>'
        f'<Connect><Stream url="{ws.url("/agent")}"/></Connect></Response>'
    )
    created = await gw.create_call(peer, twiml=doc)
    conns = {}
    for _ in range(2):
        conn = await ws.accept()
        conns[conn.path] = conn
        await conn.next("start")
    sid = conns["/agent"].stream_sid
    status, _ = await gw.rest(f"/Calls/{created['sid']}/Streams/{sid}.json", {"Status": "stopped"})
    assert status == 400  # a <Connect><Stream> cannot be stopped over REST…
    status, _ = await gw.rest(
        f"/Calls/{created['sid']}.json", {"Twiml": '<Response><Pause length="60"/></Response>'}
    )
    assert status == 200  # …but redirecting the call ends it
    await conns["/agent"].wait_closed()
    assert conns["/agent"].messages[-1]["event"] == "stop"
    assert not conns["/fork"].closed.is_set()  # the <Start> fork goes on
    assert (await gw.call(created["sid"]))["status"] == "in-progress"
    await gw.hangup(created["sid"])
