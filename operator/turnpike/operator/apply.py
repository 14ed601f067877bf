"""Create-or-repair of child objects: the operator's only write path for children.

A child is left alone while everything the operator declares is present in it (the API server
adds defaults, other controllers add annotations: those are not drift). When a declared field is
missing or different — someone edited or deleted the child — the declared fields are written
back with a merge patch, or the child is created again.
"""

from __future__ import annotations

from typing import Any

from turnpike.operator import kube as k8s

Obj = dict[str, Any]

_BY_KIND = {
    "ConfigMap": k8s.CONFIGMAPS,
    "Deployment": k8s.DEPLOYMENTS,
    "DaemonSet": k8s.DAEMONSETS,
    "Service": k8s.SERVICES,
    "PodDisruptionBudget": k8s.PDBS,
}


def resource_of(obj: Obj) -> k8s.Resource:
    return _BY_KIND[obj["kind"]]


def is_subset(desired: Any, actual: Any) -> bool:
    """Whether every field of ``desired`` is in ``actual`` with the same value (lists must have
    the same length: an extra container or port is drift, an extra map key is a default)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            key in actual and is_subset(value, actual[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
        )
    return bool(desired == actual)


def _declared(desired: Obj) -> Obj:
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata")}
    meta = desired["metadata"]
    body["metadata"] = {"labels": meta.get("labels", {})}
    if "ownerReferences" in meta:
        body["metadata"]["ownerReferences"] = meta["ownerReferences"]
    return body


def _in_sync(desired: Obj, actual: Obj) -> bool:
    declared = _declared(desired)
    if desired["kind"] == "ConfigMap" and (actual.get("data") or {}) != desired.get("data", {}):
        return False  # config is exact: an extra TURNPIKE_* variable would change behaviour
    return is_subset(declared, actual)


async def ensure(kube: k8s.Kube, desired: Obj) -> tuple[str, Obj]:
    """Make ``desired`` exist as declared; returns ("created"|"repaired"|"unchanged", object)."""
    res = resource_of(desired)
    meta = desired["metadata"]
    current = await kube.get(res, meta["namespace"], meta["name"])
    if current is None:
        return "created", await kube.create(res, meta["namespace"], desired)
    if _in_sync(desired, current):
        return "unchanged", current
    patch = _declared(desired)
    if desired["kind"] == "ConfigMap":
        stale = set(current.get("data") or {}) - set(desired.get("data") or {})
        patch["data"] = {**dict.fromkeys(stale), **desired.get("data", {})}
    return "repaired", await kube.patch(res, meta["namespace"], meta["name"], patch)


async def remove_owned(
    kube: k8s.Kube, res: k8s.Resource, namespace: str, name: str, owner_uid: str
) -> bool:
    """Delete a child that is no longer declared (a Service after switching to hostNetwork, a
    Deployment after switching to DaemonSet), but only if this owner owns it."""
    current = await kube.get(res, namespace, name)
    if current is None:
        return False
    refs = current["metadata"].get("ownerReferences") or []
    if not any(ref.get("uid") == owner_uid for ref in refs):
        return False
    return await kube.delete(res, namespace, name)
