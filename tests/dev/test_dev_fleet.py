"""`turnpike dev` end to end: the real fleet as child processes, used the way a newcomer would."""

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aioice import turn
from support import TurnpikeProcess, require_tool
from support.browser import chromium
from tokens.page import run_check

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def ports_in_state(state: dict[str, Any]) -> list[int]:
    urls = [
        state["tokens"]["url"],
        state["streamgw"]["url"],
        state["consumer"]["recordings"],
        state["relay"]["metrics"],
        state["tokens"]["metrics"],
        state["streamgw"]["metrics"],
    ]
    return [int(u.split("://")[1].split("/")[0].rsplit(":", 1)[1]) for u in urls] + [
        state["relay"]["port"],
        state["streamgw"]["sip"]["port"],
    ]


def port_is_free(port: int) -> bool:
    """Nothing listens on the TCP port and nothing is bound to the UDP port.

    SO_REUSEADDR lets the TCP bind succeed over TIME_WAIT leftovers of closed connections,
    but never over a socket that is still listening.
    """
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


async def wait_state(path: Path, proc: TurnpikeProcess) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.proc is not None
        if proc.proc.returncode is not None:
            raise AssertionError(f"turnpike dev exited early:\n{proc.text}")
        if path.exists():  # written whole: once it exists, it parses
            state: dict[str, Any] = json.loads(path.read_text())
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"no state file after 60 s:\n{proc.text}")


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


async def test_dev_fleet_end_to_end(tmp_path: Path) -> None:
    state_file = tmp_path / "dev.json"
    env = {"XDG_STATE_HOME": str(tmp_path)}
    dev = TurnpikeProcess(["dev", "--free-ports", "--state-file", str(state_file)], env)
    await dev.start()
    try:
        state = await wait_state(state_file, dev)
        assert state["accountSid"].startswith("AC")

        async with aiohttp.ClientSession() as http:
            for url in (
                state["relay"]["metrics"],
                state["tokens"]["metrics"],
                state["streamgw"]["metrics"],
            ):
                async with http.get(url) as resp:
                    assert resp.status == 200
                    assert "# TYPE" in await resp.text()
            consumer_ctx = ssl.create_default_context(cafile=state["consumer"]["caFile"])
            async with http.get(state["consumer"]["recordings"], ssl=consumer_ctx) as resp:
                assert resp.status == 200
                assert await resp.json() == {"recordings": []}
            async with http.get(state["streamgw"]["callsUrl"] + "/CA" + "0" * 32) as resp:
                assert resp.status == 401  # the gateway's API requires the account's credentials
            async with http.get(state["tokens"]["url"] + "/check/config") as resp:
                assert (await resp.json())["dev"] is True  # the page offers the dev account

            async with http.get(state["tokens"]["checkPage"]) as resp:
                assert resp.status == 200
                assert "<html" in (await resp.text()).lower()
            auth = basic_auth(state["accountSid"], state["authToken"])
            async with http.post(state["tokens"]["tokensUrl"], headers=auth) as resp:
                assert resp.status == 201
                token = await resp.json()

        # the token allocates on the fleet's relay and relays to a peer on loopback
        turn_entry = next(s for s in token["ice_servers"] if s["urls"].endswith("transport=udp"))
        loop = asyncio.get_running_loop()
        peer, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        client, proto = await turn.create_turn_endpoint(
            Collect,
            server_addr=(state["relay"]["host"], state["relay"]["port"]),
            username=turn_entry["username"],
            password=turn_entry["credential"],
        )
        try:
            client.sendto(b"ping", peer.get_extra_info("sockname"))
            assert await asyncio.wait_for(proto.queue.get(), 5) == b"ping"
        finally:
            client.close()
            peer.close()

        # a newcomer opens the ICE servers check page and presses the dev account button
        with chromium() as browser:
            outcome = await asyncio.to_thread(run_check, browser, state["tokens"]["checkPage"])
        assert outcome.summary.startswith("All "), outcome
        assert outcome.summary.endswith("relay paths work from this browser."), outcome
        assert outcome.rows
        assert all(row[2] == "Gathered" for row in outcome.rows), outcome.rows

        # dev call: audio through the gateway to the sample consumer, byte for byte
        call = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turnpike", "dev", "call", "--state-file", str(state_file),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(call.communicate(), 60)
        text = out.decode()
        assert call.returncode == 0, text + dev.text
        assert "matches byte for byte" in text
        wav = next(line.split(": ", 1)[1] for line in text.splitlines() if "inbound:" in line)
        assert Path(wav).exists()

        # the same call over SIP, to the dev number the banner shows
        assert state["streamgw"]["sip"]["uri"].startswith("sip:+15550002222@127.0.0.1:")
        call = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turnpike", "dev", "call", "--state-file", str(state_file),
            "--via-sip", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(call.communicate(), 60)
        assert call.returncode == 0, out.decode() + dev.text
        assert "over SIP" in out.decode() and "matches byte for byte" in out.decode()

        # any WAV a user has: espeak-ng writes 22.05 kHz 16-bit PCM, the call converts it
        espeak = require_tool("espeak-ng", "apt-get install espeak-ng")
        speech = tmp_path / "speech.wav"
        subprocess.run([espeak, "-w", str(speech), "Testing one two."], check=True)
        call = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turnpike", "dev", "call", "--state-file", str(state_file),
            "--wav", str(speech), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(call.communicate(), 60)
        assert call.returncode == 0, out.decode()
        assert "matches byte for byte" in out.decode()
    finally:
        code = await dev.stop(signal.SIGTERM)
    assert code == 0, dev.text
    assert f"Account SID         {state['accountSid']}" in dev.text  # the banner
    assert f"SIP (UDP and TCP)   {state['streamgw']['sip']['uri']}" in dev.text
    assert state["curl"] in dev.text
    assert f"dev call --state-file {state_file}" in state["callCommand"]
    assert state["callCommand"] in dev.text
    assert not state_file.exists()
    # nothing left behind: no child process, no listening port
    await asyncio.sleep(0.2)
    for port in ports_in_state(state):
        assert port_is_free(port), f"port {port} still in use"
    leftovers = subprocess.run(["pgrep", "-f", str(state_file)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", leftovers.stdout


async def test_dev_stops_when_a_child_dies(tmp_path: Path) -> None:
    state_file = tmp_path / "dev.json"
    dev = TurnpikeProcess(["dev", "--free-ports", "--state-file", str(state_file)])
    await dev.start()
    try:
        await wait_state(state_file, dev)
        children = subprocess.run(
            ["pgrep", "-P", str(dev.proc.pid if dev.proc else 0)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 3
        os.kill(int(children[0]), signal.SIGKILL)
        assert dev.proc is not None
        code = await asyncio.wait_for(dev.proc.wait(), 30)
    finally:
        await dev.stop()
    assert code == 1
    assert "stopping the whole fleet" in dev.text
    for pid in children[1:]:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
