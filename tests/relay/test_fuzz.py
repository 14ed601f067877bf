"""Fuzzing the relay over real sockets: random, truncated and mutated datagrams and TCP streams.

Afterwards the relay must still answer, and once every allocation has expired no allocation, relay
port, reservation or file descriptor may be left behind.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.relay import RawClient, credentials, echo_peer, raw_client, relay_server, write_keyring

from turnpike.relay import stun
from turnpike.relay.auth import Failure, long_term_key
from turnpike.relay.fairshare import ALLOCATION_REFUSALS, CONNECTION_LIMIT, CONNECTION_RESERVE
from turnpike.relay.metrics import METHOD_NAMES, registry_for
from turnpike.relay.server import UNKNOWN_RESERVATION, RelayServer
from turnpike.relay.stun import ATTRIBUTES, Attr, Class, Method

pytestmark = pytest.mark.slow

METHODS = [int(m) for m in Method] + [0x002, 0x00A, 0xFFF]
CLASSES = [int(c) for c in Class]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def random_value(rng: random.Random, attr: int, peer: tuple[str, int]) -> Any:
    """Mostly well-formed values (so handlers run), sometimes raw junk (so decoders run)."""
    if rng.random() < 0.25:
        return rng.randbytes(rng.choice([0, 1, 3, 4, 7, 8, 20, 33]))
    choices: dict[int, Any] = {
        Attr.XOR_PEER_ADDRESS: rng.choice(
            [peer, ("169.254.169.254", 80), ("::ffff:127.0.0.1", 1), ("127.0.0.1", 0)]
        ),
        Attr.CHANNEL_NUMBER: rng.choice([0x4000, 0x4001, 0x3FFF, 0x7FFF, 0x8000, 0]),
        Attr.LIFETIME: rng.choice([0, 1, 30, 600, 2**32 - 1]),
        Attr.REQUESTED_TRANSPORT: rng.choice([17, 6, 0, 255]),
        Attr.REQUESTED_ADDRESS_FAMILY: rng.choice([1, 2, 3]),
        Attr.EVEN_PORT: rng.choice([0, 0x80, 0xFF]),
        Attr.RESERVATION_TOKEN: rng.getrandbits(64),
        Attr.DONT_FRAGMENT: True,
        Attr.DATA: rng.randbytes(rng.randrange(0, 300)),
    }
    return choices.get(attr, rng.randbytes(4))


def check_metric_labels(server: RelayServer, username: str) -> None:
    """After thousands of hostile requests every label value is still from a small fixed set:
    unknown methods fold into "other", and no username, address or port becomes a label."""
    text = generate_latest(registry_for(server.stats, server.table)).decode()
    allowed = {
        "method": {*METHOD_NAMES.values(), "other"},
        "reason": {f.value for f in Failure}
        | {"expired", "deleted", "connection_closed", "shutdown"}
        | {r.label for r in ALLOCATION_REFUSALS}
        | {CONNECTION_LIMIT, CONNECTION_RESERVE, UNKNOWN_RESERVATION.label},
        "where": {"allocate", "accept"},
        "direction": {"to_peer", "to_client"},
        "transport": {"udp", "tcp", "tls"},
    }
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                seen.setdefault(label, set()).add(value)
                if label == "code":
                    assert value.isdigit() and len(value) == 3, value
                    assert value != "500", sample  # no handler raised on hostile input
                else:
                    assert value in allowed[label], (sample.name, label, value)
    assert set(seen) <= {*allowed, "code"}
    # The families the issue names are there, with the fuzz's refusals counted.
    assert re.search(r'^turnpike_relay_auth_failures_total\{reason="\w+"\} [1-9]', text, re.M)
    assert re.search(r'^turnpike_relay_peer_denied_total\{method="\w+"\} [1-9]', text, re.M)
    assert re.search(r'^turnpike_relay_requests_total\{code="\d{3}",method="other"\}', text, re.M)
    for secret in (username, username.split(":")[1], "127.0.0.1", "169.254"):
        assert secret not in text


async def test_fuzz_udp_and_tcp(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    keyring = write_keyring(tmp_path / "keyring.json")
    fds_before = open_fds()
    async with (
        relay_server(keyring, unauthorized_rate=0, user_quota=0) as relay,
        echo_peer() as peer,
    ):
        server: RelayServer = relay.server
        username, password = credentials()
        async with raw_client(relay.address, credentials=(username, password)) as probe:
            await probe.allocate({Attr.LIFETIME: 30})  # learn realm/nonce, and an allocation
            realm, nonce = probe.realm, probe.nonce
        key = long_term_key(username, realm or "", password)
        turn_attrs = [
            Attr.XOR_PEER_ADDRESS,
            Attr.CHANNEL_NUMBER,
            Attr.LIFETIME,
            Attr.REQUESTED_TRANSPORT,
            Attr.REQUESTED_ADDRESS_FAMILY,
            Attr.EVEN_PORT,
            Attr.RESERVATION_TOKEN,
            Attr.DONT_FRAGMENT,
            Attr.DATA,
        ]
        attr_types = [*turn_attrs * 6, *ATTRIBUTES, 0x0777, 0x7FFF, 0xBEEF]

        def valid_request() -> bytes:
            msg = stun.Message(rng.choice(METHODS), rng.choice(CLASSES))
            if rng.random() < 0.6:
                msg.cls = Class.REQUEST if msg.method != Method.SEND else Class.INDICATION
            for attr in {rng.choice(attr_types) for _ in range(rng.randrange(0, 6))}:
                if attr in (Attr.MESSAGE_INTEGRITY, Attr.FINGERPRINT):
                    continue
                msg.attributes[attr] = random_value(rng, attr, peer.address)
            if rng.random() < 0.8:
                msg.attributes[Attr.USERNAME] = username
                msg.attributes[Attr.REALM] = realm
                msg.attributes[Attr.NONCE] = nonce
                return msg.encode(key, fingerprint=rng.random() < 0.5)
            return msg.encode(fingerprint=rng.random() < 0.5)

        def mutate(data: bytes) -> bytes:
            out = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                if out:
                    out[rng.randrange(len(out))] = rng.randrange(256)
            if rng.random() < 0.3:
                out = out[: rng.randrange(len(out) + 1)]
            return bytes(out)

        def junk() -> bytes:
            kind = rng.random()
            if kind < 0.3:
                return rng.randbytes(rng.randrange(0, 200))
            if kind < 0.5:  # ChannelData with lying lengths
                return bytes([rng.randrange(0x40, 0x80), rng.randrange(256)]) + rng.randbytes(
                    rng.randrange(2, 60)
                )
            if kind < 0.75:
                return mutate(valid_request())
            return valid_request()

        # UDP: several clients, thousands of datagrams.
        clients = [await RawClient.connect(relay.address) for _ in range(4)]
        for client in clients[:3]:  # most have an allocation, so every handler gets traffic
            client.login(username, password)
            await client.allocate({Attr.LIFETIME: 60})
        for i in range(3000):
            clients[i % 4].send_raw(junk())
            if i % 200 == 0:
                await asyncio.sleep(0.01)
        # TCP: streams of junk, mutations and valid requests; garbage must get us disconnected.
        for _ in range(40):
            async with raw_client(relay.address, tcp=True) as tcp:
                for _ in range(rng.randrange(1, 20)):
                    tcp.transport.write(junk())  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        for client in clients:
            client.close()

        # Still answering on both transports.
        for tcp_mode in (False, True):
            async with raw_client(relay.address, tcp_mode) as client:
                reply = await client.transact(stun.Message(Method.BINDING, Class.REQUEST))
                assert reply.cls == Class.SUCCESS
            async with raw_client(relay.address, tcp_mode, credentials=credentials()) as client:
                await client.allocate()
        assert server.stats.malformed["udp"] > 0
        assert server.stats.malformed["tcp"] > 0
        check_metric_labels(server, username)

        # Expire everything: nothing may remain.
        await asyncio.sleep(0.2)
        server.table.sweep(time.monotonic() + 100_000)
        assert len(server.table) == 0
        assert server.table.pool.in_use == set()
        assert server.table.reservations == {}
        assert not server._pending
    await asyncio.sleep(0.2)
    assert open_fds() <= fds_before + 2  # the event loop may keep a self-pipe or two
