"""Destination filtering (closed by default) and containment of hostile WebSocket servers."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import itertools
import json
import socket
from typing import Any

import pytest
from support.media import Conn, HttpServer, RtpPeer, WsServer, raw_server, rtp_peer, ws_handshake
from support.streamgw import Harness, MakeGateway, sample

PAUSE = '<Pause length="60"/>'


async def test_default_policy_refuses_private_destinations(
    make_gateway: MakeGateway, ws: WsServer, http: HttpServer, peer: RtpPeer
) -> None:
    gw = await make_gateway(allow_destinations=())
    cb = http.url("/cb")
    wav = http.serve("/a.wav", b"RIFF")
    doc = (
        "<Response>"
        f'<Start><Stream url="{ws.url("/x")}" statusCallback="{cb}"/></Start>'
        '<Start><Stream url="wss://localhost/x"/></Start>'
        '<Start><Stream url="wss://[::1]/x"/></Start>'
        '<Start><Stream url="wss://[::ffff:127.0.0.1]/x"/></Start>'
        f"<Play>{wav}</Play>"
        f"{PAUSE}</Response>"
    )
    created = await gw.create_call(peer, twiml=doc)
    async with asyncio.timeout(10):
        while True:
            call = await gw.call(created["sid"])
            codes = [e["code"] for e in call["errors"]]
            if codes.count(31904) == 4 and 11200 in codes:
                break
            await asyncio.sleep(0.05)
    assert call["status"] == "in-progress"  # refused destinations end streams, not the call
    await asyncio.sleep(0.3)
    assert ws.connections == [] and http.hits == []
    refused = sample(gw.gateway.metrics.callbacks, "refused")
    assert refused >= 1
    await gw.hangup(created["sid"])

    hooked = await gw.create_call(peer, url=http.twiml("/voice", f"<Response>{PAUSE}</Response>"))
    call = await gw.wait_status(hooked["sid"])
    assert call["errors"][0]["code"] == 11200
    assert "not an address this gateway may reach" in call["errors"][0]["message"]
    assert http.hits == []


async def test_non_canonical_ipv4_literals_get_the_destination_error(
    make_gateway: MakeGateway, peer: RtpPeer
) -> None:
    """``127.1``, ``0x7f000001``, ``017700000001``: inet_aton forms of 127.0.0.1 are refused as
    destinations (31904), not as an unknown error."""
    gw = await make_gateway(allow_destinations=())
    hosts = ("127.1", "0x7f000001", "017700000001")
    streams = "".join(f'<Start><Stream url="wss://{h}/x"/></Start>' for h in hosts)
    created = await gw.create_call(peer, twiml=f"<Response>{streams}{PAUSE}</Response>")
    async with asyncio.timeout(10):
        while True:
            errors = (await gw.call(created["sid"]))["errors"]
            if len(errors) >= len(hosts):
                break
            await asyncio.sleep(0.05)
    assert [e["code"] for e in errors] == [31904] * len(hosts), errors
    assert all("non-canonical IPv4 literal for 127.0.0.1" in e["message"] for e in errors)
    await gw.hangup(created["sid"])


async def test_names_resolving_to_private_addresses_are_refused(
    make_gateway: MakeGateway, ws: WsServer, peer: RtpPeer
) -> None:
    name = socket.gethostname()
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, 443)
    except OSError:
        pytest.skip("this machine's hostname does not resolve")
    if any(ipaddress.ip_address(i[4][0]).is_global for i in infos):
        pytest.skip("this machine's hostname resolves to a public address")
    gw = await make_gateway(allow_destinations=())
    doc = f'<Response><Start><Stream url="wss://{name}:{ws.port}/x"/></Start>{PAUSE}</Response>'
    created = await gw.create_call(peer, twiml=doc)
    error = await first_error(gw, created["sid"])
    assert error["code"] == 31904 and "resolves only to addresses" in error["message"]
    assert ws.connections == []


async def first_error(gw: Harness, sid: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            errors = (await gw.call(sid))["errors"]
            if errors:
                return dict(errors[0])
            await asyncio.sleep(0.05)


async def flood(conn: Conn) -> None:
    """A bidirectional server gone mad: junk, oversized audio and marks as fast as it can."""
    sid = ""
    async for msg in conn.ws:
        body = json.loads(msg.data)
        if body["event"] == "start":
            sid = body["streamSid"]
            break
    junk = json.dumps({"event": "nonsense", "streamSid": sid})
    audio = json.dumps(
        {
            "event": "media",
            "streamSid": sid,
            "media": {"payload": base64.b64encode(b"\x01" * 16000).decode()},
        }
    )
    for n in range(3000):
        await conn.ws.send_str(junk if n % 2 else audio)
        if n % 100 == 0:
            await conn.ws.send_bytes(b"\x00" * 1000)
    await conn.ws.send_str("x" * (9 * 1024 * 1024))  # over the gateway's message size limit
    await asyncio.sleep(10)


@pytest.mark.slow
async def test_hostile_servers_do_not_disturb_a_healthy_stream(
    make_gateway: MakeGateway, ws: WsServer, speech: bytes
) -> None:
    gw = await make_gateway(stream={"connect_timeout": 3.0, "send_queue": 100, "stop_grace": 1.0})
    ws.behaviours["/flood"] = flood

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await ws_handshake(reader, writer)
        await asyncio.sleep(30)

    good_peer, bad_peer = await rtp_peer(), await rtp_peer()
    try:
        async with raw_server(never_reads, ws.ca.server_context(), limit=1024, rcvbuf=4096) as port:
            hostile = (
                f'<Response><Start><Stream url="wss://127.0.0.1:{port}/stuck" track="both_tracks"/>'
                "</Start>"
                f'<Connect><Stream url="{ws.url("/flood")}"/></Connect>{PAUSE}</Response>'
            )
            bad = await gw.create_call(bad_peer, twiml=hostile)
            good = await gw.create_call(
                good_peer,
                twiml=f'<Response><Start><Stream url="{ws.url("/good")}"/></Start>'
                f"{PAUSE}</Response>",
            )
            conns = {}
            while "/good" not in conns:
                conn = await ws.accept()
                conns[conn.path] = conn
            await conns["/good"].next("start")

            async def overwhelm() -> None:
                """Send the stuck server's call a lot of audio until the gateway has to drop."""
                noise = bytes([0x7E]) * 160 * 50
                for _ in range(400):
                    await bad_peer.send(bad_peer.packets(noise), gw.rtp_target(bad), interval=0)
                    await asyncio.sleep(0.005)
                    if any(e["code"] == 31930 for e in (await gw.call(bad["sid"]))["errors"]):
                        return

            bad_task = asyncio.create_task(overwhelm())
            await good_peer.send(good_peer.packets(speech), gw.rtp_target(good), interval=0.01)
            joined = b""
            async with asyncio.timeout(30):
                while speech not in joined:
                    msg = await conns["/good"].next("media")
                    joined += base64.b64decode(msg["media"]["payload"])
            await bad_task
            bad_call = await gw.call(bad["sid"])
            codes = {e["code"] for e in bad_call["errors"]}
            assert 31930 in codes  # the stuck server lost audio…
            assert 31951 in codes and 31950 in codes  # …the flooder was told off once each
            good_call = await gw.call(good["sid"])
            assert good_call["errors"] == [] and good_call["status"] == "in-progress"
            # The RTP path of the good call kept running: its caller heard the gateway throughout.
            assert len(good_peer.received) > 20
            await gw.hangup(good["sid"])
            await conns["/good"].wait_closed()
            media = conns["/good"].of("media")
            chunks = [int(m["media"]["chunk"]) for m in media]
            stamps = [int(m["media"]["timestamp"]) for m in media]
            assert chunks == list(range(1, len(chunks) + 1))
            assert all(b - a == 20 for a, b in itertools.pairwise(stamps))  # nothing dropped
            await gw.hangup(bad["sid"])
    finally:
        good_peer.close()
        bad_peer.close()
