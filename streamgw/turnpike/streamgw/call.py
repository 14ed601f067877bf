"""One call: its RTP endpoint, its 20 ms clock, its streams, and the TwiML it runs.

State is ``in-progress`` from creation until ``completed``. The TwiML runner is one task per call;
a REST redirect cancels it and starts another, while streams started by ``<Start>`` keep going.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from turnpike.core import sids
from turnpike.core.accounts import Account
from turnpike.streamgw import g711, rtp, twiml
from turnpike.streamgw.callbacks import iso_timestamp, signed_request
from turnpike.streamgw.egress import DestinationRefused, check_url, redact
from turnpike.streamgw.errors import TITLES, StreamFailure
from turnpike.streamgw.latch import Latch
from turnpike.streamgw.media import FRAME, TICK, InboundAssembler, RtpEndpoint, RtpSender
from turnpike.streamgw.stream import Fork, StreamSpec, validate_url
from turnpike.streamgw.wav import WavError, wav_to_ulaw

if TYPE_CHECKING:
    from turnpike.streamgw.gateway import Gateway

log = logging.getLogger(__name__)

MAX_TRACKS = 4
MAX_DOCUMENT = 1024 * 1024
MAX_AUDIO = 64 * 1024 * 1024


class DocumentError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code} {TITLES.get(code, 'Error')}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Source:
    """Where the next TwiML comes from: a document in hand, or a URL to fetch."""

    document: twiml.Document | None = None
    url: str | None = None
    method: str = "POST"
    extra: tuple[tuple[str, str], ...] = ()


class Call:
    def __init__(
        self,
        gateway: Gateway,
        account: Account,
        from_: str,
        to: str,
        codec: str,
        dtmf_pt: int,
        remote: tuple[str, int] | None,
        status_callback: str | None,
        status_callback_method: str,
    ) -> None:
        self.gateway = gateway
        self.sid = sids.new_sid(sids.CALL)
        self.account = account
        self.from_ = from_
        self.to = to
        self.codec = codec
        codec_pt = rtp.PT_PCMA if codec == "PCMA" else rtp.PT_PCMU
        self._latch = Latch(remote, (codec_pt, dtmf_pt))
        self.status_callback = status_callback
        self.status_callback_method = status_callback_method
        self.status = "in-progress"
        self.created = time.time()
        self.ended: float | None = None
        self.issues: list[dict[str, Any]] = []
        self.forks: dict[str, Fork] = {}
        self.local_port = 0
        self.endpoint: RtpEndpoint | None = None
        self._assembler = InboundAssembler(codec_pt, dtmf_pt, time.monotonic())
        self._sender = RtpSender(codec)
        self._index = {"inbound": 0, "outbound": 0}
        self._inbound_forks: list[Fork] = []
        self._outbound_forks: list[Fork] = []
        self._bidi: Fork | None = None
        self._play = bytearray()
        self._play_done = asyncio.Event()
        self._play_done.set()
        started = time.monotonic()
        self._last_rtp = started
        self._rtp_warned = False
        self._clock: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ending: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.doc_url: str | None = None

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where the caller's RTP goes: signalled, or latched to (see `latch`)."""
        return self._latch.remote

    def move_media(
        self, remote: tuple[str, int] | None, codec_pt: int, dtmf_pt: int | None
    ) -> None:
        """A new offer or answer (SIP re-INVITE) moved the caller's media."""
        self._latch.resignal(remote, (codec_pt, dtmf_pt) if dtmf_pt is not None else (codec_pt,))

    # ---- set-up and tear-down --------------------------------------------------------------

    def attach(self, endpoint: RtpEndpoint, port: int) -> None:
        self.endpoint = endpoint
        self.local_port = port

    def begin(self, source: Source) -> None:
        loop = asyncio.get_running_loop()
        self._clock = loop.create_task(self._run_clock(), name=f"clock {self.sid}")
        self.redirect(source)

    def redirect(self, source: Source) -> None:
        """Run new TwiML now, abandoning whatever verb is running (REST update, ``<Redirect>``)."""
        if not self.live:
            return
        old = self._runner
        self._runner = asyncio.get_running_loop().create_task(
            self._execute(source, old), name=f"twiml {self.sid}"
        )

    def end(self, reason: str = "hangup") -> asyncio.Task[None]:
        if self._ending is None:
            self._ending = asyncio.get_running_loop().create_task(self._finish(reason))
        return self._ending

    async def _finish(self, reason: str) -> None:
        log.info("call %s ends (%s)", self.sid, reason)
        runner = self._runner
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._play_done.set()
        forks = [f for f in self.forks.values() if f.active]
        await asyncio.gather(*(f.stop_and_wait() for f in forks), return_exceptions=True)
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        if self.endpoint is not None:
            self.endpoint.close()
        # Completed only once every stream has sent its stop: GET never shows a half-ended call.
        self.status = "completed"
        self.ended = time.time()
        self._call_callback()
        self.gateway.call_ended(self)
        self.done.set()

    def _call_callback(self) -> None:
        if not self.status_callback:
            return
        params = self.request_params()
        params["Timestamp"] = iso_timestamp()
        params["CallDuration"] = str(int((self.ended or time.time()) - self.created))
        errors = [i for i in self.issues if i["code"] in (11200, 12100, 12200)]
        if errors:
            params["ErrorCode"] = str(errors[-1]["code"])
            params["ErrorMessage"] = errors[-1]["message"]
        self.gateway.callbacks.send(
            self.sid,
            self.status_callback,
            self.status_callback_method,
            params,
            self.account.auth_token,
        )

    @property
    def live(self) -> bool:
        """In progress and not ending: new verbs, streams and audio are still welcome."""
        return self.status == "in-progress" and self._ending is None

    # ---- view for forks --------------------------------------------------------------------

    def frame_index(self, track: str) -> int:
        return self._index[track]

    def record_issue(self, code: int, detail: str, stream_sid: str | None) -> None:
        entry: dict[str, Any] = {
            "code": code,
            "message": f"{TITLES.get(code, 'Error')}: {detail}",
            "date": iso_timestamp(),
        }
        if stream_sid:
            entry["streamSid"] = stream_sid
        self.issues.append(entry)
        del self.issues[:-50]  # a misbehaving server must not grow this without bound

    def request_params(self) -> dict[str, str]:
        """The standard parameters of every webhook about this call."""
        return {
            "CallSid": self.sid,
            "AccountSid": self.account.sid,
            "From": self.from_,
            "To": self.to,
            "CallStatus": self.status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }

    # ---- streams ---------------------------------------------------------------------------

    def active_forks(self) -> list[Fork]:
        return [f for f in self.forks.values() if f.active]

    def find_fork(self, sid_or_name: str) -> Fork | None:
        fork = self.forks.get(sid_or_name)
        if fork is not None:
            return fork
        named = [f for f in self.forks.values() if f.spec.name == sid_or_name]
        active = [f for f in named if f.active]
        candidates = active or named
        return candidates[-1] if candidates else None

    def check_stream(self, spec: StreamSpec) -> URL:
        """Validate a new stream against the call; ``StreamFailure`` says why it cannot start."""
        if not self.live:
            raise StreamFailure(31900, "the call has ended")
        allowed = ("inbound_track",) if spec.bidirectional else tuple(twiml.TRACKS)
        if spec.track not in allowed:
            raise StreamFailure(31941, f"track {spec.track!r} is not one of {', '.join(allowed)}")
        url = validate_url(spec.url, self.doc_url)
        if spec.name and any(f.spec.name == spec.name for f in self.active_forks()):
            raise StreamFailure(31900, f"a stream named {spec.name!r} is already running")
        if spec.bidirectional:
            if self._bidi is not None:
                raise StreamFailure(31900, "a call has at most one bidirectional stream")
        else:
            used = sum(f.spec.track_count for f in self.active_forks() if not f.spec.bidirectional)
            if used + spec.track_count > MAX_TRACKS:
                raise StreamFailure(
                    31900,
                    f"a call streams at most {MAX_TRACKS} tracks at once ({used} in use; "
                    "both_tracks counts as 2)",
                )
        return url

    def start_stream(self, spec: StreamSpec, url: URL) -> Fork:
        fork = Fork(
            self, spec, sids.new_sid(sids.STREAM), url, self.gateway.egress, self._fork_done
        )
        self.forks[fork.sid] = fork
        if spec.bidirectional:
            self._bidi = fork
        if fork.wants_inbound:
            self._inbound_forks.append(fork)
        if fork.wants_outbound:
            self._outbound_forks.append(fork)
        fork.start()
        return fork

    def reject_stream(self, spec: StreamSpec, failure: StreamFailure) -> None:
        """A stream from TwiML that cannot start: report it like a connection failure."""
        fork = Fork(
            self,
            spec,
            sids.new_sid(sids.STREAM),
            URL("wss://invalid"),
            self.gateway.egress,
            lambda _: None,
        )
        fork.status = "stopped"
        self.forks[fork.sid] = fork
        fork._fail(failure)
        fork.done.set()

    def _fork_done(self, fork: Fork) -> None:
        with contextlib.suppress(ValueError):
            self._inbound_forks.remove(fork)
        with contextlib.suppress(ValueError):
            self._outbound_forks.remove(fork)
        if self._bidi is fork:
            self._bidi = None

    def _launch(self, stream: twiml.Stream, bidirectional: bool) -> Fork | None:
        spec = StreamSpec(
            url=stream.url,
            name=stream.name,
            track=stream.track,
            status_callback=stream.status_callback,
            status_callback_method=stream.status_callback_method,
            parameters=stream.parameters,
            bidirectional=bidirectional,
        )
        try:
            url = self.check_stream(spec)
        except StreamFailure as failure:
            self.reject_stream(spec, failure)
            return None
        return self.start_stream(spec, url)

    # ---- RTP in ----------------------------------------------------------------------------

    def on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.live:
            return
        metrics = self.gateway.metrics
        try:
            packet = rtp.parse(data)
        except ValueError:
            metrics.dropped("rtp_malformed")
            return
        if not self._latch.admit(packet, addr):
            metrics.dropped("rtp_foreign_source")
            return
        now = time.monotonic()
        self._last_rtp = now
        self._rtp_warned = False
        frames, keys = self._assembler.accept(packet, now)
        if frames:
            metrics.rx_rtp.inc(len(frames))
            for frame in frames:
                self._emit_inbound(frame, now)
        if keys and self._bidi is not None:
            for key in keys:
                self._bidi.push_dtmf(key)

    def _emit_inbound(self, frame: bytes, arrival: float) -> None:
        index = self._index["inbound"]
        self._index["inbound"] = index + 1
        forks = self._inbound_forks
        if forks:
            payload = base64.b64encode(frame).decode("ascii")  # once per frame, shared by all forks
            for fork in forks:
                fork.push_media("inbound", index, payload, arrival)

    def _emit_outbound(self, frame: bytes) -> None:
        index = self._index["outbound"]
        self._index["outbound"] = index + 1
        forks = self._outbound_forks
        if forks:
            payload = base64.b64encode(frame).decode("ascii")
            for fork in forks:
                # No arrival time: the latency histogram measures RTP in → WebSocket out only.
                fork.push_media("outbound", index, payload, 0.0)

    # ---- the 20 ms clock -------------------------------------------------------------------

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += TICK
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                deadline = loop.time()  # far behind (a stalled host): resync rather than burst
            try:
                self._tick()
            except Exception:  # the clock must survive any one bad frame
                log.exception("call %s: clock tick failed", self.sid)

    def _tick(self) -> None:
        config = self.gateway.config
        frame: bytes | None = None
        if self._bidi is not None:
            frame = self._bidi.next_playout_frame()
        if frame is None and self._play:
            frame = bytes(self._play[:FRAME])
            del self._play[:FRAME]
            if len(frame) < FRAME:
                frame += g711.SILENCE_FRAME[: FRAME - len(frame)]
            if not self._play:
                self._play_done.set()
        if frame is None:
            frame = g711.SILENCE_FRAME
        if self.remote is not None and self.endpoint is not None:
            self.endpoint.send(self._sender.packet(frame), self.remote)
            self.gateway.metrics.tx_rtp.inc()
        self._emit_outbound(frame)

        now = time.monotonic()
        idle = now - self._last_rtp
        # Keep inbound media time running through silence, once the audio received has played out.
        filled, keys = self._assembler.conceal(now, config.rtp_fill_after)
        for frame_in in filled:
            self._emit_inbound(frame_in, 0.0)
        if keys and self._bidi is not None:
            for key in keys:
                self._bidi.push_dtmf(key)
        if idle >= config.rtp_timeout and not self._rtp_warned:
            self._rtp_warned = True
            detail = f"no RTP from the caller for {config.rtp_timeout:g} s"
            self.gateway.metrics.error(31953)
            self.record_issue(31953, detail, None)
            for fork in self.active_forks():
                fork.reported.add(31953)
            log.warning("call %s: 31953 %s", self.sid, detail)
        if config.rtp_idle_hangup and idle >= config.rtp_idle_hangup:
            self.end("no RTP")

    # ---- TwiML -----------------------------------------------------------------------------

    async def _execute(self, source: Source, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            previous.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        try:
            current: Source | None = source
            while current is not None and self.live:
                try:
                    document = await self._load(current)
                except DocumentError as exc:
                    self.record_issue(exc.code, exc.detail, None)
                    log.warning("call %s: %s", self.sid, exc)
                    break
                current = await self._run_document(document)
        except asyncio.CancelledError:
            self._stop_connect()
            raise
        except Exception as exc:  # a fault must end the call visibly, never leave it hanging
            log.exception("call %s: running TwiML failed", self.sid)
            self.record_issue(31900, f"running TwiML failed: {type(exc).__name__}", None)
            self._stop_connect()
        # The document ran out (or failed): the hosted service hangs up here.
        self.end("end of TwiML")

    def _stop_connect(self) -> None:
        self._play.clear()
        self._play_done.set()
        if self._bidi is not None:
            self._bidi.stop()

    async def _load(self, source: Source) -> twiml.Document:
        if source.document is not None:
            return source.document
        assert source.url is not None
        base = self.doc_url
        url = str(URL(base).join(URL(source.url))) if base else source.url
        params = self.request_params()
        params.update(source.extra)
        text = await self._fetch(url, source.method, params)
        self.doc_url = url
        try:
            return twiml.parse(text)
        except twiml.TwimlError as exc:
            raise DocumentError(exc.code, f"{redact(url)}: {exc}") from None

    async def _fetch(self, url: str, method: str, params: Mapping[str, str]) -> bytes:
        shown = redact(url)  # for messages: customers' URLs may carry credentials
        try:
            target, headers, form = signed_request(url, method, params, self.account.auth_token)
            if target.scheme not in ("http", "https"):
                raise DocumentError(11200, f"{shown}: only http and https URLs can be fetched")
            check_url(self.gateway.policy, target)
            async with self.gateway.session.request(
                method,
                target,
                headers=headers,
                data=form,
                timeout=aiohttp.ClientTimeout(total=15),
            ) as resp:
                body = await resp.content.read(MAX_DOCUMENT + 1)
                if resp.status >= 300:
                    raise DocumentError(11200, f"{shown} answered HTTP {resp.status}")
                if len(body) > MAX_DOCUMENT:
                    raise DocumentError(
                        11200, f"{shown}: document larger than {MAX_DOCUMENT} bytes"
                    )
                return body
        except DestinationRefused as exc:
            raise DocumentError(11200, f"{shown}: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            raise DocumentError(11200, f"{shown}: {exc.os_error}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DocumentError(11200, f"{shown}: {type(exc).__name__}: {exc}") from None

    async def _run_document(self, document: twiml.Document) -> Source | None:
        for verb in document.verbs:
            if not self.live:
                return None
            if isinstance(verb, twiml.Start):
                self._launch(verb.stream, bidirectional=False)
            elif isinstance(verb, twiml.StopStream):
                fork = self.find_fork(verb.name)
                if fork is not None and not fork.spec.bidirectional:
                    await fork.stop_and_wait()
            elif isinstance(verb, twiml.Connect):
                fork = self._launch(verb.stream, bidirectional=True)
                if fork is not None:
                    await fork.done.wait()
                if verb.action:
                    extra = [("StreamSid", fork.sid)] if fork is not None else []
                    if fork is not None and fork.error is not None:
                        extra.append(("StreamError", str(fork.error)))
                    return Source(url=verb.action, method=verb.method, extra=tuple(extra))
            elif isinstance(verb, twiml.Pause):
                await asyncio.sleep(verb.length)
            elif isinstance(verb, twiml.Play):
                await self._play_url(verb)
            elif isinstance(verb, twiml.Hangup):
                return None
            elif isinstance(verb, twiml.Redirect):
                return Source(url=verb.url, method=verb.method)
        return None

    async def _play_url(self, verb: twiml.Play) -> None:
        base = self.doc_url
        url = str(URL(base).join(URL(verb.url))) if base else verb.url
        shown = f"<Play> {redact(url)}"  # for messages: customers' URLs may carry credentials
        try:
            target = URL(url)
            if target.scheme not in ("http", "https"):
                raise DocumentError(11200, f"{shown}: only http and https URLs can be played")
            check_url(self.gateway.policy, target)
            async with self.gateway.session.get(
                target, timeout=aiohttp.ClientTimeout(total=30)
            ) as resp:
                if resp.status >= 300:
                    raise DocumentError(11200, f"{shown} answered HTTP {resp.status}")
                data = await resp.content.read(MAX_AUDIO + 1)
            if len(data) > MAX_AUDIO:
                raise DocumentError(11200, f"{shown}: audio larger than {MAX_AUDIO} bytes")
            audio = await asyncio.to_thread(wav_to_ulaw, data)
        except DocumentError as exc:
            self.record_issue(exc.code, exc.detail, None)
            log.warning("call %s: %s", self.sid, exc)
            return
        except WavError as exc:
            self.record_issue(12300, f"{shown}: {exc}", None)
            log.warning("call %s: %s: %s", self.sid, shown, exc)
            return
        except (DestinationRefused, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.record_issue(11200, f"{shown}: {exc}", None)
            log.warning("call %s: %s: %s", self.sid, shown, exc)
            return
        rounds = 0
        while self.live and (verb.loop == 0 or rounds < verb.loop):
            rounds += 1
            self._play_done.clear()
            self._play += audio
            await self._play_done.wait()

    # ---- views -----------------------------------------------------------------------------

    def resource(self) -> dict[str, Any]:
        ip = self.gateway.config.rtp_ip
        local = f"[{ip}]:{self.local_port}" if ":" in ip else f"{ip}:{self.local_port}"
        remote = None
        if self.remote is not None:
            host, port = self.remote
            remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return {
            "sid": self.sid,
            "accountSid": self.account.sid,
            "from": self.from_,
            "to": self.to,
            "status": self.status,
            "codec": self.codec,
            "rtp": {"local": local, "remote": remote},
            "streams": [stream_resource(f) for f in self.forks.values()],
            "errors": list(self.issues),
            "dateCreated": iso_timestamp(self.created),
            "dateEnded": iso_timestamp(self.ended) if self.ended else None,
        }


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
