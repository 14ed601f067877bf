"""The stream gateway's test harness: accounts, and an in-process gateway on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge

from support.media import RtpPeer, host_port
from turnpike.streamgw.gateway import Gateway

ACCOUNT = "AC" + "1" * 32
TOKEN = "secret-auth-token"
OTHER = "AC" + "2" * 32
OTHER_TOKEN = "other-token"
ACCOUNTS_DOC = {
    "accounts": [
        {"sid": ACCOUNT, "authToken": TOKEN},
        {"sid": OTHER, "authToken": OTHER_TOKEN},
    ]
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write_accounts(path: Path) -> Path:
    path.write_text(json.dumps(ACCOUNTS_DOC))
    return path


class Harness:
    """An in-process gateway served on a real loopback port, and a client for its API."""

    def __init__(self, gateway: Gateway, base: str, session: aiohttp.ClientSession) -> None:
        self.gateway = gateway
        self.base = base
        self.session = session
        self.auth = basic(ACCOUNT, TOKEN)

    async def request(
        self, method: str, path: str, *, auth: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": auth or self.auth}
        async with self.session.request(method, self.base + path, headers=headers, **kw) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def create_call(self, peer: RtpPeer | None = None, **body: Any) -> dict[str, Any]:
        body.setdefault("accountSid", ACCOUNT)
        body.setdefault("from", "+15550001111")
        body.setdefault("to", "+15550002222")
        if peer is not None:
            body.setdefault("rtp", {"remote": peer.address})
        status, out = await self.request("POST", "/v1/Calls", json=body)
        assert status == 201, out
        return dict(out)

    async def call(self, sid: str) -> dict[str, Any]:
        status, out = await self.request("GET", f"/v1/Calls/{sid}")
        assert status == 200, out
        return dict(out)

    async def hangup(self, sid: str) -> dict[str, Any]:
        status, out = await self.request("DELETE", f"/v1/Calls/{sid}")
        assert status == 200, out
        return dict(out)

    async def wait_status(
        self, sid: str, status: str = "completed", timeout: float = 10
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                out = await self.call(sid)
                if out["status"] == status:
                    return out
                await asyncio.sleep(0.05)

    async def rest(self, path: str, form: dict[str, str]) -> tuple[int, Any]:
        return await self.request("POST", f"/2010-04-01/Accounts/{ACCOUNT}{path}", data=form)

    @staticmethod
    def rtp_target(created: dict[str, Any]) -> tuple[str, int]:
        return host_port(created["rtp"]["local"])


MakeGateway = Callable[..., Awaitable[Harness]]


def sample(metric: Counter | Gauge, *labels: str) -> float:
    """The current value of ``metric`` for ``labels`` (0 before it was first counted), read
    through prometheus-client's public collector API."""
    for family in metric.collect():
        for found in family.samples:
            if not found.name.endswith("_created") and tuple(found.labels.values()) == labels:
                return float(found.value)
    return 0.0
