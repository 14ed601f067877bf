"""The Kubernetes API emulator behaves as the API server where the operator depends on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from support.kube_e2e import older_crds
from support.kubeapi import KubeAPI
from support.kubeapi.cel import CelError, evaluate
from support.kubeapi.quantity import canonical

from turnpike.operator import crds
from turnpike.operator.kube import (
    CONFIGMAPS,
    CRDS,
    DEPLOYMENTS,
    NAMESPACES,
    NODES,
    PODS,
    RELAY_EDGES,
    SECRETS,
    ApiError,
    Kube,
)


@pytest.fixture(scope="module")
def api() -> Iterator[KubeAPI]:
    with KubeAPI() as server:
        yield server


@pytest.fixture
async def kube(api: KubeAPI) -> AsyncIterator[Kube]:
    client = Kube.connect(api.url)
    yield client
    await client.close()


_counter = iter(range(10**6))


@pytest.fixture
async def ns(kube: Kube) -> str:
    name = f"t{next(_counter)}"
    await kube.create(NAMESPACES, None, {"metadata": {"name": name}})
    return name


async def _install_crds(kube: Kube) -> None:
    for crd in crds.all_crds().values():
        if await kube.get(CRDS, None, crd["metadata"]["name"]) is None:
            await kube.create(CRDS, None, crd)


def _edge(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"location": "Somewhere", "publicHostname": f"{name}.example.com", **spec},
    }


async def test_create_sets_server_fields_and_rejects_duplicates(kube: Kube, ns: str) -> None:
    cm = await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    meta = cm["metadata"]
    assert meta["namespace"] == ns and meta["uid"] and meta["creationTimestamp"]
    assert int(meta["resourceVersion"]) > 0 and cm["kind"] == "ConfigMap"
    with pytest.raises(ApiError) as err:
        await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "a"}})
    assert err.value.status == 409 and err.value.reason == "AlreadyExists"
    with pytest.raises(ApiError) as err:
        await kube.create(CONFIGMAPS, "no-such-namespace", {"metadata": {"name": "a"}})
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "Not_Valid"}})
    assert err.value.status == 422 and "RFC 1123" in err.value.message


async def test_generate_name_and_secret_string_data(kube: Kube, ns: str) -> None:
    cm = await kube.create(CONFIGMAPS, ns, {"metadata": {"generateName": "ev-"}})
    assert cm["metadata"]["name"].startswith("ev-") and len(cm["metadata"]["name"]) > 3
    secret = await kube.create(SECRETS, ns, {"metadata": {"name": "s"}, "stringData": {"k": "hi"}})
    assert secret["data"] == {"k": "aGk="} and "stringData" not in secret


async def test_stale_resource_version_is_a_conflict(kube: Kube, ns: str) -> None:
    cm = await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "c"}, "data": {"k": "1"}})
    fresh = await kube.replace(CONFIGMAPS, ns, "c", {**cm, "data": {"k": "2"}})
    assert fresh["metadata"]["resourceVersion"] != cm["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as err:
        await kube.replace(CONFIGMAPS, ns, "c", {**cm, "data": {"k": "3"}})
    assert err.value.status == 409
    # A no-op write keeps the resourceVersion.
    same = await kube.patch(CONFIGMAPS, ns, "c", {"data": {"k": "2"}})
    assert same["metadata"]["resourceVersion"] == fresh["metadata"]["resourceVersion"]


async def test_generation_status_subresource_and_json_patch_test(
    api: KubeAPI, kube: Kube, ns: str
) -> None:
    await _install_crds(kube)
    edge = await kube.create(RELAY_EDGES, ns, _edge("e", status={"ignored": True}))
    assert edge["metadata"]["generation"] == 1 and "status" not in edge
    edge = await kube.patch(RELAY_EDGES, ns, "e", {"metadata": {"labels": {"a": "b"}}})
    assert edge["metadata"]["generation"] == 1
    edge = await kube.patch(RELAY_EDGES, ns, "e", {"spec": {"replicas": 3}, "status": {"x": 1}})
    assert edge["metadata"]["generation"] == 2 and "status" not in edge
    edge = await kube.patch(RELAY_EDGES, ns, "e", {"status": {"ready": "1/2"}}, sub="status")
    assert edge["status"] == {"ready": "1/2"} and edge["metadata"]["generation"] == 2
    # kopf's finalizer patch: a JSON patch guarded by a test on resourceVersion.
    url = f"{api.url}{RELAY_EDGES.path(ns, 'e')}"
    headers = {"Content-Type": "application/json-patch+json"}
    async with aiohttp.ClientSession() as session:
        stale = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
        ]
        async with session.patch(url, data=json.dumps(stale), headers=headers) as resp:
            assert resp.status == 422
        good = [{**stale[0], "value": edge["metadata"]["resourceVersion"]}, stale[1]]
        async with session.patch(url, data=json.dumps(good), headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.json())["metadata"]["finalizers"] == ["x"]


async def test_schema_defaults_and_validation(kube: Kube, ns: str) -> None:
    await _install_crds(kube)
    edge = await kube.create(RELAY_EDGES, ns, _edge("d", unknownField=1))
    spec = edge["spec"]
    assert "unknownField" not in spec  # pruned, as a structural schema does
    assert spec["relayPorts"] == {"min": 49152, "max": 65535}
    assert spec["ports"] == {"udp": 3478, "tcp": 3478, "tls": [443, 5349]}
    with pytest.raises(ApiError) as err:
        await kube.create(RELAY_EDGES, ns, _edge("bad", relayPorts={"min": 9000, "max": 8000}))
    assert err.value.status == 422
    assert "spec.relayPorts" in err.value.message
    assert "min must not be greater than max" in err.value.message
    with pytest.raises(ApiError) as err:
        await kube.create(RELAY_EDGES, ns, {"metadata": {"name": "x"}, "spec": {"location": "l"}})
    assert "spec.publicHostname: Required value" in err.value.message
    with pytest.raises(ApiError) as err:
        await kube.create(RELAY_EDGES, ns, _edge("m", mode="Sometimes"))
    assert "Unsupported value" in err.value.message


async def test_finalizers_delay_deletion(kube: Kube, ns: str) -> None:
    await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "f", "finalizers": ["keep"]}})
    await kube.delete(CONFIGMAPS, ns, "f")
    held = await kube.get(CONFIGMAPS, ns, "f")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    await kube.patch(CONFIGMAPS, ns, "f", {"metadata": {"finalizers": None}})
    assert await kube.get(CONFIGMAPS, ns, "f") is None


async def test_a_namespace_waits_for_its_objects_finalizers(kube: Kube, ns: str) -> None:
    # As the API server: a deleted namespace is Terminating (no new objects) until every object
    # in it is gone, and an object with a finalizer is gone only when the finalizer is.
    await _install_crds(kube)
    await kube.create(
        RELAY_EDGES, ns, {**_edge("held"), "metadata": {"name": "held", "finalizers": ["keep"]}}
    )
    await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "free"}})
    await kube.delete(NAMESPACES, None, ns)
    terminating = await kube.get(NAMESPACES, None, ns)
    assert terminating is not None and terminating["status"]["phase"] == "Terminating"
    assert await kube.get(CONFIGMAPS, ns, "free") is None
    held = await kube.get(RELAY_EDGES, ns, "held")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiError) as err:
        await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "late"}})
    assert err.value.status == 403
    await kube.patch(RELAY_EDGES, ns, "held", {"metadata": {"finalizers": None}})
    assert await kube.get(RELAY_EDGES, ns, "held") is None
    assert await kube.get(NAMESPACES, None, ns) is None


async def test_owner_deletion_collects_dependents(kube: Kube, ns: str) -> None:
    owner = await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    await kube.delete(CONFIGMAPS, ns, "owner")
    assert await kube.get(CONFIGMAPS, ns, "child") is None


async def _watch(url: str, params: dict[str, str], count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        async for line in resp.content:
            events.append(json.loads(line))
            if len(events) == count:
                break
    return events


async def test_watch_resumes_from_resource_version_with_selectors(
    api: KubeAPI, kube: Kube, ns: str
) -> None:
    first = await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "w1", "labels": {"a": "1"}}})
    since = first["metadata"]["resourceVersion"]
    await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "w2", "labels": {"a": "2"}}})
    await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "w3", "labels": {"a": "1"}}})
    url = api.url + CONFIGMAPS.path(ns)
    params = {
        "watch": "true",
        "resourceVersion": since,
        "labelSelector": "a=1",
        "timeoutSeconds": "5",
    }
    task = asyncio.create_task(_watch(url, params, 3))
    await asyncio.sleep(0.2)
    await kube.patch(CONFIGMAPS, ns, "w3", {"metadata": {"labels": {"a": "3"}}})
    await kube.delete(CONFIGMAPS, ns, "w1")
    events = await task
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w3"),
        ("DELETED", "w3"),  # left the selection
        ("DELETED", "w1"),
    ]


async def test_discovery_lists_kinds_and_status_subresources(api: KubeAPI, kube: Kube) -> None:
    await _install_crds(kube)
    async with aiohttp.ClientSession() as session:
        async with session.get(api.url + "/api/v1") as resp:
            core = await resp.json()
        async with session.get(api.url + "/apis") as resp:
            groups = await resp.json()
        async with session.get(api.url + "/apis/turnpike.io/v1alpha1") as resp:
            ours = await resp.json()
    assert core["groupVersion"] == "v1"
    names = {r["name"]: r for r in core["resources"]}
    assert names["namespaces"]["namespaced"] is False and "watch" in names["pods"]["verbs"]
    assert "turnpike.io" in {g["name"] for g in groups["groups"]}
    listed = {r["name"] for r in ours["resources"]}
    assert {"relayedges", "relayedges/status", "streamgateways/status"} <= listed


async def test_simulated_workloads_get_pods_on_nodes(kube: Kube, ns: str) -> None:
    await kube.create(
        NODES,
        None,
        {"metadata": {"name": f"{ns}-node", "labels": {"pool": ns}}},
    )
    labels = {"app": "x"}
    body = {
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": {"pool": ns}, "containers": [{"name": "c"}]},
            },
        },
    }
    await kube.create(DEPLOYMENTS, ns, body)
    for _ in range(100):
        pods = await kube.list(PODS, ns, labels)
        deployment = await kube.get(DEPLOYMENTS, ns, "d")
        if len(pods) == 2 and (deployment or {}).get("status", {}).get("readyReplicas") == 2:
            break
        await asyncio.sleep(0.05)
    assert {p["spec"]["nodeName"] for p in pods} == {f"{ns}-node"}
    await kube.delete(DEPLOYMENTS, ns, "d")
    assert await kube.list(PODS, ns, labels) == []


def test_cel_subset() -> None:
    rule = "!(self.hostNetwork && has(self.addresses.source) && self.addresses.source == 'LB')"
    assert evaluate(rule, {"hostNetwork": False, "addresses": {}}) is True
    assert evaluate(rule, {"hostNetwork": True, "addresses": {"source": "LB"}}) is False
    assert evaluate("self.min <= self.max", {"min": 1, "max": 2}) is True
    assert evaluate("size(self.x) > 1 ? 'a' : 'b'", {"x": [1, 2]}) == "a"
    with pytest.raises(CelError):
        evaluate("self.missing == 1", {})
    with pytest.raises(CelError):
        evaluate("self.items.map(x, x + 1) == [2]", {"items": [1]})


def test_cel_macros_methods_and_conversions() -> None:
    assert evaluate("self.all(p, p > 1)", [2, 3]) is True
    assert evaluate("self.all(p, p > 2)", [2, 3]) is False
    assert evaluate("self.exists(p, p == 3)", [2, 3]) is True
    assert evaluate("self.exists(p, p == 4)", []) is False
    # A macro variable is visible only inside its body, and nests.
    assert evaluate("self.all(a, self.exists(b, a == b))", [1, 2]) is True
    with pytest.raises(CelError):
        evaluate("self.all(a, a > 0) && a > 0", [1])
    # matches() searches (anchors are the rule's business), as CEL does.
    assert evaluate("self.matches('b[.]c')", "ab.cd") is True
    assert evaluate("self.matches('^b')", "ab") is False
    assert evaluate("self.startsWith('ab') && self.endsWith('cd')", "abcd") is True
    assert evaluate("self.x.size() == 2", {"x": [1, 2]}) is True
    assert evaluate("'port ' + string(self.p) + ' of ' + string(true)", {"p": 5}) == (
        "port 5 of true"
    )
    assert evaluate("int('7') + 1", None) == 8
    with pytest.raises(CelError):
        evaluate("self.matches(1)", "a")
    with pytest.raises(CelError):
        evaluate("self.all(p, p)", "not a list")


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("0.5", "500m"),
        ("1024Mi", "1Gi"),
        ("1000m", "1"),
        ("1.5Gi", "1536Mi"),
        ("1536", "1536"),
        ("1000", "1k"),
        ("0.5Ki", "512"),
        ("100m", "100m"),
        ("0.0000000001", "1n"),
        ("1e3", "1e3"),
        ("1500e-3", "1500e-3"),
        ("2000Mi", "2000Mi"),
        ("0", "0"),
        (2, "2"),
    ],
)
def test_quantities_are_canonicalised_like_the_api_server(written: Any, stored: str) -> None:
    assert canonical(written) == stored


async def test_stored_quantities_and_generation_follow_the_api_server(kube: Kube, ns: str) -> None:
    container = {
        "name": "c",
        "image": "i",
        "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"cpu": 1}},
    }
    body = {
        "metadata": {"name": "q"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"a": "q"}},
            "template": {"metadata": {"labels": {"a": "q"}}, "spec": {"containers": [container]}},
        },
    }
    deployment = await kube.create(DEPLOYMENTS, ns, body)
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1"}}
    assert deployment["metadata"]["generation"] == 1
    # The same quantities in another spelling are the same spec: no new generation.
    same = await kube.patch(DEPLOYMENTS, ns, "q", {"spec": body["spec"]})
    assert same["metadata"]["generation"] == 1
    assert same["spec"] == deployment["spec"]
    # A Deployment's annotations count (it copies them to its ReplicaSets); labels do not.
    labelled = await kube.patch(DEPLOYMENTS, ns, "q", {"metadata": {"labels": {"x": "y"}}})
    assert labelled["metadata"]["generation"] == 1
    annotated = await kube.patch(DEPLOYMENTS, ns, "q", {"metadata": {"annotations": {"x": "y"}}})
    assert annotated["metadata"]["generation"] == 2
    scaled = await kube.patch(DEPLOYMENTS, ns, "q", {"spec": {"replicas": 1}})
    assert scaled["metadata"]["generation"] == 3
    bad = {
        "spec": {
            "template": {
                "spec": {"containers": [{**container, "resources": {"limits": {"cpu": "lots"}}}]}
            }
        }
    }
    with pytest.raises(ApiError) as err:
        await kube.patch(DEPLOYMENTS, ns, "q", bad)
    assert err.value.status == 422 and "limits.cpu" in err.value.message
    # Types without a generation have none, however often they change.
    cm = await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "g"}, "data": {"k": "1"}})
    cm = await kube.patch(CONFIGMAPS, ns, "g", {"data": {"k": "2"}})
    assert "generation" not in cm["metadata"]


async def test_list_type_set_refuses_duplicates(kube: Kube, ns: str) -> None:
    await _install_crds(kube)
    with pytest.raises(ApiError) as err:
        await kube.create(RELAY_EDGES, ns, _edge("dup", ports={"tls": [443, 443]}))
    assert err.value.status == 422 and "spec.ports.tls[1]: Duplicate value" in err.value.message


async def test_strategic_merge_patch_merges_containers_by_name(kube: Kube, ns: str) -> None:
    body = {
        "metadata": {"name": "smp"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "smp"}},
            "template": {
                "metadata": {"labels": {"app": "smp"}},
                "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
            },
        },
    }
    await kube.create(DEPLOYMENTS, ns, body)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "z"}]}}}}
    url = DEPLOYMENTS.path(ns, "smp")
    result = await kube._request(
        "PATCH", url, patch, content_type="application/strategic-merge-patch+json"
    )
    containers = result["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("a", "x"), ("b", "z")]


async def test_deleting_a_crd_removes_its_resources_from_discovery(
    api: KubeAPI, kube: Kube
) -> None:
    crd = crds.relay_edge_crd()
    crd["metadata"]["name"] = "widgets.example.test"
    crd["spec"]["group"] = "example.test"
    crd["spec"]["names"] = {"kind": "Widget", "plural": "widgets", "singular": "widget"}
    await kube.create(CRDS, None, crd)
    async with aiohttp.ClientSession() as session:
        async with session.get(api.url + "/apis/example.test/v1alpha1") as resp:
            assert resp.status == 200
        await kube.delete(CRDS, None, "widgets.example.test")
        async with session.get(api.url + "/apis/example.test/v1alpha1") as resp:
            assert resp.status == 404


async def test_watch_from_a_forgotten_resource_version_is_gone() -> None:
    with KubeAPI(history_size=5) as small:
        client = Kube.connect(small.url)
        try:
            first = await client.create(CONFIGMAPS, "default", {"metadata": {"name": "c0"}})
            for n in range(1, 10):
                await client.create(CONFIGMAPS, "default", {"metadata": {"name": f"c{n}"}})
            url = small.url + CONFIGMAPS.path("default")
            params = {"watch": "true", "resourceVersion": first["metadata"]["resourceVersion"]}
            events = await _watch(url, params, 1)
        finally:
            await client.close()
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_selectors_and_patch_formats() -> None:
    from support.kubeapi.patches import PatchError, json_patch, merge_patch
    from support.kubeapi.selectors import Selector

    obj = {"metadata": {"name": "n", "labels": {"app": "relay", "tier": "edge"}}}
    assert Selector("app=relay,tier in (edge, core)").matches_labels(obj)
    assert not Selector("app!=relay").matches_labels(obj)
    assert Selector("!missing,tier").matches_labels(obj)
    assert not Selector("tier notin (edge)").matches_labels(obj)
    assert Selector("metadata.name=n").matches_fields(obj)
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {
        "a": {"c": 2, "d": 3}
    }
    doc = {"list": [1, 2], "x": {"y": "z"}}
    patched = json_patch(
        doc, [{"op": "add", "path": "/list/-", "value": 3}, {"op": "remove", "path": "/x/y"}]
    )
    assert patched == {"list": [1, 2, 3], "x": {}} and doc["list"] == [1, 2]
    with pytest.raises(PatchError) as err:
        json_patch(doc, [{"op": "test", "path": "/x/y", "value": "other"}])
    assert err.value.test_failed


async def test_unchanged_values_are_ratcheted(kube: Kube, ns: str) -> None:
    """An object stored before a rule existed can still get status, finalizers and unrelated
    spec changes; the value the rule refuses cannot be changed to another refused one."""
    await _install_crds(kube)
    async with older_crds(kube):
        await kube.create(RELAY_EDGES, ns, _edge("old", peers={"deny": ["10.0.0.0/33"]}))
    with pytest.raises(ApiError):
        await kube.create(RELAY_EDGES, ns, _edge("new", peers={"deny": ["10.0.0.0/33"]}))
    await kube.patch(RELAY_EDGES, ns, "old", {"metadata": {"finalizers": ["f"]}})
    await kube.patch(RELAY_EDGES, ns, "old", {"status": {"ready": "0/2"}}, sub="status")
    edge = await kube.patch(RELAY_EDGES, ns, "old", {"spec": {"replicas": 3}})
    assert edge["spec"]["replicas"] == 3
    with pytest.raises(ApiError) as err:
        await kube.patch(RELAY_EDGES, ns, "old", {"spec": {"peers": {"deny": ["10.0.0.0/34"]}}})
    assert "spec.peers.deny[0]" in err.value.message
    edge = await kube.patch(RELAY_EDGES, ns, "old", {"spec": {"peers": {"deny": ["10.0.0.0/8"]}}})
    assert edge["spec"]["peers"]["deny"] == ["10.0.0.0/8"]
