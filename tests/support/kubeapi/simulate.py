"""What the kubelet, the scheduler and the workload controllers would do, in miniature.

Without it a Deployment would never have pods or ready replicas, and an operator that discovers
addresses from the nodes its pods run on could not be tested. Pods are created per Deployment
replica and per matching node for a DaemonSet, scheduled round-robin onto nodes whose labels match
the nodeSelector (affinity and taints are ignored), and are Running and Ready at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from typing import Any

from .store import ApiError, Obj, ResourceType, Store

_WORKLOADS = {("apps", "deployments"), ("apps", "daemonsets")}


def _template_hash(workload: Obj) -> str:
    text = json.dumps(workload["spec"].get("template", {}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class Simulator:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._dirty: set[tuple[str, str, str]] = set()  # (plural, namespace, name)
        self._scheduled = False
        store.hooks.append(self._on_commit)

    def _on_commit(self, rt: ResourceType, kind: str, obj: Obj) -> None:
        meta = obj["metadata"]
        if rt.key in _WORKLOADS:
            self._dirty.add((rt.plural, meta.get("namespace", ""), meta["name"]))
        elif rt.key == ("", "nodes"):
            for workload_rt in self._workload_types():
                for ns, name in self.store.objects.get(workload_rt.key, {}):
                    self._dirty.add((workload_rt.plural, ns, name))
        elif rt.key == ("", "pods") and kind == "DELETED":
            for ref in meta.get("ownerReferences") or []:
                plural = {"Deployment": "deployments", "DaemonSet": "daemonsets"}.get(ref["kind"])
                if plural:
                    self._dirty.add((plural, meta.get("namespace", ""), ref["name"]))
        else:
            return
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _workload_types(self) -> list[ResourceType]:
        return [self.store.find_type("apps", "v1", plural) for _, plural in sorted(_WORKLOADS)]

    def _run(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, set()
        for plural, ns, name in sorted(dirty):
            rt = self.store.find_type("apps", "v1", plural)
            workload = self.store.objects.get(rt.key, {}).get((ns, name))
            if workload is not None and not workload["metadata"].get("deletionTimestamp"):
                # A namespace going away, etc.: the next change retries.
                with contextlib.suppress(ApiError):
                    self._reconcile(rt, workload)

    def _nodes(self, selector: dict[str, str]) -> list[Obj]:
        nodes = sorted(
            self.store.objects.get(("", "nodes"), {}).values(), key=lambda n: n["metadata"]["name"]
        )
        return [
            n
            for n in nodes
            if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        ]

    def _reconcile(self, rt: ResourceType, workload: Obj) -> None:
        store, pods_rt = self.store, store_pods(self.store)
        meta, spec = workload["metadata"], workload["spec"]
        ns = meta["namespace"]
        template = spec.get("template", {})
        pod_spec = template.get("spec", {})
        nodes = self._nodes(pod_spec.get("nodeSelector") or {})
        digest = _template_hash(workload)
        owned = [
            p
            for p in store.objects.get(pods_rt.key, {}).values()
            if p["metadata"].get("namespace") == ns
            and any(r.get("uid") == meta["uid"] for r in p["metadata"].get("ownerReferences") or [])
        ]
        # Pods of an old template, or on nodes that went away, are replaced.
        node_names = {n["metadata"]["name"] for n in nodes}
        keep = []
        for pod in owned:
            stale = pod["metadata"].get("labels", {}).get("pod-template-hash") != digest
            lost = pod["spec"].get("nodeName") and pod["spec"]["nodeName"] not in node_names
            if stale or lost:
                store.delete(pods_rt, ns, pod["metadata"]["name"])
            else:
                keep.append(pod)
        if rt.plural == "daemonsets":
            have = {p["spec"].get("nodeName") for p in keep}
            for node in nodes:
                if node["metadata"]["name"] not in have:
                    keep.append(self._create_pod(rt, workload, template, digest, node, len(keep)))
            for pod in keep:
                if pod["spec"].get("nodeName") not in node_names:
                    store.delete(pods_rt, ns, pod["metadata"]["name"])
        else:
            want = int(spec.get("replicas", 1))
            while len(keep) > want:
                store.delete(pods_rt, ns, keep.pop()["metadata"]["name"])
            while len(keep) < want:
                node = nodes[len(keep) % len(nodes)] if nodes else None
                keep.append(self._create_pod(rt, workload, template, digest, node, len(keep)))
        ready = sum(1 for p in keep if p["spec"].get("nodeName"))
        if rt.plural == "daemonsets":
            status = {
                "observedGeneration": meta["generation"],
                "desiredNumberScheduled": len(nodes),
                "currentNumberScheduled": ready,
                "updatedNumberScheduled": ready,
                "numberReady": ready,
                "numberAvailable": ready,
            }
        else:
            status = {
                "observedGeneration": meta["generation"],
                "replicas": len(keep),
                "updatedReplicas": len(keep),
                "readyReplicas": ready,
                "availableReplicas": ready,
            }
        if workload.get("status") != status:
            store.patch(
                rt, ns, meta["name"], "application/merge-patch+json", {"status": status}, "status"
            )

    def _create_pod(
        self,
        rt: ResourceType,
        workload: Obj,
        template: Obj,
        digest: str,
        node: Obj | None,
        index: int,
    ) -> Obj:
        meta = workload["metadata"]
        pod_meta: dict[str, Any] = dict(template.get("metadata") or {})
        labels = {**(pod_meta.get("labels") or {}), "pod-template-hash": digest}
        body: Obj = {
            "metadata": {
                "generateName": f"{meta['name']}-{digest[:5]}-",
                "labels": labels,
                "annotations": pod_meta.get("annotations") or {},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": rt.kind,
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": dict(template.get("spec") or {}),
        }
        pods_rt = store_pods(self.store)
        pod = self.store.create(pods_rt, meta["namespace"], body)
        if node is not None:
            internal = next(
                (
                    a["address"]
                    for a in node.get("status", {}).get("addresses", [])
                    if a["type"] == "InternalIP"
                ),
                "10.0.0.1",
            )
            host_network = bool(body["spec"].get("hostNetwork"))
            pod_ip = (
                internal
                if host_network
                else f"10.244.{index % 250}.{len(self.store.objects[pods_rt.key]) % 250 + 2}"
            )
            self.store.patch(
                pods_rt,
                meta["namespace"],
                pod["metadata"]["name"],
                "application/merge-patch+json",
                {"spec": {"nodeName": node["metadata"]["name"]}},
            )
            pod = self.store.patch(
                pods_rt,
                meta["namespace"],
                pod["metadata"]["name"],
                "application/merge-patch+json",
                {
                    "status": {
                        "phase": "Running",
                        "hostIP": internal,
                        "podIP": pod_ip,
                        "conditions": [{"type": "Ready", "status": "True"}],
                    }
                },
                "status",
            )
        else:
            pod = self.store.patch(
                pods_rt,
                meta["namespace"],
                pod["metadata"]["name"],
                "application/merge-patch+json",
                {"status": {"phase": "Pending"}},
                "status",
            )
        return self.store.objects[pods_rt.key][(meta["namespace"], pod["metadata"]["name"])]


def store_pods(store: Store) -> ResourceType:
    return store.find_type("", "v1", "pods")
