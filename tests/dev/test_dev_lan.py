"""`turnpike dev --host <LAN address>`: the fleet serves that address and allows its network."""

import asyncio
import base64
import ipaddress
import json
import signal
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import ifaddr
import pytest
from aioice import turn
from support import TurnpikeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def lan_interface() -> ipaddress.IPv4Interface | None:
    """This machine's first non-loopback IPv4 address, with its prefix."""
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            if isinstance(entry.ip, str) and not ipaddress.ip_address(entry.ip).is_loopback:
                return ipaddress.IPv4Interface(f"{entry.ip}/{entry.network_prefix}")
    return None


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
    lan = lan_interface()
    if lan is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    host = str(lan.ip)
    state_file = tmp_path / "dev.json"
    dev = TurnpikeProcess(["dev", "--host", host, "--free-ports", "--state-file", str(state_file)])
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
