"""Rotation inside the real ``turnpike operator``, next to its RelayEdge reconciler.

This is where the two could fight: the reconciler rewrites each RelayEdge's conditions on every
resync, rotation sets Degraded while it is blocked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from rotation.test_e2e import SECRET, blocked_then_released, new_namespace, settings_env
from support import free_port
from support.kubeapi import KubeAPI
from support.rotation_fleet import Kubelet, Operator, add_pod, relay, token_api

from turnpike.operator.kube import RELAY_EDGES, Kube

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(150)]


def _wired() -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "turnpike", "operator", "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return "--rotation-interval" in help_text


async def test_turnpike_operator_rotates_and_keeps_the_degraded_condition(
    api: KubeAPI,
    kube: Kube,
    tmp_path: Path,
) -> None:
    assert _wired(), "turnpike operator must offer the rotation flags"
    ns = "rotation-wired"
    await new_namespace(kube, ns)
    await kube.patch(RELAY_EDGES, ns, "east", {"spec": {"addresses": {"static": ["192.0.2.1"]}}})
    metrics = free_port()
    command = [
        sys.executable,
        "-m",
        "turnpike",
        "operator",
        "--namespace",
        ns,
        "--standalone",
        "--resync-interval",
        "0.5",
        "--metrics",
        f"127.0.0.1:{metrics}",
    ]
    env = settings_env(rotation_interval=3600.0, rotation_wait_timeout=1.5)
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    operator = Operator(kubeconfig, ns, env, command=command)
    await operator.start()
    try:
        async with Kubelet(kube, ns, SECRET) as kubelet:
            await kubelet.wait_synced()
            vols = {n: kubelet.volume(tmp_path / n, 0.1) for n in ("relay-0", "relay-1", "tok")}
            async with (
                relay("relay-0", vols["relay-0"]) as r0,
                relay("relay-1", vols["relay-1"]) as r1,
                token_api("tokens-0", vols["tok"], tmp_path) as tokens,
            ):
                for member in (r0, r1):
                    await add_pod(kube, ns, SECRET, member)
                await add_pod(kube, ns, SECRET, tokens, labelled=True)
                await blocked_then_released(kube, ns, [r0, r1], tokens, vols["relay-1"], hold=3.0)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{metrics}/metrics") as resp,
        ):
            text = await resp.text()
        assert 'turnpike_keyring_rotations_total{namespace="rotation-wired",outcome="blocked"}' in (
            text
        )
    finally:
        await operator.stop()
