"""One call: its state, and the parts it joins.

A call is put together from a `CallRequest` by whichever ingress received it (see ``ingress.py``):
its media side (`MediaSession`: RTP endpoint, 20 ms clock, prompt playout), its streams
(`Forks`), its TwiML (`Runner`, running the verb handlers of ``interpreter.py``) and its HTTP
client for documents and audio (`Fetcher`). The call is the one writer of its state: ``in-progress``
from creation until it ends, and the `CallOutcome` its ingress is told about at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from yarl import URL

from turnpike.core import sids
from turnpike.streamgw.callbacks import iso_timestamp
from turnpike.streamgw.errors import TITLES, StreamFailure
from turnpike.streamgw.fetch import Fetcher
from turnpike.streamgw.forks import Forks, stream_resource
from turnpike.streamgw.ingress import CallListener, CallOutcome, CallRequest, Source
from turnpike.streamgw.interpreter import Runner
from turnpike.streamgw.media import MediaSession
from turnpike.streamgw.stream import Fork, StreamSpec

if TYPE_CHECKING:
    from turnpike.streamgw.gateway import Gateway

log = logging.getLogger(__name__)

TWIML_ERRORS = (11200, 11750, 12100, 12200)  # errors that end a call, reported with its outcome


class Call:
    def __init__(self, gateway: Gateway, request: CallRequest, listener: CallListener) -> None:
        self.gateway = gateway
        self.sid = sids.new_sid(sids.CALL)
        self.account = request.account
        self.from_ = request.from_
        self.to = request.to
        self.codec = request.codec
        self.listener = listener
        self.status = "in-progress"
        self.created = time.time()
        self.ended: float | None = None
        self.issues: list[dict[str, Any]] = []
        self.doc_url: str | None = None
        self.media = MediaSession(
            gateway.config.media,
            gateway.metrics,
            self,
            request.codec,
            request.dtmf_pt,
            request.remote,
        )
        self.forks = Forks(self, gateway.egress)
        self.fetcher = Fetcher(gateway.session, gateway.policy)
        self.runner = Runner(self)
        self.speaker = gateway.speaker
        self.answered = False
        self.rejected: str | None = None  # the <Reject> reason, if the TwiML refused the call
        self._digits: asyncio.Queue[str] | None = None  # keys for a running <Gather>
        self._ending: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    # ---- life cycle ------------------------------------------------------------------------

    def begin(self, source: Source) -> None:
        self.media.start(f"clock {self.sid}")
        self.redirect(source)

    def redirect(self, source: Source) -> None:
        """Run new TwiML now, abandoning whatever verb is running (REST update, ``<Redirect>``)."""
        if self.live:
            self.runner.redirect(source)

    def answer(self) -> None:
        if not self.answered:
            self.answered = True
            self.listener.answered(self)

    def reject(self, reason: str) -> None:
        """``<Reject>``: end the call, unanswered if it was not answered yet."""
        self.rejected = reason
        self.end(f"rejected ({reason})")

    def end(self, reason: str = "hangup") -> asyncio.Task[None]:
        if self._ending is None:
            self.media.halt()
            self._ending = asyncio.get_running_loop().create_task(self._finish(reason))
        return self._ending

    async def _finish(self, reason: str) -> None:
        log.info("call %s ends (%s)", self.sid, reason)
        await self.runner.cancel()
        self.media.playout.clear()
        forks = self.forks.active()
        await asyncio.gather(*(f.stop_and_wait() for f in forks), return_exceptions=True)
        await self.media.close()
        # Ended only once every stream has sent its stop: GET never shows a half-ended call.
        outcome = self._outcome(reason)
        self.status = outcome.status
        self.ended = time.time()
        self.listener.ended(self, outcome)
        self.gateway.call_ended(self)
        self.done.set()

    def _outcome(self, reason: str) -> CallOutcome:
        errors = [i for i in self.issues if i["code"] in TWIML_ERRORS]
        error = (errors[-1]["code"], errors[-1]["message"]) if errors else None
        status = "completed"
        if self.rejected is not None and not self.answered:
            status = "busy" if self.rejected == "busy" else "no-answer"
        return CallOutcome(status, reason, self.answered, self.rejected, error)

    @property
    def live(self) -> bool:
        """In progress and not ending: new verbs, streams and audio are still welcome."""
        return self.status == "in-progress" and self._ending is None

    # ---- streams ---------------------------------------------------------------------------

    def check_stream(self, spec: StreamSpec) -> URL:
        """The URL a new stream connects to; ``StreamFailure`` says why it cannot start."""
        if not self.live:
            raise StreamFailure(31900, "the call has ended")
        return self.forks.check(spec, self.doc_url)

    def launch_stream(self, spec: StreamSpec) -> Fork | None:
        """Start a stream from TwiML; one that cannot start is reported like a failed one."""
        try:
            url = self.check_stream(spec)
        except StreamFailure as failure:
            self.forks.reject(spec, failure)
            return None
        return self.forks.start(spec, url)

    @contextlib.contextmanager
    def collect_digits(self) -> Iterator[asyncio.Queue[str]]:
        """DTMF keys pressed while the block runs (``<Gather>``), in order."""
        self._digits = asyncio.Queue()
        try:
            yield self._digits
        finally:
            self._digits = None

    def stop_connect(self) -> None:
        """Leave a running ``<Connect><Stream>`` (and any prompt): the document was abandoned."""
        self.media.playout.clear()
        if self.forks.bidi is not None:
            self.forks.bidi.stop()

    # ---- what streams and TwiML report -----------------------------------------------------

    def frame_index(self, track: str) -> int:
        return self.media.frame_index(track)

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

    def report(self, code: int, detail: str) -> None:
        """A TwiML error or warning of the call itself: recorded and logged."""
        self.record_issue(code, detail, None)
        log.warning("call %s: %d %s: %s", self.sid, code, TITLES.get(code, "Error"), detail)

    def request_params(self) -> dict[str, str]:
        """The standard parameters of every webhook about this call."""
        return {
            "CallSid": self.sid,
            "AccountSid": self.account.sid,
            "From": self.from_,
            "To": self.to,
            "Caller": self.from_,
            "Called": self.to,
            "CallStatus": self.status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }

    # ---- media events (see media.MediaEvents) ----------------------------------------------

    def inbound_frame(self, index: int, frame: bytes, arrival: float) -> None:
        self.forks.inbound(index, frame, arrival)

    def outbound_frame(self, index: int, frame: bytes) -> None:
        self.forks.outbound(index, frame)

    def dtmf(self, key: str) -> None:
        self.forks.dtmf(key)
        if self._digits is not None:
            self._digits.put_nowait(key)

    def stream_frame(self) -> bytes | None:
        return self.forks.playout_frame()

    def rtp_timeout(self, detail: str) -> None:
        self.gateway.metrics.error(31953)
        self.record_issue(31953, detail, None)
        for fork in self.forks.active():
            fork.reported.add(31953)
        log.warning("call %s: 31953 %s", self.sid, detail)

    def rtp_idle(self) -> None:
        self.end("no RTP")

    # ---- views -----------------------------------------------------------------------------

    def resource(self) -> dict[str, Any]:
        ip = self.gateway.config.rtp_ip
        port = self.media.local_port
        local = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        remote = None
        if self.media.remote is not None:
            host, rport = self.media.remote
            remote = f"[{host}]:{rport}" if ":" in host else f"{host}:{rport}"
        return {
            "sid": self.sid,
            "accountSid": self.account.sid,
            "from": self.from_,
            "to": self.to,
            "status": self.status,
            "codec": self.codec,
            "rtp": {"local": local, "remote": remote},
            "streams": [stream_resource(f) for f in self.forks.all.values()],
            "errors": list(self.issues),
            "dateCreated": iso_timestamp(self.created),
            "dateEnded": iso_timestamp(self.ended) if self.ended else None,
        }
