"""An invalid new spec never withdraws a serving edge: last known good publication."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from support.kube_e2e import (
    Operator,
    condition,
    directory_doc,
    edge,
    events_for,
    eventually,
    older_crds,
    published,
    ranges_doc,
)

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e

RELAY = labels.relay_name


def _invalid_reconciles(operator: Operator) -> float:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith('turnpike_operator_reconciles_total{kind="RelayEdge",result="invalid"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_an_invalid_spec_keeps_the_last_valid_publication(
    kube: k8s.Kube, ns: str, operator: Operator
) -> None:
    await kube.create(k8s.RELAY_EDGES, ns, edge("fra", addresses={"static": ["192.0.2.0/28"]}))

    async def serving() -> dict[str, Any] | None:
        doc = published(await ranges_doc(kube, ns))
        listed = [e["name"] for e in ((await directory_doc(kube, ns)) or {}).get("edges", [])]
        return doc if doc.get("fra", {}).get("relay", {}).get("cidrs") and "fra" in listed else None

    before = (await eventually(serving, what="fra published"))["fra"]

    # The directory is written after the ranges, in the same republish.
    async def listed() -> dict[str, Any] | None:
        doc = await directory_doc(kube, ns)
        return doc if any(e["name"] == "fra" for e in (doc or {}).get("edges", [])) else None

    directory_before = await eventually(listed, what="fra in the edge directory")
    deployment = await kube.get(k8s.DEPLOYMENTS, ns, RELAY("fra"))
    assert deployment is not None and directory_before is not None

    # The typo from the field: the API refuses it now; an older CRD let it through.
    typo = {"spec": {"peers": {"deny": ["10.0.0.0/33"]}}}
    with pytest.raises(k8s.ApiError):
        await kube.patch(k8s.RELAY_EDGES, ns, "fra", typo)
    async with older_crds(kube):
        await kube.patch(k8s.RELAY_EDGES, ns, "fra", typo)

    async def invalid() -> dict[str, Any] | None:
        cond = condition(await kube.get(k8s.RELAY_EDGES, ns, "fra"), "Degraded")
        return cond if cond.get("reason") == "InvalidSpec" else None

    cond = await eventually(invalid, what="Degraded InvalidSpec")
    assert cond["status"] == "True"
    assert "spec.peers.deny: '10.0.0.0/33' is not an IP address or CIDR" in cond["message"]

    # A namespace republish (a deleted ranges ConfigMap) and another reconcile of the edge (a
    # hand edit of its Deployment) both leave the edge published and its relays untouched.
    seen = _invalid_reconciles(operator)
    await kube.delete(k8s.CONFIGMAPS, ns, labels.IP_RANGES)
    await kube.patch(k8s.DEPLOYMENTS, ns, RELAY("fra"), {"metadata": {"labels": {"x": "y"}}})

    async def reconciled_again() -> bool:
        return _invalid_reconciles(operator) > seen and await ranges_doc(kube, ns) is not None

    await eventually(reconciled_again, what="another reconcile and a republish")
    assert published(await ranges_doc(kube, ns))["fra"] == before
    assert await directory_doc(kube, ns) == directory_before
    now = await kube.get(k8s.DEPLOYMENTS, ns, RELAY("fra"))
    assert now is not None and now["spec"] == deployment["spec"]
    config = await kube.get(k8s.CONFIGMAPS, ns, RELAY("fra"))
    assert config is not None and "10.0.0.0/33" not in str(config["data"])
    warnings = [e for e in await events_for(kube, ns, "fra") if e["reason"] == "InvalidSpec"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    # Every Event says who acted and what it did (kubectl describe's "From" column).
    every = await kube.list(k8s.EVENTS, ns)
    assert {e["source"]["component"] for e in every} == {"turnpike-operator"}
    assert {e["reportingComponent"] for e in every} == {"turnpike-operator"}
    assert warnings[0]["action"] == "Validate"
    assert {e["action"] for e in every if e["reason"] == "Reconciled"} == {"Reconcile"}
    assert {e["action"] for e in every if e["reason"] == "AddressesChanged"} == {"Publish"}

    # Fixed: reconciled as usual, the new deny list reaches the relays.
    await kube.patch(k8s.RELAY_EDGES, ns, "fra", {"spec": {"peers": {"deny": ["10.0.0.0/16"]}}})

    async def fixed() -> bool:
        cond = condition(await kube.get(k8s.RELAY_EDGES, ns, "fra"), "Degraded")
        config = await kube.get(k8s.CONFIGMAPS, ns, RELAY("fra"))
        return cond.get("status") == "False" and "10.0.0.0/16" in str((config or {}).get("data"))

    await eventually(fixed, what="the fixed spec applied")
    assert published(await ranges_doc(kube, ns))["fra"] == before
