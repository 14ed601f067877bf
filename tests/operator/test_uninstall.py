"""Deletion never waits for the operator: no object it touches carries a finalizer, so deleting
edges, gateways or their namespace completes with the operator uninstalled; a deletion it sees
still withdraws the edge from what it publishes, and one it missed is withdrawn when it is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.kube_e2e import (
    Cluster,
    Operator,
    directory_doc,
    edge,
    eventually,
    gateway,
    new_namespace,
    published,
    ranges_doc,
)

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e

TOUCHED = (
    k8s.RELAY_EDGES,
    k8s.STREAM_GATEWAYS,
    k8s.SECRETS,
    k8s.CONFIGMAPS,
    k8s.SERVICES,
    k8s.DEPLOYMENTS,
)


async def _listed(kube: k8s.Kube, ns: str) -> tuple[set[str], set[str]]:
    """The edges in the namespace's IP ranges and in its edge directory."""
    directory = await directory_doc(kube, ns) or {}
    return set(published(await ranges_doc(kube, ns))), {
        e["name"] for e in directory.get("edges", [])
    }


async def _serve(kube: k8s.Kube, ns: str) -> None:
    """Two edges, a gateway on one, all published, and the keyring Secret there."""
    for name, address in (("ams", "192.0.2.10"), ("fra", "192.0.2.11")):
        await kube.create(k8s.RELAY_EDGES, ns, edge(name, addresses={"static": [address]}))
    await kube.create(k8s.STREAM_GATEWAYS, ns, gateway("media", "ams"))

    async def ready() -> bool:
        secret = await kube.get(k8s.SECRETS, ns, "turnpike-keyring")
        gw = await kube.get(k8s.DEPLOYMENTS, ns, labels.gateway_name("media"))
        both = all({"ams", "fra"} <= listed for listed in await _listed(kube, ns))
        return secret is not None and gw is not None and both

    await eventually(ready, timeout=60, what="edges published, gateway and keyring created")


def _finalized(res: k8s.Resource, objects: list[dict[str, Any]]) -> list[str]:
    return [
        f"{res.kind} {o['metadata']['name']}: {o['metadata']['finalizers']}"
        for o in objects
        if o["metadata"].get("finalizers")
    ]


async def test_a_deleted_edge_leaves_both_configmaps_at_once(kube: k8s.Kube, ns: str) -> None:
    await _serve(kube, ns)
    await kube.delete(k8s.RELAY_EDGES, ns, "fra")
    # Gone from the API at once (nothing holds it), and withdrawn by the running operator.
    assert await kube.get(k8s.RELAY_EDGES, ns, "fra") is None

    async def withdrawn() -> bool:
        return await _listed(kube, ns) == ({"ams"}, {"ams"})

    await eventually(withdrawn, what="the deleted edge withdrawn from both ConfigMaps")


async def test_nothing_the_operator_touches_has_a_finalizer(kube: k8s.Kube, ns: str) -> None:
    # An edge and a gateway as an older version left them: with its finalizers.
    old = {"finalizers": [labels.FINALIZER, labels.KOPF_DEFAULT_FINALIZER]}
    body = edge("old", addresses={"static": ["192.0.2.12"]})
    await kube.create(k8s.RELAY_EDGES, ns, {**body, "metadata": {**body["metadata"], **old}})
    body = gateway("oldgw", "old")
    await kube.create(k8s.STREAM_GATEWAYS, ns, {**body, "metadata": {**body["metadata"], **old}})
    await _serve(kube, ns)

    async def none_left() -> bool:
        found: list[str] = []
        for res in TOUCHED:
            found += _finalized(res, await kube.list(res, ns))
        assert not found, found
        return True

    await eventually(none_left, what="no finalizer on anything in the namespace")


async def test_namespace_deletion_completes_with_the_operator_gone(
    cluster: Cluster, kube: k8s.Kube, tmp_path: Path
) -> None:
    ns = await new_namespace(kube, "un")
    running = Operator(cluster, tmp_path / "operator.log", "--standalone", "--namespace", ns)
    try:
        running.wait_live()
        await _serve(kube, ns)
    finally:
        running.stop()  # as after `helm uninstall`
    await kube.delete(k8s.NAMESPACES, None, ns)

    async def gone() -> bool:
        return await kube.get(k8s.NAMESPACES, None, ns) is None

    await eventually(gone, timeout=60, what=f"namespace {ns} deleted without the operator")


async def test_an_edge_deleted_while_the_operator_was_down_is_withdrawn(
    cluster: Cluster, kube: k8s.Kube, tmp_path: Path
) -> None:
    ns = await new_namespace(kube, "wd")
    log = tmp_path / "operator.log"
    first = Operator(cluster, log, "--standalone", "--namespace", ns)
    try:
        first.wait_live()
        await _serve(kube, ns)
    finally:
        first.stop()
    await kube.delete(k8s.RELAY_EDGES, ns, "fra")
    assert await kube.get(k8s.RELAY_EDGES, ns, "fra") is None
    assert await _listed(kube, ns) == ({"ams", "fra"}, {"ams", "fra"})  # nobody withdrew it yet
    second = Operator(cluster, log, "--standalone", "--namespace", ns)
    try:
        second.wait_live()

        async def withdrawn() -> bool:
            return await _listed(kube, ns) == ({"ams"}, {"ams"})

        await eventually(withdrawn, timeout=60, what="the edge withdrawn after the restart")
    finally:
        second.stop()
    await kube.delete(k8s.NAMESPACES, None, ns)
