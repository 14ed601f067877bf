"""Failed authentication is throttled per source address and per claimed account.

The attack: thousands of wrong-token requests a second. The regression: after a burst the guesser
gets 429 (hosted body, ``Retry-After``) instead of 401, while a caller with valid credentials, from
another address or from the guesser's own, for the attacked account or another, is answered 201
every time, never delayed by the throttle (its latency is printed, not asserted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support import free_port, turnpike
from tokens.helpers import (
    ACCOUNT,
    EDGES_DOC,
    OTHER,
    OTHER_TOKEN,
    TOKEN,
    Api,
    ApiFactory,
    accounts_doc,
    basic,
    keyring_doc,
    write_json,
)

from turnpike.tokens.throttle import AuthThrottle


@pytest.fixture
async def sessions() -> AsyncIterator[dict[str, aiohttp.ClientSession]]:
    """HTTP clients on distinct loopback source addresses, made on demand."""
    made: dict[str, aiohttp.ClientSession] = {}
    yield made
    for session in made.values():
        await session.close()


def client(made: dict[str, aiohttp.ClientSession], source: str) -> aiohttp.ClientSession:
    if source not in made:
        made[source] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
    return made[source]


async def tokens(
    api: Api, session: aiohttp.ClientSession, sid: str, token: str
) -> tuple[int, dict[str, str], dict[str, object]]:
    headers = {"Authorization": basic(sid, token)}
    async with session.post(api.tokens_url(sid), headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def normal_client(api: Api, session: aiohttp.ClientSession, sid: str, token: str) -> None:
    started = time.perf_counter()
    status, _, body = await tokens(api, session, sid, token)
    assert status == 201, body
    print(f"valid request answered in {(time.perf_counter() - started) * 1000:.1f} ms")


async def test_one_source_guessing_is_throttled_and_valid_callers_are_not(
    make_api: ApiFactory, sessions: dict[str, aiohttp.ClientSession]
) -> None:
    api = await make_api(throttle=AuthThrottle.per_minute(source=10, account=0))
    attacker = client(sessions, "127.0.0.2")
    answers = []
    for n in range(25):
        answers.append(await tokens(api, attacker, ACCOUNT, f"wrong-{n}"))
        await normal_client(api, client(sessions, "127.0.0.3"), ACCOUNT, TOKEN)
    statuses = [status for status, _, _ in answers]
    assert statuses == [401] * 10 + [429] * 15
    _, headers, body = answers[-1]
    assert int(headers["Retry-After"]) >= 1
    assert body["code"] == 20429 and body["status"] == 429
    assert "WWW-Authenticate" not in headers
    # Valid credentials from the guessing address itself still work.
    await normal_client(api, attacker, ACCOUNT, TOKEN)
    # Guessing another account from there is throttled too: the limit is the address's.
    status, _, _ = await tokens(api, attacker, OTHER, "wrong")
    assert status == 429
    assert api.metric("turnpike_tokens_failures_total", reason="auth_throttled") == 16
    assert api.metric("turnpike_tokens_failures_total", reason="unauthenticated") == 10


async def test_guessing_one_account_from_many_sources_is_throttled(
    make_api: ApiFactory, sessions: dict[str, aiohttp.ClientSession]
) -> None:
    api = await make_api(throttle=AuthThrottle.per_minute(source=0, account=5))
    statuses = []
    for n in range(12):
        status, _, _ = await tokens(api, client(sessions, f"127.0.1.{n + 1}"), OTHER, "wrong")
        statuses.append(status)
    assert statuses == [401] * 5 + [429] * 7
    # The attacked account's owner is never locked out...
    await normal_client(api, client(sessions, "127.0.2.1"), OTHER, OTHER_TOKEN)
    # ...and another account's failures have their own allowance.
    status, _, _ = await tokens(api, client(sessions, "127.0.2.2"), ACCOUNT, "wrong")
    assert status == 401


async def test_default_throttle_leaves_a_typo_alone(
    make_api: ApiFactory, sessions: dict[str, aiohttp.ClientSession]
) -> None:
    api = await make_api()  # the defaults: 20 failures a minute per source, 60 per account
    session = client(sessions, "127.0.0.4")
    for _ in range(3):  # a user retyping a token a few times only ever sees 401
        status, _, _ = await tokens(api, session, ACCOUNT, "typo")
        assert status == 401
    await normal_client(api, session, ACCOUNT, TOKEN)


async def test_the_token_api_process_throttles_a_guessing_address(
    tmp_path: Path, sessions: dict[str, aiohttp.ClientSession]
) -> None:
    """The review's attack on the real ``turnpike tokens``: one address sends wrong tokens as fast
    as it can; it gets 429 after its burst while a valid caller elsewhere keeps getting 201."""
    port = free_port()
    keyring = write_json(tmp_path / "keyring.json", keyring_doc())
    accounts = write_json(tmp_path / "accounts.json", accounts_doc())
    edges = write_json(tmp_path / "edges.json", EDGES_DOC)
    args = [
        "tokens", "--listen", f"127.0.0.1:{port}", "--keyring", str(keyring),
        "--accounts", str(accounts), "--edges", str(edges), "--auth-failures-per-source", "10",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/2010-04-01/Accounts/{ACCOUNT}/Tokens.json"
    async with turnpike(args, ready_url=f"http://127.0.0.1:{port}/ready"):
        attacker, normal = client(sessions, "127.0.0.5"), client(sessions, "127.0.0.6")

        async def post(session: aiohttp.ClientSession, token: str) -> int:
            headers = {"Authorization": basic(ACCOUNT, token)}
            async with session.post(url, headers=headers) as resp:
                return resp.status

        flooding = asyncio.gather(*(post(attacker, f"wrong-{n}") for n in range(200)))
        started = time.perf_counter()
        assert await post(normal, TOKEN) == 201  # while the flood is in flight
        print(f"valid request answered in {(time.perf_counter() - started) * 1000:.1f} ms")
        flood = await flooding
        assert flood.count(401) == 10 and flood.count(429) == 190
        assert await post(normal, TOKEN) == 201  # and after it
        assert await post(attacker, TOKEN) == 201  # its own valid token still works
