"""Children compared as the API server means them, and never taken from someone else."""

from __future__ import annotations

from typing import Any

import pytest
from support.kube_e2e import condition, edge, events_for, eventually, published, ranges_doc

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e

RELAY = labels.relay_name


async def test_canonical_quantities_are_not_drift(kube: k8s.Kube, ns: str) -> None:
    resources = {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "1.5Gi"}}
    body = edge("quant", addresses={"static": ["192.0.2.0/28"]}, resources=resources)
    await kube.create(k8s.RELAY_EDGES, ns, body)

    async def deployment() -> dict[str, Any] | None:
        return await kube.get(k8s.DEPLOYMENTS, ns, RELAY("quant"))

    first = await eventually(deployment, what="relay Deployment")
    stored = first["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert stored == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1536Mi"}}
    # Another reconcile (a location change touches only what is published) writes nothing to
    # the Deployment: the stored canonical forms are the declared values.
    await kube.patch(k8s.RELAY_EDGES, ns, "quant", {"spec": {"location": "Elsewhere"}})

    async def republished() -> bool:
        return published(await ranges_doc(kube, ns)).get("quant", {}).get("location") == (
            "Elsewhere"
        )

    await eventually(republished, what="the new location published")
    later = await deployment()
    assert later is not None and later["metadata"]["generation"] == 1
    messages = [e["message"] for e in await events_for(kube, ns, "quant")]
    assert not [m for m in messages if "Deployment" in m and "created" not in m], messages


async def test_other_owners_are_kept_and_foreign_objects_are_not_taken(
    kube: k8s.Kube, ns: str
) -> None:
    # Someone else's Service with the name the relay's would have.
    await kube.create(
        k8s.SERVICES,
        ns,
        {
            "metadata": {"name": RELAY("taken"), "labels": {"app": "theirs"}},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}]},
        },
    )
    await kube.create(k8s.RELAY_EDGES, ns, edge("taken"))

    async def refused() -> dict[str, Any] | None:
        cond = condition(await kube.get(k8s.RELAY_EDGES, ns, "taken"), "Degraded")
        return cond if cond.get("reason") == "ReconcileFailed" else None

    cond = await eventually(refused, what="the foreign Service reported")
    assert (
        f'Service "{RELAY("taken")}" already exists and was not created by Turnpike'
        in (cond["message"])
    )
    service = await kube.get(k8s.SERVICES, ns, RELAY("taken"))
    assert service is not None and [p["port"] for p in service["spec"]["ports"]] == [80]
    assert not service["metadata"].get("ownerReferences")
    assert service["metadata"]["labels"] == {"app": "theirs"}

    # Deleting it lets the edge create its own; an extra (non-controller) owner added by
    # someone else survives a drift repair.
    await kube.delete(k8s.SERVICES, ns, RELAY("taken"))

    async def own() -> dict[str, Any] | None:
        svc = await kube.get(k8s.SERVICES, ns, RELAY("taken"))
        return svc if svc and svc["metadata"].get("ownerReferences") else None

    svc = await eventually(own, what="the relay's own Service")
    other = await kube.create(k8s.CONFIGMAPS, ns, {"metadata": {"name": "other-owner"}})
    extra = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "other-owner",
        "uid": other["metadata"]["uid"],
    }
    refs = [*svc["metadata"]["ownerReferences"], extra]
    await kube.patch(
        k8s.SERVICES,
        ns,
        RELAY("taken"),
        {"metadata": {"ownerReferences": refs, "labels": {labels.COMPONENT: "edited"}}},
    )

    async def repaired() -> dict[str, Any] | None:
        svc = await kube.get(k8s.SERVICES, ns, RELAY("taken"))
        ok = svc and svc["metadata"]["labels"].get(labels.COMPONENT) == "relay"
        return svc if ok else None

    svc = await eventually(repaired, what="the Service's labels repaired")
    assert [r["uid"] for r in svc["metadata"]["ownerReferences"]] == [r["uid"] for r in refs]
