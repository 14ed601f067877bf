"""The address a SIP gateway announces in SDP and Contact (issue 18): a pod behind a cloud's
LoadBalancer or NAT must not announce its private address. The operator sets the gateway's
``--sip-announce-ip`` (``TURNPIKE_SIP_ANNOUNCE_IP`` in its ConfigMap) from
``spec.sip.announceAddress``, else from the LoadBalancer Service's ingress IP."""

from __future__ import annotations

from typing import Any

import pytest
from support.kube_e2e import Cluster, edge, emulator_only, eventually, gateway

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e

ANNOUNCE = "TURNPIKE_SIP_ANNOUNCE_IP"


async def _sip_gateway(kube: k8s.Kube, ns: str, **sip: Any) -> str:
    await kube.create(k8s.RELAY_EDGES, ns, edge("paris", addresses={"static": ["192.0.2.0/24"]}))
    numbers = {"metadata": {"name": "numbers"}, "data": {"numbers.json": '{"numbers": []}'}}
    await kube.create(k8s.CONFIGMAPS, ns, numbers)
    spec = {
        "service": {"type": "LoadBalancer"},
        "sip": {"numbers": {"configMapName": "numbers"}, **sip},
    }
    await kube.create(k8s.STREAM_GATEWAYS, ns, gateway("trunk", "paris", **spec))
    return labels.gateway_name("trunk")


async def test_a_load_balanced_gateway_announces_the_ingress_ip_then_the_declared_one(
    cluster: Cluster, kube: k8s.Kube, ns: str
) -> None:
    emulator_only(cluster)
    name = await _sip_gateway(kube, ns)

    async def config() -> dict[str, str] | None:
        found = await kube.get(k8s.CONFIGMAPS, ns, name)
        return dict(found["data"]) if found else None

    async def config_hash() -> str:
        deployment = await kube.get(k8s.DEPLOYMENTS, ns, name)
        assert deployment is not None
        return str(deployment["spec"]["template"]["metadata"]["annotations"][labels.CONFIG_HASH])

    first = await eventually(config, what="the gateway's ConfigMap")
    assert "TURNPIKE_SIP" in first
    assert ANNOUNCE not in first  # no public address known yet: the pod's own
    before = await config_hash()

    # The cloud assigns the Service its address: the gateway announces it (and its pods roll,
    # since the gateway reads the address at start).
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.50"}]}}}
    await kube.patch(k8s.SERVICES, ns, name, ingress, sub="status")

    async def announced(ip: str) -> bool:
        return ((await config()) or {}).get(ANNOUNCE) == ip

    await eventually(lambda: announced("203.0.113.50"), what="the LoadBalancer IP announced")
    assert await config_hash() != before

    # A declared address wins over the discovered one (a NAT in front of the load balancer).
    patch = {"spec": {"sip": {"announceAddress": "198.51.100.7"}}}
    await kube.patch(k8s.STREAM_GATEWAYS, ns, "trunk", patch)
    await eventually(lambda: announced("198.51.100.7"), what="the declared address announced")

    # And removing it goes back to the discovered one.
    await kube.patch(k8s.STREAM_GATEWAYS, ns, "trunk", {"spec": {"sip": {"announceAddress": None}}})
    await eventually(lambda: announced("203.0.113.50"), what="back to the LoadBalancer IP")


async def test_an_announce_address_that_is_no_ip_is_refused_by_the_api(
    kube: k8s.Kube, ns: str
) -> None:
    with pytest.raises(k8s.ApiError) as refused:
        await _sip_gateway(kube, ns, announceAddress="203.0.113.300")
    assert refused.value.status == 422
    assert '"203.0.113.300" is not an IP address' in str(refused.value)


def test_the_operator_checks_the_announce_address_too() -> None:
    """Objects stored before the CRD rule existed (or on a server without CEL)."""
    from turnpike.operator.model import SpecError, StreamGateway

    body: dict[str, Any] = {
        "metadata": {"name": "trunk", "namespace": "ns"},
        "spec": {
            "edge": "paris",
            "sip": {"numbers": {"configMapName": "n"}, "announceAddress": "2001:db8::1/64"},
        },
    }
    with pytest.raises(SpecError, match="spec.sip.announceAddress: '2001:db8::1/64' is not an IP"):
        StreamGateway.parse(body, "image")
    body["spec"]["sip"]["announceAddress"] = "2001:DB8::7"
    parsed = StreamGateway.parse(body, "image")
    assert parsed.sip is not None and parsed.sip.announce_address == "2001:db8::7"
