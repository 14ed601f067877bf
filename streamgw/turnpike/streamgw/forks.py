"""A call's streams: the rules for starting one, and the fan-out of frames and digits to them.

Per frame, the caller's audio is base64-encoded once and shared by every fork of that track; each
fork only formats its own counters into the message, so the media path never waits on a socket.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

from yarl import URL

from turnpike.core import sids
from turnpike.streamgw import twiml
from turnpike.streamgw.errors import TITLES, StreamFailure
from turnpike.streamgw.stream import (
    BidirectionalFork,
    CallView,
    Egress,
    Fork,
    StreamSpec,
    validate_url,
)

MAX_TRACKS = 4


class Forks:
    def __init__(self, call: CallView, egress: Egress) -> None:
        self.call = call
        self.egress = egress
        self.all: dict[str, Fork] = {}
        self.bidi: BidirectionalFork | None = None
        self._inbound: list[Fork] = []
        self._outbound: list[Fork] = []

    def active(self) -> list[Fork]:
        return [f for f in self.all.values() if f.active]

    def find(self, sid_or_name: str) -> Fork | None:
        fork = self.all.get(sid_or_name)
        if fork is not None:
            return fork
        named = [f for f in self.all.values() if f.spec.name == sid_or_name]
        active = [f for f in named if f.active]
        candidates = active or named
        return candidates[-1] if candidates else None

    # ---- starting and stopping -------------------------------------------------------------

    def check(self, spec: StreamSpec, base: str | None) -> URL:
        """Validate a new stream; ``StreamFailure`` says why it cannot start."""
        allowed = ("inbound_track",) if spec.bidirectional else tuple(twiml.TRACKS)
        if spec.track not in allowed:
            raise StreamFailure(31941, f"track {spec.track!r} is not one of {', '.join(allowed)}")
        url = validate_url(spec.url, base)
        if spec.name and any(f.spec.name == spec.name for f in self.active()):
            raise StreamFailure(31900, f"a stream named {spec.name!r} is already running")
        if spec.bidirectional:
            if self.bidi is not None:
                raise StreamFailure(31900, "a call has at most one bidirectional stream")
            return url
        used = sum(f.spec.track_count for f in self.active() if not f.spec.bidirectional)
        if used + spec.track_count > MAX_TRACKS:
            raise StreamFailure(
                31900,
                f"a call streams at most {MAX_TRACKS} tracks at once ({used} in use; "
                "both_tracks counts as 2)",
            )
        return url

    def start(self, spec: StreamSpec, url: URL) -> Fork:
        kind = BidirectionalFork if spec.bidirectional else Fork
        fork = kind(self.call, spec, sids.new_sid(sids.STREAM), url, self.egress, self._finished)
        self.all[fork.sid] = fork
        if isinstance(fork, BidirectionalFork):
            self.bidi = fork
        if fork.wants_inbound:
            self._inbound.append(fork)
        if fork.wants_outbound:
            self._outbound.append(fork)
        fork.start()
        return fork

    def reject(self, spec: StreamSpec, failure: StreamFailure) -> None:
        """A stream from TwiML that cannot start: report it like a connection failure."""
        fork = Fork(
            self.call, spec, sids.new_sid(sids.STREAM), URL("wss://invalid"), self.egress, _ignore
        )
        self.all[fork.sid] = fork
        fork.fail_before_start(failure)

    def _finished(self, fork: Fork) -> None:
        with contextlib.suppress(ValueError):
            self._inbound.remove(fork)
        with contextlib.suppress(ValueError):
            self._outbound.remove(fork)
        if self.bidi is fork:
            self.bidi = None

    # ---- media fan-out ---------------------------------------------------------------------

    def inbound(self, index: int, frame: bytes, arrival: float) -> None:
        forks = self._inbound
        if forks:
            payload = base64.b64encode(frame).decode("ascii")  # once per frame, shared by all
            for fork in forks:
                fork.push_media("inbound", index, payload, arrival)

    def outbound(self, index: int, frame: bytes) -> None:
        forks = self._outbound
        if forks:
            payload = base64.b64encode(frame).decode("ascii")
            for fork in forks:
                # No arrival time: the latency histogram measures RTP in → WebSocket out only.
                fork.push_media("outbound", index, payload, 0.0)

    def dtmf(self, key: str) -> None:
        if self.bidi is not None:
            self.bidi.push_dtmf(key)

    def playout_frame(self) -> bytes | None:
        return self.bidi.next_playout_frame() if self.bidi is not None else None


def _ignore(_: Fork) -> None:
    pass


def stream_resource(fork: Fork) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sid": fork.sid,
        "name": fork.spec.name,
        "kind": fork.kind,
        "track": fork.spec.track,
        "url": str(fork.url) if fork.error is None or fork.status != "stopped" else fork.spec.url,
        "status": fork.status,
    }
    if fork.error is not None:
        code = fork.error.code
        out["error"] = {
            "code": code,
            "message": f"{TITLES.get(code, 'Error')}: {fork.error.detail}",
        }
    return out
