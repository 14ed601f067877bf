"""The gateway: configuration, the calls it holds, and what they share (HTTP session, callbacks)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from turnpike.core.accounts import Accounts
from turnpike.core.addresses import AddressPolicy
from turnpike.streamgw.admission import Admission, Refused, Slot, default_caps
from turnpike.streamgw.call import Call
from turnpike.streamgw.callbacks import Callbacks
from turnpike.streamgw.convert import AudioConverter
from turnpike.streamgw.egress import new_session
from turnpike.streamgw.ingress import CallListener, CallRequest
from turnpike.streamgw.media import MediaSettings
from turnpike.streamgw.metrics import Metrics
from turnpike.streamgw.stream import Egress, StreamSettings
from turnpike.streamgw.tts import Speaker, engine_from_flag

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    rtp_ip: str
    rtp_ports: tuple[int, int] = (10000, 20000)
    allow_destinations: tuple[str, ...] = ()
    ca_file: str | None = None
    stream: StreamSettings = field(default_factory=StreamSettings)
    rtp_timeout: float = 5.0  # no RTP for this long: warning 31953
    rtp_fill_after: float = 0.25  # audio received played out this long ago: silence frames
    rtp_idle_hangup: float = 60.0  # no RTP for this long: hang up (0: never)
    drain_grace: float = 30.0
    callback_attempts: int = 5
    callback_first_delay: float = 0.5
    keep_ended: int = 1000  # ended calls kept for GET
    max_calls: int | None = None  # concurrent calls in total; None: one per RTP port
    max_account_calls: int | None = None  # concurrent calls per account; None: a tenth of ports
    tts: str = "espeak"  # the <Say> engine: espeak, command:ARGV or http:URL (see tts.py)
    tts_cache_bytes: int = 32 * 1024 * 1024

    @property
    def media(self) -> MediaSettings:
        return MediaSettings(self.rtp_timeout, self.rtp_fill_after, self.rtp_idle_hangup)


class Draining(Exception):
    pass


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        accounts: Callable[[], Accounts],
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.metrics = metrics or Metrics()
        self.policy = AddressPolicy(allow=config.allow_destinations)
        total, per_account = default_caps(config.rtp_ports)
        self.admission = Admission(
            config.max_calls or total, config.max_account_calls or per_account
        )
        self._slots: dict[str, Slot] = {}
        self.calls: dict[str, Call] = {}
        self.ended: OrderedDict[str, Call] = OrderedDict()
        self.draining = False
        self._session: aiohttp.ClientSession | None = None
        self._callbacks: Callbacks | None = None
        self._egress: Egress | None = None
        self._speaker: Speaker | None = None
        self.converter = AudioConverter()

    async def start(self) -> None:
        self._session = new_session(self.policy, self.config.ca_file)
        self._callbacks = Callbacks(
            self._session,
            self.policy,
            self.metrics,
            attempts=self.config.callback_attempts,
            first_delay=self.config.callback_first_delay,
        )
        self._egress = Egress(
            self._session, self.policy, self._callbacks, self.metrics, self.config.stream
        )
        self._speaker = Speaker(
            engine_from_flag(self.config.tts), self.converter, self.config.tts_cache_bytes
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Gateway.start() first"
        return self._session

    @property
    def callbacks(self) -> Callbacks:
        assert self._callbacks is not None, "Gateway.start() first"
        return self._callbacks

    @property
    def speaker(self) -> Speaker:
        assert self._speaker is not None, "Gateway.start() first"
        return self._speaker

    @property
    def egress(self) -> Egress:
        assert self._egress is not None, "Gateway.start() first"
        return self._egress

    def get(self, sid: str) -> Call | None:
        return self.calls.get(sid) or self.ended.get(sid)

    async def create_call(self, request: CallRequest, listener: CallListener) -> Call:
        """A new call from any ingress: its RTP endpoint is open and its TwiML is running."""
        if self.draining:
            raise Draining("the gateway is draining and takes no new calls")
        try:
            slot = self.admission.admit(request.account.sid)
        except Refused as exc:
            self.metrics.calls_refused.labels(exc.scope).inc()
            raise
        try:
            call = Call(self, request, listener)
            await call.media.open(self.config.rtp_ip, self.config.rtp_ports)
        except BaseException:
            self.admission.release(slot)
            raise
        self._slots[call.sid] = slot
        self.calls[call.sid] = call
        self.metrics.active_calls.inc()
        self.metrics.calls.inc()
        log.info(
            "call %s from %s to %s: RTP on %s:%d",
            call.sid,
            request.from_,
            request.to,
            self.config.rtp_ip,
            call.media.local_port,
        )
        call.begin(request.source)
        return call

    def call_ended(self, call: Call) -> None:
        if self.calls.pop(call.sid, None) is not None:
            self.metrics.active_calls.dec()
        slot = self._slots.pop(call.sid, None)
        if slot is not None:
            self.admission.release(slot)
        self.ended[call.sid] = call
        while len(self.ended) > self.config.keep_ended:
            self.ended.popitem(last=False)

    async def drain(self, grace: float | None = None) -> None:
        """Take no new calls; let calls finish for ``grace`` seconds, then end the rest cleanly."""
        self.draining = True
        wait = self.config.drain_grace if grace is None else grace
        deadline = time.monotonic() + wait
        while self.calls and time.monotonic() < deadline:  # noqa: ASYNC110 - calls end on their own
            await asyncio.sleep(0.1)
        remaining = list(self.calls.values())
        if remaining:
            log.info("drain: ending %d call(s) still in progress", len(remaining))
            await asyncio.gather(
                *(c.end("gateway shutting down") for c in remaining), return_exceptions=True
            )

    async def close(self) -> None:
        await self.drain(0)
        if self._speaker is not None:
            await self._speaker.close()
        await asyncio.to_thread(self.converter.close)
        if self._callbacks is not None:
            await self._callbacks.close()
        if self._session is not None:
            await self._session.close()
