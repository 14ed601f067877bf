"""aioice's TURN client, an independent implementation, allocating and relaying through us."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aioice import stun, turn
from support.relay import credentials, echo_peer, relay_server, write_keyring

pytestmark = pytest.mark.interop


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_allocate_echo_refresh_close(tmp_path: Path, transport: str) -> None:
    keyring = write_keyring(tmp_path / "keyring.json")
    username, password = credentials()
    async with relay_server(keyring) as relay, echo_peer() as peer:
        turn_transport, protocol = await turn.create_turn_endpoint(
            Collector,
            server_addr=relay.address,
            username=username,
            password=password,
            lifetime=60,
            transport=transport,
        )
        try:
            relayed = turn_transport.get_extra_info("sockname")
            assert relayed[0] == "127.0.0.1"
            assert len(relay.server.table) == 1
            for i in range(50):
                payload = f"ping {i}".encode() * (i % 7 + 1)
                turn_transport.sendto(payload, peer.address)
                data, addr = await asyncio.wait_for(protocol.received.get(), 2)
                assert data == payload
                assert addr == peer.address
            # The peer saw the traffic coming from the relayed address.
            assert {addr for _, addr in peer.received} == {tuple(relayed)}
            # A Refresh through aioice's own transaction machinery (with its auth) succeeds.
            inner = turn_transport._TurnTransport__inner_protocol
            request = stun.Message(
                message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST
            )
            request.attributes["LIFETIME"] = 120
            response, _ = await inner.request_with_retry(request)
            assert response.attributes["LIFETIME"] == 120
        finally:
            turn_transport.close()
        # close() deletes the allocation with a Refresh of lifetime 0.
        for _ in range(50):
            if not relay.server.table:
                break
            await asyncio.sleep(0.05)
        assert len(relay.server.table) == 0
        assert relay.server.stats.allocations_removed
