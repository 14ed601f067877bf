"""The peer filter, the relay's SSRF defence: every spelling of a non-global address is refused.

CVE-2020-26262 (0.0.0.0, ::1, ::) and CVE-2026-27624 (IPv4-mapped IPv6) are the classic bypasses;
NAT64, 6to4 and Teredo forms embed an IPv4 address the relay must judge too. No test here sends a
packet anywhere but loopback: a refused permission never lets one out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.relay import credentials, echo_peer, raw_client, relay_server, write_keyring

from turnpike.relay import stun
from turnpike.relay.stun import Attr, Class, Method

FORBIDDEN = [
    "169.254.169.254",  # cloud metadata
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.100.100.200",  # Alibaba metadata, inside 100.64/10
    "127.0.0.1",  # loopback without the allow-list
    "127.1.2.3",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.10",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "::1",
    "::",
    "::127.0.0.1",  # deprecated IPv4-compatible
    "fe80::1",
    "::ffff:0:7f00:1",  # IPv4-translated (RFC 2765) loopback
    "::ffff:0:a9fe:a9fe",  # IPv4-translated 169.254.169.254
    "::ffff:0:808:808",  # IPv4-translated, never a global unicast address on the wire
    "fec0::1",  # deprecated site-local (RFC 3879)
    "feff:ffff::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS IPv6 metadata
    "ff02::1",  # multicast
    "2001:db8::1",
]


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    return write_keyring(tmp_path / "keyring.json")


@pytest.mark.parametrize("family", [0x01, 0x02], ids=["ipv4-relay", "ipv6-relay"])
async def test_every_forbidden_form_is_refused(keyring: Path, family: int) -> None:
    async with (
        relay_server(keyring, allow_peer=(), relay_ips=("127.0.0.1", "::1")) as relay,
        raw_client(relay.address, credentials=credentials()) as client,
    ):
        await client.allocate({Attr.REQUESTED_ADDRESS_FAMILY: family})
        for n, ip in enumerate(FORBIDDEN):
            peer = (ip, 3478)
            reply = await client.request(Method.CREATE_PERMISSION, peers=[peer])
            assert reply.error_code == 403, ip
            bind = {Attr.CHANNEL_NUMBER: 0x4000 + n, Attr.XOR_PEER_ADDRESS: peer}
            reply = await client.request(Method.CHANNEL_BIND, bind)
            assert reply.error_code == 403, ip
            send = stun.Message(Method.SEND, Class.INDICATION)
            send.attributes.update({Attr.XOR_PEER_ADDRESS: peer, Attr.DATA: b"GET / HTTP/1.0"})
            client.send_raw(send.encode())
        # A permission request with one bad address among good ones is refused as a whole.
        good = ("8.8.8.8", 53) if family == 0x01 else ("2001:4860:4860::8888", 53)
        reply = await client.request(Method.CREATE_PERMISSION, peers=[good, ("10.0.0.1", 1)])
        assert reply.error_code == 403
        # A global address is fine (a permission sends nothing by itself).
        reply = await client.request(Method.CREATE_PERMISSION, peers=[good])
        assert reply.cls == Class.SUCCESS
        await asyncio.sleep(0.1)
        stats = relay.server.stats.peer_denied
        assert stats["create_permission"] == len(FORBIDDEN) + 1
        assert stats["channel_bind"] == len(FORBIDDEN)
        assert stats["send"] == len(FORBIDDEN)
        alloc = next(iter(relay.server.table.by_tuple.values()))
        assert list(alloc.permissions) == [good[0]]
        assert alloc.channels == {}
        assert alloc.traffic.to_peer_packets == 0


async def test_allow_and_deny_lists(keyring: Path) -> None:
    async with (
        relay_server(keyring, allow_peer=("127.0.0.0/8",), deny_peer=("8.8.8.0/24",)) as relay,
        echo_peer() as peer,
        raw_client(relay.address, credentials=credentials()) as client,
    ):
        await client.allocate()
        # The allow-list opens loopback, and only loopback.
        assert (await client.request(Method.CREATE_PERMISSION, peers=[peer.address])).cls == (
            Class.SUCCESS
        )
        for ip in ("169.254.169.254", "10.0.0.1", "8.8.8.8", "::ffff:169.254.169.254"):
            reply = await client.request(Method.CREATE_PERMISSION, peers=[(ip, 80)])
            assert reply.error_code == 403, ip
        # NAT64 of an allowed IPv4 address is still refused: the IPv6 form is not allow-listed.
        reply = await client.request(Method.CREATE_PERMISSION, peers=[("64:ff9b::7f00:1", 80)])
        assert reply.error_code == 403
        # Allowed traffic flows.
        send = stun.Message(Method.SEND, Class.INDICATION)
        send.attributes.update({Attr.XOR_PEER_ADDRESS: peer.address, Attr.DATA: b"ok"})
        client.send_raw(send.encode())
        reply = stun.parse(await client.receive())
        assert reply.get(Attr.DATA) == b"ok"
