"""STUN/TURN protocol behaviour of the relay, driven byte by byte with a raw client.

Each test runs a real relay in this process on 127.0.0.1 and talks to it over real UDP or TCP
sockets. Error codes follow RFC 8489/8656; see the relay README for the full list.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from support.relay import (
    REALM,
    SECRET,
    RawClient,
    credentials,
    echo_peer,
    raw_client,
    relay_server,
    write_keyring,
)

from turnpike.relay import stun
from turnpike.relay.stun import Attr, Class, Method


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    return write_keyring(tmp_path / "keyring.json")


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_binding(keyring: Path, tcp: bool) -> None:
    async with relay_server(keyring) as relay, raw_client(relay.address, tcp) as client:
        reply = await client.transact(stun.Message(Method.BINDING, Class.REQUEST))
        assert reply.cls == Class.SUCCESS
        assert reply.get(Attr.XOR_MAPPED_ADDRESS) == client.local_address
        assert reply.has_fingerprint  # the request had one
        assert relay.server.stats.requests[("binding", "200")] == 1


async def test_binding_without_fingerprint_gets_none(keyring: Path) -> None:
    async with relay_server(keyring) as relay:
        for tcp in (False, True):
            async with raw_client(relay.address, tcp) as client:
                request = stun.Message(Method.BINDING, Class.REQUEST)
                client.send_raw(request.encode())  # no FINGERPRINT
                reply = await client.receive_message()
                assert reply.transaction_id == request.transaction_id
                assert reply.cls == Class.SUCCESS
                assert not reply.has_fingerprint
                assert reply.get(Attr.XOR_MAPPED_ADDRESS) == client.local_address


async def test_classic_binding_and_garbage_on_udp(keyring: Path) -> None:
    async with relay_server(keyring) as relay, raw_client(relay.address) as client:
        client.send_raw(b"\xff" * 40)  # not STUN: silently dropped
        client.send_raw(b"\x00\x01\x00\x00")  # truncated: dropped
        classic = stun.Message(Method.BINDING, Class.REQUEST, bytes(range(16)))
        classic.magic_cookie = False
        client.send_raw(classic.encode())
        reply = stun.parse(await client.receive())
        assert reply.transaction_id == bytes(range(16))
        assert reply.get(Attr.MAPPED_ADDRESS) == client.local_address
        classic.attributes[0x0003] = b"\x00\x00\x00\x00"  # CHANGE-REQUEST: not supported
        client.send_raw(classic.encode())
        reply = stun.parse(await client.receive())
        assert reply.transaction_id == bytes(range(16))
        assert reply.error_code == 420


async def test_challenge_and_credential_failures(keyring: Path) -> None:
    async with relay_server(keyring) as relay:
        async with raw_client(relay.address) as client:
            reply = await client.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert reply.error_code == 401
            assert reply.get(Attr.REALM) == REALM
            assert reply.get(Attr.NONCE)
        cases = {
            "bad_integrity": credentials(secret="not-the-secret"),
            "expired": credentials(ttl=-10),
            "bad_username": ("no-timestamp-here", "whatever"),
        }
        for reason, creds in cases.items():
            async with raw_client(relay.address, credentials=creds) as client:
                reply = await client.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
                assert reply.error_code == 401, reason
                assert relay.server.stats.auth_failures[reason] >= 1
        # MESSAGE-INTEGRITY without USERNAME/REALM/NONCE is a bad request.
        async with raw_client(relay.address) as client:
            msg = stun.Message(Method.ALLOCATE, Class.REQUEST)
            msg.attributes[Attr.REQUESTED_TRANSPORT] = 17
            reply = await client.transact(msg, key=b"k" * 16)
            assert reply.error_code == 400
        assert not relay.server.table


async def test_no_secret_password_or_key_in_any_log_record(
    keyring: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Debug level, success and failure paths: no record, message or extra field carries the
    keyring secret, a TURN password (the REST HMAC) or the long-term key."""
    import logging

    caplog.set_level(logging.DEBUG, logger="turnpike")
    username, password = credentials()
    wrong = credentials(secret="not-the-secret")
    async with relay_server(keyring) as relay, echo_peer() as peer:
        async with raw_client(relay.address, credentials=(username, password)) as client:
            await client.allocate()
            bind = {Attr.CHANNEL_NUMBER: 0x4000, Attr.XOR_PEER_ADDRESS: peer.address}
            assert (await client.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
            denied = {Attr.CHANNEL_NUMBER: 0x4001, Attr.XOR_PEER_ADDRESS: ("10.0.0.1", 80)}
            assert (await client.request(Method.CHANNEL_BIND, denied)).error_code == 403
            key = client.key
            await client.request(Method.REFRESH, {Attr.LIFETIME: 0})
        async with raw_client(relay.address, credentials=wrong) as client:
            reply = await client.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert reply.error_code == 401
    assert key is not None and caplog.records
    forbidden = [SECRET, password, wrong[1], key.hex(), repr(key)]
    for record in caplog.records:
        fields = " ".join(f"{k}={v!r}" for k, v in vars(record).items())
        for secret in forbidden:
            assert secret not in record.getMessage() and secret not in fields, record


async def test_unknown_comprehension_required_attribute_gets_420(keyring: Path) -> None:
    async with relay_server(keyring) as relay, raw_client(relay.address) as client:
        msg = stun.Message(Method.BINDING, Class.REQUEST)
        msg.attributes[0x0777] = b"\x00\x00\x00\x01"
        msg.attributes[0xC0DE] = b"ignored"
        reply = await client.transact(msg)
        assert reply.error_code == 420
        assert reply.get(Attr.UNKNOWN_ATTRIBUTES) == (0x0777,)


async def test_allocate_errors(keyring: Path) -> None:
    async with relay_server(keyring) as relay:
        async with raw_client(relay.address, credentials=credentials()) as client:
            reply = await client.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 6})
            assert reply.error_code == 442
            assert reply.verify_integrity(client.key or b"")  # errors after auth are signed
            reply = await client.request(Method.ALLOCATE, {})
            assert reply.error_code == 400
            v6 = {Attr.REQUESTED_TRANSPORT: 17, Attr.REQUESTED_ADDRESS_FAMILY: 0x02}
            assert (await client.request(Method.ALLOCATE, v6)).error_code == 440
            bad = {Attr.REQUESTED_TRANSPORT: 17, Attr.REQUESTED_ADDRESS_FAMILY: 0x07}
            assert (await client.request(Method.ALLOCATE, bad)).error_code == 440
            both = {Attr.REQUESTED_TRANSPORT: 17, Attr.EVEN_PORT: 0, Attr.RESERVATION_TOKEN: 5}
            assert (await client.request(Method.ALLOCATE, both)).error_code == 400
            unknown_token = {Attr.REQUESTED_TRANSPORT: 17, Attr.RESERVATION_TOKEN: 5}
            assert (await client.request(Method.ALLOCATE, unknown_token)).error_code == 508
            # No allocation yet: Refresh, CreatePermission and ChannelBind are 437.
            assert (await client.request(Method.REFRESH)).error_code == 437
            peers = [("127.0.0.1", 9)]
            assert (await client.request(Method.CREATE_PERMISSION, peers=peers)).error_code == 437
            # DONT-FRAGMENT is accepted (coturn's uclient -g sends it).
            await client.allocate({Attr.DONT_FRAGMENT: True, Attr.LIFETIME: 30})
            alloc = next(iter(relay.server.table.by_tuple.values()))
            relay_socket = alloc.relay.get_extra_info("socket")
            assert relay_socket.getsockopt(socket.IPPROTO_IP, 10) == 2  # IP_PMTUDISC_DO
            # Lifetimes are capped at the maximum (3600 s).
            reply = await client.request(Method.REFRESH, {Attr.LIFETIME: 999_999})
            assert reply.get(Attr.LIFETIME) == 3600
            # A retransmitted Allocate gets the same answer; a new one is a mismatch.
            again = await client.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert again.error_code == 437
        assert len(relay.server.table) == 1


async def test_retransmitted_allocate_gets_the_same_response(keyring: Path) -> None:
    async with (
        relay_server(keyring) as relay,
        raw_client(relay.address, credentials=credentials()) as c,
    ):
        assert (await c.request(Method.REFRESH)).error_code == 437  # learns realm and nonce
        msg = stun.Message(Method.ALLOCATE, Class.REQUEST)
        msg.attributes.update(
            {
                Attr.REQUESTED_TRANSPORT: 17,
                Attr.USERNAME: c.username,
                Attr.REALM: c.realm,
                Attr.NONCE: c.nonce,
            }
        )
        first = await c.transact(msg, c.key)
        second = await c.transact(msg, c.key)
        assert first.cls == Class.SUCCESS
        assert second.raw == first.raw
        assert len(relay.server.table) == 1


async def test_wrong_credentials_on_an_existing_allocation_is_441(keyring: Path) -> None:
    async with relay_server(keyring) as relay:
        async with raw_client(relay.address, credentials=credentials(user="alice")) as client:
            await client.allocate()
            client.login(*credentials(user="mallory"))
            client.key = None
            reply = await client.request(Method.REFRESH, {Attr.LIFETIME: 100})
            assert reply.error_code == 441
            assert len(relay.server.table) == 1


async def test_user_quota_486_and_total_quota(keyring: Path) -> None:
    async with relay_server(keyring, user_quota=2, total_quota=3) as relay:
        clients = [await RawClient.connect(relay.address) for _ in range(4)]
        try:
            for client in clients[:3]:
                client.login(*credentials(user="alice"))
            clients[3].login(*credentials(user="bob"))
            await clients[0].allocate()
            await clients[1].allocate()
            reply = await clients[2].request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert reply.error_code == 486
            await clients[3].allocate()  # another user is not affected
            # Total quota reached (3 with alice's 2 and bob's 1): capacity, 508.
            clients[2].login(*credentials(user="carol"))
            clients[2].key = None
            reply = await clients[2].request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert reply.error_code == 508
        finally:
            for client in clients:
                client.close()


def _two_free_ports() -> tuple[int, int]:
    for base in range(31000, 32000, 2):
        socks = []
        try:
            for port in (base, base + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base, base + 1
    raise RuntimeError("no two adjacent free ports")


async def test_port_exhaustion_508_and_release(keyring: Path) -> None:
    async with relay_server(keyring, relay_ports=_two_free_ports(), user_quota=0) as relay:
        clients = [await RawClient.connect(relay.address) for _ in range(3)]
        try:
            for client in clients:
                client.login(*credentials())
            await clients[0].allocate()
            await clients[1].allocate()
            reply = await clients[2].request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert reply.error_code == 508
            # Deleting an allocation frees its port for the next one.
            reply = await clients[0].request(Method.REFRESH, {Attr.LIFETIME: 0})
            assert reply.cls == Class.SUCCESS
            assert reply.get(Attr.LIFETIME) == 0
            await clients[2].allocate()
        finally:
            for client in clients:
                client.close()


async def test_even_port_and_reservation_token(keyring: Path) -> None:
    async with relay_server(keyring) as relay:
        async with (
            raw_client(relay.address, credentials=credentials()) as a,
            raw_client(relay.address, credentials=credentials()) as b,
        ):
            reply = await a.request(
                Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17, Attr.EVEN_PORT: 0x80}
            )
            assert reply.cls == Class.SUCCESS
            port = reply.get(Attr.XOR_RELAYED_ADDRESS)[1]
            assert port % 2 == 0
            token = reply.get(Attr.RESERVATION_TOKEN)
            assert token is not None
            relayed = await b.allocate({Attr.RESERVATION_TOKEN: token})
            assert relayed[1] == port + 1


def _free_even_block(size: int) -> tuple[int, int]:
    """``size`` adjacent free UDP ports on 127.0.0.1 starting at an even port."""
    for base in range(32000, 33000, size):
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base, base + size - 1
    raise RuntimeError("no free block of ports")


async def test_reserved_port_is_held_for_its_token(keyring: Path) -> None:
    """EVEN-PORT with R reserves port+1: no allocation without the token gets it, the token does,
    and an unused reservation is released when it expires."""
    low, high = _free_even_block(4)
    async with relay_server(keyring, relay_ports=(low, high), user_quota=0) as relay:
        clients = [await RawClient.connect(relay.address) for _ in range(5)]
        try:
            for client in clients:
                client.login(*credentials())
            first, second, third, late, holder = clients
            reply = await first.request(
                Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17, Attr.EVEN_PORT: 0x80}
            )
            assert reply.cls == Class.SUCCESS
            even = reply.get(Attr.XOR_RELAYED_ADDRESS)[1]
            token = reply.get(Attr.RESERVATION_TOKEN)
            assert even % 2 == 0 and token is not None
            # The two other ports go to allocations without the token; then the range is full,
            # though port+1 has no allocation on it.
            others = {(await c.allocate())[1] for c in (second, third)}
            assert others == set(range(low, high + 1)) - {even, even + 1}
            reply = await late.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert reply.error_code == 508
            assert (await holder.allocate({Attr.RESERVATION_TOKEN: token}))[1] == even + 1
            assert relay.server.table.reservations == {}
            # A token is good once.
            reply = await late.request(
                Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17, Attr.RESERVATION_TOKEN: token}
            )
            assert reply.error_code == 508

            # EVEN-PORT without R: an even port and no token. An unused reservation expires.
            for c in (first, second, third, holder):
                assert (await c.request(Method.REFRESH, {Attr.LIFETIME: 0})).cls == Class.SUCCESS
            reply = await second.request(
                Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17, Attr.EVEN_PORT: 0}
            )
            assert reply.cls == Class.SUCCESS
            assert reply.get(Attr.XOR_RELAYED_ADDRESS)[1] % 2 == 0
            assert Attr.RESERVATION_TOKEN not in reply
            reply = await third.request(
                Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17, Attr.EVEN_PORT: 0x80}
            )
            assert reply.cls == Class.SUCCESS
            stale = reply.get(Attr.RESERVATION_TOKEN)
            assert stale is not None
            reserved = reply.get(Attr.XOR_RELAYED_ADDRESS)[1] + 1
            relay.server.table.sweep(time.monotonic() + 3600)  # allocations and reservation
            assert relay.server.table.reservations == {}
            assert relay.server.table.pool.in_use == set()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", reserved))  # really closed
            reply = await holder.request(
                Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17, Attr.RESERVATION_TOKEN: stale}
            )
            assert reply.error_code == 508
        finally:
            for client in clients:
                client.close()


async def test_stale_nonce_438_and_recovery(keyring: Path) -> None:
    async with relay_server(keyring, nonce_lifetime=1.0) as relay:
        async with raw_client(relay.address, credentials=credentials()) as client:
            await client.allocate()
            await asyncio.sleep(2.1)
            msg = stun.Message(Method.REFRESH, Class.REQUEST)
            msg.attributes.update(
                {
                    Attr.LIFETIME: 300,
                    Attr.USERNAME: client.username,
                    Attr.REALM: client.realm,
                    Attr.NONCE: client.nonce,
                }
            )
            reply = await client.transact(msg, client.key)
            assert reply.error_code == 438
            fresh = reply.get(Attr.NONCE)
            assert fresh and fresh != client.nonce
            client.nonce = fresh
            msg.attributes[Attr.NONCE] = fresh
            msg.transaction_id = stun.new_transaction_id()
            reply = await client.transact(msg, client.key)
            assert reply.cls == Class.SUCCESS
            assert reply.get(Attr.LIFETIME) == 300
        assert relay.server.stats.auth_failures["stale_nonce"] == 1


async def test_nonce_from_another_pod_of_the_same_edge(tmp_path: Path) -> None:
    """Stateless nonces: a client moving to another relay pod pays no 438 as long as the pods
    share one keyring key (even mid-rotation, with different signing keys); a relay with an
    unrelated keyring answers 438 with a fresh nonce."""
    same = write_keyring(tmp_path / "same.json")
    rotated = write_keyring(
        tmp_path / "rotated.json", [("k2", "next-secret", True), ("k1", SECRET, False)]
    )
    unrelated = write_keyring(tmp_path / "unrelated.json", [("k9", "other-edge", True)])
    async with (
        relay_server(same) as a,
        relay_server(same) as b,
        relay_server(rotated) as c,
        relay_server(unrelated) as d,
        raw_client(a.address, credentials=credentials()) as client,
    ):
        await client.allocate()
        nonce = client.nonce
        for relay, expected in ((b, 437), (c, 437), (d, 438)):
            # Same client IP; the nonce is bound to the IP, not the port.
            async with raw_client(relay.address) as moved:
                msg = stun.Message(Method.REFRESH, Class.REQUEST)
                msg.attributes.update(
                    {
                        Attr.USERNAME: client.username,
                        Attr.REALM: client.realm,
                        Attr.NONCE: nonce,
                    }
                )
                reply = await moved.transact(msg, client.key)
                assert reply.error_code == expected
                if expected == 438:
                    assert reply.get(Attr.NONCE) not in (None, nonce)


async def test_send_and_data_indications(keyring: Path) -> None:
    async with (
        relay_server(keyring) as relay,
        echo_peer() as peer,
        raw_client(relay.address, credentials=credentials()) as client,
    ):
        relayed = await client.allocate()
        send = stun.Message(Method.SEND, Class.INDICATION)
        send.attributes[Attr.XOR_PEER_ADDRESS] = peer.address
        send.attributes[Attr.DATA] = b"before permission"
        client.send_raw(send.encode())
        await asyncio.sleep(0.2)
        assert peer.received == []  # no permission: dropped
        reply = await client.request(Method.CREATE_PERMISSION, peers=[peer.address])
        assert reply.cls == Class.SUCCESS
        for i in range(20):
            send = stun.Message(Method.SEND, Class.INDICATION)
            send.attributes[Attr.XOR_PEER_ADDRESS] = peer.address
            send.attributes[Attr.DATA] = b"hello %d" % i
            send.attributes[Attr.DONT_FRAGMENT] = True
            client.send_raw(send.encode())
            data = stun.parse(await client.receive())
            assert (data.method, data.cls) == (Method.DATA, Class.INDICATION)
            assert data.get(Attr.DATA) == b"hello %d" % i
            assert data.get(Attr.XOR_PEER_ADDRESS) == peer.address
        assert {addr for _, addr in peer.received} == {relayed}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_channels(keyring: Path, tcp: bool) -> None:
    async with (
        relay_server(keyring) as relay,
        echo_peer() as peer,
        echo_peer() as other,
        raw_client(relay.address, tcp, credentials=credentials()) as client,
    ):
        await client.allocate()
        for bad in (0x3FFF, 0x8000, 0xFFFF):
            reply = await client.request(
                Method.CHANNEL_BIND, {Attr.CHANNEL_NUMBER: bad, Attr.XOR_PEER_ADDRESS: peer.address}
            )
            assert reply.error_code == 400
        bind = {Attr.CHANNEL_NUMBER: 0x4001, Attr.XOR_PEER_ADDRESS: peer.address}
        assert (await client.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
        assert (await client.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS  # refresh
        # The number is taken by another peer, and the peer already has a number.
        taken = {Attr.CHANNEL_NUMBER: 0x4001, Attr.XOR_PEER_ADDRESS: other.address}
        assert (await client.request(Method.CHANNEL_BIND, taken)).error_code == 400
        second = {Attr.CHANNEL_NUMBER: 0x4002, Attr.XOR_PEER_ADDRESS: peer.address}
        assert (await client.request(Method.CHANNEL_BIND, second)).error_code == 400
        # A family the relay does not have: 443.
        v6 = {Attr.CHANNEL_NUMBER: 0x4003, Attr.XOR_PEER_ADDRESS: ("2001:4860::1", 9)}
        assert (await client.request(Method.CHANNEL_BIND, v6)).error_code == 443
        for size in (1, 2, 3, 4, 5, 100, 1201):
            payload = bytes([size % 251]) * size
            client.send_channel(0x4001, payload)
            echoed = await client.receive()
            assert echoed[:2] == b"\x40\x01"
            assert int.from_bytes(echoed[2:4], "big") == size
            assert echoed[4 : 4 + size] == payload
        client.send_channel(0x4555, b"unbound channel")  # dropped, not an error
        await asyncio.sleep(0.1)
        assert relay.server.table.by_tuple and all(
            a.traffic.dropped >= 1 for a in relay.server.table.by_tuple.values()
        )


async def test_relay_to_relay_on_the_same_server(keyring: Path) -> None:
    async with (
        relay_server(keyring) as relay,
        raw_client(relay.address, credentials=credentials(user="a")) as a,
        raw_client(relay.address, tcp=True, credentials=credentials(user="b")) as b,
    ):
        relay_a = await a.allocate()
        relay_b = await b.allocate()
        bind_a = {Attr.CHANNEL_NUMBER: 0x4000, Attr.XOR_PEER_ADDRESS: relay_b}
        bind_b = {Attr.CHANNEL_NUMBER: 0x4FFF, Attr.XOR_PEER_ADDRESS: relay_a}
        assert (await a.request(Method.CHANNEL_BIND, bind_a)).cls == Class.SUCCESS
        assert (await b.request(Method.CHANNEL_BIND, bind_b)).cls == Class.SUCCESS
        a.send_channel(0x4000, b"from a")
        got = await b.receive()
        assert got == stun.channel_header(0x4FFF, 6) + b"from a" + bytes(2)  # TCP pads
        b.send_channel(0x4FFF, b"from b!")
        assert await a.receive() == stun.channel_header(0x4000, 7) + b"from b!"


async def test_lifetimes_expire(keyring: Path) -> None:
    async with (
        relay_server(keyring, permission_lifetime=2, sweep_interval=0.2) as relay,
        echo_peer() as peer,
        raw_client(relay.address, credentials=credentials()) as client,
        raw_client(relay.address, credentials=credentials()) as short,
    ):
        await client.allocate()
        relayed = await short.allocate({Attr.LIFETIME: 1})
        assert (
            await client.request(Method.CREATE_PERMISSION, peers=[peer.address])
        ).cls == Class.SUCCESS
        send = stun.Message(Method.SEND, Class.INDICATION)
        send.attributes.update({Attr.XOR_PEER_ADDRESS: peer.address, Attr.DATA: b"x"})
        client.send_raw(send.encode())
        await client.receive()
        await asyncio.sleep(2.6)
        # The short allocation is gone and its port is free again.
        assert len(relay.server.table) == 1
        assert relay.server.stats.allocations_removed["expired"] == 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(relayed)
        # The permission expired: Send is dropped again.
        peer.received.clear()
        client.send_raw(send.encode())
        await asyncio.sleep(0.2)
        assert peer.received == []


async def test_unauthenticated_udp_replies_are_rate_limited(keyring: Path) -> None:
    async with relay_server(keyring, unauthorized_rate=5.0) as relay:
        async with raw_client(relay.address) as client:
            for _ in range(40):
                msg = stun.Message(Method.ALLOCATE, Class.REQUEST)
                msg.attributes[Attr.REQUESTED_TRANSPORT] = 17
                client.send_raw(msg.encode())
            answers = 0
            try:
                while True:
                    await client.receive(0.3)
                    answers += 1
            except TimeoutError:
                pass
            assert 1 <= answers <= 10
            assert relay.server.stats.unauthorized_dropped >= 30
        async with raw_client(relay.address, tcp=True) as client:  # TCP proves its source
            for _ in range(20):
                msg = stun.Message(Method.ALLOCATE, Class.REQUEST)
                msg.attributes[Attr.REQUESTED_TRANSPORT] = 17
                reply = await client.transact(msg)
                assert reply.error_code == 401


async def test_udp_401_rate_limit_is_per_source_address(keyring: Path) -> None:
    """One flooding source uses up its own budget only: another source IP still gets its 401."""
    async with relay_server(keyring, unauthorized_rate=2.0) as relay:
        async with raw_client(relay.address) as flood:
            for _ in range(30):
                msg = stun.Message(Method.ALLOCATE, Class.REQUEST)
                msg.attributes[Attr.REQUESTED_TRANSPORT] = 17
                flood.send_raw(msg.encode())
            for _ in range(250):
                if relay.server.stats.unauthorized_dropped >= 20:
                    break
                await asyncio.sleep(0.02)
            assert relay.server.stats.unauthorized_dropped >= 20
            async with raw_client(relay.address, local_host="127.0.0.2") as other:
                assert other.local_address[0] == "127.0.0.2"
                msg = stun.Message(Method.ALLOCATE, Class.REQUEST)
                msg.attributes[Attr.REQUESTED_TRANSPORT] = 17
                other.send_raw(msg.encode())
                reply = await other.receive_message()
                assert reply.transaction_id == msg.transaction_id
                assert reply.error_code == 401
                assert reply.get(Attr.NONCE)


async def test_tcp_connection_close_ends_its_allocation(keyring: Path) -> None:
    async with relay_server(keyring) as relay:
        async with raw_client(relay.address, tcp=True, credentials=credentials()) as client:
            await client.allocate()
            assert len(relay.server.table) == 1
        for _ in range(40):
            if not relay.server.table:
                break
            await asyncio.sleep(0.05)
        assert len(relay.server.table) == 0
        assert relay.server.stats.allocations_removed["connection_closed"] == 1


async def test_ipv6_relay_over_loopback(keyring: Path) -> None:
    async with (
        relay_server(keyring, allow_peer=("::1/128",), relay_ips=("127.0.0.1", "::1")) as relay,
        echo_peer("::1") as peer,
        raw_client(relay.address, credentials=credentials()) as client,
    ):
        relayed = await client.allocate({Attr.REQUESTED_ADDRESS_FAMILY: 0x02})
        assert relayed[0] == "::1"
        bind = {Attr.CHANNEL_NUMBER: 0x4010, Attr.XOR_PEER_ADDRESS: peer.address}
        assert (await client.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
        client.send_channel(0x4010, b"over ipv6")
        assert await client.receive() == stun.channel_header(0x4010, 9) + b"over ipv6"
        # An IPv4 peer on an IPv6 allocation: 443.
        v4 = {Attr.CHANNEL_NUMBER: 0x4011, Attr.XOR_PEER_ADDRESS: ("8.8.8.8", 53)}
        assert (await client.request(Method.CHANNEL_BIND, v4)).error_code == 443
        # Refresh naming the other family: 443 as well.
        reply = await client.request(
            Method.REFRESH, {Attr.REQUESTED_ADDRESS_FAMILY: 0x01, Attr.LIFETIME: 60}
        )
        assert reply.error_code == 443


async def test_bandwidth_limit_drops_the_excess(keyring: Path) -> None:
    # 16 kbit/s = 2000 bytes/s with one second of burst; a 10 kB burst cannot all get through.
    async with (
        relay_server(keyring, max_bps=16_000) as relay,
        echo_peer() as peer,
        raw_client(relay.address, credentials=credentials()) as client,
    ):
        peer.echo = False
        await client.allocate()
        bind = {Attr.CHANNEL_NUMBER: 0x4000, Attr.XOR_PEER_ADDRESS: peer.address}
        assert (await client.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
        for _ in range(50):
            client.send_channel(0x4000, bytes(200))
        await asyncio.sleep(0.3)
        assert 5 <= len(peer.received) < 25
        alloc = next(iter(relay.server.table.by_tuple.values()))
        assert alloc.traffic.dropped == 50 - len(peer.received)


async def test_tcp_connection_without_allocation_is_closed(
    keyring: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from turnpike.relay import transports

    monkeypatch.setattr(transports, "ALLOCATE_TIMEOUT", 0.3)
    async with relay_server(keyring) as relay:
        async with raw_client(relay.address, tcp=True) as idle:
            await asyncio.wait_for(idle.proto.closed.wait(), 3)
        async with raw_client(relay.address, tcp=True, credentials=credentials()) as client:
            await client.allocate()
            await asyncio.sleep(0.6)
            assert not client.proto.closed.is_set()  # an allocation keeps it open


async def test_slow_tcp_reader_does_not_make_the_relay_buffer_without_bound(keyring: Path) -> None:
    from turnpike.relay.allocation import STREAM_WRITE_LIMIT

    async with (
        relay_server(keyring) as relay,
        echo_peer() as peer,
        raw_client(relay.address, tcp=True, credentials=credentials()) as client,
    ):
        peer.echo = False
        relayed = await client.allocate()
        bind = {Attr.CHANNEL_NUMBER: 0x4000, Attr.XOR_PEER_ADDRESS: peer.address}
        assert (await client.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
        client.transport.pause_reading()  # type: ignore[attr-defined]
        assert peer.transport is not None
        alloc = next(iter(relay.server.table.by_tuple.values()))
        payload = bytes(1200)
        for round_ in range(200):
            for _ in range(100):
                peer.transport.sendto(payload, relayed)
            await asyncio.sleep(0.005)
            if alloc.traffic.dropped and round_ > 10:
                break
        sink = alloc.client.transport
        assert sink.get_write_buffer_size() <= STREAM_WRITE_LIMIT + 1300  # type: ignore[attr-defined]
        assert alloc.traffic.dropped > 0


async def test_external_ip_is_advertised(keyring: Path) -> None:
    async with (
        relay_server(keyring, external_ips=("198.51.100.7",)) as relay,
        raw_client(relay.address, credentials=credentials()) as client,
    ):
        relayed = await client.allocate()
        assert relayed[0] == "198.51.100.7"
        alloc = next(iter(relay.server.table.by_tuple.values()))
        assert alloc.relayed == ("127.0.0.1", relayed[1])  # bound locally, advertised outside


async def test_permissions_per_allocation_are_bounded(keyring: Path) -> None:
    async with (
        relay_server(keyring, max_permissions=3) as relay,
        raw_client(relay.address, credentials=credentials()) as client,
    ):
        await client.allocate()
        peers = [(f"127.0.0.{n}", 9) for n in range(1, 4)]
        assert (await client.request(Method.CREATE_PERMISSION, peers=peers)).cls == Class.SUCCESS
        # Refreshing existing permissions is fine; a fourth peer is not.
        assert (await client.request(Method.CREATE_PERMISSION, peers=peers)).cls == Class.SUCCESS
        fourth = [("127.0.0.4", 9)]
        assert (await client.request(Method.CREATE_PERMISSION, peers=fourth)).error_code == 508
        bind = {Attr.CHANNEL_NUMBER: 0x4000, Attr.XOR_PEER_ADDRESS: fourth[0]}
        assert (await client.request(Method.CHANNEL_BIND, bind)).error_code == 508


async def test_ipv6_listener(keyring: Path) -> None:
    from turnpike.core.filewatch import FileWatcher
    from turnpike.core.keyring import parse_keyring
    from turnpike.relay.server import RelayConfig, RelayServer
    from turnpike.relay.transports import Listeners

    watcher = FileWatcher(keyring, parse_keyring)
    config = RelayConfig(
        realm="v6", relay_ips=("::1",), relay_ports=(20000, 29999), allow_peer=("::1/128",)
    )
    server = RelayServer(config, lambda: watcher.current)
    listeners = Listeners(server)
    address = await listeners.listen("::1", 0)
    try:
        for tcp in (False, True):
            async with raw_client(address, tcp, credentials=credentials()) as client:
                reply = await client.transact(stun.Message(Method.BINDING, Class.REQUEST))
                assert reply.get(Attr.XOR_MAPPED_ADDRESS) == client.local_address
                relayed = await client.allocate()  # no family requested: the listener's
                assert relayed[0] == "::1"
    finally:
        await listeners.close()
        await server.close()


async def test_relay_to_relay_behind_nat_does_not_need_hairpinning(keyring: Path) -> None:
    """With --external-ip, clients know each other's relays by the external address. The relay
    binds 127.0.0.1 and advertises 127.0.0.2 here: nothing listens on 127.0.0.2, so only the
    in-process hand-over can deliver, like a NAT that does not hairpin."""
    async with (
        relay_server(keyring, external_ips=("127.0.0.2",)) as relay,
        raw_client(relay.address, credentials=credentials(user="a")) as a,
        raw_client(relay.address, tcp=True, credentials=credentials(user="b")) as b,
    ):
        relay_a = await a.allocate()
        relay_b = await b.allocate()
        assert relay_a[0] == relay_b[0] == "127.0.0.2"
        bind_a = {Attr.CHANNEL_NUMBER: 0x4000, Attr.XOR_PEER_ADDRESS: relay_b}
        assert (await a.request(Method.CHANNEL_BIND, bind_a)).cls == Class.SUCCESS
        assert (await b.request(Method.CREATE_PERMISSION, peers=[relay_a])).cls == Class.SUCCESS
        a.send_channel(0x4000, b"via channel")
        data = stun.parse(await b.receive())  # b has no channel: a Data indication
        assert data.get(Attr.XOR_PEER_ADDRESS) == relay_a
        assert data.get(Attr.DATA) == b"via channel"
        send = stun.Message(Method.SEND, Class.INDICATION)
        send.attributes.update({Attr.XOR_PEER_ADDRESS: relay_a, Attr.DATA: b"via send"})
        b.send_raw(send.encode())
        assert await a.receive() == stun.channel_header(0x4000, 8) + b"via send"
        # Once b's allocation ends, the hand-over entry goes with it.
        await b.request(Method.REFRESH, {Attr.LIFETIME: 0})
        assert list(relay.server.hairpin) == [relay_a]
