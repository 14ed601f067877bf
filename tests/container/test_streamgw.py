"""The stream gateway from the image, in the pod the operator renders for a StreamGateway: it
answers /ready, a call handed to it is streamed to a WebSocket consumer on the host, and <Say>
speaks through the image's espeak-ng."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from pathlib import Path

import aiohttp
import pytest
from support import free_port
from support.container import Podman, PodRun, container_named, pod_spec, run_pod, wait_ready
from support.media import TestCA, WsServer, host_port, rtp_peer
from support.streamgw import ACCOUNT, ACCOUNTS_DOC, TOKEN, basic

from turnpike.operator import gateway
from turnpike.operator.model import StreamGateway

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

OWNER = {
    "apiVersion": "turnpike.io/v1alpha1",
    "kind": "StreamGateway",
    "metadata": {"name": "media", "namespace": "turnpike", "uid": "u-2"},
}
CA_PATH = "/etc/turnpike/test-ca/ca.crt"


async def test_streamgw_container_streams_a_call_to_a_consumer_on_the_host(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    low = random.randrange(30000, 39000, 2)
    body = {
        "metadata": {"name": "media", "namespace": "turnpike"},
        "spec": {
            "edge": "ashburn",
            "allowedDestinations": ["127.0.0.0/8"],
            "rtpPorts": {"min": low, "max": low + 99},
        },
    }
    config, deployment, _ = gateway.children(StreamGateway.parse(body, image), OWNER)
    spec = pod_spec(deployment)
    volumes = {v["name"]: v for v in spec["volumes"]}
    ca = TestCA(tmp_path / "ca")
    api, metrics = free_port(), free_port()
    pod = PodRun(
        image=image,
        spec=spec,
        container=container_named(spec, "streamgw"),
        workdir=tmp_path,
        secrets={
            volumes["accounts"]["secret"]["secretName"]: {"accounts.json": json.dumps(ACCOUNTS_DOC)}
        },
        config_maps={config["metadata"]["name"]: config["data"]},
        fields={"status.podIP": "127.0.0.1"},
        listen={
            gateway.METRICS_PORT: f"127.0.0.1:{metrics}",
            int(config["data"]["TURNPIKE_LISTEN"].rpartition(":")[2]): f"127.0.0.1:{api}",
        },
        # The consumer's certificate is signed by a test CA: the one addition to the pod is
        # that CA, trusted through SSL_CERT_FILE as a private CA would be.
        extra_files={CA_PATH: ca.ca_file},
        extra_env={"SSL_CERT_FILE": CA_PATH},
    )
    ws = WsServer(ca)
    await ws.start()
    peer = await rtp_peer()
    try:
        with run_pod(podman, pod) as running:
            await asyncio.to_thread(wait_ready, running, f"http://127.0.0.1:{metrics}/ready")
            twiml = (
                f'<Response><Start><Stream url="{ws.url("/container")}"/></Start>'
                '<Pause length="60"/></Response>'
            )
            call = {"accountSid": ACCOUNT, "from": "+1555", "to": "+1666", "twiml": twiml,
                    "rtp": {"remote": peer.address}}  # fmt: skip
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{api}/v1/Calls",
                    json=call,
                    headers={"Authorization": basic(ACCOUNT, TOKEN)},
                ) as resp,
            ):
                assert resp.status == 201, await resp.text()
                created = await resp.json()
            local = host_port(created["rtp"]["local"])
            assert local[0] == "127.0.0.1" and low <= local[1] <= low + 99

            conn = await ws.accept()
            start = await conn.next("start")
            assert start["start"]["callSid"] == created["sid"]
            clip = bytes(random.randrange(256) for _ in range(160 * 25))
            await peer.send(peer.packets(clip), local, interval=0.005)
            received = b""
            async with asyncio.timeout(15):
                while clip not in received:
                    msg = await conn.next("media")
                    received += base64.b64decode(msg["media"]["payload"])
            async with (
                aiohttp.ClientSession() as http,
                http.delete(
                    f"http://127.0.0.1:{api}/v1/Calls/{created['sid']}",
                    headers={"Authorization": basic(ACCOUNT, TOKEN)},
                ) as resp,
            ):
                assert resp.status == 200, await resp.text()
            stop = await conn.next("stop")
            assert stop["streamSid"] == start["streamSid"]

            # <Say> runs the image's espeak-ng under the same settings: speech, not silence,
            # reaches the consumer on the outbound track.
            twiml = (
                f'<Response><Start><Stream url="{ws.url("/say")}" track="outbound_track"/>'
                '</Start><Say>Hello from the container.</Say><Pause length="60"/></Response>'
            )
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{api}/v1/Calls",
                    json={**call, "twiml": twiml},
                    headers={"Authorization": basic(ACCOUNT, TOKEN)},
                ) as resp,
            ):
                assert resp.status == 201, await resp.text()
                second = await resp.json()
            said = await ws.accept()
            spoken = b""
            async with asyncio.timeout(20):
                while sum(byte not in (0xFF, 0x7F) for byte in spoken) < 800:
                    msg = await said.next("media")
                    assert msg["media"]["track"] == "outbound"
                    spoken += base64.b64decode(msg["media"]["payload"])
            async with (
                aiohttp.ClientSession() as http,
                http.delete(
                    f"http://127.0.0.1:{api}/v1/Calls/{second['sid']}",
                    headers={"Authorization": basic(ACCOUNT, TOKEN)},
                ) as resp,
            ):
                assert resp.status == 200, await resp.text()
        assert TOKEN not in running.output
    finally:
        peer.close()
        await ws.stop()
