"""Authentication: keyring rotation on a live relay, hot reload, nonces and the 401 rate limit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from support.relay import (
    credentials,
    echo_peer,
    raw_client,
    relay_server,
    write_keyring,
)

from turnpike.core.keyring import Key, Keyring
from turnpike.relay.auth import Authenticator
from turnpike.relay.stun import Attr, Class, Method


async def _reload(path: Path, keys: list[tuple[str, str, bool]], watcher: object) -> None:
    before = watcher.reloads  # type: ignore[attr-defined]
    write_keyring(path, keys)
    # Make sure the watcher sees a new mtime even within one timestamp tick.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    for _ in range(100):
        if watcher.reloads > before:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("keyring was not reloaded")


async def test_rotation_on_a_live_relay(tmp_path: Path) -> None:
    path = write_keyring(tmp_path / "keyring.json", [("k1", "old-secret", True)])
    old = credentials("old-secret", user="old")
    async with (
        relay_server(path) as relay,
        echo_peer() as peer,
        raw_client(relay.address, credentials=old) as live,
    ):
        await live.allocate()
        bind = {Attr.CHANNEL_NUMBER: 0x4000, Attr.XOR_PEER_ADDRESS: peer.address}
        assert (await live.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS

        # Phase 1: the new key is added (and signs); old credentials still work.
        await _reload(
            path, [("k2", "new-secret", True), ("k1", "old-secret", False)], relay.keyring
        )
        for creds in (credentials("old-secret"), credentials("new-secret")):
            async with raw_client(relay.address, credentials=creds) as client:
                await client.allocate()

        # Phase 2: the old key is removed; new Allocates with it fail...
        await _reload(path, [("k2", "new-secret", True)], relay.keyring)
        async with raw_client(relay.address, credentials=credentials("old-secret")) as client:
            reply = await client.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert reply.error_code == 401
        async with raw_client(relay.address, credentials=credentials("new-secret")) as client:
            await client.allocate()
        # ...but the live allocation keeps its credential until it ends.
        reply = await live.request(Method.REFRESH, {Attr.LIFETIME: 300})
        assert reply.cls == Class.SUCCESS
        assert (await live.request(Method.CHANNEL_BIND, bind)).cls == Class.SUCCESS
        live.send_channel(0x4000, b"still relaying")
        assert (await live.receive())[4:] == b"still relaying"

        # A broken keyring file is ignored; the last good one stays in force.
        (tmp_path / "keyring.json").write_text("{not json")
        await asyncio.sleep(0.3)
        assert relay.keyring.current.ids == ("k2",)
        assert relay.keyring.errors >= 1


def test_nonce_is_bound_to_ip_and_expires() -> None:
    now = [1_000_000.0]
    ring = Keyring((Key("k1", "s", True),))
    auth = Authenticator(lambda: ring, "realm", nonce_lifetime=60, clock=lambda: now[0])
    nonce = auth.nonce("192.0.2.1")
    assert auth.nonce_valid(nonce, "192.0.2.1")
    assert not auth.nonce_valid(nonce, "192.0.2.2")
    assert not auth.nonce_valid(
        nonce.replace(nonce[-1], "0" if nonce[-1] != "0" else "1"), "192.0.2.1"
    )
    assert not auth.nonce_valid("garbage", "192.0.2.1")
    now[0] -= 20  # another pod whose clock is a little behind still accepts it
    assert auth.nonce_valid(nonce, "192.0.2.1")
    now[0] -= 20
    assert not auth.nonce_valid(nonce, "192.0.2.1")
    now[0] += 40 + 59
    assert auth.nonce_valid(nonce, "192.0.2.1")
    now[0] += 2
    assert not auth.nonce_valid(nonce, "192.0.2.1")
