"""A spec change right after a peering takeover is applied at once, not by the next resync.

The race (kopf logged "Resuming is superseded by updating" and the change waited for the resync):
kopf runs one changing handler per processing cycle, and a RelayEdge had two resume handlers (the
reconcile and rotation's keyring Secret hook). A spec change landing after the resume's reconcile
had read the edge, before the second cycle, turned that cycle into an update whose reconcile kopf
counted as done by the resume's, which had worked on the old spec. The operator now has one
changing handler per RelayEdge cause. The test makes the order certain: the emulator applies the
spec change right after answering the new replica's first read of the edge. (Start-up
reconciles scheduled by the watches' initial listing used to re-read the edge a moment later and
usually, not always, picked the change up: why the test mostly passed before; the operator no
longer schedules those, the resume handler covers them.)
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from aiohttp import web
from support.kube_e2e import (
    Cluster,
    Operator,
    delete_namespace,
    edge,
    eventually,
    new_namespace,
    published,
    ranges_doc,
)
from support.sockets import tcp_ports

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e


async def test_an_update_right_after_a_takeover_is_applied(
    cluster: Cluster, kube: k8s.Kube, tmp_path: Path
) -> None:
    if cluster.api is None or cluster.api.routes is None:
        pytest.skip("orders the events with the emulator's request observer")
    routes = cluster.api.routes
    ns = await new_namespace(kube, "to")
    args = ("--namespace", f"{ns}*", "--peering-lifetime", "4")
    low = Operator(cluster, tmp_path / "low.log", *args, "--priority", "100")
    high: Operator | None = None
    edge_path = f"/apis/{k8s.RELAY_EDGES.group}/{k8s.RELAY_EDGES.version}/namespaces/{ns}/"
    edge_path += f"{k8s.RELAY_EDGES.plural}/a"
    changed = threading.Event()

    def change_after_first_read(request: web.Request) -> None:
        """On the emulator's loop: once the new replica has read edge a, change its spec."""
        if changed.is_set() or high is None or (request.method, request.path) != ("GET", edge_path):
            return
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer or peer[1] not in tcp_ports(high.proc.pid):
            return  # the first replica's read
        store = routes.store
        relay_edges = store.find_type(
            k8s.RELAY_EDGES.group, k8s.RELAY_EDGES.version, k8s.RELAY_EDGES.plural
        )
        patch = {"spec": {"location": "Elsewhere", "replicas": 3}}
        store.patch(relay_edges, ns, "a", "application/merge-patch+json", patch, "")
        changed.set()

    try:
        low.wait_live()
        await kube.create(k8s.RELAY_EDGES, ns, edge("a", addresses={"static": ["192.0.2.1"]}))

        async def located(where: str) -> bool:
            return published(await ranges_doc(kube, ns)).get("a", {}).get("location") == where

        await eventually(lambda: located("Somewhere"), what="edge a published by the first")
        mark = len(low.output)
        routes.observers.append(change_after_first_read)
        high = Operator(cluster, tmp_path / "high.log", *args, "--priority", "200")

        async def paused() -> bool:
            return "Pausing operations in favour of" in low.output[mark:]

        async def read() -> bool:
            return changed.is_set()

        await eventually(read, what="the second replica reading edge a as it resumes")
        await eventually(paused, what="the first replica pausing for the second")
        # The resync interval of the test operators is 20 s: well inside it. The published
        # location alone is no proof (a publish reads every edge's spec as it is); the relay
        # Deployment and the status's observedGeneration come only from a reconcile of the change.

        async def applied() -> bool:
            body = await kube.get(k8s.RELAY_EDGES, ns, "a")
            relay = await kube.get(k8s.DEPLOYMENTS, ns, labels.relay_name("a"))
            return (
                body is not None
                and relay is not None
                and relay["spec"]["replicas"] == 3
                and body["status"].get("observedGeneration") == body["metadata"]["generation"]
                and await located("Elsewhere")
            )

        await eventually(applied, timeout=10, what="the change applied")
        await delete_namespace(kube, ns)
    finally:
        if change_after_first_read in routes.observers:
            routes.observers.remove(change_after_first_read)
        low.stop()
        if high is not None:
            high.stop()
