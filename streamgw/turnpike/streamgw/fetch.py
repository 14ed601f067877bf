"""Fetching what TwiML names: voice webhooks, ``<Redirect>`` and ``action`` documents, audio.

One helper, `Fetcher.fetch`, serves them all: the URL must be http(s) and pass the destination
policy; the body is read to its end (chunk by chunk, up to a size cap), a declared
``Content-Length`` above the cap is refused before reading, and a body that ends before its
``Content-Length`` (or its last chunk) is an error, never a silently shorter document or prompt.
Every failure is a `FetchError` with the hosted error code and a message whose URLs are redacted.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from yarl import URL

from turnpike.core.addresses import AddressPolicy
from turnpike.streamgw.callbacks import signed_request
from turnpike.streamgw.egress import DestinationRefused, check_url, redact
from turnpike.streamgw.errors import TITLES

HTTP_RETRIEVAL_FAILURE = 11200
DOCUMENT_TOO_LARGE = 11750
MAX_DOCUMENT = 1024 * 1024
MAX_AUDIO = 64 * 1024 * 1024
CHUNK = 64 * 1024


class FetchError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code} {TITLES.get(code, 'Error')}: {detail}")
        self.code = code
        self.detail = detail


class BodyTooLarge(ValueError):
    pass


async def read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, to EOF; `BodyTooLarge` past ``limit``; a cut body raises
    ``aiohttp.ClientPayloadError`` (aiohttp checks Content-Length and chunked framing)."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"Content-Length {declared} is over the {limit}-byte limit")
    body = bytearray()
    while chunk := await resp.content.read(CHUNK):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"larger than {limit} bytes")
    if declared is not None and len(body) != declared:
        raise aiohttp.ClientPayloadError(f"body ended after {len(body)} of {declared} bytes")
    return bytes(body)


class Fetcher:
    """One call's HTTP client for TwiML documents and audio."""

    def __init__(self, session: aiohttp.ClientSession, policy: AddressPolicy) -> None:
        self.session = session
        self.policy = policy

    async def document(
        self, url: str, method: str, params: Mapping[str, str], auth_token: str
    ) -> bytes:
        """A signed webhook request (the call's parameters) and the TwiML it answers."""
        try:
            target, headers, form = signed_request(url, method, params, auth_token)
        except ValueError as exc:
            raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{redact(url)}: {exc}") from None
        return await self.fetch(
            method, target, redact(url), MAX_DOCUMENT, 15.0, headers=headers, data=form
        )

    async def audio(self, url: str, shown: str) -> bytes:
        """A ``GET`` of an audio file; ``shown`` names it in messages."""
        return await self.fetch("GET", URL(url), shown, MAX_AUDIO, 30.0)

    async def fetch(
        self,
        method: str,
        target: URL,
        shown: str,
        limit: int,
        timeout: float,
        *,
        headers: Mapping[str, str] | None = None,
        data: object = None,
    ) -> bytes:
        """``shown`` names the URL in messages (customers' URLs may carry credentials)."""
        try:
            if target.scheme not in ("http", "https"):
                raise FetchError(
                    HTTP_RETRIEVAL_FAILURE, f"{shown}: only http and https URLs can be fetched"
                )
            check_url(self.policy, target)
            async with self.session.request(
                method,
                target,
                headers=headers,
                data=data,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                if resp.status >= 300:
                    raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{shown} answered HTTP {resp.status}")
                return await read_body(resp, limit)
        except BodyTooLarge as exc:
            code = DOCUMENT_TOO_LARGE if limit == MAX_DOCUMENT else HTTP_RETRIEVAL_FAILURE
            raise FetchError(code, f"{shown}: {exc}") from None
        except DestinationRefused as exc:
            raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{shown}: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{shown}: {exc.os_error}") from None
        except aiohttp.ClientPayloadError as exc:
            raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{shown}: the body was cut: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FetchError(
                HTTP_RETRIEVAL_FAILURE, f"{shown}: {type(exc).__name__}: {exc}"
            ) from None
