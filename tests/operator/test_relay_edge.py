"""RelayEdge end to end: the real operator process against the Kubernetes API."""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

import pytest
from support.kube_e2e import (
    Cluster,
    condition,
    directory_doc,
    edge,
    events_for,
    eventually,
    published,
    ranges_doc,
)

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e

RELAY = labels.relay_name


def pod_annotations(workload: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = workload["spec"]["template"]["metadata"]["annotations"]
    return annotations


async def test_edge_create_update_delete(cluster: Cluster, kube: k8s.Kube, ns: str) -> None:
    static = ["198.51.100.0/25", "198.51.100.128/25", "192.0.2.7"]
    await kube.create(
        k8s.RELAY_EDGES,
        ns,
        edge("ashburn", "US East Coast (Virginia)", addresses={"static": static}),
    )

    async def children() -> dict[str, Any] | None:
        found = {
            "deployment": await kube.get(k8s.DEPLOYMENTS, ns, RELAY("ashburn")),
            "service": await kube.get(k8s.SERVICES, ns, RELAY("ashburn")),
            "pdb": await kube.get(k8s.PDBS, ns, RELAY("ashburn")),
            "config": await kube.get(k8s.CONFIGMAPS, ns, RELAY("ashburn")),
            "keyring": await kube.get(k8s.SECRETS, ns, "turnpike-keyring"),
        }
        return found if all(found.values()) else None

    found = await eventually(children, what="relay children")
    deployment = found["deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:3] == ["relay", "--listen", "0.0.0.0:3478"]
    assert pod["terminationGracePeriodSeconds"] == 3600
    assert deployment["spec"]["replicas"] == 2
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("RelayEdge", "ashburn", True)
    assert deployment["metadata"]["labels"][labels.EDGE] == "ashburn"
    service = found["service"]["spec"]
    assert (service["type"], service["externalTrafficPolicy"]) == ("LoadBalancer", "Local")
    config = found["config"]["data"]
    assert config["TURNPIKE_REALM"] == "ashburn.turn.example.com"
    assert "10.96.0.0/12" in config["TURNPIKE_DENY_PEER"].split(",")
    assert config["TURNPIKE_RELAY_PORTS"] == "49152-65535"

    # Published: collapsed and sorted ranges, the edge directory.
    async def with_addresses() -> dict[str, Any] | None:
        doc = await ranges_doc(kube, ns)
        return doc if published(doc).get("ashburn", {}).get("relay", {}).get("cidrs") else None

    doc = await eventually(with_addresses, what="ranges ConfigMap")
    entry = published(doc)["ashburn"]
    assert entry["location"] == "US East Coast (Virginia)"
    assert entry["relay"]["cidrs"] == ["192.0.2.7/32", "198.51.100.0/24"]
    assert {"port": 3478, "protocol": "udp"} in entry["relay"]["ports"]
    assert entry["relay"]["relayPorts"] == "49152-65535"
    assert "generated" in doc
    cm = await kube.get(k8s.CONFIGMAPS, ns, labels.IP_RANGES)
    assert cm is not None and "ashburn" in cm["data"]["ranges.txt"]
    assert "198.51.100.0/24" in cm["data"]["ranges.txt"]
    directory = await eventually(lambda: directory_doc(kube, ns), what="edge directory")
    assert directory == {
        "global": {"host": "global.turn.example.com"},
        "edges": [
            {
                "name": "ashburn",
                "location": "US East Coast (Virginia)",
                "host": "ashburn.turn.example.com",
                "ports": {"udp": 3478, "tcp": 3478, "tls": 3478},
            }
        ],
    }

    async def ready() -> dict[str, Any] | None:
        obj = await kube.get(k8s.RELAY_EDGES, ns, "ashburn")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    if cluster.runs_pods:
        obj = await eventually(ready, what="edge Ready")
        assert obj["status"]["readyReplicas"] == 2 and obj["status"]["ready"] == "2/2"
        assert obj["status"]["observedGeneration"] == 1
        assert condition(obj, "Degraded")["status"] == "False"
        assert obj["status"]["addresses"] == ["192.0.2.7/32", "198.51.100.0/24"]
    reasons = {e["reason"] for e in await events_for(kube, ns, "ashburn")}
    assert "Reconciled" in reasons

    # Update: replicas and relay ports roll out (the pod template carries the config's hash, so
    # the relays restart with the new config); the published ranges follow.
    first_hash = pod_annotations(deployment)[labels.CONFIG_HASH]
    await kube.patch(
        k8s.RELAY_EDGES,
        ns,
        "ashburn",
        {"spec": {"replicas": 3, "relayPorts": {"min": 40000, "max": 40999}}},
    )

    async def updated() -> bool:
        dep = await kube.get(k8s.DEPLOYMENTS, ns, RELAY("ashburn"))
        config_map = await kube.get(k8s.CONFIGMAPS, ns, RELAY("ashburn"))
        doc = await ranges_doc(kube, ns)
        return bool(
            dep
            and dep["spec"]["replicas"] == 3
            and config_map
            and config_map["data"]["TURNPIKE_RELAY_PORTS"] == "40000-40999"
            and published(doc)["ashburn"]["relay"]["relayPorts"] == "40000-40999"
            and pod_annotations(dep)[labels.CONFIG_HASH] != first_hash
        )

    await eventually(updated, what="update rolled out")

    async def announced() -> bool:
        messages = [e["message"] for e in await events_for(kube, ns, "ashburn")]
        return f"updated Deployment {RELAY('ashburn')}" in messages

    await eventually(announced, what="an update Event")
    if cluster.runs_pods:

        async def observed() -> bool:
            obj = await kube.get(k8s.RELAY_EDGES, ns, "ashburn")
            return bool(obj and obj["status"].get("observedGeneration") == 2)

        await eventually(observed, what="observedGeneration 2")

    # Delete: gone from the ranges and the directory, children collected.
    await kube.delete(k8s.RELAY_EDGES, ns, "ashburn")

    async def unpublished() -> bool:
        return (
            await kube.get(k8s.RELAY_EDGES, ns, "ashburn") is None
            # Empty documents, not missing ConfigMaps: readers get "no edges", not a 404.
            and await ranges_doc(kube, ns) == {"edges": [], "generated": ANY}
            and ((await directory_doc(kube, ns)) or {}).get("edges") == []
        )

    await eventually(unpublished, what="edge unpublished")
    if cluster.emulated:  # a real cluster's garbage collector takes its time
        assert await kube.get(k8s.DEPLOYMENTS, ns, RELAY("ashburn")) is None


RESOURCE_QUOTAS = k8s.Resource("", "v1", "resourcequotas", "ResourceQuota")


async def test_a_refused_child_is_reported_then_retried(
    cluster: Cluster, kube: k8s.Kube, ns: str
) -> None:
    """The API refuses the edge's LoadBalancer Service (a quota): the edge says why in a
    Degraded condition and one Warning Event, and the retries succeed once the quota goes."""
    quota = {
        "metadata": {"name": "no-load-balancers"},
        "spec": {"hard": {"services.loadbalancers": "0"}},
    }
    await kube.create(RESOURCE_QUOTAS, ns, quota)
    await kube.create(k8s.RELAY_EDGES, ns, edge("quota", addresses={"static": ["192.0.2.7"]}))

    async def degraded() -> dict[str, Any]:
        cond = condition(await kube.get(k8s.RELAY_EDGES, ns, "quota"), "Degraded")
        return cond if cond.get("reason") == "ReconcileFailed" else {}

    cond = await eventually(degraded, what="Degraded=True ReconcileFailed")
    assert cond["status"] == "True"
    assert "exceeded quota" in cond["message"], cond
    assert await kube.get(k8s.SERVICES, ns, RELAY("quota")) is None

    async def failures() -> list[dict[str, Any]]:
        events = await events_for(kube, ns, "quota")
        return [e for e in events if e.get("reason") == "ReconcileFailed"]

    assert (await eventually(failures, what="a ReconcileFailed Event"))[0]["type"] == "Warning"
    await kube.delete(RESOURCE_QUOTAS, ns, "no-load-balancers")
    await eventually(
        lambda: kube.get(k8s.SERVICES, ns, RELAY("quota")), what="the Service after the retry"
    )

    async def recovered() -> bool:
        cond = condition(await kube.get(k8s.RELAY_EDGES, ns, "quota"), "Degraded")
        return cond.get("status") == "False"

    await eventually(recovered, what="Degraded=False once the retry succeeded")

    async def listed() -> bool:  # the namespace is republished just after the edge's reconcile
        return "quota" in published(await ranges_doc(kube, ns))

    await eventually(listed, what="the edge published")
    # Retried many times (every half second here), reported once.
    reported = await failures()
    assert len(reported) == 1, [(e["message"], e.get("count")) for e in reported]
