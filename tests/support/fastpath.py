"""The relay's kernel fast path under test: the real relay in a network namespace, its clients
and peers in others (``support.netns.Topology``), and what its metrics say about each path.

Shared by the IPv4 and IPv6 fast-path tests (tests/relay/test_offload*.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import TurnpikeProcess, require_tool, turnpike
from support.netns import Topology
from support.relay import REALM, RawClient, credentials, write_keyring
from turnpike.relay import stun
from turnpike.relay.stun import Attr, Class, Method

PORT = 3478  # the namespaces are private: fixed ports are free
METRICS = "127.0.0.1:9641"
CHANNEL = 0x4000


async def http_get(topo: Topology, path: str) -> tuple[int, str]:
    """GET on the relay's metrics server, from inside the relay namespace."""
    with topo.inside(topo.relay):
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{METRICS}{path}") as resp,
        ):
            return resp.status, await resp.text()


async def metrics(topo: Topology) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, text = await http_get(topo, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(values: dict[Any, float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


@contextlib.asynccontextmanager
async def netns_relay(
    topo: Topology,
    tmp_path: Path,
    *extra: str,
    offload: str = "tc",
    listen: str = "",
    capabilities: str = "",
) -> AsyncIterator[TurnpikeProcess]:
    """The real relay in the relay namespace; ``capabilities`` (``-all,+bpf``, say) limits the
    root process's capability bounding set through util-linux's setpriv."""
    keyring = write_keyring(tmp_path / "keyring.json")
    args = [
        "relay", "--listen", listen or f"{topo.relay_ip}:{PORT}", "--realm", REALM,
        "--keyring", str(keyring), "--allow-peer", "10.71.2.0/24",
        "--allow-peer", topo.peer_net6, "--metrics", METRICS,
        "--relay-ports", "40000-40999", "--offload", offload, "--drain-grace", "1", *extra,
    ]  # fmt: skip
    prefix = topo.exec_prefix(topo.relay)
    if capabilities:
        prefix += ["setpriv", "--bounding-set", capabilities, "--inh-caps", "-all", "--"]
    async with turnpike(args, prefix=prefix) as proc:
        for _ in range(200):
            assert proc.proc is not None
            if proc.proc.returncode is not None:
                raise AssertionError(f"relay exited:\n{proc.text}")
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await http_get(topo, "/ready")
                if status == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"relay not ready:\n{proc.text}")
        yield proc


class Peer(asyncio.DatagramProtocol):
    """A UDP peer that echoes what it gets (over ``echo_with`` when set) and keeps it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.echo_with: RawUdp | None = None
        self.echo = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))
        if not self.echo:
            return
        if self.echo_with is not None:
            self.echo_with.send(data, addr)
        elif self.transport is not None:
            self.transport.sendto(data, addr)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    async def nothing(self, wait: float = 0.5) -> bool:
        """True when nothing arrives within ``wait`` seconds."""
        try:
            await asyncio.wait_for(self.queue.get(), wait)
        except TimeoutError:
            return True
        return False


@contextlib.asynccontextmanager
async def peer_in(topo: Topology, ip: str, namespace: str = "") -> AsyncIterator[Peer]:
    """A peer on ``ip`` in the peer namespace (or ``namespace``)."""
    loop = asyncio.get_running_loop()
    with topo.inside(namespace or topo.peer):
        transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=(ip, 0))
    try:
        yield peer
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def client_in(
    topo: Topology, namespace: str = "", server: str = ""
) -> AsyncIterator[RawClient]:
    """A TURN client in the client namespace (or ``namespace``), talking to the relay's
    listener at ``server`` (its IPv4 address unless given)."""
    with topo.inside(namespace or topo.client):
        client = await RawClient.connect((server or topo.relay_ip, PORT))
    client.login(*credentials())
    try:
        yield client
    finally:
        client.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF or 0xFFFF


class RawUdp:
    """Sends UDP with the full checksum computed here (no offload: CHECKSUM_NONE in the kernel),
    over IPv4 or IPv6 as ``src`` is; ``checksum=False`` sends a zero (absent) checksum."""

    def __init__(self, src: tuple[str, int], checksum: bool = True) -> None:
        self.src = src
        self.checksum = checksum
        self.family = socket.AF_INET6 if ":" in src[0] else socket.AF_INET
        self.sock = socket.socket(self.family, socket.SOCK_RAW, socket.IPPROTO_UDP)
        if self.family == socket.AF_INET6:
            self.sock.bind((src[0], 0))  # the source the pseudo header names

    def send(self, payload: bytes, dst: tuple[str, int]) -> None:
        length = 8 + len(payload)
        pseudo = socket.inet_pton(self.family, self.src[0]) + socket.inet_pton(self.family, dst[0])
        if self.family == socket.AF_INET6:
            pseudo += struct.pack("!I3xB", length, socket.IPPROTO_UDP)
        else:
            pseudo += struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
        header = struct.pack("!HHHH", self.src[1], dst[1], length, 0)
        check = _checksum(pseudo + header + payload) if self.checksum else 0
        self.sock.sendto(header[:6] + struct.pack("!H", check) + payload, (dst[0], 0))

    def close(self) -> None:
        self.sock.close()


async def bind_channel(client: RawClient, peer: tuple[str, int], channel: int = CHANNEL) -> None:
    reply = await client.request(
        Method.CHANNEL_BIND, {Attr.CHANNEL_NUMBER: channel, Attr.XOR_PEER_ADDRESS: peer}
    )
    assert reply.cls == Class.SUCCESS, reply.get(Attr.ERROR_CODE)


async def channel_data(client: RawClient, timeout: float = 2.0) -> bytes:
    while True:
        data = await client.receive(timeout)
        if stun.is_channel_data(data):
            return data


def kernel_packets(values: dict[Any, float], direction: str) -> float:
    return sample(values, "turnpike_relay_offload_packets_total", direction=direction)


async def round_trip(client: RawClient, peer: Peer, payload: bytes) -> None:
    """``payload`` as ChannelData to the peer, which gets it and echoes it back as ChannelData."""
    client.send_channel(CHANNEL, payload)
    assert (await asyncio.wait_for(peer.queue.get(), 2))[0] == payload
    assert await channel_data(client) == stun.channel_header(CHANNEL, len(payload)) + payload


async def nothing_relayed(
    client: RawClient, peer: Peer, relayed: tuple[str, int], tag: bytes, wait: float = 0.5
) -> None:
    """ChannelData from the client and a datagram from the peer, neither relayed: the peer gets
    nothing within ``wait`` seconds, the client nothing within half a second."""
    client.send_channel(CHANNEL, tag)
    assert peer.transport is not None
    peer.transport.sendto(tag + b" too", relayed)
    assert await peer.nothing(wait)
    with pytest.raises(TimeoutError):
        await channel_data(client, timeout=0.5)


async def every_size_both_ways(
    client: RawClient,
    peer: Peer,
    relayed: tuple[str, int],
    server: tuple[str, int],
    client_raw: RawUdp | None = None,
) -> None:
    """ChannelData of every size from 1 to 1,400 bytes from ``client`` to ``server``, each
    checked byte for byte as the peer gets it (from ``relayed``) and as the echo comes back.
    ``client_raw`` sends instead of the client's socket (a checksum computed by the sender)."""
    for size in range(1, 1401):
        payload = bytes((size + i) % 251 for i in range(size))
        message = stun.channel_header(CHANNEL, size) + payload
        if client_raw is not None:
            client_raw.send(message, server)
        else:
            client.send_raw(message)
        got, source = await asyncio.wait_for(peer.queue.get(), 2)
        assert (got, source[:2]) == (payload, relayed)
        assert await channel_data(client) == message


@contextlib.contextmanager
def finished_on_the_way_out(topo: Topology) -> Iterator[None]:
    """The relay's veths without transmit checksum offload: a packet sent with its checksum
    left for the hardware (CHECKSUM_PARTIAL) has it finished in software as it leaves the relay,
    as a NIC would, so the receiver verifies what the program wrote (a veth receiver otherwise
    trusts a partial checksum)."""
    ethtool = require_tool("ethtool", "apt-get install ethtool")

    def offload(state: str) -> None:
        for link in ("r0", "r1"):
            subprocess.run(
                [*topo.exec_prefix(topo.relay), ethtool, "-K", link, "tx", state],
                check=True,
                capture_output=True,
                timeout=10,
            )

    offload("off")
    try:
        yield
    finally:
        offload("on")
