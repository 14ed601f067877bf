"""The SIP side's view of the gateway: a `CallRequest` for a routed number, and a listener.

The one module that knows both the SIP server's `Calls`/`CallHandle` contracts and the gateway's
ingress seam (`ingress`). The gateway's limits (draining, the concurrent-call caps per account and
in total of `admission`) are answered 503 with ``Retry-After``. A number's ``statusCallback`` is
told when the call ends, exactly as for a REST call (`rest_ingress.RestListener`).
"""

from __future__ import annotations

import asyncio

from turnpike.streamgw import admission
from turnpike.streamgw.call import Call
from turnpike.streamgw.gateway import Draining, Gateway
from turnpike.streamgw.ingress import CallOutcome, CallRequest, Source
from turnpike.streamgw.rest_ingress import RestListener
from turnpike.streamgw.sip import sdp
from turnpike.streamgw.sip.numbers import Route
from turnpike.streamgw.sip.server import Refused


class SipListener:
    """Turns the gateway's answered/ended into events the SIP leg waits on."""

    def __init__(self, callbacks: RestListener) -> None:
        self._callbacks = callbacks
        self.answered_event = asyncio.Event()
        self.ended_event = asyncio.Event()
        self.outcome: CallOutcome | None = None

    def answered(self, call: Call) -> None:
        self.answered_event.set()

    def ended(self, call: Call, outcome: CallOutcome) -> None:
        self.outcome = outcome
        self.ended_event.set()
        self._callbacks.ended(call, outcome)


class GatewayCall:
    def __init__(self, call: Call, listener: SipListener) -> None:
        self._call = call
        self._listener = listener

    @property
    def sid(self) -> str:
        return self._call.sid

    @property
    def local_port(self) -> int:
        return self._call.media.local_port

    async def answered(self) -> bool:
        answered = asyncio.ensure_future(self._listener.answered_event.wait())
        ended = asyncio.ensure_future(self._listener.ended_event.wait())
        try:
            await asyncio.wait((answered, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
            ended.cancel()
        return self._listener.answered_event.is_set() and not self._listener.ended_event.is_set()

    def unanswered_status(self) -> int:
        """The final answer for a call that ended before it was answered: ``<Reject
        reason="busy">`` is 486 Busy Here, ``<Reject>`` 603 Decline, anything else 480."""
        outcome = self._listener.outcome
        rejected = outcome.rejected if outcome is not None else None
        return {"busy": 486, "rejected": 603}.get(rejected or "", 480)

    async def ended(self) -> None:
        await self._call.done.wait()

    def hang_up(self, reason: str) -> None:
        self._call.end(reason)

    def move_media(self, negotiated: sdp.Negotiated) -> None:
        self._call.media.move(
            negotiated.remote,
            negotiated.payload_type,
            negotiated.dtmf_pt,
            sending=negotiated.gateway_sends,
        )


class GatewayCalls:
    def __init__(self, gateway: Gateway, retry_after: int = 5) -> None:
        self.gateway = gateway
        self.retry_after = retry_after

    @property
    def accepting(self) -> bool:
        return not self.gateway.draining

    async def start(
        self, route: Route, caller: str, called: str, media: sdp.Negotiated | None
    ) -> GatewayCall:
        gateway = self.gateway
        if gateway.draining:
            raise Refused(503, "the gateway is draining", self.retry_after, "draining")
        account = gateway.accounts().get(route.account_sid)
        if account is None:
            raise Refused(404, f"{route.number}: account {route.account_sid} is not configured")
        if route.document is not None:
            source = Source(document=route.document)
        else:
            source = Source(url=route.voice_url, method=route.voice_method)
        request = CallRequest(
            account,
            caller,
            called,
            source,
            remote=media.remote if media else None,
            codec=media.codec if media else "PCMU",
            dtmf_pt=(media.dtmf_pt or 101) if media else 101,
        )
        listener = SipListener(RestListener(gateway.callbacks, route.status_callback, "POST"))
        try:
            call = await gateway.create_call(request, listener)
        except Draining:
            raise Refused(503, "the gateway is draining", self.retry_after, "draining") from None
        except admission.Refused as exc:
            raise Refused(503, str(exc), self.retry_after, exc.scope) from None
        except OSError as exc:
            raise Refused(503, str(exc), self.retry_after) from None
        handle = GatewayCall(call, listener)
        if media is not None and not media.gateway_sends:
            handle.move_media(media)  # offered on hold: the gateway listens only
        return handle
