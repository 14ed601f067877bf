"""Tokens from this API against a real `turnpike relay`, with aioice as the TURN client.

The relay is a child process sharing the keyring file with the token API, as in a cluster where
the operator mounts one keyring Secret into both.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from tokens.helpers import (
    ACCOUNT,
    SECRET_K1,
    SECRET_K2,
    Api,
    ApiFactory,
    basic,
    keyring_doc,
    write_json,
)
from tokens.relay import Relay, run_relay, wait_until

from turnpike.core.credentials import turn_password

pytestmark = [pytest.mark.e2e, pytest.mark.interop]

TURN_URL = re.compile(r"turn:(?P<host>[0-9.]+):(?P<port>\d+)\?transport=(?P<transport>udp|tcp)")


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait((data, addr))


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(b"echo:" + data, addr)


async def token(api: Api, **form: str) -> dict[str, Any]:
    headers = {"Authorization": basic(ACCOUNT, "auth-token-for-tests-0001")}
    async with api.session.post(api.tokens_url(), data=form, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def allocate(entry: dict[str, str], peer: tuple[str, int] | None = None) -> tuple[str, int]:
    """Allocate with the entry's URL and credential; relay one datagram to ``peer`` if given."""
    match = TURN_URL.fullmatch(entry["urls"])
    assert match, entry["urls"]
    server = (match["host"], int(match["port"]))
    transport, protocol = await asyncio.wait_for(
        create_turn_endpoint(
            Collect,
            server,
            entry["username"],
            entry["credential"],
            transport=match["transport"],
        ),
        15,
    )
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        if peer is not None:
            transport.sendto(b"hello", peer)
            data, addr = await asyncio.wait_for(protocol.received.get(), 10)
            assert data == b"echo:hello"
            assert addr == peer
        return relayed
    finally:
        transport.close()


async def refused(entry: dict[str, str]) -> int:
    """The STUN error code the relay answers an Allocate with these credentials."""
    with pytest.raises(stun.TransactionFailed) as caught:
        await allocate(entry)
    code: int = caught.value.response.attributes["ERROR-CODE"][0]
    return code


async def api_and_relay(make_api: ApiFactory, **config: Any) -> tuple[Api, Any]:
    api = await make_api(clock=config.pop("clock", time.time), **config)
    return api, run_relay(api.keyring_file)


def point_edges_at(api: Api, relay: Relay) -> None:
    write_json(api.edges_file, relay.edges_doc())
    assert api.edges.check()


async def test_token_allocates_on_every_advertised_entry(make_api: ApiFactory) -> None:
    api, relay_cm = await api_and_relay(make_api)
    loop = asyncio.get_running_loop()
    echo_transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    peer = echo_transport.get_extra_info("sockname")
    try:
        async with relay_cm as relay:
            point_edges_at(api, relay)
            for edge in ("global", "lab"):
                body = await token(api, Edge=edge, Ttl="600")
                turn_entries = body["ice_servers"][1:]
                assert [e["urls"].rsplit("=", 1)[1] for e in turn_entries] == ["udp", "tcp", "tcp"]
                for entry in turn_entries:
                    relayed = await allocate(entry, peer)
                    assert relayed[0] == "127.0.0.1"
    finally:
        echo_transport.close()


async def test_rotation_two_phase_then_retire_the_old_key(make_api: ApiFactory) -> None:
    api, relay_cm = await api_and_relay(make_api)
    async with relay_cm as relay:
        point_edges_at(api, relay)
        before = await token(api)
        assert before["password"] == turn_password(SECRET_K1, before["username"])

        async def everyone_has(keys: list[str], signing: str) -> bool:
            api.keyring.check()
            mine = api.keyring.current.status()
            theirs = await relay.ready_status()
            return mine == {"keys": keys, "signing": signing} and sorted(
                theirs.get("keys", [])
            ) == sorted(keys)

        # phase 1: every reader learns k2 before anyone signs with it
        write_json(api.keyring_file, keyring_doc(("k1", SECRET_K1, True), ("k2", SECRET_K2, False)))
        await wait_until(lambda: everyone_has(["k1", "k2"], "k1"), "k2 to be loaded everywhere")
        # phase 2: the token API signs with k2
        write_json(api.keyring_file, keyring_doc(("k2", SECRET_K2, True), ("k1", SECRET_K1, False)))
        await wait_until(lambda: everyone_has(["k2", "k1"], "k2"), "k2 to sign")
        after = await token(api)
        assert after["password"] == turn_password(SECRET_K2, after["username"])
        for body in (after, before):  # the new token, and one still in flight from before
            for entry in body["ice_servers"][1:3]:
                await allocate(entry)

        # phase 3: k1 retired; its tokens stop working, k2's keep working
        write_json(api.keyring_file, keyring_doc(("k2", SECRET_K2, True)))
        await wait_until(lambda: everyone_has(["k2"], "k2"), "k1 to be retired")
        assert await refused(before["ice_servers"][1]) == 401
        await allocate(after["ice_servers"][1])


async def test_expired_token_is_refused(make_api: ApiFactory) -> None:
    """A token the API issued two hours ago with a one-hour Ttl."""
    api, relay_cm = await api_and_relay(make_api, clock=lambda: time.time() - 7200)
    async with relay_cm as relay:
        point_edges_at(api, relay)
        body = await token(api, Ttl="3600")
        assert int(body["username"].split(":")[0]) < time.time()
        for entry in body["ice_servers"][1:3]:  # UDP and TCP
            assert await refused(entry) == 401
