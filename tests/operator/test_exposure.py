"""Edges and gateways on clouds: Service settings, split protocols, placement, resources."""

from __future__ import annotations

from typing import Any

import pytest
from support.kube_e2e import Cluster, emulator_only, eventually, published, ranges_doc
from support.kube_e2e import edge as e2e_edge
from support.kubeapi import schema

from turnpike.operator import crds, gateway, labels, relay
from turnpike.operator import kube as k8s
from turnpike.operator.model import RelayEdge, SpecError, StreamGateway

OWNER = {
    "apiVersion": "turnpike.io/v1alpha1",
    "kind": "RelayEdge",
    "metadata": {"name": "fra", "namespace": "ns", "uid": "u-1"},
}


def _edge(**spec: Any) -> RelayEdge:
    body = {
        "metadata": {"name": "fra", "namespace": "ns"},
        "spec": {"location": "Frankfurt", "publicHostname": "fra.example.com", **spec},
    }
    return RelayEdge.parse(body, "turnpike:test")


def _gateway(**spec: Any) -> StreamGateway:
    body = {"metadata": {"name": "gw", "namespace": "ns"}, "spec": {"edge": "fra", **spec}}
    return StreamGateway.parse(body, "turnpike:test")


def _pod_spec(edge: RelayEdge) -> dict[str, Any]:
    spec: dict[str, Any] = relay.workload(edge, OWNER, {}, "keyring")["spec"]["template"]["spec"]
    return spec


def test_one_service_with_both_protocols_by_default() -> None:
    edge = _edge(tlsSecretName="tls")
    (svc,) = relay.services(edge, OWNER)
    assert svc["metadata"]["name"] == "turnpike-relay-fra"
    assert [(p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [
        (3478, "UDP"),
        (3478, "TCP"),
        (443, "TCP"),
        (5349, "TCP"),
    ]
    assert "annotations" not in svc["metadata"]
    assert "loadBalancerClass" not in svc["spec"]
    assert relay.stale_service_names(edge) == ["turnpike-relay-fra-udp", "turnpike-relay-fra-tcp"]


def test_split_services_carry_the_cloud_settings() -> None:
    settings = {
        "splitProtocols": True,
        "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "external"},
        "loadBalancerClass": "service.k8s.aws/nlb",
        "loadBalancerSourceRanges": ["198.51.100.0/24", "203.0.113.7"],
    }
    edge = _edge(tlsSecretName="tls", service=settings)
    udp, tcp = relay.services(edge, OWNER)
    assert (udp["metadata"]["name"], tcp["metadata"]["name"]) == (
        "turnpike-relay-fra-udp",
        "turnpike-relay-fra-tcp",
    )
    assert [p["protocol"] for p in udp["spec"]["ports"]] == ["UDP"]
    assert [p["port"] for p in tcp["spec"]["ports"]] == [3478, 443, 5349]
    for svc in (udp, tcp):
        assert svc["metadata"]["annotations"] == settings["annotations"]
        assert svc["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
        # A bare address becomes the /32 a Service requires.
        assert svc["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24", "203.0.113.7/32"]
        assert svc["spec"]["externalTrafficPolicy"] == "Local"
        assert svc["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert relay.stale_service_names(edge) == ["turnpike-relay-fra"]
    children = relay.children(edge, OWNER, [], None, "keyring")
    assert [c["metadata"]["name"] for c in children if c["kind"] == "Service"] == [
        "turnpike-relay-fra-udp",
        "turnpike-relay-fra-tcp",
    ]


def test_host_network_relays_have_no_service() -> None:
    edge = _edge(hostNetwork=True, mode="DaemonSet")
    assert relay.services(edge, OWNER) == []
    assert len(relay.stale_service_names(edge)) == 3
    assert "topologySpreadConstraints" not in _pod_spec(edge)  # one per node anyway


def test_relays_spread_over_zones_and_nodes_with_default_resources() -> None:
    spec = _pod_spec(_edge())
    spread = spec["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread)
    assert all(c["labelSelector"]["matchLabels"] == labels.relay_selector("fra") for c in spread)
    assert spec["containers"][0]["resources"] == crds.RELAY_RESOURCES
    assert "priorityClassName" not in spec


def test_placement_and_resources_can_be_chosen_or_turned_off() -> None:
    mine = [{"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}]
    resources = {"requests": {"cpu": "2"}}
    spec = _pod_spec(
        _edge(priorityClassName="media", topologySpreadConstraints=mine, resources=resources)
    )
    assert spec["priorityClassName"] == "media"
    assert spec["topologySpreadConstraints"] == mine
    assert spec["containers"][0]["resources"] == resources
    spec = _pod_spec(_edge(topologySpreadConstraints=[], resources={}))
    assert "topologySpreadConstraints" not in spec
    assert "resources" not in spec["containers"][0]


def test_gateway_service_and_placement() -> None:
    svc = gateway.service(_gateway(), OWNER)
    assert svc["spec"]["type"] == "ClusterIP" and "loadBalancerClass" not in svc["spec"]
    exposed = _gateway(
        service={
            "type": "LoadBalancer",
            "annotations": {"a": "b"},
            "loadBalancerClass": "example.com/lb",
            "loadBalancerSourceRanges": ["192.0.2.0/24"],
        },
        priorityClassName="media",
    )
    svc = gateway.service(exposed, OWNER)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["loadBalancerClass"] == "example.com/lb"
    assert svc["spec"]["loadBalancerSourceRanges"] == ["192.0.2.0/24"]
    assert svc["metadata"]["annotations"] == {"a": "b"}
    pod = gateway.deployment(exposed, OWNER, {})["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "media"
    assert pod["containers"][0]["resources"] == crds.GATEWAY_RESOURCES
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    with pytest.raises(SpecError, match="need type LoadBalancer"):
        _gateway(service={"loadBalancerClass": "example.com/lb"})
    with pytest.raises(SpecError, match="loadBalancerSourceRanges: '10.0.0.0/33'"):
        _edge(service={"loadBalancerSourceRanges": ["10.0.0.0/33"]})


def test_the_api_refuses_load_balancer_settings_on_a_cluster_ip_gateway() -> None:
    crd = crds.stream_gateway_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    body = {"spec": {"edge": "fra", "service": {"loadBalancerClass": "example.com/lb"}}}
    errors = schema.validate(schema.prune_and_default(body, crd), crd)
    assert errors == [
        'spec.service: Invalid value: "object": loadBalancerClass and loadBalancerSourceRanges '
        "need type LoadBalancer"
    ]
    body["spec"]["service"]["type"] = "LoadBalancer"
    assert schema.validate(schema.prune_and_default(body, crd), crd) == []


@pytest.mark.e2e
async def test_split_services_are_discovered_and_switched(
    cluster: Cluster, kube: k8s.Kube, ns: str
) -> None:
    emulator_only(cluster)
    settings = {
        "splitProtocols": True,
        "annotations": {"example.com/lb-type": "nlb"},
        "loadBalancerClass": "example.com/lb",
    }
    await kube.create(k8s.RELAY_EDGES, ns, e2e_edge("split", service=settings))
    name = labels.relay_name("split")

    async def both() -> list[dict[str, Any]] | None:
        found = [await kube.get(k8s.SERVICES, ns, f"{name}-{p}") for p in ("udp", "tcp")]
        return [s for s in found if s] if all(found) else None

    udp, tcp = await eventually(both, what="a Service per protocol")
    assert udp["spec"]["loadBalancerClass"] == "example.com/lb"
    assert tcp["metadata"]["annotations"]["example.com/lb-type"] == "nlb"
    assert await kube.get(k8s.SERVICES, ns, name) is None
    # A cloud that gives each its own address: both are published.
    for suffix, ip in (("udp", "192.0.2.10"), ("tcp", "192.0.2.11")):
        ingress = {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
        await kube.patch(k8s.SERVICES, ns, f"{name}-{suffix}", ingress, sub="status")

    async def discovered() -> bool:
        entry = published(await ranges_doc(kube, ns)).get("split")
        return bool(entry and entry["relay"]["cidrs"] == ["192.0.2.10/31"])

    await eventually(discovered, what="both load balancer addresses published")

    # Back to one Service: the per-protocol ones go.
    await kube.patch(k8s.RELAY_EDGES, ns, "split", {"spec": {"service": {"splitProtocols": False}}})

    async def merged() -> bool:
        gone = [await kube.get(k8s.SERVICES, ns, f"{name}-{p}") for p in ("udp", "tcp")]
        return gone == [None, None] and await kube.get(k8s.SERVICES, ns, name) is not None

    await eventually(merged, what="one Service with both protocols")
