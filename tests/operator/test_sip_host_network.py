"""A SIP gateway on its nodes' network (``spec.hostNetwork``): carriers send SIP and RTP to the
node's address, which `turnpike-ip-ranges` publishes with the SIP and RTP ports."""

from __future__ import annotations

from typing import Any

import pytest
from support.kube_e2e import (
    Cluster,
    edge,
    emulator_only,
    eventually,
    gateway,
    node_body,
    published,
    put_node,
    ranges_doc,
)

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e


async def test_host_network_gateway_publishes_its_nodes_for_sip_and_rtp(
    cluster: Cluster, kube: k8s.Kube, ns: str
) -> None:
    emulator_only(cluster)
    pool = ns
    nodes = {f"{ns}-s1": ("203.0.113.20", "10.9.0.20"), f"{ns}-s2": ("203.0.113.21", "10.9.0.21")}
    for name, (external, internal) in nodes.items():
        await put_node(kube, node_body(name, external, internal, pool))
    try:
        await kube.create(k8s.RELAY_EDGES, ns, edge("lyon", addresses={"static": ["192.0.2.0/24"]}))
        numbers = {"metadata": {"name": "numbers"}, "data": {"numbers.json": '{"numbers": []}'}}
        await kube.create(k8s.CONFIGMAPS, ns, numbers)
        spec = {
            "hostNetwork": True,
            "nodeSelector": {"turnpike.test/pool": pool},
            "rtpPorts": {"min": 40000, "max": 40999},
            "sip": {"numbers": {"configMapName": "numbers"}, "trustedCidrs": ["198.51.100.0/24"]},
        }
        await kube.create(k8s.STREAM_GATEWAYS, ns, gateway("trunk", "lyon", **spec))

        async def sip_ranges() -> dict[str, Any] | None:
            entry = (published(await ranges_doc(kube, ns)).get("lyon") or {}).get("sip")
            return entry if entry and entry["cidrs"] else None

        assert await eventually(sip_ranges, what="the nodes' addresses for SIP and RTP") == {
            "cidrs": ["203.0.113.20/31"],
            "ports": [{"port": 5060, "protocol": "udp"}, {"port": 5060, "protocol": "tcp"}],
            "rtpPorts": ["40000-40999"],
        }
        deployment = await kube.get(k8s.DEPLOYMENTS, ns, labels.gateway_name("trunk"))
        assert deployment is not None
        pod = deployment["spec"]["template"]["spec"]
        assert (pod["hostNetwork"], pod["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
        rolling = deployment["spec"]["strategy"]["rollingUpdate"]
        assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (0, 1)
        # The RTP address is the pod's, which on the host network is the node's.
        env = pod["containers"][0]["env"]
        assert {
            "name": "TURNPIKE_RTP_IP",
            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
        } in env

        # Back on the pod network: no host network, the default rolling update.
        await kube.patch(k8s.STREAM_GATEWAYS, ns, "trunk", {"spec": {"hostNetwork": False}})

        async def off_host() -> bool:
            found = await kube.get(k8s.DEPLOYMENTS, ns, labels.gateway_name("trunk"))
            return bool(found) and not found["spec"]["template"]["spec"].get("hostNetwork")

        await eventually(off_host, what="the gateway back on the pod network")
    finally:
        for name in nodes:
            await kube.delete(k8s.NODES, None, name)


SIP_443 = {"numbers": {"configMapName": "n"}, "tls": {"secretName": "c", "port": 443}}


def _pod(**spec: Any) -> dict[str, Any]:
    from turnpike.operator import gateway as builder
    from turnpike.operator.model import StreamGateway

    body = {"metadata": {"name": "m", "namespace": "ns"}, "spec": {"edge": "a", **spec}}
    owner = {"apiVersion": "turnpike.io/v1alpha1", "kind": "StreamGateway",
             "metadata": {"name": "m", "namespace": "ns", "uid": "u"}}  # fmt: skip
    _, deployment, _ = builder.children(StreamGateway.parse(body, "image"), owner)
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_ports_below_1024_open_by_sysctl_on_the_pod_network_only() -> None:
    from support.kubeapi import schema as schema_support

    from turnpike.operator import crds
    from turnpike.operator.model import SpecError

    sysctl = {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}
    assert _pod(sip=SIP_443)["securityContext"]["sysctls"] == [sysctl]
    assert _pod(port=80)["securityContext"]["sysctls"] == [sysctl]
    assert "sysctls" not in _pod(sip={**SIP_443, "tls": {"secretName": "c"}})["securityContext"]
    # On the node's network that sysctl would be the node's: such ports are refused instead.
    schema = crds.stream_gateway_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = {"spec": {"edge": "a", "hostNetwork": True, "sip": SIP_443}}
    errors = schema_support.validate(schema_support.prune_and_default(obj, schema), schema)
    assert len(errors) == 1 and "with hostNetwork every gateway port" in errors[0], errors
    with pytest.raises(SpecError, match="spec.hostNetwork: port 443 is below 1024"):
        _pod(hostNetwork=True, sip=SIP_443)
