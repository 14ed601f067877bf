"""The TwiML fetch and parse path under attack: hostile encodings, entity bombs, slow and cut
bodies.

Documents and audio come from real HTTP servers on loopback; servers that write in small delayed
chunks or cut a body short are raw asyncio servers, so the bytes on the wire are exactly the test's.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from support.media import HttpServer, RtpPeer, WsServer, rtp_peer, ulaw_wav
from support.streamgw import Harness
from twilio.twiml.voice_response import Start, VoiceResponse

from turnpike.streamgw import twiml

ENCODINGS = {
    "utf-16-le with BOM": lambda text: b"\xff\xfe" + text.encode("utf-16-le"),
    "utf-16-be with BOM": lambda text: b"\xfe\xff" + text.encode("utf-16-be"),
    "utf-16-le without BOM": lambda text: text.encode("utf-16-le"),
    "utf-16-be without BOM": lambda text: text.encode("utf-16-be"),
    "utf-8": lambda text: text.encode("utf-8"),
}


def entity_document(url: str) -> str:
    """A document whose stream URL exists only as an entity: it must never be connected to."""
    return (
        f'<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY target "{url}">]>'
        '<Response><Start><Stream url="&target;"/></Start><Pause length="5"/></Response>'
    )


def billion_laughs() -> str:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)
    )
    return f"<!DOCTYPE Response [{entities}]><Response><Say>&lol9;</Say></Response>"


@pytest.mark.parametrize("encoding", list(ENCODINGS))
async def test_entities_are_refused_in_every_encoding(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer, encoding: str
) -> None:
    http.routes["/voice"] = (
        200,
        "application/xml",
        ENCODINGS[encoding](entity_document(ws.url("/evil"))),
    )
    created = await gw.create_call(peer, url=http.url("/voice"))
    ended = await gw.wait_status(created["sid"], timeout=20)
    assert [e["code"] for e in ended["errors"]] == [12100]
    assert "DOCTYPE" in ended["errors"][0]["message"]
    assert ws.connections == []


def test_only_utf8_and_utf16_are_read() -> None:
    document = "<Response><Say>Grüße</Say></Response>"
    for encode in ENCODINGS.values():
        (say,) = twiml.parse(encode(document)).verbs
        assert say == twiml.Say("Grüße")
    assert twiml.parse(b"\xef\xbb\xbf" + document.encode()).verbs == (twiml.Say("Grüße"),)
    refused = [
        b'<?xml version="1.0" encoding="ISO-8859-1"?><Response/>',
        '<?xml version="1.0" encoding="UTF-8"?><Response/>'.encode("utf-16-le"),
        "<Response/>".encode("utf-32"),
        b"<Response><Say>\xff\xfe</Say></Response>",
    ]
    for raw in refused:
        with pytest.raises(twiml.TwimlError) as info:
            twiml.parse(raw)
        assert info.value.code == 12100


async def test_entity_bombs_are_refused_while_a_healthy_stream_runs(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer, speech: bytes
) -> None:
    healthy = await gw.create_call(
        peer,
        twiml=f'<Response><Start><Stream url="{ws.url("/good")}"/></Start>'
        '<Pause length="60"/></Response>',
    )
    conn = await ws.accept()
    await conn.next("start")
    sender = asyncio.create_task(
        peer.send(peer.packets(speech), gw.rtp_target(healthy), interval=0.02)
    )
    bomb = billion_laughs()
    bodies = [bomb.encode("utf-8"), bomb.encode("utf-16"), bomb.encode("utf-16-be")]
    for n, body in enumerate(bodies * 4):
        http.routes[f"/bomb{n}"] = (200, "application/xml", body)
    bombs = [await gw.create_call(url=http.url(f"/bomb{n}")) for n in range(len(bodies) * 4)]
    for call in bombs:
        ended = await gw.wait_status(call["sid"], timeout=20)
        assert [e["code"] for e in ended["errors"]] == [12100]
        status, out = await gw.request("POST", "/v1/Calls", json={"twiml": bomb})
        assert status == 400 and out["code"] == 12100
    await sender
    await gw.hangup(healthy["sid"])
    await conn.wait_closed()
    media = conn.of("media")
    audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    assert speech in audio  # every frame of the caller's speech reached the server
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert all(b - a == 20 for a, b in itertools.pairwise(stamps))


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_http(handler: Handler) -> AsyncIterator[str]:
    """An HTTP/1.1 server that writes its answer byte for byte as ``handler`` says."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def dribble(body: bytes, chunk: int, *, chunked: bool, cut: int = 0) -> Handler:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + framing)
        writer.write(b"\r\nConnection: close\r\n\r\n")
        sent = body[: len(body) - cut]
        for i in range(0, len(sent), chunk):
            piece = sent[i : i + chunk]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            await asyncio.sleep(0.005)
        if chunked and not cut:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    return handler


async def test_play_of_a_wav_sent_in_small_delayed_chunks_is_complete(
    gw: Harness, ws: WsServer, speech: bytes
) -> None:
    clip = speech[: 160 * 150]  # 3 s
    async with raw_http(dribble(ulaw_wav(clip), 8192, chunked=False)) as base:
        response = VoiceResponse()
        start = Start()
        start.stream(url=ws.url("/out"), track="outbound_track")
        response.append(start)
        response.play(f"{base}/prompt.wav")
        peer = await rtp_peer()
        try:
            created = await gw.create_call(peer, twiml=str(response))
            conn = await ws.accept()
            ended = await gw.wait_status(created["sid"], timeout=30)
        finally:
            peer.close()
    await conn.wait_closed()
    assert ended["errors"] == []
    outbound = b"".join(base64.b64decode(m["media"]["payload"]) for m in conn.of("media"))
    assert clip in outbound


@pytest.mark.parametrize("chunked", [False, True])
async def test_webhook_document_sent_in_small_chunks_is_complete(
    gw: Harness, http: HttpServer, chunked: bool
) -> None:
    http.twiml("/after", "<Response><Hangup/></Response>")
    padding = "<!-- " + "x" * (300 * 1024) + " -->"
    document = f"<Response>{padding}<Redirect>{http.url('/after')}</Redirect></Response>"
    async with raw_http(dribble(document.encode(), 16 * 1024, chunked=chunked)) as base:
        created = await gw.create_call(url=f"{base}/voice")
        ended = await gw.wait_status(created["sid"], timeout=30)
    assert ended["errors"] == []
    assert len(http.on("/after")) == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_cut_body_is_an_error_not_a_shorter_document(
    gw: Harness, http: HttpServer, chunked: bool
) -> None:
    http.twiml("/after", "<Response><Hangup/></Response>")
    document = f'<Response><Pause length="0"/><Redirect>{http.url("/after")}</Redirect></Response>'
    async with raw_http(dribble(document.encode(), 16, chunked=chunked, cut=30)) as base:
        created = await gw.create_call(url=f"{base}/voice")
        ended = await gw.wait_status(created["sid"], timeout=30)
    (error,) = ended["errors"]
    assert error["code"] == 11200 and "cut" in error["message"]
    assert http.on("/after") == []


async def test_a_cut_play_body_is_reported_and_nothing_of_it_is_played(
    gw: Harness, speech: bytes
) -> None:
    clip = speech[: 160 * 100]  # 2 s
    async with raw_http(dribble(ulaw_wav(clip), 4096, chunked=False, cut=4000)) as base:
        peer = await rtp_peer()
        try:
            created = await gw.create_call(
                peer, twiml=f"<Response><Play>{base}/prompt.wav</Play><Hangup/></Response>"
            )
            ended = await gw.wait_status(created["sid"], timeout=30)
        finally:
            peer.close()
    (error,) = ended["errors"]
    assert error["code"] == 11200 and "cut" in error["message"]
    assert clip[:1600] not in b"".join(p.payload for p in peer.received)


async def test_oversized_documents_are_refused_before_reading(gw: Harness) -> None:
    body = b"<Response>" + b" " * (twiml.MAX_DOCUMENT + 1) + b"</Response>"
    async with raw_http(dribble(body, 64 * 1024, chunked=False)) as base:
        created = await gw.create_call(url=f"{base}/voice")
        ended = await gw.wait_status(created["sid"], timeout=30)
    (error,) = ended["errors"]
    assert error["code"] == 11750


def test_element_count_is_capped() -> None:
    response = VoiceResponse()
    for _ in range(twiml.MAX_ELEMENTS - 1):
        response.pause(length=0)
    assert len(twiml.parse(str(response)).verbs) == twiml.MAX_ELEMENTS - 1  # with <Response>
    response.pause(length=0)
    with pytest.raises(twiml.TwimlError, match="more than 1000 elements") as info:
        twiml.parse(str(response))
    assert info.value.code == 12100


def test_every_supported_verb_as_the_sdk_spells_it() -> None:
    from twilio.twiml.voice_response import Connect, Gather, Stop

    response = VoiceResponse()
    start = Start(action="/started", method="GET")
    stream = start.stream(
        name="n",
        url="wss://example.com/s",
        track="both_tracks",
        status_callback="https://example.com/cb",
        status_callback_method="GET",
    )
    stream.parameter(name="k", value="v")
    response.append(start)
    stop = Stop()
    stop.stream(name="n")
    response.append(stop)
    connect = Connect(action="/after", method="POST")
    connect.stream(url="wss://example.com/c")
    response.append(connect)
    gather = Gather(
        input="dtmf",
        num_digits=4,
        timeout=7,
        finish_on_key="*",
        action="/digits",
        method="GET",
        action_on_empty_result=True,
    )
    gather.say("Enter your PIN", voice="Polly.Joanna", language="en-US", loop=2)
    gather.play("https://example.com/beep.wav", loop=1)
    gather.pause(length=2)
    response.append(gather)
    response.say("Bye", voice="woman", language="en-GB", loop=0)
    response.play("https://example.com/a.wav", loop=3)
    response.pause(length=1)
    response.redirect("/next", method="GET")
    response.reject(reason="busy")
    response.hangup()
    assert twiml.parse(str(response)).verbs == (
        twiml.Start(
            twiml.Stream(
                "wss://example.com/s", "n", "both_tracks", "https://example.com/cb", "GET",
                (("k", "v"),),
            ),
            "/started",
            "GET",
        ),
        twiml.StopStream("n"),
        twiml.Connect(twiml.Stream("wss://example.com/c"), "/after", "POST"),
        twiml.Gather(
            (
                twiml.Say("Enter your PIN", "Polly.Joanna", "en-US", 2),
                twiml.Play("https://example.com/beep.wav", 1),
                twiml.Pause(2.0),
            ),
            num_digits=4,
            timeout=7.0,
            finish_on_key="*",
            action="/digits",
            method="GET",
            action_on_empty_result=True,
        ),
        twiml.Say("Bye", "woman", "en-GB", 0),
        twiml.Play("https://example.com/a.wav", 3),
        twiml.Pause(1.0),
        twiml.Redirect("/next", "GET"),
        twiml.Reject("busy"),
        twiml.Hangup(),
    )  # fmt: skip
