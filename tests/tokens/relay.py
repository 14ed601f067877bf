"""A real `turnpike relay` child process for the token API's end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from support import TurnpikeProcess, free_dual_port, free_port, turnpike

REALM = "turnpike.test"


@dataclass
class Relay:
    process: TurnpikeProcess
    host: str
    port: int  # UDP and TCP
    second_port: int  # UDP and TCP again, advertised as the "443" entry
    metrics: str

    def edges_doc(self, name: str = "lab", location: str = "Test bench") -> dict[str, Any]:
        ports = {"udp": self.port, "tcp": self.port, "tls": self.second_port}
        return {
            "global": {"host": self.host, "ports": ports},
            "edges": [{"name": name, "location": location, "host": self.host, "ports": ports}],
        }

    async def ready_status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.metrics + "/ready") as r:
            body: dict[str, Any] = await r.json()
            return body


@contextlib.asynccontextmanager
async def run_relay(keyring: Path, host: str = "127.0.0.1") -> AsyncIterator[Relay]:
    port, second, metrics = free_dual_port(host), free_dual_port(host), free_port()
    args = [
        "relay",
        "--listen",
        f"{host}:{port}",
        "--listen",
        f"{host}:{second}",
        "--realm",
        REALM,
        "--keyring",
        str(keyring),
        "--allow-peer",
        "127.0.0.0/8",
        "--relay-ports",
        "20000-39999",
        "--metrics",
        f"127.0.0.1:{metrics}",
        "--drain-grace",
        "0",
    ]
    base = f"http://127.0.0.1:{metrics}"
    async with turnpike(args, ready_url=base + "/ready") as process:
        yield Relay(process, host, port, second, base)


async def wait_until(probe: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
