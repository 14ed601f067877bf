"""A status-callback receiver that never answers does not hold up media; streams counted by kind."""

from __future__ import annotations

import asyncio
import base64
import itertools

from support.media import RtpPeer, WsServer, raw_server
from support.streamgw import Harness, sample


async def test_a_hanging_callback_receiver_does_not_block_media(
    gw: Harness, ws: WsServer, peer: RtpPeer, speech: bytes
) -> None:
    requests: list[bytes] = []
    asked = asyncio.Event()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.read(65536))
        if requests[-1].startswith(b"POST /cb "):
            asked.set()  # take the request, then say nothing
        await asyncio.sleep(60)

    async with raw_server(never_answers, None) as port:
        cb = f"http://127.0.0.1:{port}/cb"
        doc = (
            f'<Response><Start><Stream url="{ws.url("/uni")}" statusCallback="{cb}"/></Start>'
            f'<Connect><Stream url="{ws.url("/bidi")}" statusCallback="{cb}"/></Connect>'
            "</Response>"
        )
        created = await gw.create_call(peer, twiml=doc)
        conns = {}
        for _ in range(2):
            conn = await ws.accept()
            conns[conn.path] = conn
            await conn.next("start")
        streams = gw.gateway.metrics.active_streams
        assert sample(streams, "unidirectional") == 1
        assert sample(streams, "bidirectional") == 1
        clip = speech[: 160 * 50]
        await peer.send(peer.packets(clip), gw.rtp_target(created), interval=0.005)
        for path in ("/uni", "/bidi"):
            joined = b""
            async with asyncio.timeout(15):
                while clip not in joined:
                    msg = await conns[path].next("media")
                    joined += base64.b64decode(msg["media"]["payload"])
        await asyncio.wait_for(asked.wait(), 10)  # the callbacks really were sent, and are stuck
        # The hangup and its `stop` messages do not wait for the stuck callbacks either.
        await gw.hangup(created["sid"])
        for conn in conns.values():
            await conn.wait_closed()
            assert conn.messages[-1]["event"] == "stop"
            stamps = [int(m["media"]["timestamp"]) for m in conn.of("media")]
            assert all(b - a == 20 for a, b in itertools.pairwise(stamps))
        assert sample(streams, "unidirectional") == 0
        assert sample(streams, "bidirectional") == 0
