"""The SIP side's view of the gateway: create a call for a routed number, follow it, move it.

The one module that knows both the SIP server's `Calls`/`CallHandle` contracts and the gateway's
call API. Limits live here: the gateway's draining state and the total concurrent-call cap are
refused with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio

from turnpike.streamgw import twiml
from turnpike.streamgw.call import Call, Source
from turnpike.streamgw.gateway import Draining, Gateway
from turnpike.streamgw.sip import sdp
from turnpike.streamgw.sip.numbers import Route
from turnpike.streamgw.sip.server import Refused

DEFAULT_DOCUMENT = twiml.parse("<Response><Hangup/></Response>")


class GatewayCall:
    def __init__(self, call: Call) -> None:
        self._call = call

    @property
    def sid(self) -> str:
        return self._call.sid

    @property
    def local_port(self) -> int:
        return self._call.local_port

    async def answered(self) -> bool:
        return self._call.live

    async def ended(self) -> None:
        await self._call.done.wait()

    def hang_up(self, reason: str) -> None:
        self._call.end(reason)

    def move_media(self, negotiated: sdp.Negotiated) -> None:
        self._call.move_media(negotiated.remote, negotiated.payload_type, negotiated.dtmf_pt)


class GatewayCalls:
    def __init__(self, gateway: Gateway, max_calls: int = 0, retry_after: int = 5) -> None:
        self.gateway = gateway
        self.max_calls = max_calls
        self.retry_after = retry_after

    async def start(
        self, route: Route, caller: str, called: str, media: sdp.Negotiated | None
    ) -> GatewayCall:
        gateway = self.gateway
        if gateway.draining:
            raise Refused(503, "the gateway is draining", self.retry_after)
        if self.max_calls and len(gateway.calls) >= self.max_calls:
            raise Refused(503, f"at the limit of {self.max_calls} calls", self.retry_after)
        account = gateway.accounts().get(route.account_sid)
        if account is None:
            raise Refused(404, f"{route.number}: account {route.account_sid} is not configured")
        if route.document is not None:
            source = Source(document=route.document)
        else:
            source = Source(url=route.voice_url, method=route.voice_method)
        try:
            call = await gateway.create_call(
                account,
                caller,
                called,
                source,
                codec=media.codec if media else "PCMU",
                dtmf_pt=(media.dtmf_pt or 101) if media else 101,
                remote=media.remote if media else None,
                status_callback=route.status_callback,
            )
        except Draining:
            raise Refused(503, "the gateway is draining", self.retry_after) from None
        except OSError as exc:
            raise Refused(503, str(exc), self.retry_after) from None
        await asyncio.sleep(0)
        return GatewayCall(call)
