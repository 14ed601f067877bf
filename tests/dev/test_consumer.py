"""The sample consumer, driven by a real WebSocket client over TLS on loopback."""

import base64
import json
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web

from turnpike.dev.consumer import consumer_app
from turnpike.dev.tlsgen import make_dev_tls
from turnpike.streamgw.wav import wav_to_ulaw

STREAM = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACCOUNT = "AC" + "3" * 32


async def serve(tmp_path: Path) -> tuple[web.AppRunner, str, ssl.SSLContext]:
    tls = make_dev_tls(tmp_path / "tls", "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls.cert, tls.key)
    runner = web.AppRunner(consumer_app(tmp_path / "rec"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=tls.ca_cert)


def start_message(tracks: list[str]) -> dict[str, object]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT,
            "streamSid": STREAM,
            "callSid": CALL,
            "tracks": tracks,
            "customParameters": {"k": "v"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": STREAM,
    }


def media(seq: int, chunk: int, payload: bytes, track: str = "inbound") -> str:
    body = {
        "event": "media",
        "sequenceNumber": str(seq),
        "media": {
            "track": track,
            "chunk": str(chunk),
            "timestamp": str(chunk * 20),
            "payload": base64.b64encode(payload).decode(),
        },
        "streamSid": STREAM,
    }
    return json.dumps(body)


async def test_record_writes_mulaw_wav_per_track(tmp_path: Path) -> None:
    runner, base, client_ctx = await serve(tmp_path)
    frames = [bytes([i]) * 160 for i in range(5)]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(
                base.replace("https", "wss") + "/record", ssl=client_ctx
            ) as ws:
                await ws.send_str(json.dumps({"event": "connected", "protocol": "Call"}))
                await ws.send_str(json.dumps(start_message(["inbound", "outbound"])))
                for n, frame in enumerate(frames):
                    await ws.send_str(media(2 + 2 * n, n + 1, frame))
                    await ws.send_str(media(3 + 2 * n, n + 1, b"\x7f" * 160, "outbound"))
                await ws.send_str(json.dumps({"event": "stop", "streamSid": STREAM}))
                closing = await ws.receive()
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            async with http.get(base + "/recordings", ssl=client_ctx) as resp:
                [rec] = (await resp.json())["recordings"]
        assert rec["complete"]
        assert rec["bytes"] == {"inbound": 800, "outbound": 800}
        assert rec["customParameters"] == {"k": "v"}
        inbound = wav_to_ulaw(Path(rec["files"]["inbound"]).read_bytes())
        assert inbound == b"".join(frames)
        assert wav_to_ulaw(Path(rec["files"]["outbound"]).read_bytes()) == b"\x7f" * 800
    finally:
        await runner.cleanup()


async def test_echo_sends_audio_back_with_marks(tmp_path: Path) -> None:
    runner, base, client_ctx = await serve(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(
                base.replace("https", "wss") + "/echo", ssl=client_ctx
            ) as ws:
                await ws.send_str(json.dumps(start_message(["inbound"])))
                await ws.send_str(media(2, 1, b"\x01" * 160))
                echoed = json.loads((await ws.receive()).data)
                mark = json.loads((await ws.receive()).data)
        assert echoed == {
            "event": "media",
            "streamSid": STREAM,
            "media": {"payload": base64.b64encode(b"\x01" * 160).decode()},
        }
        assert mark == {"event": "mark", "streamSid": STREAM, "mark": {"name": "1"}}
    finally:
        await runner.cleanup()


def test_bundled_clip_is_mulaw() -> None:
    from turnpike.dev.call import default_clip

    clip = default_clip()
    assert len(clip) > 8000  # more than a second of audio
    assert len(set(clip)) > 50  # speech, not silence
