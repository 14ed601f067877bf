"""Every connection the gateway opens toward customers: WebSockets, webhooks, callbacks, audio.

One ``aiohttp`` session whose resolver drops addresses the `AddressPolicy` refuses, so a name that
resolves (or re-resolves, DNS rebinding) to a private or metadata address is never connected to.
IP literals skip aiohttp's resolver, so `check_url` judges those before any request is made.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from turnpike.core.addresses import AddressPolicy


class DestinationRefused(OSError):
    """The destination resolves only to addresses the gateway may not reach."""


class PolicyResolver(AbstractResolver):
    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        permitted = [r for r in results if self._policy.permits(r["host"])]
        if not permitted:
            raise DestinationRefused(
                f"{host} resolves only to addresses this gateway may not reach"
            )
        return permitted

    async def close(self) -> None:
        await self._inner.close()


def check_url(policy: AddressPolicy, url: URL) -> None:
    """Refuse a URL whose host is an IP literal the policy denies (names are checked on resolve)."""
    host = url.host
    if host is None:
        raise DestinationRefused(f"{url} has no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        _refuse_legacy_ipv4(policy, host)
        # "localhost" comes from /etc/hosts and would be refused by the resolver anyway; refusing
        # it here gives a clearer error.
        loopback_allowed = policy.permits("127.0.0.1") or policy.permits("::1")
        if host.rstrip(".").lower() == "localhost" and not loopback_allowed:
            raise DestinationRefused(f"{host} is a loopback name") from None
        return
    if not policy.permits(host):
        raise DestinationRefused(f"{host} is not an address this gateway may reach")


def _refuse_legacy_ipv4(policy: AddressPolicy, host: str) -> None:
    """Refuse ``127.1``, ``0x7f000001``, ``017700000001``: IPv4 in the old ``inet_aton`` forms.

    They are names to `ipaddress` but addresses to the C library; aiohttp refuses to connect to
    them, and they must be refused as destinations (not as some other error) whatever they mean.
    """
    try:
        meant = socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return
    where = "not an address this gateway may reach" if not policy.permits(meant) else "allowed"
    raise DestinationRefused(
        f"{host} is a non-canonical IPv4 literal for {meant} ({where}); write it as {meant}"
    )


def redact(url: str | URL) -> str:
    """``url`` fit for a log line or an error message: no user-info, query string or fragment.

    Customers put credentials there (``wss://host/ws?token=…``, ``https://user:pass@host/cb``).
    """
    text = str(url)
    cuts = [i for i in (text.find("?"), text.find("#")) if i >= 0]
    head, hidden = (text[: min(cuts)], True) if cuts else (text, False)
    scheme, sep, rest = head.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        head = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    return head + ("?[redacted]" if hidden else "")


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """System trust store (so ``SSL_CERT_FILE`` works) plus the operator's extra CA file."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def new_session(policy: AddressPolicy, ca_file: str | None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=PolicyResolver(policy),
        ssl=ssl_context(ca_file),
        limit=0,  # one slow customer must never starve connections to the others
        ttl_dns_cache=30,
        enable_cleanup_closed=True,
    )
    # Webhooks and callbacks identify themselves like the hosted service's; WebSockets override it.
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, headers={"User-Agent": "TwilioProxy/1.1"}
    )
