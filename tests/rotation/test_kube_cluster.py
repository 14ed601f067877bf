"""`KubeCluster` against the API emulator: the Secret writes, conflicts and status it depends on."""

from __future__ import annotations

import base64

import pytest
from support.kubeapi import KubeAPI

from turnpike.core.keyring import Keyring
from turnpike.operator.keyring_secret import DATA_KEY, Conflict, KeyringSummary, KubeCluster
from turnpike.operator.kube import NAMESPACES, RELAY_EDGES, SECRETS, Kube
from turnpike.operator.rotation import Rotator
from turnpike.operator.rotation_settings import RotationSettings
from turnpike.operator.rotation_state import A_PHASE, A_ROTATE_NOW, A_VERSION

pytestmark = [pytest.mark.e2e]


async def test_writes_are_guarded_by_resource_version_and_data_round_trips(
    api: KubeAPI, kube: Kube
) -> None:
    ns = "cluster-writes"
    await kube.create(NAMESPACES, None, {"metadata": {"name": ns}})
    cluster = KubeCluster(lambda: kube)
    rotator = Rotator(cluster, RotationSettings(interval=3600.0))
    assert await rotator.ensure(ns)
    assert not await rotator.ensure(ns)

    view = await cluster.read_secret(ns, "turnpike-keyring")
    assert view is not None and view.keyring_json is not None
    ring = Keyring.parse(view.keyring_json)
    assert view.annotations[A_PHASE] == "stable" and view.annotations[A_VERSION] == "1"

    # Someone annotates the Secret after we read it: our write must not overwrite theirs.
    patch = {"metadata": {"annotations": {A_ROTATE_NOW: "true"}}}
    await kube.patch(SECRETS, ns, "turnpike-keyring", patch)
    with pytest.raises(Conflict):
        await cluster.write_secret(view, None, {A_PHASE: "adding"})

    # The engine decides again from the fresh Secret and acts on the request.
    step = await rotator.tick(ns)
    assert step is not None and step.reason == "KeyAdded"
    obj = await kube.get(SECRETS, ns, "turnpike-keyring")
    assert obj is not None
    annotations = obj["metadata"]["annotations"]
    assert A_ROTATE_NOW not in annotations and annotations[A_PHASE] == "adding"
    stored = Keyring.parse(base64.b64decode(obj["data"][DATA_KEY]))
    assert stored.signing_key == ring.signing_key and len(stored.keys) == 2
    await cluster.close()


async def test_status_fields_and_condition_on_every_edge(api: KubeAPI, kube: Kube) -> None:
    ns = "cluster-status"
    await kube.create(NAMESPACES, None, {"metadata": {"name": ns}})
    for name in ("a", "b"):
        spec = {"location": "Somewhere", "publicHostname": f"{name}.example.org"}
        await kube.create(RELAY_EDGES, ns, {"metadata": {"name": name}, "spec": spec})
    cluster = KubeCluster(kube)
    await cluster.publish(ns, KeyringSummary(3, "k3", "2026-11-21T13:00:00.000Z", "stuck: x"))
    for name in ("a", "b"):
        edge = await kube.get(RELAY_EDGES, ns, name)
        assert edge is not None
        status = edge["status"]
        assert status["keyringVersion"] == 3 and status["keyringSigningKey"] == "k3"
        assert status["keyringRotationBlocked"] == "stuck: x"
        (cond,) = status["conditions"]
        assert (cond["type"], cond["status"], cond["reason"]) == (
            "Degraded",
            "True",
            "KeyRotationBlocked",
        )
    await cluster.publish(ns, KeyringSummary(4, "k4", "2026-11-21T14:00:00.000Z", None))
    edge = await kube.get(RELAY_EDGES, ns, "a")
    assert edge is not None
    assert "keyringRotationBlocked" not in edge["status"]
    assert edge["status"]["conditions"][0]["status"] == "False"
