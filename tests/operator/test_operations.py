"""Running the operator: many edges, a kill mid-way, two peered replicas, metrics, RBAC."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from support.kube_e2e import (
    Cluster,
    Operator,
    condition,
    delete_namespace,
    directory_doc,
    edge,
    eventually,
    new_namespace,
    operator_requests,
    published,
    ranges_doc,
)

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _address(n: int) -> str:
    return f"198.18.{n // 200}.{n % 200 + 1}"


async def test_fifty_edges(cluster: Cluster, kube: k8s.Kube, ns: str) -> None:
    count = 50
    await asyncio.gather(
        *(
            kube.create(
                k8s.RELAY_EDGES,
                ns,
                edge(f"edge-{n:02d}", f"Site {n}", replicas=1, addresses={"static": [_address(n)]}),
            )
            for n in range(count)
        )
    )

    async def all_published() -> bool:
        entries = published(await ranges_doc(kube, ns))
        return len(entries) == count and all(e["relay"]["cidrs"] for e in entries.values())

    await eventually(all_published, timeout=90, what="50 edges published")
    doc = await ranges_doc(kube, ns)
    assert doc is not None
    assert [e["edge"] for e in doc["edges"]] == [f"edge-{n:02d}" for n in range(count)]
    assert published(doc)["edge-07"]["relay"]["cidrs"] == [f"{_address(7)}/32"]
    if cluster.runs_pods:

        async def all_ready() -> bool:
            edges = await kube.list(k8s.RELAY_EDGES, ns)
            return len(edges) == count and all(
                condition(e, "Ready").get("status") == "True" for e in edges
            )

        await eventually(all_ready, timeout=90, what="50 edges Ready")


async def test_restart_mid_way_loses_nothing(
    cluster: Cluster, kube: k8s.Kube, tmp_path: Path
) -> None:
    ns = await new_namespace(kube, "rs")
    log = tmp_path / "operator.log"
    first = Operator(cluster, log, "--standalone", "--namespace", ns)
    try:
        first.wait_live()
        count = 12
        for n in range(count):
            await kube.create(
                k8s.RELAY_EDGES, ns, edge(f"e{n}", replicas=1, addresses={"static": [_address(n)]})
            )

        async def some_done() -> bool:
            edges = await kube.list(k8s.RELAY_EDGES, ns)
            return any((e.get("status") or {}).get("observedGeneration") for e in edges)

        await eventually(some_done, what="first edge reconciled")
        first.kill()  # mid-way: no clean shutdown, no chance to finish anything

        # Meanwhile, with no operator running: a delete, an update and a new edge.
        await kube.delete(k8s.RELAY_EDGES, ns, "e0")
        await kube.patch(k8s.RELAY_EDGES, ns, "e1", {"spec": {"replicas": 3}})
        await kube.create(
            k8s.RELAY_EDGES, ns, edge("late", replicas=1, addresses={"static": ["192.0.2.77"]})
        )
        # No finalizer holds it: the edge is gone at once, still published until the operator
        # is back and republishes the namespace from its live edges.
        assert await kube.get(k8s.RELAY_EDGES, ns, "e0") is None

        second = Operator(cluster, log, "--standalone", "--namespace", ns)
        try:
            second.wait_live()
            expected = {f"e{n}" for n in range(1, count)} | {"late"}

            async def converged() -> bool:
                entries = published(await ranges_doc(kube, ns))
                directory = await directory_doc(kube, ns) or {}
                listed = {e["name"] for e in directory.get("edges", [])}
                addressed = {name for name, e in entries.items() if e["relay"]["cidrs"]}
                relays = {
                    d["metadata"]["name"]: d["spec"]["replicas"]
                    for d in await kube.list(k8s.DEPLOYMENTS, ns)
                }
                gone = await kube.get(k8s.RELAY_EDGES, ns, "e0") is None
                return (
                    set(entries) == addressed == expected == listed
                    and gone
                    and set(relays) == {labels.relay_name(n) for n in expected}
                    and relays[labels.relay_name("e1")] == 3
                )

            await eventually(converged, timeout=60, what="state after restart")
            await delete_namespace(kube, ns)
        finally:
            second.stop()
    finally:
        first.stop()


async def test_two_replicas_peer_and_only_one_acts(
    cluster: Cluster, kube: k8s.Kube, tmp_path: Path
) -> None:
    ns = await new_namespace(kube, "pr")
    # A pattern, so the peering record is created as the namespace is found, not at start-up.
    args = ("--namespace", f"{ns}*", "--peering-lifetime", "4")
    high = Operator(cluster, tmp_path / "high.log", *args, "--priority", "200")
    low = Operator(cluster, tmp_path / "low.log", *args, "--priority", "100")
    try:
        high.wait_live()
        low.wait_live()

        async def both_registered() -> bool:
            peering = await kube.get(k8s.PEERINGS, ns, "turnpike-operator")
            records = [v for v in ((peering or {}).get("status") or {}).values() if v]
            return len(records) == 2

        await eventually(both_registered, what="both replicas in the peering record")
        await kube.create(k8s.RELAY_EDGES, ns, edge("a", addresses={"static": ["192.0.2.1"]}))
        await eventually(lambda: ranges_doc(kube, ns), what="edge a published")

        async def high_handled() -> bool:
            return "Handler 'reconcile' succeeded" in high.output

        await eventually(high_handled, what="the active replica's handler log")
        assert "Handler 'reconcile'" not in low.output

        mark = len(low.output)
        high.kill()

        async def low_resumed() -> bool:
            return "Resuming operations after the pause" in low.output[mark:]

        await eventually(low_resumed, timeout=30, what="the survivor resuming")
        await kube.create(k8s.RELAY_EDGES, ns, edge("b", addresses={"static": ["192.0.2.2"]}))

        async def b_published() -> bool:
            return "b" in published(await ranges_doc(kube, ns))

        await eventually(b_published, what="edge b published by the survivor")
        await delete_namespace(kube, ns)
    finally:
        high.stop()
        low.stop()


async def test_metrics_and_liveness(operator: Operator, kube: k8s.Kube, ns: str) -> None:
    await kube.create(k8s.RELAY_EDGES, ns, edge("metered", addresses={"static": ["192.0.2.5"]}))
    await eventually(lambda: ranges_doc(kube, ns), what="edge published")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{operator.liveness_port}/healthz") as resp:
            assert resp.status == 200
        async with session.get(f"http://127.0.0.1:{operator.metrics_port}/ready") as resp:
            assert resp.status == 200
        async with session.get(f"http://127.0.0.1:{operator.metrics_port}/metrics") as resp:
            text = await resp.text()
    success = re.search(
        r'turnpike_operator_reconciles_total\{kind="RelayEdge",result="success"\} (\d+)', text
    )
    assert success and float(success.group(1)) >= 1, text
    assert 'turnpike_operator_reconcile_duration_seconds_count{kind="RelayEdge"}' in text
    assert "turnpike_operator_published_writes_total" in text


async def test_every_api_call_is_covered_by_the_rbac_list(
    cluster: Cluster, operator: Operator, kube: k8s.Kube, ns: str
) -> None:
    """Audit the requests the operator (and kopf inside it) sent to the emulator during the
    suite against kube.RESOURCES, which the Helm chart's RBAC is built from."""
    if cluster.api is None or cluster.api.routes is None:
        pytest.skip("request audit needs the emulator")
    await kube.create(k8s.RELAY_EDGES, ns, edge("audit", addresses={"static": ["192.0.2.3"]}))
    await eventually(lambda: ranges_doc(kube, ns), what="edge published")
    await kube.delete(k8s.RELAY_EDGES, ns, "audit")

    async def unpublished() -> bool:
        return published(await ranges_doc(kube, ns)) == {}

    await eventually(unpublished, what="edge unpublished")
    allowed = {(res.group, res.plural, verb) for res, verbs, _ in k8s.RESOURCES for verb in verbs}
    used = operator_requests(cluster.api)
    assert used, "no operator requests were recorded"
    assert used <= allowed, f"not in kube.RESOURCES: {sorted(used - allowed)}"
    for needed in [
        ("turnpike.io", "relayedges", "watch"),
        ("turnpike.io", "relayedges/status", "patch"),
        ("apps", "deployments", "create"),
        ("", "configmaps", "update"),
    ]:
        assert needed in used, needed
