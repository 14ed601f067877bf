from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from support import free_port
from support.media import HttpServer, RtpPeer, TestCA, WsServer, rtp_peer, speech_ulaw
from support.streamgw import ACCOUNTS_DOC, Harness, MakeGateway

from turnpike.core.accounts import Accounts
from turnpike.streamgw.api import create_app
from turnpike.streamgw.gateway import Gateway, GatewayConfig
from turnpike.streamgw.stream import StreamSettings


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    audio = speech_ulaw(
        tmp_path_factory.mktemp("speech"),
        "Turnpike forwards this call audio to your server, byte for byte.",
    )
    return audio[: len(audio) // 160 * 160]


@pytest.fixture
async def ws(ca: TestCA) -> AsyncIterator[WsServer]:
    server = WsServer(ca)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[HttpServer]:
    server = HttpServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def peer() -> AsyncIterator[RtpPeer]:
    p = await rtp_peer()
    yield p
    p.close()


@pytest.fixture
async def make_gateway(tmp_path: Path, ca: TestCA) -> AsyncIterator[MakeGateway]:
    runners: list[tuple[web.AppRunner, Gateway, aiohttp.ClientSession]] = []
    accounts = Accounts.parse(json.dumps(ACCOUNTS_DOC))

    async def make(**overrides: Any) -> Harness:
        stream = StreamSettings(**overrides.pop("stream", {"connect_timeout": 3.0}))
        settings: dict[str, Any] = {
            "rtp_ip": "127.0.0.1",
            "rtp_ports": (30000, 39999),
            "allow_destinations": ("127.0.0.0/8",),
            "ca_file": str(ca.ca_file),
            "stream": stream,
            "rtp_fill_after": 2.0,
            "rtp_timeout": 30.0,
            "rtp_idle_hangup": 0.0,
            "callback_first_delay": 0.05,
        }
        settings.update(overrides)
        gateway = Gateway(GatewayConfig(**settings), lambda: accounts)
        await gateway.start()
        runner = web.AppRunner(create_app(gateway), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        session = aiohttp.ClientSession()
        runners.append((runner, gateway, session))
        return Harness(gateway, f"http://127.0.0.1:{port}", session)

    yield make
    for runner, gateway, session in runners:
        await gateway.close()
        await runner.cleanup()
        await session.close()


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Harness:
    return await make_gateway()
