"""The gateway's HTTP API.

- ``/v1/Calls``: the media-server side. A media server hands a call (its RTP address and the TwiML
  or voice webhook to run) to the gateway and gets back the RTP address to send audio to.
- ``/2010-04-01/…``: the customer side, the hosted REST shapes: Streams create/stop and Call
  update (new TwiML, redirect, hang up).

Every route needs HTTP Basic with an account's SID and auth token (or an API key of it).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from turnpike.core import errors as hosted
from turnpike.core.accounts import Principal
from turnpike.core.health import health_app
from turnpike.streamgw import twiml
from turnpike.streamgw.admission import Refused
from turnpike.streamgw.call import Call
from turnpike.streamgw.errors import StreamFailure
from turnpike.streamgw.gateway import Draining, Gateway
from turnpike.streamgw.ingress import Source
from turnpike.streamgw.rest_ingress import RequestError, parse_request
from turnpike.streamgw.stream import Fork, StreamSpec

log = logging.getLogger("turnpike.streamgw")

GATEWAY = web.AppKey("gateway", Gateway)
API_VERSION = "2010-04-01"
MAX_PARAMETERS = 99


def rfc2822(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(ts))


def _principal(request: web.Request) -> Principal:
    gateway = request.app[GATEWAY]
    principal = gateway.accounts().authenticate(request.headers.get("Authorization"))
    if principal is None:
        raise hosted.unauthenticated("Turnpike")
    return principal


ApiError = hosted.ApiError  # every error leaves in the hosted shape (`hosted.middleware`)


def _call_for(request: web.Request, principal: Principal, sid: str) -> Call:
    call = request.app[GATEWAY].get(sid)
    if call is None or call.account.sid != principal.account.sid:
        raise ApiError(404, 20404, f"The requested resource /Calls/{sid} was not found")
    return call


# ---- /v1/Calls (media-server side) -----------------------------------------------------------


async def create_call(request: web.Request) -> web.Response:
    principal = _principal(request)
    gateway = request.app[GATEWAY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, 20001, "the request body must be a JSON object") from None
    try:
        call_request, listener = await parse_request(body, principal.account, gateway.callbacks)
        call = await gateway.create_call(call_request, listener)
    except RequestError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    except Draining as exc:
        raise ApiError(503, 20503, str(exc)) from None
    except Refused as exc:  # the account's cap is its own (429); capacity is everyone's (503)
        if exc.scope == "account":
            raise hosted.too_many_requests(None, str(exc)) from None
        raise hosted.unavailable(str(exc), retry_after=1) from None
    except OSError as exc:
        raise ApiError(503, 20503, f"cannot open an RTP port: {exc}") from None
    resource = call.resource()
    body_out = {"sid": call.sid, "status": call.status, "rtp": {"local": resource["rtp"]["local"]}}
    return web.json_response(body_out, status=201)


async def get_call(request: web.Request) -> web.Response:
    principal = _principal(request)
    call = _call_for(request, principal, request.match_info["sid"])
    return web.json_response(call.resource())


async def delete_call(request: web.Request) -> web.Response:
    principal = _principal(request)
    call = _call_for(request, principal, request.match_info["sid"])
    await call.end("deleted through the API")
    return web.json_response(call.resource())


# ---- /2010-04-01 (customer side) ----------------------------------------------------------------


def _account_path(request: web.Request) -> Principal:
    principal = _principal(request)
    if request.match_info["account"] != principal.account.sid:
        raise hosted.forbidden("the AccountSid in the URL does not match the credentials")
    return principal


def call_json(call: Call) -> dict[str, Any]:
    base = f"/{API_VERSION}/Accounts/{call.account.sid}/Calls/{call.sid}"
    return {
        "sid": call.sid,
        "account_sid": call.account.sid,
        "from": call.from_,
        "to": call.to,
        "status": call.status,
        "direction": "inbound",
        "api_version": API_VERSION,
        "date_created": rfc2822(call.created),
        "date_updated": rfc2822(call.ended or call.created),
        "start_time": rfc2822(call.created),
        "end_time": rfc2822(call.ended),
        "duration": str(int(call.ended - call.created)) if call.ended else None,
        "uri": base + ".json",
        "subresource_uris": {"streams": base + "/Streams.json"},
    }


def stream_json(call: Call, fork: Fork) -> dict[str, Any]:
    return {
        "account_sid": call.account.sid,
        "call_sid": call.sid,
        "sid": fork.sid,
        "name": fork.spec.name,
        "status": "stopped" if fork.status == "stopped" else "in-progress",
        "date_updated": rfc2822(fork.date_updated),
        "uri": f"/{API_VERSION}/Accounts/{call.account.sid}/Calls/{call.sid}"
        f"/Streams/{fork.sid}.json",
    }


async def get_call_2010(request: web.Request) -> web.Response:
    principal = _account_path(request)
    call = _call_for(request, principal, request.match_info["sid"])
    return web.json_response(call_json(call))


async def update_call(request: web.Request) -> web.Response:
    principal = _account_path(request)
    call = _call_for(request, principal, request.match_info["sid"])
    form = await request.post()
    status, doc, url = form.get("Status"), form.get("Twiml"), form.get("Url")
    if status is not None and status not in ("completed", "canceled"):
        raise ApiError(400, 21220, "Status can only be completed (or canceled) on this gateway")
    if call.status != "in-progress":
        if status is not None:
            return web.json_response(call_json(call))
        raise ApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
    if status is not None:
        await call.end("completed through the API")
        return web.json_response(call_json(call))
    if isinstance(doc, str):
        try:
            call.redirect(Source(document=await twiml.parse_async(doc)))
        except twiml.TwimlError as exc:
            raise ApiError(400, exc.code, str(exc)) from None
    elif isinstance(url, str):
        method = str(form.get("Method", "POST")).upper()
        if method not in ("GET", "POST"):
            raise ApiError(400, 20001, "Method must be GET or POST")
        call.doc_url = None
        call.redirect(Source(url=url, method=method))
    else:
        raise ApiError(400, 20001, "give Twiml, Url or Status")
    return web.json_response(call_json(call))


def _parameters(form: MultiDictProxy[Any]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for n in range(1, MAX_PARAMETERS + 1):
        name = form.get(f"Parameter{n}.Name")
        if name is None:
            continue
        value = str(form.get(f"Parameter{n}.Value", ""))
        if len(str(name)) + len(value) >= twiml.MAX_PARAMETER_CHARS:
            raise ApiError(400, 20001, f"Parameter{n}: name and value must be under 500 characters")
        out.append((str(name), value))
    return tuple(out)


async def create_stream(request: web.Request) -> web.Response:
    principal = _account_path(request)
    call = _call_for(request, principal, request.match_info["sid"])
    form = await request.post()
    url = form.get("Url")
    if not isinstance(url, str) or not url:
        raise ApiError(400, 31923, "Url is required")
    method = str(form.get("StatusCallbackMethod", "POST")).upper()
    if method not in ("GET", "POST"):
        raise ApiError(400, 20001, "StatusCallbackMethod must be GET or POST")
    callback = form.get("StatusCallback")
    spec = StreamSpec(
        url=url,
        name=str(form["Name"]) if form.get("Name") else None,
        track=str(form.get("Track", "inbound_track")),
        status_callback=str(callback) if callback else None,
        status_callback_method=method,
        parameters=_parameters(form),
    )
    try:
        target = call.check_stream(spec)
    except StreamFailure as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    fork = call.forks.start(spec, target)
    return web.json_response(stream_json(call, fork))


async def update_stream(request: web.Request) -> web.Response:
    principal = _account_path(request)
    call = _call_for(request, principal, request.match_info["sid"])
    form = await request.post()
    if form.get("Status") != "stopped":
        raise ApiError(400, 20001, "Status must be stopped")
    key = request.match_info["stream"]
    fork = call.forks.find(key)
    if fork is None:
        raise ApiError(404, 20404, f"The requested resource /Streams/{key} was not found")
    if fork.spec.bidirectional:
        raise ApiError(
            400, 20001, "a <Connect><Stream> cannot be stopped; redirect the call instead"
        )
    await fork.stop_and_wait()
    return web.json_response(stream_json(call, fork))


def create_app(gateway: Gateway, *, health: bool = True) -> web.Application:
    """The API app; with ``health`` it also serves ``/metrics``, ``/live`` and ``/ready``."""
    app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[hosted.middleware(log)])
    app[GATEWAY] = gateway
    app.router.add_post("/v1/Calls", create_call)
    app.router.add_get("/v1/Calls/{sid}", get_call)
    app.router.add_delete("/v1/Calls/{sid}", delete_call)
    base = f"/{API_VERSION}/Accounts/{{account}}/Calls/{{sid}}"
    app.router.add_get(base + ".json", get_call_2010)
    app.router.add_post(base + ".json", update_call)
    app.router.add_post(base + "/Streams.json", create_stream)
    app.router.add_post(base + "/Streams/{stream}.json", update_stream)
    if health:
        sub = health_app(
            gateway.metrics.registry,
            ready=lambda: not gateway.draining,
            status=lambda: {"calls": len(gateway.calls)},
        )
        for route in sub.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path")
            if path and route.method == "GET":
                app.router.add_get(path, route.handler)
    return app
