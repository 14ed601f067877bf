"""Interop with coturn's client tools (turnutils_uclient / turnutils_peer / turnutils_stunclient).

coturn is an independent implementation: if its client relays every packet through us in channel
mode, Send-indication mode, over TCP, over TLS and client-to-client, our wire format and state
machine agree with the reference server's. ``-W`` makes REST credentials exactly as the token API
does (24 h TTL).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from support import free_dual_port, free_port, require_tool, turnpike
from support.netns import require_fast_path
from support.relay import write_keyring, write_self_signed

pytestmark = [pytest.mark.interop, pytest.mark.e2e, pytest.mark.slow]

SECRET = "north"
MODES = {
    "channel": [],
    "send-indication": ["-s"],
    "tcp": ["-t"],
    "client-to-client": ["-y"],
    "tcp-send-indication": ["-t", "-s"],
    "tls": ["-t", "-S"],
}


async def run_tool(*args: str, timeout: float = 40) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return out.decode(errors="replace")


@pytest.mark.parametrize("offload", ["tc", "off"])
async def test_uclient_modes_relay_without_loss(tmp_path: Path, offload: str) -> None:
    """Every mode, with the kernel fast path relaying channels (tc) and without it (off)."""
    if offload == "tc":
        require_fast_path()
    uclient = require_tool("turnutils_uclient", "apt-get install coturn")
    peer_tool = require_tool("turnutils_peer", "apt-get install coturn")
    stunclient = require_tool("turnutils_stunclient", "apt-get install coturn")
    keyring = write_keyring(tmp_path / "keyring.json", [("k1", SECRET, True)])
    port, metrics, peer_port = free_dual_port(), free_port(), free_port(2)
    tls_port = free_port()
    cert, key = write_self_signed(tmp_path)
    args = [
        "relay",
        "--listen",
        f"127.0.0.1:{port}",
        "--realm",
        "north.gov",
        "--keyring",
        str(keyring),
        "--allow-peer",
        "127.0.0.0/8",
        "--relay-ports",
        "45000-49999",
        "--user-quota",
        "0",
        "--metrics",
        f"127.0.0.1:{metrics}",
        "--drain-grace",
        "1",
        "--offload",
        offload,
        "--tls-listen",
        f"127.0.0.1:{tls_port}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ]
    peer = await asyncio.create_subprocess_exec(
        peer_tool,
        "-L",
        "127.0.0.1",
        "-p",
        str(peer_port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with turnpike(args, ready_url=f"http://127.0.0.1:{metrics}/ready") as relay:
            binding = await run_tool(stunclient, "-p", str(port), "127.0.0.1")
            assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", binding), binding

            async def mode(name: str, flags: list[str]) -> tuple[str, str]:
                out = await run_tool(
                    uclient,
                    *flags,
                    "-W",
                    SECRET,
                    "-u",
                    name,
                    "-e",
                    "127.0.0.1",
                    "-r",
                    str(peer_port),
                    "-p",
                    str(tls_port if "-S" in flags else port),
                    "-m",
                    "3",
                    "-n",
                    "60",
                    "-l",
                    "170",
                    "-z",
                    "5",
                    "-X",
                    "-g",
                    "127.0.0.1",
                )
                return name, out

            results = await asyncio.gather(*(mode(n, f) for n, f in MODES.items()))
            for name, out in results:
                totals = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", out, re.M)
                assert totals, f"{name}:\n{out}\n{relay.text}"
                sent, received = int(totals.group(1)), int(totals.group(2))
                assert sent > 0 and sent == received, f"{name}: {sent} sent, {received} back"
                assert "Total lost packets 0 (" in out, f"{name}:\n{out}"
                # No STUN error responses. (Over TLS uclient also tries TLS 1.0/1.1 contexts,
                # which we refuse by design: those handshake errors are retried and fine.)
                assert not re.search(r"error \d{3}", out), f"{name}:\n{out}"
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{metrics}/metrics") as resp,
            ):
                text = await resp.text()
            kernel = re.search(
                r'^turnpike_relay_offload_packets_total\{direction="to_peer"\} (\S+)$', text, re.M
            )
            assert kernel is not None, text
            # Channel modes over UDP went through the kernel when it was on; never when off.
            assert (float(kernel.group(1)) > 0) == (offload == "tc"), text
    finally:
        peer.terminate()
        await peer.wait()
