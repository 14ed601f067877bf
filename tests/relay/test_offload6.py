"""The relay's kernel fast path over IPv6, across real veth interfaces (root only).

The same three namespaces as the IPv4 tests, their links carrying IPv6 too; the relay listens on
both families. A channel whose client and peer are both IPv6 is relayed by the kernel; one whose
client is of the other family than its relayed address (REQUESTED-ADDRESS-FAMILY) is handed to
userspace and counted (punt reason ``family``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import require_tool
from support.fastpath import (
    CHANNEL,
    PORT,
    RawUdp,
    bind_channel,
    channel_data,
    client_in,
    every_size_both_ways,
    finished_on_the_way_out,
    kernel_packets,
    metrics,
    netns_relay,
    nothing_relayed,
    peer_in,
    round_trip,
    sample,
)
from support.netns import Topology, require_fast_path, topology
from support.relay import REALM, SECRET, credentials, raw_client, write_keyring

from turnpike.core.filewatch import FileWatcher
from turnpike.core.keyring import parse_keyring
from turnpike.relay import stun
from turnpike.relay.offload import Offload
from turnpike.relay.server import RelayConfig, RelayServer
from turnpike.relay.stun import Attr, Class, Method
from turnpike.relay.transports import Listeners

pytestmark = [pytest.mark.e2e]

LISTEN6 = ("--listen", f"[{Topology.relay_ip6}]:{PORT}")  # besides the IPv4 listener
FAMILY_IPV4, FAMILY_IPV6 = 0x01, 0x02  # REQUESTED-ADDRESS-FAMILY values


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    require_fast_path()
    with topology("v6", ipv6=True) as t:
        yield t


def csum_errors(topo: Topology) -> int:
    return sum(topo.snmp6(ns)["Udp6InCsumErrors"] for ns in (topo.client, topo.relay, topo.peer))


def punted(values: dict[Any, float], reason: str) -> float:
    return sample(values, "turnpike_relay_offload_punted_total", reason=reason)


@pytest.mark.parametrize("checksum", ["partial", "full"])
async def test_both_directions_byte_exact_through_the_kernel(
    topo: Topology, tmp_path: Path, checksum: str
) -> None:
    """Every size from 1 to 1,400 bytes, each way, relayed by the kernel over IPv6, byte for
    byte, with checksums the receivers verify."""
    errors_before = csum_errors(topo)
    with contextlib.ExitStack() as stack:
        if checksum == "partial":  # sockets leave the checksum unfinished (veth offload)
            stack.enter_context(finished_on_the_way_out(topo))
        async with (
            netns_relay(topo, tmp_path, *LISTEN6),
            peer_in(topo, topo.peer_ip6) as peer,
            client_in(topo, server=topo.relay_ip6) as client,
        ):
            relayed = await client.allocate()  # no family asked for: the listener's
            assert relayed[0] == topo.relay_ip6
            await bind_channel(client, peer.address)
            client_raw = None
            if checksum == "full":  # computed by the sender: CHECKSUM_NONE in the kernel
                with topo.inside(topo.client):
                    client_raw = RawUdp(client.local_address)
                with topo.inside(topo.peer):
                    peer.echo_with = RawUdp(peer.address)
            before = await metrics(topo)
            assert sample(before, "turnpike_relay_offload_channels") == 1
            try:
                await every_size_both_ways(
                    client, peer, relayed, (topo.relay_ip6, PORT), client_raw
                )
            finally:
                for raw in (client_raw, peer.echo_with):
                    if raw is not None:
                        raw.close()
            after = await metrics(topo)
    kernel = {d: kernel_packets(after, d) - kernel_packets(before, d)
              for d in ("to_peer", "to_client")}  # fmt: skip
    assert kernel == {"to_peer": 1400, "to_client": 1400}
    assert csum_errors(topo) == errors_before


async def test_loopback_is_delivered_in_place(topo: Topology, tmp_path: Path) -> None:
    """Client, relay and peer on ::1 of one namespace (a relay on the host network with a local
    peer): the program rewrites each datagram and lets it go up the stack where it is."""
    errors_before = csum_errors(topo)
    async with (
        netns_relay(topo, tmp_path, "--listen", f"[::1]:{PORT}", "--allow-peer", "::1/128"),
        peer_in(topo, "::1", namespace=topo.relay) as peer,
        client_in(topo, namespace=topo.relay, server="::1") as client,
    ):
        relayed = await client.allocate()
        assert relayed[0] == "::1"
        await bind_channel(client, peer.address)
        sizes = (1, 2, 3, 4, 5, 99, 100, 1000, 1399, 1400)
        for size in sizes:
            payload = bytes((size * 7 + i) % 256 for i in range(size))
            client.send_channel(CHANNEL, payload)
            got, source = await asyncio.wait_for(peer.queue.get(), 2)
            assert (got, source[:2]) == (payload, relayed)
            assert await channel_data(client) == stun.channel_header(CHANNEL, size) + payload
        values = await metrics(topo)
    assert kernel_packets(values, "to_peer") == len(sizes)
    assert kernel_packets(values, "to_client") == len(sizes)
    assert csum_errors(topo) == errors_before


async def test_refresh_zero_removes_the_entries(topo: Topology, tmp_path: Path) -> None:
    async with (
        netns_relay(topo, tmp_path, *LISTEN6) as relay,
        peer_in(topo, topo.peer_ip6) as peer,
        client_in(topo, server=topo.relay_ip6) as client,
    ):
        relayed = await client.allocate()
        await bind_channel(client, peer.address)
        await round_trip(client, peer, b"one")
        reply = await client.request(Method.REFRESH, {Attr.LIFETIME: 0})
        assert reply.cls == Class.SUCCESS
        assert sample(await metrics(topo), "turnpike_relay_offload_channels") == 0
        client.send_channel(CHANNEL, b"two")
        assert peer.transport is not None
        peer.transport.sendto(b"three", relayed)
        assert await peer.nothing()
        with pytest.raises(TimeoutError):
            await channel_data(client, timeout=0.5)
        values = await metrics(topo)
    assert kernel_packets(values, "to_peer") == 1
    assert kernel_packets(values, "to_client") == 1  # the echo of "one"
    assert "1/1 packets to peer/client (1/1 of them in the kernel)" in relay.text, relay.text


async def test_an_expired_channel_hands_the_next_datagram_to_userspace(
    topo: Topology, tmp_path: Path
) -> None:
    """A channel expires while its allocation and permission live on: its entries are deleted,
    and the peer's next datagram reaches the client from userspace, as a Data indication. (An
    in-process relay, on ::1 in the relay namespace, so the channel's lifetime can be short.)"""
    with topo.inside(topo.relay):  # every socket of this test, the relay's too, is made there
        watcher = FileWatcher(write_keyring(tmp_path / "keyring.json"), parse_keyring)
        offload = Offload.start("tc", interfaces=[socket.if_nametoindex("lo")])
        config = RelayConfig(
            realm=REALM, relay_ips=("::1",), relay_ports=(41000, 41999),
            allow_peer=("::1/128",), channel_lifetime=1,
        )  # fmt: skip
        server = RelayServer(config, lambda: watcher.current, offload)
        listeners = Listeners(server)
        try:
            address = await listeners.listen("::1", 0)
            server.start()
            async with (
                peer_in(topo, "::1", namespace=topo.relay) as peer,
                raw_client(address, credentials=credentials()) as client,
            ):
                relayed = await client.allocate()
                await bind_channel(client, peer.address)
                # The permission outlives the channel (a ChannelBind's lasts as long as it).
                reply = await client.request(Method.CREATE_PERMISSION, peers=[peer.address])
                assert reply.cls == Class.SUCCESS
                peer.echo = False
                assert peer.transport is not None
                peer.transport.sendto(b"bound", relayed)
                assert await channel_data(client) == stun.channel_header(CHANNEL, 5) + b"bound"
                assert offload.channels == 1
                for _ in range(100):  # the channel lives a second; the sweep runs every second
                    if offload.channels == 0:
                        break
                    await asyncio.sleep(0.05)
                assert offload.channels == 0
                peer.transport.sendto(b"unbound", relayed)
                data = await client.receive_message()
                assert (data.method, data.cls) == (Method.DATA, Class.INDICATION)
                assert data.get(Attr.DATA) == b"unbound"
                assert offload.traffic().to_client_packets == 1  # "bound" alone
        finally:
            await listeners.close()
            await server.close()
            offload.close()


async def test_an_expired_entry_is_never_used_even_if_the_relay_stalls(
    topo: Topology, tmp_path: Path
) -> None:
    async with (
        netns_relay(topo, tmp_path, *LISTEN6) as relay,
        peer_in(topo, topo.peer_ip6) as peer,
        client_in(topo, server=topo.relay_ip6) as client,
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
    assert punted(values, "expired") >= 2
    assert kernel_packets(values, "to_peer") == 1
    assert kernel_packets(values, "to_client") == 1


@pytest.mark.parametrize(
    ("client_family", "relayed_family"),
    [(4, FAMILY_IPV6), (6, FAMILY_IPV4)],
    ids=["ipv4-client-ipv6-relay", "ipv6-client-ipv4-relay"],
)
async def test_across_families_userspace_relays_and_the_kernel_counts(
    topo: Topology, tmp_path: Path, client_family: int, relayed_family: int
) -> None:
    """A client asking for a relayed address of the other family: both directions go through
    userspace, each packet counted once as punted for ``family``."""
    server = topo.relay_ip if client_family == 4 else topo.relay_ip6
    peer_ip = topo.peer_ip6 if relayed_family == FAMILY_IPV6 else topo.peer_ip
    async with (
        netns_relay(topo, tmp_path, *LISTEN6),
        peer_in(topo, peer_ip) as peer,
        client_in(topo, server=server) as client,
    ):
        before = await metrics(topo)
        relayed = await client.allocate({Attr.REQUESTED_ADDRESS_FAMILY: relayed_family})
        assert (":" in relayed[0]) == (relayed_family == FAMILY_IPV6)
        await bind_channel(client, peer.address)
        for payload in (b"across", b"families"):
            client.send_channel(CHANNEL, payload)
            got, source = await asyncio.wait_for(peer.queue.get(), 2)
            assert (got, source[:2]) == (payload, relayed)
            header = stun.channel_header(CHANNEL, len(payload))
            assert await channel_data(client) == header + payload
        after = await metrics(topo)
    assert sample(after, "turnpike_relay_offload_channels") == 0
    assert punted(after, "family") - punted(before, "family") == 4
    assert kernel_packets(after, "to_peer") == kernel_packets(before, "to_peer")
    assert kernel_packets(after, "to_client") == kernel_packets(before, "to_client")
    assert sample(after, "turnpike_relay_packets_total", direction="to_peer") == 2
    assert sample(after, "turnpike_relay_packets_total", direction="to_client") == 2


async def test_an_extension_header_takes_the_userspace_path(topo: Topology, tmp_path: Path) -> None:
    """ChannelData behind a Destination Options header is not the program's: the stack skips
    the header and userspace relays it; the peer's plain answer comes back through the kernel."""
    async with (
        netns_relay(topo, tmp_path, *LISTEN6),
        peer_in(topo, topo.peer_ip6) as peer,
        client_in(topo, server=topo.relay_ip6) as client,
    ):
        await client.allocate()
        await bind_channel(client, peer.address)
        sock = client.transport.get_extra_info("socket")
        padding = bytes([socket.IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0])  # next header, PadN
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, padding)
        client.send_channel(CHANNEL, b"behind an option")
        assert (await asyncio.wait_for(peer.queue.get(), 2))[0] == b"behind an option"
        echo = await channel_data(client)
        assert echo == stun.channel_header(CHANNEL, 16) + b"behind an option"
        values = await metrics(topo)
    assert kernel_packets(values, "to_peer") == 0
    assert kernel_packets(values, "to_client") == 1
    assert sample(values, "turnpike_relay_packets_total", direction="to_peer") == 1


async def test_a_datagram_without_a_checksum_is_never_relayed(
    topo: Topology, tmp_path: Path
) -> None:
    """IPv6 UDP must carry a checksum: the program hands a zero one up, where the stack drops
    it (counted as a checksum error in the relay's namespace), exactly as without the program."""
    async with (
        netns_relay(topo, tmp_path, *LISTEN6),
        peer_in(topo, topo.peer_ip6) as peer,
        client_in(topo, server=topo.relay_ip6) as client,
    ):
        relayed = await client.allocate()
        await bind_channel(client, peer.address)
        peer.echo = False
        errors_before = topo.snmp6(topo.relay)["Udp6InCsumErrors"]
        with topo.inside(topo.client):
            client_raw = RawUdp(client.local_address, checksum=False)
        with topo.inside(topo.peer):
            peer_raw = RawUdp(peer.address, checksum=False)
        try:
            client_raw.send(stun.channel_header(CHANNEL, 4) + b"bare", (topo.relay_ip6, PORT))
            peer_raw.send(b"bare too", relayed)
            assert await peer.nothing()
            with pytest.raises(TimeoutError):
                await channel_data(client, timeout=0.5)
        finally:
            client_raw.close()
            peer_raw.close()
        client.send_channel(CHANNEL, b"with one")  # the channel itself is fine
        assert (await asyncio.wait_for(peer.queue.get(), 2))[0] == b"with one"
        values = await metrics(topo)
    assert punted(values, "checksum") == 2
    assert topo.snmp6(topo.relay)["Udp6InCsumErrors"] == errors_before + 2
    assert kernel_packets(values, "to_peer") == 1
    assert kernel_packets(values, "to_client") == 0


async def test_coturn_uclient_relays_over_ipv6_through_the_kernel(
    topo: Topology, tmp_path: Path
) -> None:
    """coturn's own client, asking for an IPv6 relayed address (-x) over an IPv6 listener, with
    coturn's peer in the peer namespace: no loss, and the channel traffic went through the
    kernel."""
    uclient = require_tool("turnutils_uclient", "apt-get install coturn")
    peer_tool = require_tool("turnutils_peer", "apt-get install coturn")
    peer_port = 3480
    async with netns_relay(topo, tmp_path, *LISTEN6, "--user-quota", "0"):
        peer = await asyncio.create_subprocess_exec(
            *topo.exec_prefix(topo.peer), peer_tool, "-L", topo.peer_ip6, "-p", str(peer_port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            proc = await asyncio.create_subprocess_exec(
                *topo.exec_prefix(topo.client), uclient, "-W", SECRET, "-u", "six",
                "-e", topo.peer_ip6, "-r", str(peer_port), "-p", str(PORT), "-m", "2",
                "-n", "60", "-l", "170", "-z", "5", "-x", "-g", topo.relay_ip6,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode(errors="replace")
        finally:
            peer.terminate()
            await peer.wait()
        values = await metrics(topo)
    totals = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", out, re.M)
    assert totals, out
    assert int(totals.group(1)) > 0 and totals.group(1) == totals.group(2), out
    assert "Total lost packets 0 (" in out, out
    assert not re.search(r"error \d{3}", out), out
    assert kernel_packets(values, "to_peer") > 0
    assert kernel_packets(values, "to_client") > 0
