"""Stream framing on TCP and TLS, the default lifetimes, and a credential expiring mid-allocation.

Everything runs against a real relay in this process over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from support.relay import (
    REALM,
    TEST_PORTS,
    credentials,
    echo_peer,
    raw_client,
    relay_server,
    write_keyring,
    write_self_signed,
)

from turnpike.core.filewatch import FileWatcher
from turnpike.core.keyring import parse_keyring
from turnpike.core.tls import tls_context
from turnpike.relay import stun
from turnpike.relay.server import RelayConfig, RelayServer
from turnpike.relay.stun import Attr, Class, Method
from turnpike.relay.transports import Listeners


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    return write_keyring(tmp_path / "keyring.json")


@asynccontextmanager
async def tls_relay(
    keyring: Path, folder: Path
) -> AsyncIterator[tuple[RelayServer, tuple[str, int], ssl.SSLContext]]:
    """A relay listening only on a TLS (or sniffed plain TCP) port; yields a client context."""
    cert, key = write_self_signed(folder)
    watcher = FileWatcher(keyring, parse_keyring)
    config = RelayConfig(
        realm=REALM, relay_ips=("127.0.0.1",), relay_ports=TEST_PORTS, allow_peer=("127.0.0.0/8",)
    )
    server = RelayServer(config, lambda: watcher.current)
    listeners = Listeners(server)
    address = await listeners.listen("127.0.0.1", 0, tls=tls_context(str(cert), str(key)))
    server.start()
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    try:
        yield server, address, client_ctx
    finally:
        await listeners.close()
        await server.close()


async def test_binding_and_channel_data_over_tls(keyring: Path, tmp_path: Path) -> None:
    async with (
        tls_relay(keyring, tmp_path) as (server, address, ctx),
        echo_peer() as peer,
        raw_client(address, tls=ctx, credentials=credentials()) as client,
    ):
        assert client.transport.get_extra_info("ssl_object") is not None
        reply = await client.transact(stun.Message(Method.BINDING, Class.REQUEST))
        assert reply.cls == Class.SUCCESS
        assert reply.get(Attr.XOR_MAPPED_ADDRESS) == client.local_address
        assert reply.has_fingerprint
        await client.allocate()
        bind = {Attr.CHANNEL_NUMBER: 0x4321, Attr.XOR_PEER_ADDRESS: peer.address}
        assert (await client.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
        client.send_channel(0x4321, b"odd")  # 3 bytes: padded to 4 on the stream both ways
        assert await client.receive() == stun.channel_header(0x4321, 3) + b"odd" + bytes(1)
        assert server.stats.requests[("binding", "200")] == 1


_BAD_FINGERPRINT = stun.Message(Method.BINDING, Class.REQUEST).encode(fingerprint=True)[:-1] + b"?"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 24,  # neither STUN (00-3F) nor ChannelData (40-7F)
        b"\x00\x01\x00\x03" + bytes(16),  # STUN length not a multiple of 4
        b"\x00\x01\xff\xfc" + bytes(16),  # STUN length beyond any real message
        _BAD_FINGERPRINT,  # framed like STUN, but does not parse
    ],
    ids=["high-bytes", "odd-length", "huge-length", "bad-fingerprint"],
)
async def test_garbage_on_a_stream_closes_the_connection(
    keyring: Path, tmp_path: Path, garbage: bytes
) -> None:
    async with relay_server(keyring) as relay:
        async with raw_client(relay.address, tcp=True, credentials=credentials()) as client:
            await client.allocate()
            client.transport.write(garbage)  # type: ignore[attr-defined]
            await asyncio.wait_for(client.proto.closed.wait(), 3)
        assert relay.server.stats.malformed["tcp"] == 1
        for _ in range(40):  # the allocation ends with its connection
            if not relay.server.table:
                break
            await asyncio.sleep(0.05)
        assert len(relay.server.table) == 0
        # The listener itself is fine.
        async with raw_client(relay.address, tcp=True) as client:
            reply = await client.transact(stun.Message(Method.BINDING, Class.REQUEST))
            assert reply.cls == Class.SUCCESS
    async with (
        tls_relay(keyring, tmp_path) as (server, address, ctx),
        raw_client(address, tls=ctx) as client,
    ):
        client.transport.write(garbage)  # type: ignore[attr-defined]
        await asyncio.wait_for(client.proto.closed.wait(), 3)
        assert server.stats.malformed["tls"] == 1


async def test_default_lifetimes(keyring: Path) -> None:
    """Allocate and Refresh without LIFETIME: 600 s; CreatePermission 300 s; ChannelBind 600 s."""
    async with (
        relay_server(keyring) as relay,
        echo_peer() as peer,
        echo_peer() as other,
        raw_client(relay.address, credentials=credentials()) as client,
    ):
        reply = await client.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
        assert reply.get(Attr.LIFETIME) == 600
        alloc = next(iter(relay.server.table.by_tuple.values()))
        assert 590 < alloc.expires - time.monotonic() <= 600
        alloc.expires -= 500  # as if 500 s had passed: a Refresh without LIFETIME restores 600 s
        reply = await client.request(Method.REFRESH)
        assert reply.get(Attr.LIFETIME) == 600
        assert 590 < alloc.expires - time.monotonic() <= 600
        # A LIFETIME below the default is granted as asked; above the cap it is capped.
        assert (await client.request(Method.REFRESH, {Attr.LIFETIME: 60})).get(Attr.LIFETIME) == 60
        assert (await client.request(Method.REFRESH, {Attr.LIFETIME: 7200})).get(
            Attr.LIFETIME
        ) == 3600

        assert (
            await client.request(Method.CREATE_PERMISSION, peers=[peer.address])
        ).cls == Class.SUCCESS
        assert 290 < alloc.permissions[peer.address[0]] - time.monotonic() <= 300
        bind = {Attr.CHANNEL_NUMBER: 0x4000, Attr.XOR_PEER_ADDRESS: other.address}
        assert (await client.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
        assert 590 < alloc.channel_expiry[0x4000] - time.monotonic() <= 600
        # The ChannelBind installed the permission, for as long as the channel.
        assert 590 < alloc.permissions[other.address[0]] - time.monotonic() <= 600


async def test_live_allocation_outlives_its_credential_expiry(keyring: Path) -> None:
    """The username's expiry is checked on Allocate only; a live allocation keeps working."""
    username, password = credentials(ttl=2)
    async with (
        relay_server(keyring) as relay,
        echo_peer() as peer,
        raw_client(relay.address, credentials=(username, password)) as live,
    ):
        await live.allocate()
        bind = {Attr.CHANNEL_NUMBER: 0x4000, Attr.XOR_PEER_ADDRESS: peer.address}
        assert (await live.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
        expiry = int(username.split(":")[0])
        await asyncio.sleep(expiry + 0.6 - time.time())  # until the username has expired
        # The same, now expired, credential: the live allocation refreshes and relays...
        reply = await live.request(Method.REFRESH, {Attr.LIFETIME: 300})
        assert reply.cls == Class.SUCCESS
        assert (await live.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
        live.send_channel(0x4000, b"after expiry")
        assert (await live.receive())[4:] == b"after expiry"
        # ...but a new Allocate with it is refused.
        async with raw_client(relay.address, credentials=(username, password)) as late:
            reply = await late.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert reply.error_code == 401
        assert relay.server.stats.auth_failures["expired"] == 1
        assert len(relay.server.table) == 1
