"""HTTP errors in the hosted REST API's shape, ``{"code", "message", "more_info", "status"}``.

Every HTTP service (the token API, the stream gateway) answers every error status with this body,
and the codes are decided here, once: the hosted service's own codes where it documents one
(20003 authenticate, 20403 forbidden, 20404 not found, 20429 too many requests, …), and for a
status it documents none for (413) the same ``20`` + status pattern. Messages never repeat what
the caller sent beyond the path, so no secret can come back in an error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"

UNAUTHENTICATED = 20003
BAD_PARAMETER = 20001
METHOD_NOT_ALLOWED = 20004
FORBIDDEN = 20403
NOT_FOUND = 20404
TOO_LARGE = 20413
TOO_MANY_REQUESTS = 20429
INTERNAL = 20500
UNAVAILABLE = 20503


class ApiError(Exception):
    """An error answer; ``reason`` is the metrics label for the failure."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        reason: str = "error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": MORE_INFO.format(code=self.code),
            "status": self.status,
        }

    def response(self) -> web.Response:
        headers = {"Cache-Control": "no-store", **self.headers}
        return web.json_response(self.body(), status=self.status, headers=headers)


def unauthenticated(realm: str, challenge: bool = True) -> ApiError:
    headers = {"WWW-Authenticate": f'Basic realm="{realm}"'} if challenge else None
    return ApiError(401, UNAUTHENTICATED, "Authenticate", "unauthenticated", headers)


def forbidden(message: str = "The credentials given do not belong to this account") -> ApiError:
    """A caller authenticated as one account asked about another."""
    return ApiError(403, FORBIDDEN, message, "forbidden")


def not_found(path: str) -> ApiError:
    return ApiError(404, NOT_FOUND, f"The requested resource {path} was not found", "not_found")


def method_not_allowed(method: str, allowed: str) -> ApiError:
    return ApiError(
        405,
        METHOD_NOT_ALLOWED,
        f"Method not allowed: {method} is not supported here, use {allowed}",
        "method_not_allowed",
        {"Allow": allowed},
    )


def bad_parameter(message: str, code: int = BAD_PARAMETER) -> ApiError:
    return ApiError(400, code, message, "bad_request")


def too_large(limit: int) -> ApiError:
    return ApiError(413, TOO_LARGE, f"The request body is larger than {limit} bytes", "too_large")


def too_many_requests(
    retry_after: float | None, message: str = "Too Many Requests", reason: str = "rate_limited"
) -> ApiError:
    """429; with ``retry_after`` (seconds, rounded up, at least 1) a ``Retry-After`` header."""
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return ApiError(429, TOO_MANY_REQUESTS, message, reason, headers)


def unavailable(message: str, retry_after: int | None = None) -> ApiError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return ApiError(503, UNAVAILABLE, message, "unavailable", headers)


def internal_error() -> ApiError:
    return ApiError(500, INTERNAL, "Internal Server Error", "error")


def from_http_exception(request: web.Request, exc: web.HTTPException) -> ApiError:
    """An aiohttp HTTP exception (no route, wrong method, body too large, …) as a hosted error."""
    if isinstance(exc, web.HTTPNotFound):
        return not_found(request.path)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return method_not_allowed(request.method, ", ".join(sorted(exc.allowed_methods)))
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return too_large(request.client_max_size)
    code = 20000 + exc.status if 400 <= exc.status < 600 else INTERNAL
    return ApiError(exc.status, code, exc.reason, "error", _kept_headers(exc))


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "Location")}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(
    logger: logging.Logger, on_error: Callable[[web.Request, ApiError], None] | None = None
) -> Any:
    """An aiohttp middleware answering every failure in the hosted shape.

    ``ApiError`` is answered as is, aiohttp's HTTP errors (404, 405, 413, …) are translated, and
    anything unexpected is logged and answered 500 without echoing it. Redirects and successes
    raised as exceptions pass through. ``on_error`` sees every error (metrics).
    """

    @web.middleware
    async def hosted_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            error = exc
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = from_http_exception(request, exc)
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            error = internal_error()
        if on_error is not None:
            on_error(request, error)
        return error.response()

    return hosted_errors
