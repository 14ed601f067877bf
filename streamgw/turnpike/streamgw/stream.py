"""One stream: a WebSocket client to the customer's server.

`Fork` (``<Start><Stream>``) and `BidirectionalFork` (``<Connect><Stream>``) are thin classes
around one `messages.StreamEncoder`. The call hands each fork ready-made base64 frames; the fork's
encoder only formats its own counters into the message template and the fork appends it to a
bounded queue, so nothing in the media path ever waits on a
customer's socket. A writer coroutine drains the queue; when the server reads too slowly the queue
fills and further audio is dropped (31930) instead of growing without bound or slowing the call.

`BidirectionalFork` also owns the playout queue: audio and marks from the server, played by the
call's 20 ms clock, with marks echoed once the audio queued before them has been sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import json
import logging
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from yarl import URL

from turnpike.core.accounts import Account
from turnpike.core.addresses import AddressPolicy
from turnpike.streamgw import messages, signature
from turnpike.streamgw.callbacks import Callbacks, iso_timestamp
from turnpike.streamgw.egress import DestinationRefused, check_url, redact
from turnpike.streamgw.errors import TITLES, WARNINGS, StreamFailure
from turnpike.streamgw.g711 import ULAW_SILENCE
from turnpike.streamgw.metrics import Metrics

log = logging.getLogger(__name__)

FRAME = 160
PLAYOUT_CAP_BYTES = 8000 * 600  # 10 minutes of 8 kHz µ-law
TRACK_NAMES = {
    "inbound_track": ("inbound",),
    "outbound_track": ("outbound",),
    "both_tracks": ("inbound", "outbound"),
}
USER_AGENT = "Twilio.TmeWs/1.0"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    connect_timeout: float = 10.0
    send_queue: int = 500  # messages waiting for a slow server before audio is dropped (31930)
    max_message: int = 8 * 1024 * 1024  # largest message accepted from a server
    stop_grace: float = 2.0  # how long a stop may take before the socket is dropped


@dataclass(frozen=True, slots=True)
class StreamSpec:
    url: str
    name: str | None = None
    track: str = "inbound_track"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    parameters: tuple[tuple[str, str], ...] = ()
    bidirectional: bool = False

    @property
    def track_count(self) -> int:
        return 2 if self.track == "both_tracks" else 1


@dataclass(slots=True)
class Egress:
    """What a fork needs from the gateway to reach the outside world."""

    session: aiohttp.ClientSession
    policy: AddressPolicy
    callbacks: Callbacks
    metrics: Metrics
    settings: StreamSettings = field(default_factory=StreamSettings)


class _Socket(Protocol):
    """What a fork uses of the socket asyncio hands out (``asyncio.trsock.TransportSocket``)."""

    def setsockopt(self, level: int, option: int, value: bytes) -> None: ...

    def shutdown(self, how: int) -> None: ...


class CallView(Protocol):
    sid: str
    account: Account

    def frame_index(self, track: str) -> int: ...

    def record_issue(self, code: int, detail: str, stream_sid: str | None) -> None: ...


def validate_url(raw: str, base: str | None) -> URL:
    """The absolute ``wss://`` URL a stream connects to (31923 unparseable, 31922 not wss)."""
    try:
        url = URL(raw)
        if not url.is_absolute() and base:
            # Relative to the TwiML document, which is fetched over https: the same host and
            # path space over WebSocket TLS (an http document stays ws, refused below).
            url = URL(base).join(url)
            if url.scheme == "https":
                url = url.with_scheme("wss")
    except (ValueError, TypeError) as exc:
        raise StreamFailure(31923, f"cannot parse {redact(raw)!r}: {exc}") from None
    if url.scheme != "wss":
        raise StreamFailure(31922, f"only wss:// is supported, got {redact(raw)!r}")
    if not url.host:
        raise StreamFailure(31923, f"{redact(raw)!r} has no host")
    if url.query_string or url.raw_fragment:
        # The hosted service drops query strings; say so instead of silently dropping data.
        log.info("dropping query string from stream URL %s; use <Parameter> instead", redact(raw))
        url = url.with_query(None).with_fragment(None)
    return url


def classify(exc: BaseException) -> StreamFailure:
    """Map a connection failure to the documented code."""
    if isinstance(exc, StreamFailure):
        return exc
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return StreamFailure(31920, f"server answered HTTP {exc.status} instead of 101")
    if isinstance(exc, DestinationRefused):
        return StreamFailure(31904, str(exc))
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return StreamFailure(31910, str(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        inner = exc.os_error
        if isinstance(inner, DestinationRefused):
            return StreamFailure(31904, str(inner))
        if isinstance(inner, ssl.SSLError):
            return StreamFailure(31910, str(inner))
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return StreamFailure(31904, f"cannot resolve host: {inner}")
        if inner.errno == errno.ECONNREFUSED or isinstance(inner, ConnectionRefusedError):
            return StreamFailure(31902, str(inner))
        if isinstance(inner, TimeoutError) or inner.errno == errno.ETIMEDOUT:
            return StreamFailure(31901, str(inner))
        return StreamFailure(31904, str(inner))
    if isinstance(exc, TimeoutError):
        return StreamFailure(31901, "no answer to the connection attempt in time")
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionError):
        return StreamFailure(31903, str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.ClientResponseError):
        return StreamFailure(31920, str(exc))
    return StreamFailure(31900, f"{type(exc).__name__}: {exc}")


class Fork:
    def __init__(
        self,
        call: CallView,
        spec: StreamSpec,
        sid: str,
        url: URL,
        egress: Egress,
        on_finished: Callable[[Fork], None],
    ) -> None:
        self.call = call
        self.spec = spec
        self.sid = sid
        self.url = url
        self.egress = egress
        self._on_finished = on_finished
        # Customers validate against the URL they wrote, so sign that text (minus the query we
        # drop) rather than a normalised form of it.
        written = spec.url.split("#", 1)[0].split("?", 1)[0]
        self.signed_url = written if written.lower().startswith("wss://") else str(url)
        # An unknown track only reaches here for a stream rejected with 31941: it carries nothing.
        self.tracks = ("inbound",) if spec.bidirectional else TRACK_NAMES.get(spec.track, ())
        self.wants_inbound = "inbound" in self.tracks
        self.wants_outbound = "outbound" in self.tracks
        self.status = "connecting"
        self.error: StreamFailure | None = None
        self.date_updated = time.time()
        self.reported: set[int] = set()
        base = {t: call.frame_index(t) for t in ("inbound", "outbound")}
        self.encoder = messages.StreamEncoder(sid, call.account.sid, call.sid, base)
        self._queue: deque[tuple[str, float]] = deque()
        self._wake = asyncio.Event()
        self._finish: str | None = None  # why the writer should leave: "stop" | "remote" | "error"
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        # The connection's socket, kept from the start: aiohttp forgets the connection once a
        # close has begun, and a close that cannot get through is exactly when it must be dropped.
        self._sock: _Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    @property
    def display_name(self) -> str:
        return self.spec.name or self.sid

    @property
    def kind(self) -> str:
        return "bidirectional" if self.spec.bidirectional else "unidirectional"

    @property
    def active(self) -> bool:
        return self.status != "stopped"

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"stream {self.sid}")

    async def _run(self) -> None:
        metrics = self.egress.metrics
        gauge = metrics.bidirectional if self.spec.bidirectional else metrics.unidirectional
        gauge.inc()
        started = False
        try:
            try:
                ws = await self._connect()
            except Exception as exc:  # every failure to connect maps to a code
                self._fail(classify(exc))
                return
            self._ws = ws
            self._sock = ws.get_extra_info("socket")
            if self._finish is not None:  # stopped while connecting: leave quietly
                await self._close_ws(1000)
                return
            self._queue.appendleft(
                (self.encoder.start(self.tracks, dict(self.spec.parameters)), 0.0)
            )
            self._queue.appendleft((messages.connected(), 0.0))
            self.status = "in-progress"
            self.date_updated = time.time()
            started = True
            self._callback("stream-started")
            reader = asyncio.get_running_loop().create_task(self._read(ws))
            try:
                await self._write(ws)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                if self._finish != "remote":
                    self._fail(StreamFailure(31903, f"{type(exc).__name__}: {exc}"))
            finally:
                if self._finish != "remote":
                    await self._close_ws(1000)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        except asyncio.CancelledError:
            # Aborted (a stop that did not get through in time): drop the connection hard.
            self._abort_ws()
            raise
        finally:
            gauge.dec()
            self.status = "stopped"
            self.date_updated = time.time()
            self._stopped()
            if started:
                self._callback("stream-stopped")
            self.done.set()
            self._on_finished(self)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        check_url(self.egress.policy, self.url)
        headers = {
            "User-Agent": USER_AGENT,
            signature.HEADER: signature.compute(self.call.account.auth_token, self.signed_url),
        }
        async with asyncio.timeout(self.egress.settings.connect_timeout):
            return await self.egress.session.ws_connect(
                self.url,
                headers=headers,
                autoping=True,
                max_msg_size=self.egress.settings.max_message,
                timeout=aiohttp.ClientWSTimeout(ws_close=self.egress.settings.stop_grace),
            )

    def stop(self) -> None:
        """Send ``stop`` after whatever is queued, then close normally."""
        if self._finish is not None or self.status == "stopped":
            return
        self._finish = "stop"
        if self.status == "in-progress":
            self._queue.append((self.encoder.stop(), 0.0))
        self._wake.set()

    async def stop_and_wait(self) -> None:
        self.stop()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(
                asyncio.shield(self.done.wait()), self.egress.settings.stop_grace
            )
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def fail_before_start(self, failure: StreamFailure) -> None:
        """A stream that cannot start: reported like a connection failure, never connected."""
        self.status = "stopped"
        self._fail(failure)
        self.done.set()

    def _fail(self, failure: StreamFailure) -> None:
        self.error = failure
        self.egress.metrics.error(failure.code)
        self.call.record_issue(failure.code, failure.detail, self.sid)
        log.warning("stream %s (call %s): %s", self.sid, self.call.sid, failure)
        self._callback("stream-error", f"{failure.code} {TITLES[failure.code]}: {failure.detail}")

    def warn_once(self, code: int, detail: str) -> None:
        """Warnings (31930, 31931, 31950, 31951, 31953) are reported once per stream."""
        assert code in WARNINGS
        if code in self.reported:
            return
        self.reported.add(code)
        self.egress.metrics.error(code)
        self.call.record_issue(code, detail, self.sid)
        log.warning(
            "stream %s (call %s): %d %s: %s", self.sid, self.call.sid, code, TITLES[code], detail
        )

    def _callback(self, event: str, error: str | None = None) -> None:
        url = self.spec.status_callback
        if not url:
            return
        params = {
            "AccountSid": self.call.account.sid,
            "CallSid": self.call.sid,
            "StreamSid": self.sid,
            "StreamName": self.display_name,
            "StreamEvent": event,
            "Timestamp": iso_timestamp(),
        }
        if error is not None:
            params["StreamError"] = error
        self.egress.callbacks.send(
            self.sid, url, self.spec.status_callback_method, params, self.call.account.auth_token
        )

    async def _close_ws(self, code: int) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        try:
            await asyncio.wait_for(ws.close(code=code), self.egress.settings.stop_grace)
        except (TimeoutError, aiohttp.ClientError, ConnectionError, RuntimeError):
            self._abort_ws()
        else:
            self._sock = None  # closed politely: nothing left to drop

    def _abort_ws(self) -> None:
        """Drop the connection at once, with no closing handshake, through public API only (the
        connection's socket as asyncio hands it out): a zero linger makes the close that follows
        reset the connection instead of waiting to deliver what a stuck server never reads, and
        shutting the socket down ends it both ways, so aiohttp sees it closed and closes it."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):  # already closed by aiohttp: nothing left to drop
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)

    # ---- messages to the server ------------------------------------------------------------

    def _control(self, make: Callable[[], str]) -> None:
        if self.status != "in-progress" or self._finish is not None:
            return
        self._queue.append((make(), 0.0))
        self._wake.set()

    def push_media(self, track: str, index: int, payload_b64: str, arrival: float) -> None:
        """Queue one frame of ``track``; ``index`` is the call's frame counter for that track."""
        if self.status != "in-progress" or self._finish is not None:
            return
        if len(self._queue) >= self.egress.settings.send_queue:
            self.egress.metrics.dropped("websocket_backpressure")
            self.warn_once(31930, "the WebSocket server is not reading fast enough; audio dropped")
            return
        self._queue.append((self.encoder.media(track, index, payload_b64), arrival))
        self._wake.set()

    async def _write(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        metrics = self.egress.metrics
        queue = self._queue
        while True:
            while queue:
                text, arrival = queue.popleft()
                await ws.send_str(text)
                if arrival:
                    metrics.tx_ws.inc()
                    metrics.latency.observe(time.monotonic() - arrival)
                elif text.startswith('{"event":"media"'):
                    metrics.tx_ws.inc()
                if self._finish == "remote":
                    return
            if self._finish is not None:
                return
            self._wake.clear()
            await self._wake.wait()

    # ---- messages from the server ----------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                self._on_text(msg.data)
                continue
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.warn_once(
                    31950, "the server sent a binary frame; only text frames are allowed"
                )
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                self._remote_closed(ws.close_code)
                return
            if msg.type is aiohttp.WSMsgType.ERROR:
                exc = msg.data if isinstance(msg.data, BaseException) else ws.exception()
                if isinstance(exc, aiohttp.WebSocketError):
                    self._remote_failed(StreamFailure(31924, str(exc)))
                else:
                    self._remote_failed(StreamFailure(31903, f"connection lost: {exc}"))
                return
            if msg.type is aiohttp.WSMsgType.CLOSED:
                if self._finish is None:
                    self._remote_failed(
                        StreamFailure(31903, "connection closed without a close frame")
                    )
                return

    def _remote_closed(self, code: int | None) -> None:
        if self._finish is not None:
            return  # our own stop, answered
        if not self.spec.bidirectional:
            self._fail(StreamFailure(31921, f"the server closed the WebSocket (code {code})"))
        self._finish = "remote"
        self._queue.clear()
        self._wake.set()

    def _remote_failed(self, failure: StreamFailure) -> None:
        if self._finish is not None:
            return
        self._fail(failure)
        self._finish = "remote"
        self._queue.clear()
        self._wake.set()
        self._abort_ws()

    def _on_text(self, data: str) -> None:
        """A text message from a ``<Start>`` stream's server: ignored, like the hosted service."""

    def _stopped(self) -> None:
        """The stream has stopped (hook for subclasses)."""


class BidirectionalFork(Fork):
    """A ``<Connect><Stream>``: also plays the server's audio to the caller, with marks and clear.

    Audio (bytes) and marks (str) wait in arrival order; the call's 20 ms clock takes frames with
    `next_playout_frame`, and a mark is echoed once the audio queued before it has been sent.
    """

    def __init__(
        self,
        call: CallView,
        spec: StreamSpec,
        sid: str,
        url: URL,
        egress: Egress,
        on_finished: Callable[[Fork], None],
    ) -> None:
        super().__init__(call, spec, sid, url, egress, on_finished)
        self._playout: deque[bytes | str] = deque()
        self._playout_offset = 0
        self.playout_bytes = 0
        self.played_frames = 0

    def push_dtmf(self, digit: str) -> None:
        self._control(lambda: self.encoder.dtmf(digit))

    def _echo_mark(self, name: str) -> None:
        self._control(lambda: self.encoder.mark(name))

    def _on_text(self, data: str) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            self.warn_once(31951, "a message from the server is not JSON")
            return
        if not isinstance(msg, dict):
            self.warn_once(31951, "a message from the server is not a JSON object")
            return
        event = msg.get("event")
        keys = messages.INBOUND_KEYS.get(event) if isinstance(event, str) else None
        if keys is None:
            self.warn_once(31951, f"unknown event {str(event)[:40]!r}")
            return
        if set(msg) != keys:
            self.warn_once(31951, f"{event} message fields must be exactly {sorted(keys)}")
            return
        if msg["streamSid"] != self.sid:
            self.warn_once(31951, f"{event} message names another streamSid")
            return
        if event == "media":
            body = msg["media"]
            payload = body.get("payload") if isinstance(body, dict) else None
            if not isinstance(payload, str):
                self.warn_once(31951, "media message without a string media.payload")
                return
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                self.warn_once(31951, "media.payload is not valid base64")
                return
            self._enqueue_audio(audio)
        elif event == "mark":
            body = msg["mark"]
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str) or set(body) != {"name"}:
                self.warn_once(31951, "mark message needs exactly a string mark.name")
                return
            if self.playout_bytes == 0:
                self._echo_mark(name)  # nothing queued ahead of it: played already
            else:
                self._playout.append(name)
        else:
            self.clear()

    # ---- bidirectional playout -------------------------------------------------------------

    def _enqueue_audio(self, audio: bytes) -> None:
        if not audio:
            return
        room = PLAYOUT_CAP_BYTES - self.playout_bytes
        if len(audio) > room:
            self.egress.metrics.dropped("playout_buffer_full", (len(audio) - room) // FRAME + 1)
            self.warn_once(31931, "more than 10 minutes of audio buffered; the excess is discarded")
            audio = audio[: max(room, 0)]
            if not audio:
                return
        self.egress.metrics.rx_ws.inc(len(audio) / FRAME)
        self._playout.append(audio)
        self.playout_bytes += len(audio)

    def clear(self) -> None:
        """Barge-in: drop unplayed audio and echo every pending mark at once, in order."""
        pending = [item for item in self._playout if isinstance(item, str)]
        self._playout.clear()
        self._playout_offset = 0
        self.playout_bytes = 0
        for name in pending:
            self._echo_mark(name)

    def _stopped(self) -> None:
        self._playout.clear()
        self._playout_offset = 0
        self.playout_bytes = 0

    def next_playout_frame(self) -> bytes | None:
        """The next 20 ms for the caller, or None when nothing is buffered.

        Marks crossed while filling the frame are echoed once the frame is taken (it is sent to the
        caller straight away), so a mark never comes back before the audio queued ahead of it.
        """
        if not self._playout:
            return None
        out = bytearray()
        marks: list[str] = []
        queue = self._playout
        while queue and len(out) < FRAME:
            head = queue[0]
            if isinstance(head, str):
                marks.append(head)
                queue.popleft()
                continue
            take = min(FRAME - len(out), len(head) - self._playout_offset)
            out += head[self._playout_offset : self._playout_offset + take]
            self._playout_offset += take
            if self._playout_offset >= len(head):
                queue.popleft()
                self._playout_offset = 0
        # Marks right behind the audio just played have been reached too.
        while queue and isinstance(queue[0], str):
            marks.append(queue.popleft())  # type: ignore[arg-type]
        self.playout_bytes -= len(out)
        for name in marks:
            self._echo_mark(name)
        if not out:
            return None
        self.played_frames += 1
        if len(out) < FRAME:
            out += bytes([ULAW_SILENCE]) * (FRAME - len(out))
        return bytes(out)
