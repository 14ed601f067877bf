"""Shared pieces of the token API tests: real files, FileWatchers, the real app on loopback."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from turnpike.core.accounts import Accounts, parse_accounts
from turnpike.core.edges import EdgeDirectory, parse_edges
from turnpike.core.filewatch import FileWatcher
from turnpike.core.keyring import Keyring, parse_keyring
from turnpike.core.ratelimit import RateLimiter
from turnpike.tokens.app import TokensConfig, create_app

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "auth-token-for-tests-0001"
KEY_SID = "SK" + "fedcba9876543210" * 2
KEY_SECRET = "api-key-secret-for-tests"
OTHER = "AC" + "1111111111111111" * 2
OTHER_TOKEN = "other-auth-token"
SECRET_K1 = "keyring-secret-one"
SECRET_K2 = "keyring-secret-two"


def accounts_doc(*extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "accounts": [
            {
                "sid": ACCOUNT,
                "authToken": TOKEN,
                "apiKeys": [{"sid": KEY_SID, "secret": KEY_SECRET}],
            },
            {"sid": OTHER, "authToken": OTHER_TOKEN},
            *extra,
        ]
    }


def keyring_doc(*keys: tuple[str, str, bool]) -> dict[str, Any]:
    keys = keys or (("k1", SECRET_K1, True),)
    return {"keys": [{"id": k, "secret": s, "signing": sign} for k, s, sign in keys]}


EDGES_DOC: dict[str, Any] = {
    "global": {"host": "global.turn.example.org"},
    "edges": [
        {
            "name": "ashburn",
            "location": "US East Coast (Virginia)",
            "host": "ashburn.turn.example.org",
            "ports": {"udp": 3478, "tcp": 3478, "tls": 443},
        },
        {"name": "lab", "host": "192.0.2.10", "ports": {"udp": 13478, "tcp": 13479, "tls": 10443}},
    ],
}


def basic(user: str, password: str) -> str:
    """An ``Authorization: Basic`` header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write_json(path: Path, doc: Any) -> Path:
    """Replace ``path`` the way kubelet updates a mounted file: write aside, then rename."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
    return path


@dataclass
class Api:
    """The token API running on a loopback port, with the files behind it."""

    base: str
    session: aiohttp.ClientSession
    registry: CollectorRegistry
    keyring_file: Path
    accounts_file: Path
    edges_file: Path
    keyring: FileWatcher[Keyring]
    accounts: FileWatcher[Accounts]
    edges: FileWatcher[EdgeDirectory]
    clock: list[float] = field(default_factory=lambda: [1_700_000_000.0])

    def tokens_url(self, sid: str = ACCOUNT) -> str:
        return f"{self.base}/2010-04-01/Accounts/{sid}/Tokens.json"

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


ApiFactory = Callable[..., Any]


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[ApiFactory]:
    """Build and serve the app; keyword arguments go to `TokensConfig` and `RateLimiter`."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def factory(
        per_minute: float = 0,
        burst: int | None = None,
        limiter_clock: Callable[[], float] | None = None,
        **config: Any,
    ) -> Api:
        files = (
            write_json(tmp_path / "keyring.json", keyring_doc()),
            write_json(tmp_path / "accounts.json", accounts_doc()),
            write_json(tmp_path / "edges.json", EDGES_DOC),
        )
        keyring = FileWatcher(files[0], parse_keyring)
        accounts = FileWatcher(files[1], parse_accounts)
        edges = FileWatcher(files[2], parse_edges)
        registry = CollectorRegistry()
        clock = [1_700_000_000.0]
        limiter = (
            RateLimiter.per_minute(per_minute, burst, clock=limiter_clock)
            if limiter_clock
            else RateLimiter.per_minute(per_minute, burst)
        )
        app = create_app(
            TokensConfig(
                keyring=keyring,
                accounts=accounts,
                edges=edges,
                limiter=limiter,
                registry=registry,
                clock=config.pop("clock", lambda: clock[0]),
                **config,
            )
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Api(
            f"http://127.0.0.1:{port}",
            session,
            registry,
            *files,
            keyring,
            accounts,
            edges,
            clock,
        )

    yield factory
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()
