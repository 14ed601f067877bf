"""The keyring Secret never carries a finalizer: deleting it, or its namespace after the
operator is uninstalled, never waits for an operator that is gone."""

from __future__ import annotations

import json

import pytest
from support.kube_e2e import condition, edge, eventually

from turnpike.operator import kube as k8s
from turnpike.operator import labels

pytestmark = pytest.mark.e2e


async def test_the_keyring_secret_has_no_finalizer(kube: k8s.Kube, ns: str) -> None:
    # A keyring Secret as an older version left it: with the finalizer of its rotation daemon.
    keyring = {"keys": [{"id": "k1", "secret": "x" * 43, "signing": True}]}
    await kube.create(
        k8s.SECRETS,
        ns,
        {
            "metadata": {
                "name": "turnpike-keyring",
                "labels": labels.keyring_labels(),
                "finalizers": [labels.FINALIZER],
            },
            "stringData": {labels.KEYRING_KEY: json.dumps(keyring)},
        },
    )
    await kube.create(k8s.RELAY_EDGES, ns, edge("ams", addresses={"static": ["192.0.2.4"]}))

    async def released() -> bool:
        secret = await kube.get(k8s.SECRETS, ns, "turnpike-keyring")
        return secret is not None and not secret["metadata"].get("finalizers")

    await eventually(released, what="the old finalizer removed")

    async def ready() -> bool:
        obj = await kube.get(k8s.RELAY_EDGES, ns, "ams")
        return condition(obj, "Ready").get("status") == "True"

    await eventually(ready, what="the edge ready")
    # The rotation runs as a task of the operator, not a kopf daemon: nothing put a finalizer
    # back on the Secret (nor on the edge), which goes at once when deleted (the operator
    # recreates it, since the edge still needs it).
    secret = await kube.get(k8s.SECRETS, ns, "turnpike-keyring")
    assert secret is not None and not secret["metadata"].get("finalizers")
    edge_obj = await kube.get(k8s.RELAY_EDGES, ns, "ams")
    assert edge_obj is not None and not edge_obj["metadata"].get("finalizers")
    uid = secret["metadata"]["uid"]
    await kube.delete(k8s.SECRETS, ns, "turnpike-keyring")

    async def recreated() -> bool:
        again = await kube.get(k8s.SECRETS, ns, "turnpike-keyring")
        return again is not None and again["metadata"]["uid"] != uid

    await eventually(recreated, what="the deleted keyring Secret recreated")
