"""Every documented failure ends only its own stream: the call and its other streams go on."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.media import (
    Conn,
    HttpServer,
    RtpPeer,
    TestCA,
    WsServer,
    raw_server,
    ws_handshake,
)
from support.streamgw import Harness, MakeGateway, sample

PAUSE = '<Pause length="60"/>'


class Scene:
    """A call with one healthy stream; each test adds the stream that fails."""

    def __init__(self, gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer) -> None:
        self.gw, self.ws, self.http, self.peer = gw, ws, http, peer
        self.sid = ""
        self.healthy: Conn | None = None

    async def open(self, failing: str, *, connect: bool = False) -> None:
        cb = self.http.url("/events")
        healthy = f'<Start><Stream name="healthy" url="{self.ws.url("/healthy")}"/></Start>'
        if connect:
            failing_xml = f'<Connect><Stream url="{failing}" statusCallback="{cb}"/></Connect>'
        else:
            failing_xml = (
                f'<Start><Stream name="failing" url="{failing}" statusCallback="{cb}"/></Start>'
            )
        created = await self.gw.create_call(
            self.peer, twiml=f"<Response>{healthy}{failing_xml}{PAUSE}</Response>"
        )
        self.sid = created["sid"]
        self.target = self.gw.rtp_target(created)
        while self.healthy is None:
            conn = await self.ws.accept()
            if conn.path == "/healthy":
                self.healthy = conn
        await self.healthy.next("start")

    async def error(self, code: int, timeout: float = 10, count: int = 1) -> dict[str, Any]:
        """The first error with ``code`` on the call, once ``count`` of them were reported."""
        async with asyncio.timeout(timeout):
            while True:
                call = await self.gw.call(self.sid)
                found = [e for e in call["errors"] if e["code"] == code]
                if len(found) >= count:
                    return found[0]
                await asyncio.sleep(0.05)

    async def still_alive(self) -> None:
        """The call is in progress and its healthy stream still gets the caller's audio."""
        assert self.healthy is not None
        call = await self.gw.call(self.sid)
        assert call["status"] == "in-progress"
        marker = bytes([0x2A]) * 160
        await self.peer.send(self.peer.packets(marker * 3), self.target)
        async with asyncio.timeout(5):
            while True:
                msg = await self.healthy.next("media")
                if base64.b64decode(msg["media"]["payload"]) == marker:
                    break
        assert not self.healthy.closed.is_set()
        await self.gw.hangup(self.sid)
        await self.healthy.wait_closed()
        assert self.healthy.messages[-1]["event"] == "stop"

    def errors_metric(self, code: int) -> float:
        value = sample(self.gw.gateway.metrics.ws_errors, str(code))
        return float(value)


@pytest.fixture
async def scene(gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer) -> Scene:
    return Scene(gw, ws, http, peer)


@pytest.fixture
async def quick_scene(
    make_gateway: MakeGateway, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> Scene:
    gw = await make_gateway(
        stream={"connect_timeout": 1.0, "send_queue": 20, "stop_grace": 1.0}, rtp_timeout=0.5
    )
    return Scene(gw, ws, http, peer)


async def expect_stream_error(scene: Scene, code: int) -> None:
    (hit,) = await scene.http.wait_for("/events", StreamEvent="stream-error")
    assert hit.form["StreamError"].startswith(f"{code} ")
    assert set(hit.form) == {
        "AccountSid",
        "CallSid",
        "StreamSid",
        "StreamName",
        "StreamEvent",
        "StreamError",
        "Timestamp",
    }
    assert hit.form["StreamName"] == hit.form["StreamSid"] or hit.form["StreamName"] == "failing"
    assert scene.errors_metric(code) >= 1


async def test_31902_connection_refused(scene: Scene) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        await scene.open(f"wss://127.0.0.1:{port}/x")
        error = await scene.error(31902)
    assert error["message"].startswith("Stream - WebSocket - Connection Refused")
    await expect_stream_error(scene, 31902)
    await scene.still_alive()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def test_31901_connection_timeout(quick_scene: Scene) -> None:
    async with raw_server(silent, None) as port:  # accepts TCP, never answers the TLS hello
        await quick_scene.open(f"wss://127.0.0.1:{port}/slow")
        await quick_scene.error(31901)
    await expect_stream_error(quick_scene, 31901)
    await quick_scene.still_alive()


async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()


async def test_31910_tls_failures(scene: Scene, tmp_path: Path) -> None:
    async with raw_server(plain_http, None) as port:  # not TLS at all
        await scene.open(f"wss://127.0.0.1:{port}/plain")
        await scene.error(31910)
    untrusted = TestCA(tmp_path / "other-ca")  # a certificate the gateway does not trust
    async with raw_server(silent, untrusted.server_context()) as port:
        status, _ = await scene.gw.rest(
            f"/Calls/{scene.sid}/Streams.json", {"Url": f"wss://127.0.0.1:{port}/untrusted"}
        )
        assert status == 200
        await scene.error(31910, count=2)
        call = await scene.gw.call(scene.sid)
    assert "CERTIFICATE_VERIFY_FAILED" in call["errors"][-1]["message"]
    await scene.still_alive()


async def test_31920_handshake_status(scene: Scene) -> None:
    scene.ws.statuses["/forbidden"] = 403
    await scene.open(scene.ws.url("/forbidden"))
    error = await scene.error(31920)
    assert "403" in error["message"]
    await expect_stream_error(scene, 31920)
    await scene.still_alive()


async def test_31921_server_closes_a_fork(scene: Scene) -> None:
    async def close_after_start(conn: Conn) -> None:
        async for msg in conn.ws:
            if json.loads(msg.data)["event"] == "start":
                await conn.ws.close(code=4000)
                return

    scene.ws.behaviours["/closer"] = close_after_start
    await scene.open(scene.ws.url("/closer"))
    error = await scene.error(31921)
    assert "4000" in error["message"]
    await scene.http.wait_for("/events", StreamEvent="stream-stopped")
    await expect_stream_error(scene, 31921)
    await scene.still_alive()


async def test_31922_31923_bad_urls(scene: Scene) -> None:
    await scene.open("ws://127.0.0.1:9/plain")
    await scene.error(31922)
    for bad in ("wss://", "wss://[bad/x", "wss://host:99999/x"):
        status, out = await scene.gw.rest(f"/Calls/{scene.sid}/Streams.json", {"Url": bad})
        assert status == 400 and out["code"] == 31923, bad
    status, _ = await scene.gw.rest(
        f"/Calls/{scene.sid}.json",
        {
            "Twiml": '<Response><Start><Stream url="wss://[::1/x"/></Start><Pause length="60"/>'
            "</Response>"
        },
    )
    assert status == 200
    await scene.error(31923)
    status, out = await scene.gw.rest(f"/Calls/{scene.sid}/Streams.json", {"Url": "https://x/"})
    assert status == 400 and out["code"] == 31922
    await scene.still_alive()


async def bad_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await ws_handshake(reader, writer)
    await asyncio.sleep(0.2)
    writer.write(b"\x09\x00")  # a ping without FIN: fragmented control frame (RFC 6455 §5.5)
    await writer.drain()
    await asyncio.sleep(5)


async def abrupt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await ws_handshake(reader, writer)
    await reader.read(200)
    transport: Any = writer.transport
    transport.abort()


async def test_31924_protocol_error(scene: Scene, ca: TestCA) -> None:
    async with raw_server(bad_frame, ca.server_context()) as port:
        await scene.open(f"wss://127.0.0.1:{port}/bad")
        await scene.error(31924)
    await expect_stream_error(scene, 31924)
    await scene.still_alive()


async def test_31903_abrupt_close(scene: Scene, ca: TestCA) -> None:
    async with raw_server(abrupt, ca.server_context()) as port:
        await scene.open(f"wss://127.0.0.1:{port}/abrupt")
        await scene.error(31903)
    await scene.still_alive()


async def test_31904_unreachable_and_refused_destinations(scene: Scene) -> None:
    await scene.open("wss://10.20.30.40/private")  # a private address, not allowed
    error = await scene.error(31904)
    assert "not an address this gateway may reach" in error["message"]
    status, _ = await scene.gw.rest(
        f"/Calls/{scene.sid}/Streams.json", {"Url": "wss://no-such-host.invalid/x"}
    )
    assert status == 200
    await scene.error(31904, count=2, timeout=15)
    await scene.still_alive()


async def test_31950_binary_frames_reported_once(scene: Scene) -> None:
    async def binary(conn: Conn) -> None:
        async for msg in conn.ws:
            body = json.loads(msg.data)
            conn.messages.append(body)
            conn.inbox.put_nowait(body)
            if body["event"] == "start":
                await conn.ws.send_bytes(b"\x00\x01")
                await conn.ws.send_bytes(b"\x00\x02")
                await conn.send(
                    {
                        "event": "mark",
                        "streamSid": body["streamSid"],
                        "mark": {"name": "still-here"},
                    }
                )

    scene.ws.behaviours["/binary"] = binary
    await scene.open(scene.ws.url("/binary"), connect=True)
    await scene.error(31950)
    bidi = next(c for c in scene.ws.connections if c.path == "/binary")
    assert (await bidi.next("mark"))["mark"]["name"] == "still-here"
    call = await scene.gw.call(scene.sid)
    assert [e["code"] for e in call["errors"]] == [31950]
    assert scene.errors_metric(31950) == 1
    await scene.still_alive()


async def test_31951_invalid_messages_reported_once(scene: Scene) -> None:
    async def invalid(conn: Conn) -> None:
        async for msg in conn.ws:
            body = json.loads(msg.data)
            conn.messages.append(body)
            conn.inbox.put_nowait(body)
            if body["event"] == "start":
                sid = body["streamSid"]
                await conn.ws.send_str("{not json")
                await conn.send({"event": "dance", "streamSid": sid})
                await conn.send(
                    {"event": "mark", "streamSid": "MZ" + "0" * 32, "mark": {"name": "wrong-sid"}}
                )
                await conn.send({"event": "clear", "streamSid": sid, "extra": 1})
                await conn.send({"event": "media", "streamSid": sid, "media": {"payload": "%%"}})
                await conn.send({"event": "mark", "streamSid": sid, "mark": {"name": "ok"}})

    scene.ws.behaviours["/invalid"] = invalid
    await scene.open(scene.ws.url("/invalid"), connect=True)
    bidi = await anext(c async for c in wait_conn(scene.ws, "/invalid"))
    assert (await bidi.next("mark"))["mark"]["name"] == "ok"
    call = await scene.gw.call(scene.sid)
    assert [e["code"] for e in call["errors"]] == [31951]
    assert "not JSON" in call["errors"][0]["message"]
    assert scene.errors_metric(31951) == 1
    await scene.still_alive()


async def wait_conn(ws: WsServer, path: str) -> AsyncIterator[Conn]:
    async with asyncio.timeout(10):
        while True:
            for conn in ws.connections:
                if conn.path == path:
                    yield conn
                    return
            await asyncio.sleep(0.02)


async def test_31931_more_than_ten_minutes_buffered(scene: Scene) -> None:
    async def flood_audio(conn: Conn) -> None:
        async for msg in conn.ws:
            body = json.loads(msg.data)
            conn.messages.append(body)
            conn.inbox.put_nowait(body)
            if body["event"] == "start":
                sid = body["streamSid"]
                minute = base64.b64encode(b"\x55" * 8000 * 60).decode()
                for _ in range(11):
                    await conn.send(
                        {"event": "media", "streamSid": sid, "media": {"payload": minute}}
                    )
                await conn.send({"event": "clear", "streamSid": sid})
                await conn.send({"event": "mark", "streamSid": sid, "mark": {"name": "after"}})

    scene.ws.behaviours["/flood"] = flood_audio
    await scene.open(scene.ws.url("/flood"), connect=True)
    bidi = await anext(c async for c in wait_conn(scene.ws, "/flood"))
    assert (await bidi.next("mark"))["mark"]["name"] == "after"
    error = await scene.error(31931)
    assert error["message"].startswith("Stream - Media - Media Discarded")
    await scene.still_alive()


async def test_31953_rtp_timeout(quick_scene: Scene) -> None:
    await quick_scene.open(quick_scene.ws.url("/waits"))
    error = await quick_scene.error(31953)
    assert "no RTP" in error["message"]
    assert quick_scene.errors_metric(31953) == 1
    await quick_scene.still_alive()


async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await ws_handshake(reader, writer)
    await asyncio.sleep(30)


async def fill_until_31930(scene: Scene) -> None:
    """Send the caller's audio, far faster than real time, until the failing stream's server,
    which does not read, has made the gateway drop audio for it (its own 31930, not the healthy
    stream's). Each burst waits until the gateway has taken all of it from its RTP socket: on a
    busy machine a backlog there would hold up (or, once the socket's buffer is full, lose) the
    audio `still_alive` sends next."""
    assert scene.healthy is not None
    healthy = scene.healthy.stream_sid
    frame = bytes([0x7E]) * 160
    async with asyncio.timeout(30):
        while True:
            call = await scene.gw.call(scene.sid)
            if any(e["code"] == 31930 and e.get("streamSid") != healthy for e in call["errors"]):
                return
            burst = scene.peer.packets(frame * 50)
            taken = frames_received(scene) + len(burst)
            await scene.peer.send(burst, scene.target, interval=0)
            while frames_received(scene) < taken:  # noqa: ASYNC110 - a metric, not an event
                await asyncio.sleep(0.01)


def frames_received(scene: Scene) -> float:
    return sample(scene.gw.gateway.metrics.frames_received, "rtp")


async def test_31930_slow_server_loses_audio_not_the_call(quick_scene: Scene) -> None:
    context = quick_scene.ws.ca.server_context()
    async with raw_server(never_reads, context, limit=1024, rcvbuf=4096) as port:
        await quick_scene.open(f"wss://127.0.0.1:{port}/stuck")
        await fill_until_31930(quick_scene)
        dropped = quick_scene.gw.gateway.metrics.frames_dropped
        assert sample(dropped, "websocket_backpressure") > 0
        await quick_scene.still_alive()


async def test_a_stuck_server_is_dropped_when_its_stream_stops(quick_scene: Scene) -> None:
    """A server that stops reading cannot be closed politely (the close frame never gets
    through): stopping its stream resets the connection, so neither end of it is left, instead
    of the gateway holding it (and what the server never read) until TLS gives up."""

    context = quick_scene.ws.ca.server_context()
    async with raw_server(never_reads, context, limit=1024, rcvbuf=4096) as port:
        await quick_scene.open(f"wss://127.0.0.1:{port}/stuck")
        await fill_until_31930(quick_scene)
        assert tcp_connections(port) == ["ESTABLISHED", "ESTABLISHED"]
        status, out = await quick_scene.gw.rest(
            f"/Calls/{quick_scene.sid}/Streams/failing.json", {"Status": "stopped"}
        )
        assert status == 200 and out["status"] == "stopped", out
        await quick_scene.http.wait_for("/events", StreamEvent="stream-stopped")
        for _ in range(200):  # up to 10 s; TLS alone would give up after 30 s
            if not tcp_connections(port):
                break
            await asyncio.sleep(0.05)
        assert tcp_connections(port) == []
        await quick_scene.still_alive()


TCP_STATES = {"01": "ESTABLISHED", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "08": "CLOSE_WAIT"}


def tcp_connections(port: int) -> list[str]:
    """States of this host's TCP connections with an end at 127.0.0.1:``port`` (both ends of
    each connection on loopback), from /proc/net/tcp; listening sockets are left out."""
    end = f"0100007F:{port:04X}"
    rows = [row.split() for row in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sorted(
        TCP_STATES.get(row[3], row[3]) for row in rows if end in row[1:3] and row[3] != "0A"
    )
