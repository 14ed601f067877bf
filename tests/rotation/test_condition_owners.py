"""The two owners of a RelayEdge's Degraded condition, reconcile and keyring rotation, writing
in turn against the API emulator: neither ever clears a reason the other set."""

from __future__ import annotations

from typing import Any

import pytest
from support.kubeapi import KubeAPI

from turnpike.operator.config import OperatorConfig
from turnpike.operator.keyring_secret import KeyringSummary, KubeCluster
from turnpike.operator.kube import NAMESPACES, RELAY_EDGES, SECRETS, Kube
from turnpike.operator.metrics import Metrics
from turnpike.operator.reconcile import Context, reconcile_edge

pytestmark = [pytest.mark.e2e]

BLOCKED = "rotation blocked: waited 600s for 1 pod(s) to load key k2: relay-0"


async def degraded(kube: Kube, ns: str) -> tuple[str, str]:
    edge = await kube.get(RELAY_EDGES, ns, "ashburn")
    assert edge is not None
    (cond,) = [c for c in edge["status"]["conditions"] if c["type"] == "Degraded"]
    return cond["status"], cond["reason"]


async def edge_body(kube: Kube, ns: str) -> dict[str, Any]:
    edge = await kube.get(RELAY_EDGES, ns, "ashburn")
    assert edge is not None
    return edge


async def test_each_owner_keeps_its_reason_through_the_others_writes(
    api: KubeAPI, kube: Kube
) -> None:
    ns = "condition-owners"
    await kube.create(NAMESPACES, None, {"metadata": {"name": ns}})
    spec = {
        "location": "US East Coast (Virginia)",
        "publicHostname": "ashburn.turn.example.org",
        "addresses": {"static": ["192.0.2.7/32"]},
        "tlsSecretName": "ashburn-tls",
    }
    await kube.create(RELAY_EDGES, ns, {"metadata": {"name": "ashburn"}, "spec": spec})
    ctx = Context(kube, OperatorConfig(), Metrics())
    rotation = KubeCluster(kube)

    async def reconcile() -> None:
        await reconcile_edge(ctx, await edge_body(kube, ns))

    async def rotation_says(blocked: str | None) -> None:
        await rotation.publish(ns, KeyringSummary(2, "k1", None, blocked))

    # Reconcile's reason (no TLS Secret) survives rotation blocking and unblocking.
    await reconcile()
    assert await degraded(kube, ns) == ("True", "TLSSecretNotFound")
    await rotation_says(BLOCKED)
    assert await degraded(kube, ns) == ("True", "TLSSecretNotFound")
    await reconcile()
    assert await degraded(kube, ns) == ("True", "TLSSecretNotFound")

    # Once reconcile has nothing to say, rotation's reason is back, and reconcile keeps it.
    tls = {"metadata": {"name": "ashburn-tls"}, "type": "Opaque", "data": {}}
    await kube.create(SECRETS, ns, tls)
    await reconcile()
    assert await degraded(kube, ns) == ("True", "KeyRotationBlocked")
    await reconcile()
    assert await degraded(kube, ns) == ("True", "KeyRotationBlocked")

    # Rotation clears only its own reason.
    await rotation_says(None)
    assert await degraded(kube, ns) == ("False", "KeyRotated")
    await reconcile()
    assert await degraded(kube, ns) == ("False", "AsExpected")

    # Rotation blocks between reconcile's read and its write: the write is made against the
    # version read, refused, and recomputed from the edge as it is now.
    stale = await edge_body(kube, ns)
    await rotation_says(BLOCKED)
    await reconcile_edge(ctx, stale)
    assert await degraded(kube, ns) == ("True", "KeyRotationBlocked")

    # An unblocked rotation leaves reconcile's reason alone.
    await kube.delete(SECRETS, ns, "ashburn-tls")
    await reconcile()
    assert await degraded(kube, ns) == ("True", "TLSSecretNotFound")
    await rotation_says(None)
    assert await degraded(kube, ns) == ("True", "TLSSecretNotFound")
    await reconcile()
    assert await degraded(kube, ns) == ("True", "TLSSecretNotFound")
    await rotation.close()
