"""A sample Media Streams consumer, served by `turnpike dev`.

It is what a customer's WebSocket server does, in the hosted message format: ``/record`` writes
each stream's audio to µ-law WAV files, ``/echo`` also sends every inbound frame straight back
(a bidirectional ``<Connect><Stream>``), followed by a mark, so the audio the caller hears is the
audio it sent. ``GET /recordings`` lists what was recorded, for ``turnpike dev call`` and tests.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)


def mulaw_wav_header(data_bytes: int, rate: int = 8000) -> bytes:
    """RIFF/WAVE header for 8-bit G.711 µ-law mono (format tag 7, with the fact chunk)."""
    fmt = struct.pack("<HHIIHHH", 7, 1, rate, rate, 1, 8, 0)
    fact = struct.pack("<I", data_bytes)
    riff_size = 4 + (8 + len(fmt)) + (8 + len(fact)) + (8 + data_bytes)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<I", len(fact))
        + fact
        + b"data"
        + struct.pack("<I", data_bytes)
    )


@dataclass
class Recording:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: list[str]
    custom_parameters: dict[str, str]
    audio: dict[str, bytearray] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    marks_echoed: list[str] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    complete: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "accountSid": self.account_sid,
            "tracks": self.tracks,
            "customParameters": self.custom_parameters,
            "bytes": {track: len(audio) for track, audio in self.audio.items()},
            "files": self.files,
            "marks": self.marks_echoed,
            "dtmf": self.dtmf,
            "complete": self.complete,
        }


class Recordings:
    """Every stream this consumer has seen, written under ``folder`` when each one stops."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.by_stream: dict[str, Recording] = {}

    def save(self, rec: Recording) -> None:
        target = self.folder / rec.call_sid
        target.mkdir(parents=True, exist_ok=True)
        for track, audio in rec.audio.items():
            path = target / f"{rec.stream_sid}-{track}.wav"
            path.write_bytes(mulaw_wav_header(len(audio)) + audio)
            rec.files[track] = str(path)
        rec.complete = True


RECORDINGS = web.AppKey("recordings", Recordings)


async def _serve_stream(request: web.Request, echo: bool) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    recordings = request.app[RECORDINGS]
    rec: Recording | None = None
    marks = 0
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            continue
        event = json.loads(msg.data)
        kind = event.get("event")
        if kind == "start":
            start = event["start"]
            rec = Recording(
                start["streamSid"],
                start["callSid"],
                start["accountSid"],
                list(start["tracks"]),
                dict(start.get("customParameters") or {}),
            )
            recordings.by_stream[rec.stream_sid] = rec
            log.info("stream %s of call %s started", rec.stream_sid, rec.call_sid)
        elif kind == "media" and rec is not None:
            media = event["media"]
            payload = media["payload"]
            rec.audio.setdefault(media["track"], bytearray()).extend(base64.b64decode(payload))
            if echo:
                marks += 1
                out = {"event": "media", "streamSid": rec.stream_sid, "media": {"payload": payload}}
                await ws.send_str(json.dumps(out))
                mark = {"event": "mark", "streamSid": rec.stream_sid, "mark": {"name": str(marks)}}
                await ws.send_str(json.dumps(mark))
        elif kind == "mark" and rec is not None:
            rec.marks_echoed.append(event["mark"]["name"])
        elif kind == "dtmf" and rec is not None:
            rec.dtmf.append(event["dtmf"]["digit"])
        elif kind == "stop" and rec is not None:
            recordings.save(rec)
            log.info("stream %s stopped; recorded %s", rec.stream_sid, rec.summary()["bytes"])
            break
    if rec is not None and not rec.complete:
        recordings.save(rec)
    await ws.close()
    return ws


async def record(request: web.Request) -> web.WebSocketResponse:
    return await _serve_stream(request, echo=False)


async def echo(request: web.Request) -> web.WebSocketResponse:
    return await _serve_stream(request, echo=True)


async def list_recordings(request: web.Request) -> web.Response:
    call_sid = request.query.get("callSid")
    items = [
        r.summary()
        for r in request.app[RECORDINGS].by_stream.values()
        if call_sid is None or r.call_sid == call_sid
    ]
    return web.json_response({"recordings": items})


def consumer_app(folder: Path) -> web.Application:
    app = web.Application()
    app[RECORDINGS] = Recordings(folder)
    app.router.add_get("/record", record)
    app.router.add_get("/echo", echo)
    app.router.add_get("/recordings", list_recordings)
    return app
