"""`turnpike dev --host <LAN address>`: the fleet serves that address and allows its network."""

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aioice import turn
from support import TurnpikeProcess
from support.netns import Topology, ip, require_root

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


LAN = ipaddress.IPv4Interface("10.72.9.2/24")  # a private LAN, made inside a namespace


@contextlib.contextmanager
def lan_namespace() -> Iterator[str]:
    """A network namespace whose one link (a veth pair, both ends inside) has the address ``LAN``:
    a machine on a LAN, whatever this one's own network is. Always deleted."""
    require_root()
    name = f"tp{os.getpid()}lan"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)  # a killed run's
    try:
        ip("netns", "add", name)
        ip("-n", name, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
        ip("-n", name, "addr", "add", str(LAN), "dev", "lan0")
        for link in ("lo", "lan0", "lan1"):
            ip("-n", name, "link", "set", link, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


async def test_dev_on_a_lan_address(tmp_path: Path) -> None:
    with lan_namespace() as ns, Topology.inside(ns):  # this thread's sockets are made there too
        await dev_on_the_lan(ns, tmp_path)


async def dev_on_the_lan(ns: str, tmp_path: Path) -> None:
    lan, host = LAN, str(LAN.ip)
    state_file = tmp_path / "dev.json"
    args = ["dev", "--host", host, "--free-ports", "--state-file", str(state_file)]
    dev = TurnpikeProcess(args, prefix=["ip", "netns", "exec", ns])
    await dev.start()
    try:
        deadline = time.monotonic() + 60
        while not state_file.exists():
            assert dev.proc is not None and dev.proc.returncode is None, dev.text
            assert time.monotonic() < deadline, dev.text
            await asyncio.sleep(0.1)
        state: dict[str, Any] = json.loads(state_file.read_text())
        assert state["host"] == host
        assert state["network"] == str(lan.network)
        assert state["tokens"]["url"].startswith(f"http://{host}:")

        auth = base64.b64encode(f"{state['accountSid']}:{state['authToken']}".encode()).decode()
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Basic {auth}"}
            async with http.post(state["tokens"]["tokensUrl"], headers=headers) as resp:
                assert resp.status == 201
                token = await resp.json()
        entry = next(s for s in token["ice_servers"] if s["urls"].endswith("transport=udp"))
        assert entry["urls"] == f"turn:{host}:{state['relay']['port']}?transport=udp"

        # a peer on the LAN address's network is relayed to
        loop = asyncio.get_running_loop()
        peer, _ = await loop.create_datagram_endpoint(Echo, local_addr=(host, 0))
        client, proto = await turn.create_turn_endpoint(
            Collect,
            server_addr=(host, state["relay"]["port"]),
            username=entry["username"],
            password=entry["credential"],
        )
        try:
            client.sendto(b"ping", peer.get_extra_info("sockname"))
            assert await asyncio.wait_for(proto.queue.get(), 5) == b"ping"
        finally:
            client.close()
            peer.close()
    finally:
        code = await dev.stop(signal.SIGTERM)
    assert code == 0, dev.text
