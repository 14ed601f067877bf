"""The relay's kernel fast path, across real veth interfaces in network namespaces (root only).

A real ``turnpike relay --offload tc`` runs in the relay namespace; the client and the peers
have their own namespaces, so every relayed packet leaves one interface and enters another,
exactly as it would between hosts. The metrics tell which packets the kernel relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import TurnpikeProcess
from support.fastpath import (
    CHANNEL,
    PORT,
    RawUdp,
    bind_channel,
    channel_data,
    client_in,
    every_size_both_ways,
    finished_on_the_way_out,
    http_get,
    kernel_packets,
    metrics,
    netns_relay,
    nothing_relayed,
    peer_in,
    round_trip,
    sample,
)
from support.netns import Topology, require_fast_path, topology

from turnpike.relay import stun
from turnpike.relay.stun import Attr, Class, Method

pytestmark = [pytest.mark.e2e]

SO_NO_CHECK = 11  # <asm-generic/socket.h>: send UDP without a checksum


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    require_fast_path()
    with topology() as t:
        yield t


def csum_errors(topo: Topology) -> int:
    return sum(topo.snmp(ns)["Udp"]["InCsumErrors"] for ns in (topo.client, topo.relay, topo.peer))


@pytest.mark.parametrize("checksum", ["partial", "full", "none"])
async def test_both_directions_byte_exact_through_the_kernel(
    topo: Topology, tmp_path: Path, checksum: str
) -> None:
    """Every size from 1 to 1,400 bytes, each way, relayed by the kernel, byte for byte, with
    checksums the receivers verify (or none at all)."""
    errors_before = csum_errors(topo)
    with contextlib.ExitStack() as stack:
        if checksum == "partial":  # so that the receivers verify what the program wrote
            stack.enter_context(finished_on_the_way_out(topo))
        async with (
            netns_relay(topo, tmp_path),
            peer_in(topo, topo.peer_ip) as peer,
            client_in(topo) as client,
        ):
            relayed = await client.allocate()
            await bind_channel(client, peer.address)
            client_raw = peer_raw = None
            if checksum == "full":
                with topo.inside(topo.client):
                    client_raw = RawUdp(client.local_address)
                with topo.inside(topo.peer):
                    peer_raw = peer.echo_with = RawUdp(peer.address)
            elif checksum == "none":
                for sock in (client.transport.get_extra_info("socket"),
                             peer.transport.get_extra_info("socket")):  # fmt: skip
                    sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            before = await metrics(topo)
            assert sample(before, "turnpike_relay_offload_active") == 1
            assert sample(before, "turnpike_relay_offload_channels") == 1
            try:
                await every_size_both_ways(client, peer, relayed, (topo.relay_ip, PORT), client_raw)
            finally:
                for raw in (client_raw, peer_raw):
                    if raw is not None:
                        raw.close()
            after = await metrics(topo)
    kernel = {d: kernel_packets(after, d) - kernel_packets(before, d)
              for d in ("to_peer", "to_client")}  # fmt: skip
    assert kernel == {"to_peer": 1400, "to_client": 1400}
    assert sample(after, "turnpike_relay_packets_total", direction="to_peer") >= 1400
    assert csum_errors(topo) == errors_before


async def test_refresh_zero_removes_the_entries(topo: Topology, tmp_path: Path) -> None:
    async with (
        netns_relay(topo, tmp_path) as relay,
        peer_in(topo, topo.peer_ip) as peer,
        client_in(topo) as client,
    ):
        relayed = await client.allocate()
        await bind_channel(client, peer.address)
        client.send_channel(CHANNEL, b"one")
        assert (await asyncio.wait_for(peer.queue.get(), 2))[0] == b"one"
        reply = await client.request(Method.REFRESH, {Attr.LIFETIME: 0})
        assert reply.cls == Class.SUCCESS
        values = await metrics(topo)
        assert sample(values, "turnpike_relay_offload_channels") == 0
        client.send_channel(CHANNEL, b"two")
        assert peer.transport is not None
        peer.transport.sendto(b"three", relayed)
        assert await peer.nothing()
        with pytest.raises(TimeoutError):
            await channel_data(client, timeout=0.5)
        values = await metrics(topo)
    assert kernel_packets(values, "to_peer") == 1
    assert kernel_packets(values, "to_client") == 1  # the echo of "one"
    # The allocation's last log line counts both paths.
    assert "ended (deleted)" in relay.text, relay.text
    assert "1/1 packets to peer/client (1/1 of them in the kernel)" in relay.text, relay.text


async def test_an_expired_entry_is_never_used_even_if_the_relay_stalls(
    topo: Topology, tmp_path: Path
) -> None:
    async with (
        netns_relay(topo, tmp_path) as relay,
        peer_in(topo, topo.peer_ip) as peer,
        client_in(topo) as client,
    ):
        relayed = await client.allocate({Attr.LIFETIME: 2})
        await bind_channel(client, peer.address)
        await round_trip(client, peer, b"alive")
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGSTOP)  # userspace can no longer remove anything
        try:
            await asyncio.sleep(2.5)
            await nothing_relayed(client, peer, relayed, b"late", 1.0)
        finally:
            relay.proc.send_signal(signal.SIGCONT)
        values = await metrics(topo)
    assert sample(values, "turnpike_relay_offload_punted_total", reason="expired") >= 2
    assert kernel_packets(values, "to_peer") == 1


async def test_a_peer_without_a_channel_is_never_reached_through_the_kernel(
    topo: Topology, tmp_path: Path
) -> None:
    async with (
        netns_relay(topo, tmp_path),
        peer_in(topo, topo.peer_ip) as peer,
        peer_in(topo, topo.other_peer_ip) as other,
        client_in(topo) as client,
    ):
        relayed = await client.allocate()
        await bind_channel(client, peer.address)
        reply = await client.request(Method.CREATE_PERMISSION, peers=[other.address])
        assert reply.cls == Class.SUCCESS
        # The other peer has a permission, no channel: userspace sends a Data indication.
        assert other.transport is not None
        other.transport.sendto(b"from the other peer", relayed)
        data = await client.receive_message()
        assert (data.method, data.cls) == (Method.DATA, Class.INDICATION)
        assert data.get(Attr.DATA) == b"from the other peer"
        # An unbound channel number goes nowhere, whichever peer it might mean.
        client.send_channel(CHANNEL + 1, b"nobody")
        assert await other.nothing()
        assert await peer.nothing(0.1)
        values = await metrics(topo)
    assert kernel_packets(values, "to_client") == 0
    assert kernel_packets(values, "to_peer") == 0


async def test_what_the_kernel_does_not_handle_takes_the_userspace_path(
    topo: Topology, tmp_path: Path
) -> None:
    """Padded ChannelData and a datagram too large for the client link once the header is on."""
    async with (
        netns_relay(topo, tmp_path),
        peer_in(topo, topo.peer_ip) as peer,
        client_in(topo) as client,
    ):
        relayed = await client.allocate()
        await bind_channel(client, peer.address)
        peer.echo = False
        client.send_raw(stun.channel_header(CHANNEL, 3) + b"abc\0")  # padded to 4 bytes
        assert (await asyncio.wait_for(peer.queue.get(), 2))[0] == b"abc"
        # 1,500 bytes on the wire to the relay; 1,496 to the peer: the kernel relays it.
        fits = bytes(range(256)) * 5 + bytes(1468 - 1280)
        client.send_channel(CHANNEL, fits)
        assert (await asyncio.wait_for(peer.queue.get(), 2))[0] == fits
        # 1,500 bytes from the peer would be 1,504 to the client: userspace sends it (in IP
        # fragments), the kernel does not.
        big = fits + b"end!"
        assert peer.transport is not None
        peer.transport.sendto(big, relayed)
        assert await channel_data(client) == stun.channel_header(CHANNEL, len(big)) + big
        values = await metrics(topo)
    assert sample(values, "turnpike_relay_offload_punted_total", reason="length") == 1
    assert sample(values, "turnpike_relay_offload_punted_total", reason="mtu") == 1
    assert kernel_packets(values, "to_peer") == 1  # the one that fits
    assert kernel_packets(values, "to_client") == 0
    assert sample(values, "turnpike_relay_packets_total", direction="to_peer") == 2
    assert sample(values, "turnpike_relay_packets_total", direction="to_client") == 1


async def test_killing_the_relay_stops_relaying(topo: Topology, tmp_path: Path) -> None:
    async with (
        netns_relay(topo, tmp_path) as relay,
        peer_in(topo, topo.peer_ip) as peer,
        client_in(topo) as client,
    ):
        relayed = await client.allocate()
        await bind_channel(client, peer.address)
        client.send_channel(CHANNEL, b"before")
        assert (await asyncio.wait_for(peer.queue.get(), 2))[0] == b"before"
        await channel_data(client)
        assert relay.proc is not None
        relay.proc.kill()
        await relay.proc.wait()
        await nothing_relayed(client, peer, relayed, b"after")


async def test_offload_off_relays_in_userspace(topo: Topology, tmp_path: Path) -> None:
    async with (
        netns_relay(topo, tmp_path, offload="off"),
        peer_in(topo, topo.peer_ip) as peer,
        client_in(topo) as client,
    ):
        await client.allocate()
        await bind_channel(client, peer.address)
        await round_trip(client, peer, b"hello")
        values = await metrics(topo)
        _, ready = await http_get(topo, "/ready")
    assert '"offload": "off"' in ready
    assert sample(values, "turnpike_relay_offload_active") == 0
    assert kernel_packets(values, "to_peer") == 0
    assert sample(values, "turnpike_relay_packets_total", direction="to_peer") == 1


async def test_default_wildcard_listener_is_offloaded(topo: Topology, tmp_path: Path) -> None:
    """``--listen 0.0.0.0:PORT`` (the default address): answers come from the routed address."""
    listen = f"0.0.0.0:{PORT}"
    async with (
        netns_relay(topo, tmp_path, "--relay-ip", topo.relay_ip, listen=listen),
        peer_in(topo, topo.peer_ip) as peer,
        client_in(topo) as client,
    ):
        relayed = await client.allocate()
        await bind_channel(client, peer.address)
        for size in (1, 5, 99, 1400):
            payload = bytes(i % 256 for i in range(size))
            client.send_channel(CHANNEL, payload)
            got, source = await asyncio.wait_for(peer.queue.get(), 2)
            assert (got, source[:2]) == (payload, relayed)
            assert await channel_data(client) == stun.channel_header(CHANNEL, size) + payload
        values = await metrics(topo)
    assert kernel_packets(values, "to_peer") == 4
    assert kernel_packets(values, "to_client") == 4


async def test_cap_bpf_and_cap_net_admin_are_all_it_needs(topo: Topology, tmp_path: Path) -> None:
    """The capabilities the operator grants (and nothing else) load and attach the program."""
    async with (
        netns_relay(topo, tmp_path, capabilities="-all,+bpf,+net_admin"),
        peer_in(topo, topo.peer_ip) as peer,
        client_in(topo) as client,
    ):
        await client.allocate()
        await bind_channel(client, peer.address)
        await round_trip(client, peer, b"lean")
        values = await metrics(topo)
    assert kernel_packets(values, "to_peer") == 1
    assert kernel_packets(values, "to_client") == 1


async def test_auto_without_the_capabilities_relays_in_userspace(
    topo: Topology, tmp_path: Path
) -> None:
    capabilities = "-sys_admin,-bpf,-net_admin,-perfmon"
    async with (
        netns_relay(topo, tmp_path, offload="auto", capabilities=capabilities) as relay,
        peer_in(topo, topo.peer_ip) as peer,
        client_in(topo) as client,
    ):
        await client.allocate()
        await bind_channel(client, peer.address)
        client.send_channel(CHANNEL, b"slow but sure")
        assert (await asyncio.wait_for(peer.queue.get(), 2))[0] == b"slow but sure"
        values = await metrics(topo)
        _, ready = await http_get(topo, "/ready")
    assert '"offload": "off"' in ready
    assert sample(values, "turnpike_relay_offload_active") == 0
    assert sample(values, "turnpike_relay_packets_total", direction="to_peer") == 1
    lines = [line for line in relay.text.splitlines() if "kernel fast path" in line]
    assert len(lines) == 1 and "unavailable" in lines[0] and "userspace" in lines[0], relay.text
    # --offload tc refuses to start without them, with one clear line.
    keyring = str(tmp_path / "keyring.json")
    refused = TurnpikeProcess(
        ["relay", "--listen", f"{topo.relay_ip}:{PORT + 1}", "--keyring", keyring,
         "--offload", "tc"],
        prefix=[*topo.exec_prefix(topo.relay), "setpriv", "--bounding-set", capabilities, "--"],
    )  # fmt: skip
    await refused.start()
    assert refused.proc is not None
    code = await asyncio.wait_for(refused.proc.wait(), 30)
    await refused.stop()
    assert code == 2
    assert "--offload tc" in refused.text and "Traceback" not in refused.text, refused.text


async def test_an_interface_that_appears_later_is_attached_too(
    topo: Topology, tmp_path: Path
) -> None:
    """A host-network relay's node gains a veth with every new pod: the relay follows."""
    async with netns_relay(topo, tmp_path), peer_in(topo, topo.peer_ip) as peer:
        before = sample(await metrics(topo), "turnpike_relay_offload_interfaces")
        namespace, _ = topo.add_host(len(topo.extra))
        for _ in range(100):  # the relay looks once a second
            values = await metrics(topo)
            if sample(values, "turnpike_relay_offload_interfaces") > before:
                break
            await asyncio.sleep(0.1)
        assert sample(values, "turnpike_relay_offload_interfaces") == before + 1
        async with client_in(topo, namespace) as client:
            await client.allocate()
            await bind_channel(client, peer.address)
            await round_trip(client, peer, b"new pod")
        values = await metrics(topo)
    assert kernel_packets(values, "to_peer") == 1
    assert kernel_packets(values, "to_client") == 1


async def test_a_relay_bound_to_loopback_attaches_to_loopback_alone(
    topo: Topology, tmp_path: Path
) -> None:
    """A development or test relay (every address it binds is a loopback one) leaves the
    namespace's other interfaces alone: its clients and peers can only arrive on ``lo``."""
    async with netns_relay(topo, tmp_path, listen=f"127.0.0.1:{PORT}"):
        values = await metrics(topo)
    assert topo.interfaces(topo.relay) > 1
    assert sample(values, "turnpike_relay_offload_active") == 1
    assert sample(values, "turnpike_relay_offload_interfaces") == 1


async def test_workers_share_the_supervisors_program_and_a_dead_workers_channels_go(
    topo: Topology, tmp_path: Path
) -> None:
    """``--workers 2``: the supervisor alone loads and attaches; workers write their channels;
    when a worker dies its entries are removed before it restarts."""
    async with (
        netns_relay(topo, tmp_path, "--workers", "2") as relay,
        peer_in(topo, topo.peer_ip) as peer,
        client_in(topo) as client,
    ):
        relayed = await client.allocate()
        await bind_channel(client, peer.address)
        await round_trip(client, peer, b"via a worker")
        values = await metrics(topo)
        assert sample(values, "turnpike_relay_offload_active") == 1
        interfaces = topo.interfaces(topo.relay)  # lo, r0, r1 (and any an earlier test added)
        assert sample(values, "turnpike_relay_offload_interfaces") == interfaces
        assert sample(values, "turnpike_relay_offload_channels") == 1
        assert kernel_packets(values, "to_peer") == 1
        assert kernel_packets(values, "to_client") == 1
        assert relay.proc is not None
        children = Path(f"/proc/{relay.proc.pid}/task/{relay.proc.pid}/children").read_text()
        workers = [int(pid) for pid in children.split()]
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if "removed 2 fast-path entries" in relay.text:
                break
            await asyncio.sleep(0.05)
        assert "removed 2 fast-path entries" in relay.text, relay.text
        await nothing_relayed(client, peer, relayed, b"orphaned")
