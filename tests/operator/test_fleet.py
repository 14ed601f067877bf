"""Several edges, invalid specs, drift repair, discovered addresses."""

from __future__ import annotations

from typing import Any

import pytest
from support.kube_e2e import (
    Cluster,
    condition,
    directory_doc,
    edge,
    emulator_only,
    events_for,
    eventually,
    node_body,
    older_crds,
    published,
    put_node,
    ranges_doc,
)

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e

RELAY = labels.relay_name


async def test_two_edges_and_unchanged_content_is_not_rewritten(kube: k8s.Kube, ns: str) -> None:
    await kube.create(
        k8s.RELAY_EDGES,
        ns,
        edge("dublin", "Ireland", addresses={"static": ["52.215.127.0/24"]}),
    )
    await kube.create(
        k8s.RELAY_EDGES,
        ns,
        edge(
            "ashburn",
            "US East Coast (Virginia)",
            addresses={"static": ["54.172.61.0/24", "54.172.60.0/24", "34.203.254.0/24"]},
            tlsSecretName="ashburn-tls",
        ),
    )

    async def both() -> dict[str, Any] | None:
        doc = await ranges_doc(kube, ns)
        entries = published(doc)
        done = set(entries) == {"ashburn", "dublin"}
        return doc if done and all(e["relay"]["cidrs"] for e in entries.values()) else None

    doc = await eventually(both, what="two edges published")
    assert [e["edge"] for e in doc["edges"]] == ["ashburn", "dublin"]
    ashburn = published(doc)["ashburn"]["relay"]
    assert ashburn["cidrs"] == ["34.203.254.0/24", "54.172.60.0/23"]
    assert {"port": 443, "protocol": "tcp"} in ashburn["ports"]

    async def listed(names: list[str]) -> dict[str, Any] | None:
        directory = await directory_doc(kube, ns)
        found = [e["name"] for e in (directory or {}).get("edges", [])]
        return directory if found == names else None

    directory = await eventually(lambda: listed(["ashburn", "dublin"]), what="directory")
    assert [e["ports"]["tls"] for e in directory["edges"]] == [443, 3478]
    text = (await kube.get(k8s.CONFIGMAPS, ns, labels.IP_RANGES) or {})["data"]["ranges.txt"]
    assert text.splitlines()[1].split()[:5] == ["EDGE", "LOCATION", "SERVICE", "CIDR", "PORTS"]

    # ashburn names a TLS Secret that does not exist: Degraded says so until it does.
    async def tls_missing() -> bool:
        cond = condition(await kube.get(k8s.RELAY_EDGES, ns, "ashburn"), "Degraded")
        return cond.get("reason") == "TLSSecretNotFound" and cond.get("status") == "True"

    await eventually(tls_missing, what="TLSSecretNotFound")
    tls = {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}
    await kube.create(
        k8s.SECRETS,
        ns,
        {"metadata": {"name": "ashburn-tls"}, "type": "kubernetes.io/tls", "data": tls},
    )
    await kube.patch(
        k8s.RELAY_EDGES, ns, "ashburn", {"metadata": {"annotations": {"example/touched": "1"}}}
    )

    async def tls_found() -> bool:
        cond = condition(await kube.get(k8s.RELAY_EDGES, ns, "ashburn"), "Degraded")
        return cond.get("status") == "False"

    await eventually(tls_found, what="Degraded cleared once the Secret exists")

    # A change that does not change any address leaves the ConfigMap alone.
    before = await kube.get(k8s.CONFIGMAPS, ns, labels.IP_RANGES)
    assert before is not None
    await kube.patch(k8s.RELAY_EDGES, ns, "dublin", {"spec": {"replicas": 3}})

    async def rolled() -> bool:
        dep = await kube.get(k8s.DEPLOYMENTS, ns, RELAY("dublin"))
        return bool(dep and dep["spec"]["replicas"] == 3)

    await eventually(rolled, what="dublin scaled")
    after = await kube.get(k8s.CONFIGMAPS, ns, labels.IP_RANGES)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    # Deleting one edge leaves the other published.
    await kube.delete(k8s.RELAY_EDGES, ns, "dublin")

    async def one() -> bool:
        return set(published(await ranges_doc(kube, ns))) == {"ashburn"}

    await eventually(one, what="dublin unpublished")
    await eventually(lambda: listed(["ashburn"]), what="dublin left the directory")


async def test_invalid_specs_are_rejected_with_clear_messages(kube: k8s.Kube, ns: str) -> None:
    bad_ports = edge("bad", relayPorts={"min": 50000, "max": 40000})
    with pytest.raises(k8s.ApiError) as err:
        await kube.create(k8s.RELAY_EDGES, ns, bad_ports)
    assert err.value.status == 422
    assert "spec.relayPorts" in err.value.message
    assert "min must not be greater than max" in err.value.message

    both = edge("bad", addresses={"static": ["192.0.2.0/24"], "source": "LoadBalancer"})
    with pytest.raises(k8s.ApiError) as err:
        await kube.create(k8s.RELAY_EDGES, ns, both)
    assert "addresses.static and addresses.source are mutually exclusive" in err.value.message

    no_host = {"metadata": {"name": "bad"}, "spec": {"location": "x"}}
    with pytest.raises(k8s.ApiError) as err:
        await kube.create(k8s.RELAY_EDGES, ns, no_host)
    assert "spec.publicHostname" in err.value.message

    # What used to pass the schema and crash-loop the relays or withdraw the edge: refused at
    # the API with the field and the value.
    for spec, field, text in [
        ({"peers": {"deny": ["10.0.0.0/33"]}}, "spec.peers.deny[0]", '"10.0.0.0/33" is not an IP'),
        ({"addresses": {"static": ["999.1.2.3/8"]}}, "spec.addresses.static[0]", "999.1.2.3/8"),
        (
            {"tlsSecretName": "tls", "ports": {"tcp": 5349}},
            "spec",
            "ports.tcp 5349 is also in ports.tls",
        ),
        (
            {"relayPorts": {"min": 3000, "max": 4000}},
            "spec",
            "relayPorts 3000-4000 include the ports.udp listener port 3478",
        ),
    ]:
        with pytest.raises(k8s.ApiError) as err:
            await kube.create(k8s.RELAY_EDGES, ns, edge("bad", **spec))
        assert err.value.status == 422
        assert f"{field}: Invalid value" in err.value.message and text in err.value.message

    # Stored before the CRD had its rules: the operator's own checks say so on the object.
    async with older_crds(kube):
        await kube.create(k8s.RELAY_EDGES, ns, edge("odd", addresses={"static": ["999.1.2.3/8"]}))

    async def degraded() -> dict[str, Any] | None:
        obj = await kube.get(k8s.RELAY_EDGES, ns, "odd")
        cond = condition(obj, "Degraded")
        return cond if cond.get("status") == "True" else None

    cond = await eventually(degraded, what="InvalidSpec condition")
    assert cond["reason"] == "InvalidSpec"
    assert "spec.addresses.static: '999.1.2.3/8' is not an IP address or CIDR" in cond["message"]

    async def warned() -> bool:  # kopf posts Events in the background, after the status
        return "InvalidSpec" in {e["reason"] for e in await events_for(kube, ns, "odd")}

    await eventually(warned, what="an InvalidSpec Event")
    assert await kube.get(k8s.DEPLOYMENTS, ns, RELAY("odd")) is None

    # Fixing the spec brings it up.
    await kube.patch(k8s.RELAY_EDGES, ns, "odd", {"spec": {"addresses": {"static": ["192.0.2.9"]}}})

    async def fixed() -> bool:
        obj = await kube.get(k8s.RELAY_EDGES, ns, "odd")
        return condition(obj, "Degraded").get("status") == "False"

    await eventually(fixed, what="recovered after the fix")


async def test_drift_is_repaired(kube: k8s.Kube, ns: str) -> None:
    await kube.create(k8s.RELAY_EDGES, ns, edge("drift", addresses={"static": ["192.0.2.0/28"]}))

    async def deployment() -> dict[str, Any] | None:
        return await kube.get(k8s.DEPLOYMENTS, ns, RELAY("drift"))

    original = await eventually(deployment, what="deployment")
    await eventually(lambda: ranges_doc(kube, ns), what="ranges")

    # Deleted child comes back.
    await kube.delete(k8s.DEPLOYMENTS, ns, RELAY("drift"))

    async def recreated() -> bool:
        dep = await deployment()
        return bool(dep and dep["metadata"]["uid"] != original["metadata"]["uid"])

    await eventually(recreated, what="deleted Deployment recreated")

    # Hand edits are reverted.
    await kube.patch(k8s.DEPLOYMENTS, ns, RELAY("drift"), {"spec": {"replicas": 7}})
    await kube.patch(
        k8s.CONFIGMAPS, ns, RELAY("drift"), {"data": {"TURNPIKE_ALLOW_PEER": "0.0.0.0/0"}}
    )
    await kube.delete(k8s.SERVICES, ns, RELAY("drift"))
    await kube.delete(k8s.CONFIGMAPS, ns, labels.IP_RANGES)

    async def restored() -> bool:
        dep = await deployment()
        config = await kube.get(k8s.CONFIGMAPS, ns, RELAY("drift"))
        return bool(
            dep
            and dep["spec"]["replicas"] == 2
            and config
            and "TURNPIKE_ALLOW_PEER" not in config["data"]
            and await kube.get(k8s.SERVICES, ns, RELAY("drift"))
            and await ranges_doc(kube, ns)
        )

    await eventually(restored, what="hand edits reverted")

    async def reported() -> bool:
        messages = [e["message"] for e in await events_for(kube, ns, "drift")]
        return f"repaired Deployment {RELAY('drift')}" in messages

    await eventually(reported, what="a repair Event")


async def test_discovered_node_addresses_follow_the_nodes(
    cluster: Cluster, kube: k8s.Kube, ns: str
) -> None:
    emulator_only(cluster)
    pool = ns
    await put_node(kube, node_body(f"{ns}-1", "198.51.100.7", "10.9.0.7", pool))
    await put_node(kube, node_body(f"{ns}-2", "198.51.100.8", "10.9.0.8", pool))
    await kube.create(
        k8s.RELAY_EDGES,
        ns,
        edge(
            "nodes",
            mode="DaemonSet",
            hostNetwork=True,
            nodeSelector={"turnpike.test/pool": pool},
        ),
    )

    async def relay_cidrs(expected: list[str]) -> bool:
        entry = published(await ranges_doc(kube, ns)).get("nodes")
        return bool(entry) and entry["relay"]["cidrs"] == expected

    async def both_nodes() -> bool:
        return await relay_cidrs(["198.51.100.7/32", "198.51.100.8/32"])

    await eventually(both_nodes, what="node addresses published")
    daemonset = await kube.get(k8s.DAEMONSETS, ns, RELAY("nodes"))
    assert daemonset is not None and daemonset["spec"]["template"]["spec"]["hostNetwork"] is True
    assert await kube.get(k8s.SERVICES, ns, RELAY("nodes")) is None
    config = await kube.get(k8s.CONFIGMAPS, ns, RELAY("nodes"))
    assert config is not None
    deny = config["data"]["TURNPIKE_DENY_PEER"].split(",")
    assert "10.9.0.7/32" in deny and "198.51.100.7/32" not in deny

    # A node's ExternalIP changes: the published ranges follow.
    await put_node(kube, node_body(f"{ns}-2", "192.0.2.200", "10.9.0.8", pool))

    async def moved() -> bool:
        return await relay_cidrs(["192.0.2.200/32", "198.51.100.7/32"])

    await eventually(moved, what="changed ExternalIP published")
    edge_obj = await kube.get(k8s.RELAY_EDGES, ns, "nodes")
    assert edge_obj is not None
    assert edge_obj["status"]["addresses"] == ["192.0.2.200/32", "198.51.100.7/32"]
    reasons = [e["reason"] for e in await events_for(kube, ns, "nodes")]
    assert "AddressesChanged" in reasons
    for name in (f"{ns}-1", f"{ns}-2"):
        await kube.delete(k8s.NODES, None, name)


async def test_load_balancer_address_is_discovered(
    cluster: Cluster, kube: k8s.Kube, ns: str
) -> None:
    emulator_only(cluster)
    await kube.create(k8s.RELAY_EDGES, ns, edge("lb"))

    async def waiting() -> dict[str, Any] | None:
        obj = await kube.get(k8s.RELAY_EDGES, ns, "lb")
        cond = condition(obj, "Ready")
        return cond if "LoadBalancer" in cond.get("message", "") else None

    await eventually(waiting, what="waiting for the load balancer")
    # What a cloud controller does once the load balancer exists.
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.99"}]}}}
    await kube.patch(k8s.SERVICES, ns, RELAY("lb"), ingress, sub="status")

    async def discovered() -> bool:
        entry = published(await ranges_doc(kube, ns)).get("lb")
        config = await kube.get(k8s.CONFIGMAPS, ns, RELAY("lb"))
        return bool(
            entry
            and entry["relay"]["cidrs"] == ["192.0.2.99/32"]
            and config
            and config["data"].get("TURNPIKE_EXTERNAL_IP") == "192.0.2.99"
        )

    await eventually(discovered, what="load balancer address published")
