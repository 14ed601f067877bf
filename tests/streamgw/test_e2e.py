"""The real `turnpike streamgw` process: a call end to end, metrics, hot reload, SIGTERM drain."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from pathlib import Path

import aiohttp
import pytest
from support import free_port, turnpike
from support.media import RtpPeer, TestCA, WsServer, host_port
from support.streamgw import ACCOUNT, ACCOUNTS_DOC, TOKEN, MakeGateway, basic, write_accounts

pytestmark = pytest.mark.e2e


async def test_gateway_process_end_to_end(
    tmp_path: Path, ca: TestCA, ws: WsServer, peer: RtpPeer, speech: bytes
) -> None:
    accounts = write_accounts(tmp_path / "accounts.json")
    api, metrics = free_port(), free_port()
    low = 40000 + free_port() % 10000 // 2 * 2
    args = [
        "streamgw",
        "--listen", f"127.0.0.1:{api}",
        "--accounts", str(accounts),
        "--rtp-ip", "127.0.0.1",
        "--rtp-ports", f"{low}-{low + 20}",
        "--allow-destination", "127.0.0.0/8",
        "--ca-file", str(ca.ca_file),
        "--metrics", f"127.0.0.1:{metrics}",
        "--drain-grace", "1.5",
        "--rtp-fill-after", "2",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{api}"
    auth = {"Authorization": basic(ACCOUNT, TOKEN)}
    async with (
        turnpike(args, ready_url=f"http://127.0.0.1:{metrics}/ready") as proc,
        aiohttp.ClientSession() as http,
    ):
        doc = (
            f'<Response><Start><Stream url="{ws.url("/e2e")}" track="both_tracks"/></Start>'
            '<Pause length="60"/></Response>'
        )
        body = {"accountSid": ACCOUNT, "from": "+1555", "to": "+1666", "twiml": doc,
                "rtp": {"remote": peer.address}}  # fmt: skip
        async with http.post(f"{base}/v1/Calls", json=body, headers=auth) as resp:
            assert resp.status == 201
            created = await resp.json()
        assert set(created) == {"sid", "status", "rtp"} and created["status"] == "in-progress"
        local = host_port(created["rtp"]["local"])
        assert local[0] == "127.0.0.1" and low <= local[1] <= low + 20

        conn = await ws.accept()
        await conn.next("start")
        clip = speech[: 160 * 50]
        await peer.send(peer.packets(clip), local, interval=0.005)
        inbound = b""
        async with asyncio.timeout(15):
            while clip not in inbound:
                msg = await conn.next("media")
                if msg["media"]["track"] == "inbound":
                    inbound += base64.b64decode(msg["media"]["payload"])
        async with asyncio.timeout(5):
            await peer.arrivals.get()  # the caller hears the gateway (silence, paced)

        async with http.get(f"http://127.0.0.1:{metrics}/metrics") as resp:
            text = await resp.text()
        assert "turnpike_streamgw_active_calls 1.0" in text
        assert 'turnpike_streamgw_active_streams{kind="unidirectional"} 1.0' in text
        assert metric(text, 'turnpike_streamgw_frames_received_total{source="rtp"}') >= 50
        assert metric(text, 'turnpike_streamgw_frames_sent_total{destination="websocket"}') >= 50
        assert metric(text, 'turnpike_streamgw_frames_sent_total{destination="rtp"}') >= 1
        assert metric(text, "turnpike_streamgw_rtp_to_websocket_seconds_count") >= 50

        # The accounts file is reloaded when it changes: a new account can place calls.
        new_sid, new_token = "AC" + "3" * 32, "fresh"
        doc_accounts = {
            "accounts": [*ACCOUNTS_DOC["accounts"], {"sid": new_sid, "authToken": new_token}]
        }
        (tmp_path / "accounts.json").write_text(json.dumps(doc_accounts))
        async with asyncio.timeout(10):
            while True:
                async with http.get(
                    f"{base}/v1/Calls/{created['sid']}",
                    headers={"Authorization": basic(new_sid, new_token)},
                ) as resp:
                    if resp.status == 404:  # authenticated now; the call is not theirs
                        break
                    assert resp.status == 401
                await asyncio.sleep(0.2)

        # SIGTERM: not ready, no new calls, and after the grace period the call ends cleanly.
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            while True:
                async with http.get(f"http://127.0.0.1:{metrics}/ready") as resp:
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.05)
        async with http.post(f"{base}/v1/Calls", json=body, headers=auth) as resp:
            assert resp.status == 503 and (await resp.json())["code"] == 20503
        await conn.wait_closed(timeout=10)
        assert conn.messages[-1]["event"] == "stop" and conn.close_code == 1000
        code = await asyncio.wait_for(proc.proc.wait(), 15)
        assert code == 0, proc.text


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


async def test_broken_accounts_file_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "accounts.json"
    bad.write_text("{nope")
    async with turnpike(["streamgw", "--accounts", str(bad), "--rtp-ip", "127.0.0.1"]) as proc:
        assert proc.proc is not None
        code = await asyncio.wait_for(proc.proc.wait(), 15)
    assert code == 2 and "not valid JSON" in proc.text


async def test_ready_and_metrics_on_the_api_port(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    async with gw.session.get(gw.base + "/ready") as resp:
        assert resp.status == 200 and (await resp.json())["ready"] is True
    async with gw.session.get(gw.base + "/live") as resp:
        assert resp.status == 200
    async with gw.session.get(gw.base + "/metrics") as resp:
        assert "turnpike_streamgw_active_calls" in await resp.text()
    gw.gateway.draining = True
    async with gw.session.get(gw.base + "/ready") as resp:
        assert resp.status == 503
