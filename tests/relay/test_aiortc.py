"""aiortc: two WebRTC peers, relay-only ICE, a data channel round trip through the relay.

Both peers gather only relay candidates, so every packet goes client → relay → relay → client:
the relay-to-relay case every two-browser call on one TURN server depends on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)
from support.relay import credentials, relay_server, write_keyring

pytestmark = [pytest.mark.interop, pytest.mark.slow]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_data_channel_round_trips_through_the_relay(tmp_path: Path, transport: str) -> None:
    keyring = write_keyring(tmp_path / "keyring.json")
    async with relay_server(keyring) as relay:
        username, password = credentials(user="webrtc")
        config = RTCConfiguration(
            iceServers=[
                RTCIceServer(
                    urls=f"turn:127.0.0.1:{relay.port}?transport={transport}",
                    username=username,
                    credential=password,
                )
            ],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )
        caller, callee = RTCPeerConnection(config), RTCPeerConnection(config)
        try:
            channel = caller.createDataChannel("echo")
            opened = asyncio.Event()
            replies: asyncio.Queue[str] = asyncio.Queue()
            channel.on("open", opened.set)
            channel.on("message", replies.put_nowait)

            @callee.on("datachannel")
            def on_datachannel(remote) -> None:  # type: ignore[no-untyped-def]
                remote.on("message", lambda message: remote.send(f"echo {message}"))

            await caller.setLocalDescription(await caller.createOffer())
            await callee.setRemoteDescription(caller.localDescription)
            await callee.setLocalDescription(await callee.createAnswer())
            await caller.setRemoteDescription(callee.localDescription)
            assert "typ relay" in caller.localDescription.sdp
            assert "typ host" not in caller.localDescription.sdp

            await asyncio.wait_for(opened.wait(), 20)
            for i in range(20):
                channel.send(f"message {i}")
                assert await asyncio.wait_for(replies.get(), 5) == f"echo message {i}"

            # Both peers hold an allocation and the traffic went through them.
            allocations = list(relay.server.table.by_tuple.values())
            assert len(allocations) == 2
            totals = [relay.server.offload.total(a) for a in allocations]  # both paths
            assert all(t.to_peer_packets > 0 for t in totals)
            assert all(t.to_client_packets > 0 for t in totals)
        finally:
            await caller.close()
            await callee.close()
