"""The token API as an aiohttp application: ``POST /2010-04-01/Accounts/{AccountSid}/Tokens.json``.

Everything the app needs comes in through `TokensConfig`: where the keyring, accounts and edge
directory currently are (normally `FileWatcher` objects, so a reload is seen by the next request),
the per-account rate limiter, the clock and the metrics registry. Nothing is global, so tests,
``turnpike dev`` and a pod all build the same app.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from importlib import resources
from typing import Any, Protocol, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from turnpike.core import errors, sids
from turnpike.core.accounts import Account, Accounts, Principal, basic_credentials
from turnpike.core.credentials import Credential, token_user
from turnpike.core.edges import GLOBAL, EdgeDirectory
from turnpike.core.health import health_app
from turnpike.core.keyring import Keyring
from turnpike.core.ratelimit import RateLimiter
from turnpike.tokens.throttle import AuthThrottle

log = logging.getLogger("turnpike.tokens")

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")

DEFAULT_TTL = 86400
MAX_TTL = 86400
CHECK_TTL = 600
TOKENS_PATH = "/2010-04-01/Accounts/{account_sid}/Tokens.json"
CHECK_PATH = "/check/ice-servers"
_DIGITS = re.compile(r"[0-9]{1,9}")


class Current(Protocol[T_co]):
    """Anything holding the current value of a configuration file (a `FileWatcher`, typically)."""

    @property
    def current(self) -> T_co: ...


@dataclass(frozen=True, slots=True)
class Fixed:
    """A configuration value that never changes (tests, embedding)."""

    current: Any


class TokensMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.issued = Counter(
            "turnpike_tokens_issued",
            "ICE-server tokens issued, by endpoint (api: Tokens.json, check: the check page)",
            ["endpoint"],
            registry=registry,
        )
        self.failures = Counter(
            "turnpike_tokens_failures",
            "Token requests refused or failed, by reason",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "turnpike_tokens_request_duration_seconds",
            "Time to answer a token request (success or failure)",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        for reason in (
            "unauthenticated",
            "forbidden",
            "not_found",
            "bad_request",
            "rate_limited",
            "auth_throttled",
            "method_not_allowed",
            "too_large",
            "error",
        ):
            self.failures.labels(reason)
        for endpoint in ("api", "check"):
            self.issued.labels(endpoint)


@dataclass(frozen=True, slots=True)
class TokensConfig:
    keyring: Current[Keyring]
    accounts: Current[Accounts]
    edges: Current[EdgeDirectory]
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0))
    throttle: AuthThrottle = field(default_factory=AuthThrottle)
    """Failed authentication per source IP and per claimed account."""
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    clock: Callable[[], float] = time.time
    ready: Callable[[], bool] = lambda: True
    serve_health: bool = True
    """Also serve ``/metrics``, ``/live`` and ``/ready`` here (when there is no metrics address)."""
    check_ttl: int = CHECK_TTL
    dev_account: str | None = None
    """``turnpike dev`` only: the check page may get ICE servers for this account with no token."""


CONFIG = web.AppKey("config", TokensConfig)
METRICS = web.AppKey("metrics", TokensMetrics)


def status_report(config: TokensConfig) -> dict[str, Any]:
    """What ``/ready`` reports: the keyring's key ids (the operator's rotation reads them)."""
    return {**config.keyring.current.status(), **config.edges.current.status()}


def create_app(config: TokensConfig) -> web.Application:
    if config.serve_health:
        app = health_app(config.registry, config.ready, lambda: status_report(config))
    else:
        app = web.Application()
    app.middlewares.append(errors.middleware(log, _count_error))
    app[CONFIG] = config
    app[METRICS] = TokensMetrics(config.registry)
    app.router.add_route("*", TOKENS_PATH, _tokens)
    app.router.add_route("*", CHECK_PATH, _check_ice_servers)
    app.router.add_get("/check/config", _check_config)
    app.router.add_get("/", _page("check.html", "text/html"))
    app.router.add_get("/check.js", _page("check.js", "text/javascript"))
    app.router.add_get("/check.css", _page("check.css", "text/css"))
    app.router.add_get("/favicon.ico", _no_icon)
    return app


def _count_error(request: web.Request, error: errors.ApiError) -> None:
    request.app[METRICS].failures.labels(error.reason).inc()


REALM = "Turnpike API"


def _authenticate(
    request: web.Request, header: str | None, claimed: str, challenge: bool = True
) -> Principal:
    """The caller's principal; a failure counts against its source and the account it claimed."""
    config = request.app[CONFIG]
    principal = config.accounts.current.authenticate(header)
    if principal is not None:
        return principal
    wait = config.throttle.failed(request.remote or "", claimed)
    if wait is not None:
        message = "Too many failed authentication attempts"
        raise errors.too_many_requests(wait, message, reason="auth_throttled")
    raise errors.unauthenticated(REALM, challenge)


def _account_for(
    config: TokensConfig, principal_account: Account, path_sid: str, path: str
) -> Account:
    if path_sid == principal_account.sid:
        return principal_account
    if not sids.is_sid(path_sid, sids.ACCOUNT) or config.accounts.current.get(path_sid) is None:
        raise errors.not_found(path)
    raise errors.forbidden("The credentials given do not belong to the account in the URL")


def _ttl(form: Mapping[str, Any], default: int) -> int:
    raw = form.get("Ttl")
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str) or not _DIGITS.fullmatch(raw.strip()):
        raise errors.bad_parameter(f"Ttl must be a whole number of seconds from 1 to {MAX_TTL}")
    ttl = int(raw.strip())
    if not 1 <= ttl <= MAX_TTL:
        raise errors.bad_parameter(f"Ttl must be a whole number of seconds from 1 to {MAX_TTL}")
    return ttl


def _rate_limit(config: TokensConfig, account_sid: str) -> None:
    wait = config.limiter.take(account_sid)
    if wait is not None:
        raise errors.too_many_requests(wait)


def _issue(config: TokensConfig, account_sid: str, ttl: int, now: float) -> Credential:
    token_id = secrets.token_hex(8)
    credential = config.keyring.current.issue(token_user(account_sid, token_id), ttl, now)
    log.info(
        "issued token %s for %s",
        token_id,
        account_sid,
        extra={"account": account_sid, "token": token_id, "ttl": ttl, "key": credential.key_id},
    )
    return credential


def rfc2822(now: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(now), UTC))


async def _tokens(request: web.Request) -> web.Response:
    config, metrics = request.app[CONFIG], request.app[METRICS]
    with metrics.latency.labels("api").time():
        if request.method != "POST":
            raise errors.method_not_allowed(request.method, "POST")
        header = request.headers.get("Authorization")
        creds = basic_credentials(header)
        claimed = creds[0] if creds else request.match_info["account_sid"]
        principal = _authenticate(request, header, claimed)
        account = _account_for(
            config, principal.account, request.match_info["account_sid"], request.path
        )
        _rate_limit(config, account.sid)
        form = await _body(request.post(), "The body is not a readable form-encoded body")
        ttl = _ttl(form, DEFAULT_TTL)
        edge_name = form.get("Edge", GLOBAL)
        edge = config.edges.current.get(edge_name) if isinstance(edge_name, str) else None
        if edge is None:
            raise errors.bad_parameter("Edge is not one of this service's edges")
        now = config.clock()
        credential = _issue(config, account.sid, ttl, now)
        date = rfc2822(now)
        body = {
            "account_sid": account.sid,
            "date_created": date,
            "date_updated": date,
            "ice_servers": edge.ice_servers(credential.username, credential.password),
            "password": credential.password,
            "ttl": str(ttl),
            "username": credential.username,
        }
        metrics.issued.labels("api").inc()
        return web.json_response(body, status=201, headers={"Cache-Control": "no-store"})


async def _body(reading: Awaitable[T], problem: str) -> T:
    """The request body as ``reading`` parses it; a body it cannot parse is a 400 saying
    ``problem``. aiohttp documents no exception types for malformed bodies (a bad charset, a
    broken multipart part or header, an unknown transfer encoding each raise something else), so
    anything but its own HTTP answers (413: the body is over the size limit) means exactly that."""
    try:
        return await reading
    except web.HTTPException:
        raise
    except Exception:
        raise errors.bad_parameter(problem) from None


async def _check_ice_servers(request: web.Request) -> web.Response:
    """The check page's same-origin endpoint: SID and token in a JSON body, answered once.

    JSON only, so a cross-site page cannot post here without a CORS preflight (which this app
    never grants). No ``WWW-Authenticate`` on 401, so the browser shows no login dialog.
    """
    config, metrics = request.app[CONFIG], request.app[METRICS]
    with metrics.latency.labels("check").time():
        if request.method != "POST":
            raise errors.method_not_allowed(request.method, "POST")
        if request.content_type != "application/json":
            raise errors.bad_parameter("Send a JSON body with accountSid and authToken")
        doc = await _body(request.json(), "The body is not valid JSON")
        if not isinstance(doc, dict):
            raise errors.bad_parameter("Send a JSON body with accountSid and authToken")
        account = _check_account(request, doc)
        _rate_limit(config, account.sid)
        now = config.clock()
        credential = _issue(config, account.sid, config.check_ttl, now)
        directory = config.edges.current
        edges = [directory.global_edge, *directory.edges]
        body = {
            "account_sid": account.sid,
            "ttl": str(config.check_ttl),
            "edges": [
                {
                    "name": e.name,
                    "location": e.location,
                    "ice_servers": e.ice_servers(credential.username, credential.password),
                }
                for e in edges
            ],
        }
        metrics.issued.labels("check").inc()
        return web.json_response(body, headers={"Cache-Control": "no-store"})


def _check_account(request: web.Request, doc: dict[str, Any]) -> Account:
    config = request.app[CONFIG]
    accounts = config.accounts.current
    if doc.get("dev") is True:
        account = accounts.get(config.dev_account) if config.dev_account else None
        if account is None:
            raise errors.unauthenticated(REALM, challenge=False)
        return account
    sid, token = doc.get("accountSid"), doc.get("authToken")
    if not isinstance(sid, str) or not isinstance(token, str) or not sid or not token:
        raise errors.bad_parameter("Enter an account SID (or API key SID) and its token")
    basic = base64.b64encode(f"{sid.strip()}:{token.strip()}".encode()).decode()
    return _authenticate(request, f"Basic {basic}", sid.strip(), challenge=False).account


async def _check_config(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    directory = config.edges.current
    edges = [directory.global_edge, *directory.edges]
    body = {
        "dev": config.dev_account is not None,
        "edges": [{"name": e.name, "location": e.location} for e in edges],
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def _no_icon(_: web.Request) -> web.Response:
    return web.Response(status=204)


def _page(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    body = resources.files("turnpike.tokens").joinpath(name).read_bytes()

    async def serve(_: web.Request) -> web.Response:
        return web.Response(
            body=body, content_type=content_type, charset="utf-8", headers=_PAGE_HEADERS
        )

    return serve
