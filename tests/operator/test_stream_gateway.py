"""StreamGateway end to end, including a gateway whose edge does not exist (yet)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.kube_e2e import (
    Cluster,
    condition,
    edge,
    events_for,
    eventually,
    gateway,
    published,
    ranges_doc,
)

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e

GW = labels.gateway_name


async def test_gateway_create_update_delete(cluster: Cluster, kube: k8s.Kube, ns: str) -> None:
    await kube.create(
        k8s.RELAY_EDGES, ns, edge("dublin", "Ireland", addresses={"static": ["192.0.2.0/24"]})
    )
    spec = {
        "egress": {"static": ["198.51.100.32/28", "198.51.100.48/28"]},
        "allowedDestinations": ["10.1.0.0/16"],
        "rtpPorts": {"min": 30000, "max": 30999},
    }
    await kube.create(k8s.STREAM_GATEWAYS, ns, gateway("media", "dublin", **spec))

    async def children() -> dict[str, Any] | None:
        found = {
            "deployment": await kube.get(k8s.DEPLOYMENTS, ns, GW("media")),
            "service": await kube.get(k8s.SERVICES, ns, GW("media")),
            "config": await kube.get(k8s.CONFIGMAPS, ns, GW("media")),
        }
        return found if all(found.values()) else None

    found = await eventually(children, what="gateway children")
    container = found["deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["streamgw"]
    assert found["config"]["data"]["TURNPIKE_RTP_PORTS"] == "30000-30999"
    assert found["config"]["data"]["TURNPIKE_ALLOW_DESTINATION"] == "10.1.0.0/16"
    assert found["service"]["spec"]["ports"][0]["port"] == 8080
    owner = found["deployment"]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("StreamGateway", "media")

    async def streams() -> list[str] | None:
        entry = published(await ranges_doc(kube, ns)).get("dublin")
        cidrs: list[str] = (entry or {}).get("streams", {}).get("cidrs", [])
        return cidrs or None

    assert await eventually(streams, what="stream ranges") == ["198.51.100.32/27"]
    obj = await kube.get(k8s.STREAM_GATEWAYS, ns, "media")
    assert obj is not None
    assert obj["status"]["location"] == "Ireland" and obj["status"]["edge"] == "dublin"
    if cluster.runs_pods:

        async def ready() -> bool:
            obj = await kube.get(k8s.STREAM_GATEWAYS, ns, "media")
            return condition(obj, "Ready").get("status") == "True"

        await eventually(ready, what="gateway Ready")

    await kube.patch(k8s.STREAM_GATEWAYS, ns, "media", {"spec": {"replicas": 4}})

    async def scaled() -> bool:
        dep = await kube.get(k8s.DEPLOYMENTS, ns, GW("media"))
        return bool(dep and dep["spec"]["replicas"] == 4)

    await eventually(scaled, what="gateway scaled")

    await kube.delete(k8s.STREAM_GATEWAYS, ns, "media")

    async def unpublished() -> bool:
        entry = published(await ranges_doc(kube, ns)).get("dublin")
        return bool(entry) and entry["streams"]["cidrs"] == []

    await eventually(unpublished, what="stream ranges removed")


async def test_gateway_with_missing_edge_is_degraded_then_recovers(kube: k8s.Kube, ns: str) -> None:
    await kube.create(k8s.STREAM_GATEWAYS, ns, gateway("orphan", "nowhere"))

    async def degraded() -> dict[str, Any] | None:
        obj = await kube.get(k8s.STREAM_GATEWAYS, ns, "orphan")
        cond = condition(obj, "Degraded")
        return cond if cond.get("status") == "True" else None

    cond = await eventually(degraded, what="Degraded condition")
    assert cond["reason"] == "EdgeNotFound"
    assert 'RelayEdge "nowhere" does not exist' in cond["message"]

    async def warned() -> list[dict[str, Any]]:
        return [
            e
            for e in await events_for(kube, ns, "orphan")
            if e["reason"] == "EdgeNotFound" and e["type"] == "Warning"
        ]

    await eventually(warned, what="Warning Event")
    assert await kube.get(k8s.DEPLOYMENTS, ns, GW("orphan")) is None

    # The edge appears: the gateway binds to it without any change to the gateway itself.
    await kube.create(
        k8s.RELAY_EDGES, ns, edge("nowhere", "Found", addresses={"static": ["192.0.2.1"]})
    )

    async def bound() -> bool:
        obj = await kube.get(k8s.STREAM_GATEWAYS, ns, "orphan")
        return (
            condition(obj, "Degraded").get("status") == "False"
            and await kube.get(k8s.DEPLOYMENTS, ns, GW("orphan")) is not None
        )

    await eventually(bound, what="gateway bound after the edge appeared")

    # And when the edge goes away again, the gateway says so.
    await kube.delete(k8s.RELAY_EDGES, ns, "nowhere")
    await eventually(degraded, what="Degraded again after the edge was deleted")


async def test_sip_gateway_is_wired_and_published(kube: k8s.Kube, ns: str) -> None:
    """``spec.sip``: the Deployment and Service carry the SIP port (UDP and TCP) and the numbers
    file, and `turnpike-ip-ranges` publishes where carriers send signalling and RTP."""
    await kube.create(
        k8s.RELAY_EDGES, ns, edge("ashburn", "US East", addresses={"static": ["192.0.2.0/24"]})
    )
    numbers = {"numbers": []}
    await kube.create(
        k8s.CONFIGMAPS,
        ns,
        {
            "metadata": {"name": "numbers", "namespace": ns},
            "data": {"numbers.json": json.dumps(numbers)},
        },
    )
    spec = {
        "egress": {"static": ["198.51.100.16/28"]},
        "rtpPorts": {"min": 31000, "max": 31999},
        "sip": {"trustedCidrs": ["203.0.113.0/24"], "numbers": {"configMapName": "numbers"}},
    }
    await kube.create(k8s.STREAM_GATEWAYS, ns, gateway("trunk", "ashburn", **spec))

    async def sip_ranges() -> dict[str, Any] | None:
        entry = published(await ranges_doc(kube, ns)).get("ashburn") or {}
        found: dict[str, Any] | None = entry.get("sip")
        return found

    assert await eventually(sip_ranges, what="SIP ranges") == {
        "cidrs": ["198.51.100.16/28"],
        "ports": [{"port": 5060, "protocol": "udp"}, {"port": 5060, "protocol": "tcp"}],
        "rtpPorts": ["31000-31999"],
    }
    service = await kube.get(k8s.SERVICES, ns, GW("trunk"))
    assert service is not None
    assert [(p["port"], p["protocol"]) for p in service["spec"]["ports"]] == [
        (8080, "TCP"),
        (5060, "UDP"),
        (5060, "TCP"),
    ]
    config = await kube.get(k8s.CONFIGMAPS, ns, GW("trunk"))
    assert config is not None and config["data"]["TURNPIKE_SIP_TRUST"] == "203.0.113.0/24"
    deployment = await kube.get(k8s.DEPLOYMENTS, ns, GW("trunk"))
    assert deployment is not None
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "numbers", "configMap": {"name": "numbers", "defaultMode": 0o440}} in volumes
