"""The operator from the image, in the pod the chart renders (JSON logs, as the chart sets them):
it reconciles a RelayEdge against the test suite's Kubernetes API into relays that run the
chart's image, and every log line is a short JSON object naming the object it is about."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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
from support.kube_e2e import Cluster, cluster, delete_namespace, edge, eventually, new_namespace

from turnpike.operator import kube as k8s
from turnpike.operator import labels

__all__ = ["cluster"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

KUBECONFIG = "/etc/turnpike/kube/kubeconfig"


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[k8s.Kube]:
    client = cluster.client()
    yield client
    await client.close()


async def test_operator_container_reconciles_an_edge(
    podman: Podman, image: str, cluster: Cluster, kube: k8s.Kube, tmp_path: Path
) -> None:
    if not cluster.emulated:
        pytest.skip("runs the operator against the test suite's Kubernetes API emulator")
    values: dict[str, Any] = chart_values(image)
    deployment = workload_named(render_chart(values), "Deployment", "-operator")
    spec = pod_spec(deployment)
    container = container_named(spec, "operator")
    assert container["image"] == image and "--log-json" in container["args"]
    metrics = free_port()
    env = {var["name"]: var.get("value") for var in container["env"]}
    keyring_secret = env["TURNPIKE_KEYRING_SECRET"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    pod = PodRun(
        image=image,
        spec=spec,
        container=container,
        workdir=tmp_path,
        fields={"metadata.namespace": "turnpike", "metadata.name": "turnpike-operator-0"},
        listen={ports["metrics"]: f"127.0.0.1:{metrics}"},
        # Instead of the in-cluster service account: the emulator's kubeconfig, read-only.
        extra_files={KUBECONFIG: cluster.kubeconfig},
        extra_env={"KUBECONFIG": KUBECONFIG},
    )
    namespace = await new_namespace(kube, "tp")
    deleted = False
    try:
        with run_pod(podman, pod) as running:
            await asyncio.to_thread(wait_ready, running, f"http://127.0.0.1:{metrics}/live", 60)
            await kube.create(k8s.RELAY_EDGES, namespace, edge("box"))

            async def reconciled() -> tuple[dict[str, Any], dict[str, Any]] | None:
                relays = await kube.get(k8s.DEPLOYMENTS, namespace, labels.relay_name("box"))
                keyring = await kube.get(k8s.SECRETS, namespace, keyring_secret)
                return (relays, keyring) if relays and keyring else None

            relays, _ = await eventually(reconciled, timeout=60, what="the edge's children")
            # The relays run the very image the chart gave the operator.
            assert relays["spec"]["template"]["spec"]["containers"][0]["image"] == image
            await delete_namespace(kube, namespace)
            deleted = True
        lines = [json.loads(line) for line in running.output.splitlines() if line.strip()]
    finally:
        if not deleted:
            await delete_namespace(kube, namespace)
    about_edge = [line for line in lines if line.get("object") == "RelayEdge/box"]
    assert about_edge, running.output
    assert {line["namespace"] for line in about_edge} == {namespace}
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line)
        assert "settings" not in line and "k8s_ref" not in line and "k8s_skip" not in line
        assert len(json.dumps(line)) < 1000, line
