"""The token API from the image (built with Podman, and with Docker), in the pod the chart
renders: it answers the Tokens API with credentials any relay holding the mounted keyring
accepts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from pathlib import Path

import aiohttp
import pytest
from support import free_port
from support.container import (
    Podman,
    PodRun,
    chart_values,
    container_named,
    pod_spec,
    render_chart,
    run_pod,
    wait_ready,
    workload_named,
)
from support.streamgw import basic

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

ACCOUNT, TOKEN, SECRET = "AC" + "5" * 32, "auth-token", "tokens-secret"
KEYRING = {"keys": [{"id": "k1", "secret": SECRET, "signing": True}]}


# The image from each engine (the Docker-built one is the Podman-built one's twin, see
# test_image.py): a real component answering from both.
@pytest.mark.parametrize("built_by", ["image", "docker_image"], ids=["podman", "docker"])
async def test_tokens_container_answers_the_tokens_api(
    podman: Podman, built_by: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    image = request.getfixturevalue(built_by)
    deployment = workload_named(render_chart(chart_values(image)), "Deployment", "-tokens")
    spec = pod_spec(deployment)
    container = container_named(spec, "tokens")
    assert container["image"] == image
    volumes = {v["name"]: v for v in spec["volumes"]}
    edges = {
        "global": {"host": "turn.example.com"},
        "edges": [{"name": "ashburn", "host": "ashburn.turn.example.com", "location": "US East"}],
    }
    pod = PodRun(
        image=image,
        spec=spec,
        container=container,
        workdir=tmp_path,
        secrets={
            volumes["keyring"]["secret"]["secretName"]: {"keyring.json": json.dumps(KEYRING)},
            volumes["accounts"]["secret"]["secretName"]: {
                "accounts.json": json.dumps({"accounts": [{"sid": ACCOUNT, "authToken": TOKEN}]})
            },
        },
        config_maps={volumes["edges"]["configMap"]["name"]: {"edges.json": json.dumps(edges)}},
    )
    api, metrics = free_port(), free_port()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    pod.listen = {ports["http"]: f"127.0.0.1:{api}", ports["metrics"]: f"127.0.0.1:{metrics}"}
    with run_pod(podman, pod) as running:
        await asyncio.to_thread(wait_ready, running, f"http://127.0.0.1:{metrics}/ready")
        url = f"http://127.0.0.1:{api}/2010-04-01/Accounts/{ACCOUNT}/Tokens.json"
        auth = basic(ACCOUNT, TOKEN)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data={"Ttl": "600"}, headers={"Authorization": auth}) as resp,
        ):
            assert resp.status == 201, await resp.text()
            body = await resp.json()
    assert body["account_sid"] == ACCOUNT and body["ttl"] == "600"
    urls = [server["urls"] for server in body["ice_servers"]]
    assert "turn:turn.example.com:443?transport=tcp" in urls
    expected = hmac.new(SECRET.encode(), body["username"].encode(), hashlib.sha1).digest()
    assert body["password"] == base64.b64encode(expected).decode()
    assert TOKEN not in running.output and SECRET not in running.output
