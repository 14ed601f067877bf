"""The WebSocket messages, in exactly the hosted service's shape.

Key order follows captured real traffic (``event``, ``sequenceNumber``, body, ``streamSid``).
``sequenceNumber``, ``chunk``, ``timestamp`` and ``digit`` are strings; ``sampleRate`` and
``channels`` are numbers. ``media`` is the per-frame path, so it is formatted from a template: the
SIDs, track names and base64 payloads it joins never need JSON escaping (ASCII letters, digits and
``+/=``), and a template is several times cheaper than ``json.dumps`` of nested dicts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence


def _dump(body: object) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def connected() -> str:
    return '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def start(
    sequence: int,
    account_sid: str,
    stream_sid: str,
    call_sid: str,
    tracks: Sequence[str],
    custom_parameters: Mapping[str, str],
) -> str:
    body = {
        "event": "start",
        "sequenceNumber": str(sequence),
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": list(tracks),
            "customParameters": dict(custom_parameters),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": stream_sid,
    }
    return _dump(body)


_MEDIA = (
    '{"event":"media","sequenceNumber":"%d","media":{"track":"%s","chunk":"%d",'
    '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
)


def media(sequence: int, track: str, chunk: int, timestamp: int, payload_b64: str, sid: str) -> str:
    return _MEDIA % (sequence, track, chunk, timestamp, payload_b64, sid)


def dtmf(sequence: int, stream_sid: str, digit: str) -> str:
    body = {
        "event": "dtmf",
        "streamSid": stream_sid,
        "sequenceNumber": str(sequence),
        "dtmf": {"track": "inbound_track", "digit": digit},
    }
    return _dump(body)


def mark(sequence: int, stream_sid: str, name: str) -> str:
    body = {
        "event": "mark",
        "sequenceNumber": str(sequence),
        "streamSid": stream_sid,
        "mark": {"name": name},
    }
    return _dump(body)


def stop(sequence: int, stream_sid: str, account_sid: str, call_sid: str) -> str:
    body = {
        "event": "stop",
        "sequenceNumber": str(sequence),
        "streamSid": stream_sid,
        "stop": {"accountSid": account_sid, "callSid": call_sid},
    }
    return _dump(body)


# Messages a bidirectional stream's server may send, with the exact top-level keys each must have.
INBOUND_KEYS = {
    "media": frozenset({"event", "streamSid", "media"}),
    "mark": frozenset({"event", "streamSid", "mark"}),
    "clear": frozenset({"event", "streamSid"}),
}


class StreamEncoder:
    """One stream's outgoing messages, numbered in the order they are made.

    ``sequenceNumber`` counts every message after ``connected``; ``chunk`` counts per track from
    1; ``timestamp`` is media time since the stream started, from the call's frame counters
    (``base``: each track's frame index when the stream began).
    """

    def __init__(
        self, stream_sid: str, account_sid: str, call_sid: str, base: Mapping[str, int]
    ) -> None:
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.call_sid = call_sid
        self._base = dict(base)
        self._seq = 0
        self._chunks = dict.fromkeys(self._base, 0)

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def start(self, tracks: Sequence[str], custom_parameters: Mapping[str, str]) -> str:
        seq = self._next()
        return start(
            seq, self.account_sid, self.stream_sid, self.call_sid, tracks, custom_parameters
        )

    def media(self, track: str, index: int, payload_b64: str) -> str:
        """Frame ``index`` (the call's counter for ``track``) as a ``media`` message."""
        seq = self._next()
        chunk = self._chunks[track] + 1
        self._chunks[track] = chunk
        timestamp = (index - self._base[track]) * 20
        return media(seq, track, chunk, timestamp, payload_b64, self.stream_sid)

    def dtmf(self, digit: str) -> str:
        return dtmf(self._next(), self.stream_sid, digit)

    def mark(self, name: str) -> str:
        return mark(self._next(), self.stream_sid, name)

    def stop(self) -> str:
        return stop(self._next(), self.stream_sid, self.account_sid, self.call_sid)
