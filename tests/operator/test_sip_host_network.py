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
