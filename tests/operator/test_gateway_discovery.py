"""StreamGateway egress discovered from the nodes its pods run on, and invalid gateway specs."""

from __future__ import annotations

from typing import Any

import pytest
from support.kube_e2e import (
    Cluster,
    condition,
    edge,
    emulator_only,
    events_for,
    eventually,
    gateway,
    node_body,
    older_crds,
    published,
    put_node,
    ranges_doc,
)

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e

GW = labels.gateway_name


async def test_gateway_egress_follows_its_nodes(cluster: Cluster, kube: k8s.Kube, ns: str) -> None:
    emulator_only(cluster)
    pool = ns
    await put_node(kube, node_body(f"{ns}-g1", "203.0.113.10", "10.8.0.10", pool))
    await put_node(kube, node_body(f"{ns}-g2", "203.0.113.11", "10.8.0.11", pool))
    try:
        await kube.create(
            k8s.RELAY_EDGES, ns, edge("paris", "France", addresses={"static": ["192.0.2.0/24"]})
        )
        # No egress given: the default source is the ExternalIP of the nodes running its pods.
        await kube.create(
            k8s.STREAM_GATEWAYS,
            ns,
            gateway("media", "paris", nodeSelector={"turnpike.test/pool": pool}),
        )

        async def streams(expected: list[str]) -> bool:
            entry = published(await ranges_doc(kube, ns)).get("paris")
            return bool(entry) and entry["streams"]["cidrs"] == expected

        await eventually(
            lambda: streams(["203.0.113.10/31"]), what="gateway node addresses published"
        )
        obj = await kube.get(k8s.STREAM_GATEWAYS, ns, "media")
        assert obj is not None and obj["status"]["addresses"] == ["203.0.113.10/31"]

        # One node's ExternalIP changes: the published stream ranges follow.
        await put_node(kube, node_body(f"{ns}-g2", "198.51.100.200", "10.8.0.11", pool))
        await eventually(
            lambda: streams(["198.51.100.200/32", "203.0.113.10/32"]),
            what="changed gateway ExternalIP published",
        )

        # Deleting the gateway collects its children and empties the edge's stream ranges.
        await kube.delete(k8s.STREAM_GATEWAYS, ns, "media")

        async def collected() -> bool:
            return (
                await kube.get(k8s.STREAM_GATEWAYS, ns, "media") is None
                and await kube.get(k8s.DEPLOYMENTS, ns, GW("media")) is None
                and await kube.get(k8s.SERVICES, ns, GW("media")) is None
                and await kube.get(k8s.CONFIGMAPS, ns, GW("media")) is None
                and await streams([])
            )

        await eventually(collected, what="gateway children collected and unpublished")
    finally:
        for name in (f"{ns}-g1", f"{ns}-g2"):
            await kube.delete(k8s.NODES, None, name)


async def test_invalid_gateway_specs_are_rejected_with_clear_messages(
    kube: k8s.Kube, ns: str
) -> None:
    await kube.create(
        k8s.RELAY_EDGES, ns, edge("lyon", "France", addresses={"static": ["192.0.2.1"]})
    )
    bad_ports = gateway("bad", "lyon", rtpPorts={"min": 30000, "max": 20000})
    with pytest.raises(k8s.ApiError) as err:
        await kube.create(k8s.STREAM_GATEWAYS, ns, bad_ports)
    assert err.value.status == 422
    assert "spec.rtpPorts" in err.value.message
    assert "min must not be greater than max" in err.value.message

    both = gateway("bad", "lyon", egress={"static": ["192.0.2.0/24"], "source": "NodeExternalIP"})
    with pytest.raises(k8s.ApiError) as err:
        await kube.create(k8s.STREAM_GATEWAYS, ns, both)
    assert err.value.status == 422
    assert "mutually exclusive" in err.value.message

    not_a_cidr = gateway("odd", "lyon", allowedDestinations=["10.0.0.0/33"])
    with pytest.raises(k8s.ApiError) as err:
        await kube.create(k8s.STREAM_GATEWAYS, ns, not_a_cidr)
    assert err.value.status == 422
    assert 'spec.allowedDestinations[0]: Invalid value: "string": "10.0.0.0/33" is not an IP' in (
        err.value.message
    )

    # Stored before the CRD had that rule: Degraded with InvalidSpec, a Warning Event, no
    # children.
    async with older_crds(kube):
        await kube.create(k8s.STREAM_GATEWAYS, ns, not_a_cidr)

    async def degraded() -> dict[str, Any] | None:
        cond = condition(await kube.get(k8s.STREAM_GATEWAYS, ns, "odd"), "Degraded")
        return cond if cond.get("status") == "True" else None

    cond = await eventually(degraded, what="InvalidSpec condition on the gateway")
    assert cond["reason"] == "InvalidSpec"
    assert (
        "spec.allowedDestinations: '10.0.0.0/33' is not an IP address or CIDR" in (cond["message"])
    )

    async def warned() -> bool:
        return any(
            e["reason"] == "InvalidSpec" and e["type"] == "Warning"
            for e in await events_for(kube, ns, "odd")
        )

    await eventually(warned, what="an InvalidSpec Warning Event")
    assert await kube.get(k8s.DEPLOYMENTS, ns, GW("odd")) is None

    await kube.patch(
        k8s.STREAM_GATEWAYS, ns, "odd", {"spec": {"allowedDestinations": ["10.0.0.0/16"]}}
    )

    async def fixed() -> bool:
        obj = await kube.get(k8s.STREAM_GATEWAYS, ns, "odd")
        return (
            condition(obj, "Degraded").get("status") == "False"
            and await kube.get(k8s.DEPLOYMENTS, ns, GW("odd")) is not None
        )

    await eventually(fixed, what="gateway recovered after the fix")
