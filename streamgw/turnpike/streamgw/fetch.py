"""Fetching what TwiML names: voice webhooks, ``<Redirect>`` and ``action`` documents, audio.

Every URL is checked against the destination policy, and every failure becomes a `FetchError`
carrying the hosted error code and a message whose URLs are redacted.
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
MAX_DOCUMENT = 1024 * 1024
MAX_AUDIO = 64 * 1024 * 1024


class FetchError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code} {TITLES.get(code, 'Error')}: {detail}")
        self.code = code
        self.detail = detail


class Fetcher:
    """One call's HTTP client for TwiML documents and audio."""

    def __init__(self, session: aiohttp.ClientSession, policy: AddressPolicy) -> None:
        self.session = session
        self.policy = policy

    async def document(
        self, url: str, method: str, params: Mapping[str, str], auth_token: str
    ) -> bytes:
        """A signed webhook request (the call's parameters) and the TwiML it answers."""
        shown = redact(url)  # for messages: customers' URLs may carry credentials
        try:
            target, headers, form = signed_request(url, method, params, auth_token)
            if target.scheme not in ("http", "https"):
                raise FetchError(
                    HTTP_RETRIEVAL_FAILURE, f"{shown}: only http and https URLs can be fetched"
                )
            check_url(self.policy, target)
            async with self.session.request(
                method,
                target,
                headers=headers,
                data=form,
                timeout=aiohttp.ClientTimeout(total=15),
            ) as resp:
                body = await resp.content.read(MAX_DOCUMENT + 1)
                if resp.status >= 300:
                    raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{shown} answered HTTP {resp.status}")
                if len(body) > MAX_DOCUMENT:
                    raise FetchError(
                        HTTP_RETRIEVAL_FAILURE,
                        f"{shown}: document larger than {MAX_DOCUMENT} bytes",
                    )
                return body
        except DestinationRefused as exc:
            raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{shown}: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{shown}: {exc.os_error}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FetchError(
                HTTP_RETRIEVAL_FAILURE, f"{shown}: {type(exc).__name__}: {exc}"
            ) from None

    async def audio(self, url: str, shown: str) -> bytes:
        """A ``GET`` of an audio file; ``shown`` names it in messages."""
        try:
            target = URL(url)
            if target.scheme not in ("http", "https"):
                raise FetchError(
                    HTTP_RETRIEVAL_FAILURE, f"{shown}: only http and https URLs can be played"
                )
            check_url(self.policy, target)
            async with self.session.get(target, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                if resp.status >= 300:
                    raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{shown} answered HTTP {resp.status}")
                data = await resp.content.read(MAX_AUDIO + 1)
        except (DestinationRefused, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FetchError(HTTP_RETRIEVAL_FAILURE, f"{shown}: {exc}") from None
        if len(data) > MAX_AUDIO:
            raise FetchError(
                HTTP_RETRIEVAL_FAILURE, f"{shown}: audio larger than {MAX_AUDIO} bytes"
            )
        return data
