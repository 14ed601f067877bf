"""Create-or-repair of child objects: the operator's only write path for children.

A child is left alone while everything the operator declares is present in it, compared the way
the API server means it: quantities by value (``0.5`` is ``500m``, ``1024Mi`` is ``1Gi``: the
server stores the canonical form), an empty map or list declared is the same as one the server
left out, and other owners' references, defaults, other controllers' annotations are not drift.
When a declared field is missing or different — someone edited or deleted the child — the
declared fields are written back with a merge patch (guarded by the resourceVersion read, and
keeping every other owner reference), or the child is created again. An object of the same name
that Turnpike did not create is never taken over: ForeignObject says whose it is.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity as _untyped_parse_quantity

from turnpike.operator import kube as k8s
from turnpike.operator import labels

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


class ForeignObject(Exception):
    """An object with a child's name exists and Turnpike did not create it."""


# The kubernetes client's own parser of resource quantities (untyped there).
parse_quantity: Callable[[Any], Decimal] = _untyped_parse_quantity

# Maps whose values are resource quantities (container requests/limits, pod overhead).
_QUANTITY_MAPS = frozenset({"requests", "limits", "overhead"})


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def _same_quantity(desired: Any, actual: Any) -> bool:
    try:
        return bool(parse_quantity(desired) == parse_quantity(actual))
    except (ValueError, TypeError):
        return bool(desired == actual)


def is_subset(desired: Any, actual: Any, quantities: bool = False) -> bool:
    """Whether every field of ``desired`` is in ``actual`` with the same value (lists must have
    the same length: an extra container or port is drift, an extra map key is a default;
    an empty map or list may be left out, as the API server leaves it out)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return actual is None and not desired
        return all(
            is_subset(value, actual[key], quantities or key in _QUANTITY_MAPS)
            if key in actual
            else _empty(value)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return actual is None and not desired
        return len(desired) == len(actual) and all(
            is_subset(d, a) for d, a in zip(desired, actual, strict=True)
        )
    if quantities:
        return _same_quantity(desired, actual)
    return bool(desired == actual)


def _declared(desired: Obj) -> Obj:
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata")}
    meta = desired["metadata"]
    body["metadata"] = {"labels": meta.get("labels", {})}
    if meta.get("annotations"):  # e.g. a cloud's load balancer settings on a Service
        body["metadata"]["annotations"] = meta["annotations"]
    return body


def _missing_owners(desired: Obj, actual: Obj) -> list[Obj]:
    have = {ref.get("uid") for ref in actual["metadata"].get("ownerReferences") or []}
    return [r for r in desired["metadata"].get("ownerReferences") or [] if r["uid"] not in have]


def _in_sync(desired: Obj, actual: Obj) -> bool:
    declared = _declared(desired)
    if desired["kind"] == "ConfigMap" and (actual.get("data") or {}) != desired.get("data", {}):
        return False  # config is exact: an extra TURNPIKE_* variable would change behaviour
    return is_subset(declared, actual) and not _missing_owners(desired, actual)


def check_ownership(desired: Obj, actual: Obj) -> None:
    """Refuse to write over an object Turnpike did not create: one controlled by something else,
    or one without the operator's managed-by label (a same-named object someone made)."""
    wanted = {r["uid"] for r in desired["metadata"].get("ownerReferences") or []}
    refs = actual["metadata"].get("ownerReferences") or []
    what = f'{actual.get("kind", desired["kind"])} "{actual["metadata"]["name"]}"'
    for ref in refs:
        if ref.get("controller") and ref.get("uid") not in wanted:
            raise ForeignObject(
                f"{what} already exists and is controlled by {ref.get('kind')} "
                f'"{ref.get("name")}"; Turnpike does not take it over (delete or rename it)'
            )
    ours = (actual["metadata"].get("labels") or {}).get(labels.MANAGED_BY) == labels.MANAGER
    if not ours and not any(ref.get("uid") in wanted for ref in refs):
        raise ForeignObject(
            f"{what} already exists and was not created by Turnpike (no "
            f"{labels.MANAGED_BY}={labels.MANAGER} label); Turnpike does not take it over "
            "(delete or rename it)"
        )


async def ensure(kube: k8s.Kube, desired: Obj) -> tuple[str, Obj]:
    """Make ``desired`` exist as declared; returns ("created"|"repaired"|"unchanged", object).
    Raises ForeignObject rather than adopt an object Turnpike did not create."""
    res = resource_of(desired)
    meta = desired["metadata"]
    current = await kube.get(res, meta["namespace"], meta["name"])
    if current is None:
        return "created", await kube.create(res, meta["namespace"], desired)
    check_ownership(desired, current)
    if _in_sync(desired, current):
        return "unchanged", current
    patch = _declared(desired)
    # The read version guards the write: a concurrent change is a 409 and a retry, never lost.
    patch["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    if missing := _missing_owners(desired, current):
        patch["metadata"]["ownerReferences"] = [
            *(current["metadata"].get("ownerReferences") or []),
            *missing,
        ]
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
