"""Errors in the hosted REST API's shape: ``{"code", "message", "more_info", "status"}``.

The codes are the hosted service's own (its error dictionary), so clients that branch on them keep
working. Messages never repeat what the caller sent, so no secret can come back in an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"
AUTH_REALM = 'Basic realm="Turnpike API"'


class ApiError(Exception):
    """An error answer; ``reason`` is the metrics label for the failure."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        reason: str,
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


def unauthenticated(challenge: bool = True) -> ApiError:
    headers = {"WWW-Authenticate": AUTH_REALM} if challenge else None
    return ApiError(401, 20003, "Authenticate", "unauthenticated", headers)


def forbidden() -> ApiError:
    return ApiError(
        403,
        20403,
        "The credentials given do not belong to the account in the URL",
        "forbidden",
    )


def not_found(path: str) -> ApiError:
    return ApiError(404, 20404, f"The requested resource {path} was not found", "not_found")


def method_not_allowed(method: str, allowed: str = "POST") -> ApiError:
    return ApiError(
        405,
        20004,
        f"Method not allowed: {method} is not supported here, use {allowed}",
        "method_not_allowed",
        {"Allow": allowed},
    )


def bad_parameter(message: str) -> ApiError:
    return ApiError(400, 20001, message, "bad_request")


def too_many_requests(retry_after: float) -> ApiError:
    seconds = max(1, int(retry_after + 0.999))
    return ApiError(429, 20429, "Too Many Requests", "rate_limited", {"Retry-After": str(seconds)})


def internal_error() -> ApiError:
    return ApiError(500, 20500, "Internal Server Error", "error")
