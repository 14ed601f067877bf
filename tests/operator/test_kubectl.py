"""The user's workflow with the real kubectl: apply an edge, read the ranges, see the columns."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from support import require_tool
from support.kube_e2e import Cluster, eventually, published, ranges_doc

from turnpike.operator import kube as k8s

pytestmark = pytest.mark.e2e

EDGE = """\
apiVersion: turnpike.io/v1alpha1
kind: RelayEdge
metadata:
  name: ashburn
  namespace: {ns}
spec:
  location: US East Coast (Virginia)
  publicHostname: ashburn.turn.example.com
  addresses:
    static: [54.172.60.0/23, 34.203.254.0/24]
  relayPorts: {{min: {low}, max: {high}}}
"""


async def _kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60
    )


async def test_kubectl_apply_get_and_read_ranges(
    cluster: Cluster, kube: k8s.Kube, ns: str, tmp_path: Path
) -> None:
    require_tool("kubectl", "apt-get install kubernetes-client")
    # The emulator serves no OpenAPI document for client-side validation.
    validate = ["--validate=false"] if cluster.emulated else []
    manifest = tmp_path / "edge.yaml"
    manifest.write_text(EDGE.format(ns=ns, low=49152, high=65535))
    result = await _kubectl(cluster, "apply", *validate, "-f", str(manifest))
    assert result.returncode == 0, result.stderr
    assert "relayedge.turnpike.io/ashburn created" in result.stdout

    await eventually(lambda: ranges_doc(kube, ns), what="ranges published")
    result = await _kubectl(
        cluster,
        "-n",
        ns,
        "get",
        "configmap",
        "turnpike-ip-ranges",
        "-o",
        "jsonpath={.data.ranges\\.txt}",
    )
    assert result.returncode == 0, result.stderr
    assert "ashburn" in result.stdout and "54.172.60.0/23" in result.stdout

    async def columns() -> str | None:
        result = await _kubectl(cluster, "-n", ns, "get", "redge")
        return result.stdout if "54.172.60.0/23" in result.stdout else None

    table = await eventually(columns, what="printer columns")
    header = table.splitlines()[0].split()
    assert header == ["NAME", "LOCATION", "HOSTNAME", "READY", "STATUS", "ADDRESSES", "AGE"]
    assert " AsExpected " in table.splitlines()[1]

    # An invalid change is refused with the message the user reads.
    manifest.write_text(EDGE.format(ns=ns, low=60000, high=50000))
    result = await _kubectl(cluster, "apply", *validate, "-f", str(manifest))
    assert result.returncode != 0
    assert "spec.relayPorts" in result.stderr
    assert "min must not be greater than max" in result.stderr

    result = await _kubectl(cluster, "delete", "-f", str(manifest), "--timeout=30s")
    assert result.returncode == 0, result.stderr

    async def unpublished() -> bool:
        return published(await ranges_doc(kube, ns)) == {}

    await eventually(unpublished, what="edge unpublished")
