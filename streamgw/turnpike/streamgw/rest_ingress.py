"""The REST ingress: a media server hands a call over with ``POST /v1/Calls`` and sends RTP.

`parse_request` turns the JSON body into a `CallRequest` and the `RestListener` that reports the
call's end the REST way: the call resource's status, and the optional status callback
(``CallStatus``, ``CallDuration``, and ``ErrorCode``/``ErrorMessage`` when its TwiML failed).
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any

from turnpike.core.accounts import Account
from turnpike.core.errors import FORBIDDEN
from turnpike.streamgw import twiml
from turnpike.streamgw.callbacks import Callbacks, iso_timestamp
from turnpike.streamgw.ingress import CODECS, CallOutcome, CallRequest, Source

if TYPE_CHECKING:
    from turnpike.streamgw.call import Call

BAD_REQUEST = 20001


class RequestError(ValueError):
    """A body the gateway cannot take: answered 400 (or ``status``) with ``code``."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class RestListener:
    """Reports a call's end through its status callback, if it has one."""

    def __init__(self, callbacks: Callbacks, url: str | None, method: str) -> None:
        self.callbacks = callbacks
        self.url = url
        self.method = method

    def answered(self, call: Call) -> None:
        pass  # the media server answered the call before handing it over

    def ended(self, call: Call, outcome: CallOutcome) -> None:
        if not self.url:
            return
        params = call.request_params()
        params["Timestamp"] = iso_timestamp()
        params["CallDuration"] = str(int((call.ended or time.time()) - call.created))
        if outcome.error is not None:
            params["ErrorCode"] = str(outcome.error[0])
            params["ErrorMessage"] = outcome.error[1]
        self.callbacks.send(call.sid, self.url, self.method, params, call.account.auth_token)


async def parse_request(
    body: Any, account: Account, callbacks: Callbacks
) -> tuple[CallRequest, RestListener]:
    """The call a ``POST /v1/Calls`` body asks for; `RequestError` says what is wrong with it."""
    if not isinstance(body, dict):
        raise RequestError(BAD_REQUEST, "the request body must be a JSON object")
    fields = _Fields(body)
    if fields.text("accountSid", account.sid) != account.sid:
        raise RequestError(FORBIDDEN, "accountSid does not match the credentials", 403)
    from_, to = fields.text("from", "") or "", fields.text("to", "") or ""
    document, url = fields.text("twiml"), fields.text("url")
    if (document is None) == (url is None):
        raise RequestError(
            BAD_REQUEST, "give exactly one of twiml (a document) or url (a voice webhook)"
        )
    method = fields.choice("method", "POST", twiml.METHODS)
    codec = fields.choice("codec", "PCMU", CODECS)
    dtmf_pt = _dtmf_payload_type(body.get("dtmfPayloadType", 101))
    remote = _remote(body.get("rtp"))
    listener = RestListener(
        callbacks,
        fields.text("statusCallback"),
        fields.choice("statusCallbackMethod", "POST", twiml.METHODS),
    )
    if url is not None:
        source = Source(url=url, method=method)
    else:
        source = await _inline(document or "")
    request = CallRequest(account, from_, to, source, remote, codec, dtmf_pt)
    return request, listener


class _Fields:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.body.get(key, default)
        if value is not None and not isinstance(value, str):
            raise RequestError(BAD_REQUEST, f"{key} must be a string")
        return value

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = (self.text(key, default) or default).upper()
        if value not in allowed:
            raise RequestError(BAD_REQUEST, f"{key} must be {' or '.join(allowed)}")
        return value


async def _inline(document: str) -> Source:
    try:
        return Source(document=await twiml.parse_async(document))
    except twiml.TwimlError as exc:
        raise RequestError(exc.code, str(exc)) from None


def _remote(rtp: Any) -> tuple[str, int] | None:
    if rtp is None:
        return None
    if not isinstance(rtp, dict) or not isinstance(rtp.get("remote", ""), str):
        raise RequestError(BAD_REQUEST, 'rtp must be an object like {"remote": "IP:PORT"}')
    if not rtp.get("remote"):
        return None
    return host_port(rtp["remote"])


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise RequestError(BAD_REQUEST, f"rtp.remote must be IP:PORT, got {text!r}") from None
    if not sep or not 1 <= number <= 65535:
        raise RequestError(BAD_REQUEST, f"rtp.remote must be IP:PORT, got {text!r}")
    return str(ip), number


def _dtmf_payload_type(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 96 <= value <= 127:
        raise RequestError(BAD_REQUEST, "dtmfPayloadType must be a dynamic payload type (96-127)")
    return value
