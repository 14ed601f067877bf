"""kopf handlers: thin, they only route to ``Reconciler``.

- RelayEdge / StreamGateway create, update and resume → reconcile that object; an invalid spec
  is a PermanentError (kopf stops retrying until the spec changes), API trouble a
  TemporaryError (kopf retries). `resync` (a task of the operator, not a kopf timer) schedules
  every served object again each resync interval.
- delete → republish the namespace without the object: at once when the watch reports it gone,
  and earlier when something else's finalizer holds it (an optional delete handler). No
  finalizer of ours: deleting an edge or its namespace never waits for the operator, which may
  be uninstalled. Publication is recomputed from the namespace's live edges, so a deletion
  missed while the operator was down is corrected by its first publish when it is back (resume
  and resync). Owner references remove the children. An old version's finalizer is removed.
- Watch events on children, the pods of edges and gateways (all selected by the operator's
  managed-by label: nothing else reaches it), and nodes → schedule a reconcile of the owner
  (drift repair, address discovery). Node events also keep the node cache (cluster_cache.py)
  current, pod events the relay pods each edge's fast-path count asks (relay_reports.py).
  Namespace events keep the namespace cache current and, when a namespace's Pod
  Security label changes, reconcile its edges (their kernel fast path depends on it).
  The watches' initial listing at start-up schedules nothing: every owner's resume handler
  reconciles it then, once (a later re-listing of an object already seen still does).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from turnpike.operator import finalizers, labels, pod_security
from turnpike.operator import kube as k8s
from turnpike.operator.model import SpecError
from turnpike.operator.reconcile import EDGE, GATEWAY, NAMESPACE, Reconciler

GROUP, VERSION = "turnpike.io", "v1alpha1"
CHILD_KINDS = (
    ("apps", "v1", "deployments"),
    ("apps", "v1", "daemonsets"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("policy", "v1", "poddisruptionbudgets"),
)


def _owner(body: Any) -> tuple[str, str] | None:
    """(kind, name) of the RelayEdge or StreamGateway that a child belongs to."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "RelayEdge":
            return EDGE, ref["name"]
        if ref.get("kind") == "StreamGateway":
            return GATEWAY, ref["name"]
    return None


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    for resource, kind in ((k8s.RELAY_EDGES, EDGE), (k8s.STREAM_GATEWAYS, GATEWAY)):
        _register_owner(registry, reconciler, resource, kind)
    child_event = _child_events(reconciler)
    for group, version, plural in CHILD_KINDS:
        kopf.on.event(group, version, plural, registry=registry, labels=labels.MANAGED, id="drift")(
            child_event
        )
    kopf.on.event("", "v1", "pods", registry=registry, labels=labels.MANAGED, id="placement")(
        _pod_events(reconciler)
    )
    kopf.on.event("", "v1", "nodes", registry=registry, id="addresses")(_node_events(reconciler))
    kopf.on.event("", "v1", "namespaces", registry=registry, id="pod-security")(
        _namespace_events(reconciler)
    )


def _register_owner(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, resource: k8s.Resource, kind: str
) -> None:
    """Create, update and resume reconcile; delete republishes the namespace without the
    object; other events remove an old version's finalizer."""
    plural = resource.plural

    async def changed(namespace: str | None, name: str, **_: Any) -> None:
        if namespace is None:
            return  # RelayEdges and StreamGateways are namespaced: never the case
        try:
            await reconciler.run(kind, namespace, name)
        except SpecError as exc:
            raise kopf.PermanentError(str(exc)) from None
        except k8s.ApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=reconciler.ctx.config.retry_delay) from None

    async def event(
        body: Any, type: str | None, namespace: str | None, name: str, **_: Any
    ) -> None:
        if namespace is None:
            return
        if type != "DELETED":
            await finalizers.release(reconciler.ctx.kube, resource, namespace, body)
            return
        # Gone: republish from the live objects (a scheduled publish is retried until it works;
        # an event handler's failure would only be logged).
        reconciler.schedule_publish(namespace)
        if kind == EDGE:
            await reconciler.wake_gateways(namespace, name)

    async def deleted(namespace: str | None, name: str, **_: Any) -> None:
        if namespace is None:
            return
        try:
            await reconciler.run(NAMESPACE, namespace, "")
        except k8s.ApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=1) from None
        if kind == EDGE:
            await reconciler.wake_gateways(namespace, name)

    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(GROUP, VERSION, plural, registry=registry, id="reconcile")(changed)
    # optional=True: kopf adds no finalizer for it (nor for event handlers).
    kopf.on.delete(GROUP, VERSION, plural, registry=registry, id="unpublish", optional=True)(
        deleted
    )
    kopf.on.event(GROUP, VERSION, plural, registry=registry, id="gone")(event)


async def resync(reconciler: Reconciler, may_act: Callable[[str], Awaitable[bool]]) -> None:
    """Schedule a reconcile of every served RelayEdge and StreamGateway in the namespaces this
    replica may act in (see `loops.Leadership`), and republish each such namespace."""
    allowed: dict[str, bool] = {}
    for kind, namespace, name in await _served_objects(reconciler):
        if namespace not in allowed:
            allowed[namespace] = await may_act(namespace)
            if allowed[namespace]:
                reconciler.schedule_publish(namespace)
        if allowed[namespace]:
            reconciler.schedule(kind, namespace, name)


def _child_events(reconciler: Reconciler) -> Any:
    """A child changed: reconcile its owner; a published ConfigMap changed: republish."""
    seen: set[tuple[str, str, str]] = set()

    async def child_event(body: Any, type: Any, namespace: str | None, **_: Any) -> None:
        if namespace is None:
            return
        key = (str(body.get("kind")), namespace, str(body.get("metadata", {}).get("name")))
        first = key not in seen
        if type == "DELETED":
            seen.discard(key)
        else:
            seen.add(key)
        if first and type is None:
            return  # the initial listing: the owners' resume handlers reconcile them
        owner = _owner(body)
        published = body.get("metadata", {}).get("name") in (
            labels.IP_RANGES,
            labels.EDGE_DIRECTORY,
        )
        if owner is not None:
            reconciler.schedule(owner[0], namespace, owner[1])
        elif published and type in ("DELETED", "MODIFIED"):
            # Mostly the operator's own publish coming back: spaced like any other publish.
            reconciler.schedule_publish(namespace)

    return child_event


def _pod_events(reconciler: Reconciler) -> Any:
    """A relay or gateway pod moved: reconcile its edge or gateway (addresses come from nodes)."""
    placements: dict[str, tuple[Any, ...]] = {}

    async def pod_event(body: Any, type: Any, namespace: str | None, **_: Any) -> None:
        if namespace is None:
            return
        reconciler.ctx.relay_pods.observe(type, dict(body))
        # Only where a pod runs matters (addresses come from its node), not its status churn.
        meta = body.get("metadata", {})
        key = f"{namespace}/{meta.get('name')}"
        placement = (
            (body.get("spec") or {}).get("nodeName"),
            (body.get("status") or {}).get("phase"),
            bool(meta.get("deletionTimestamp")),
            type == "DELETED",
        )
        if placements.get(key) == placement:
            return
        first = key not in placements
        placements[key] = placement
        if type == "DELETED":
            placements.pop(key, None)
        if first and type is None:
            return  # the initial listing: the owners' resume handlers reconcile them
        pod_labels = meta.get("labels") or {}
        if labels.GATEWAY in pod_labels:
            reconciler.schedule(GATEWAY, namespace, pod_labels[labels.GATEWAY])
        elif labels.EDGE in pod_labels:
            reconciler.schedule(EDGE, namespace, pod_labels[labels.EDGE])

    return pod_event


def _node_events(reconciler: Reconciler) -> Any:
    """A node's addresses or pod CIDRs changed: they feed every edge's published ranges and deny
    list, so reconcile everything served."""
    fingerprints: dict[str, Any] = {}

    async def node_event(body: Any, type: Any, name: str, **_: Any) -> None:
        reconciler.ctx.nodes.observe(type, dict(body))
        spec, status = body.get("spec") or {}, body.get("status") or {}
        fingerprint = (
            type == "DELETED",
            tuple((a.get("type"), a.get("address")) for a in status.get("addresses") or []),
            tuple(spec.get("podCIDRs") or [spec.get("podCIDR")]),
        )
        if fingerprints.get(name) == fingerprint:
            return
        first = name not in fingerprints
        fingerprints[name] = fingerprint
        if first and type is None:
            return  # the initial listing: the objects' own resume handlers cover it
        for kind, namespace, obj_name in await _served_objects(reconciler):
            reconciler.schedule(kind, namespace, obj_name)

    return node_event


def _namespace_events(reconciler: Reconciler) -> Any:
    """A namespace's Pod Security level decides whether its edges get the kernel fast path:
    when it changes, reconcile the namespace's edges at once. The namespace cache holds the
    level seen before."""

    async def namespace_event(body: Any, type: Any, name: str, **_: Any) -> None:
        cache = reconciler.ctx.namespaces
        before = cache.objects.get(name)
        cache.observe(type, dict(body))
        if before is None or type == "DELETED":
            return  # seen for the first time (its edges' own handlers cover it), or gone
        level = pod_security.enforced_level
        if level(before, "unlabelled") == level(dict(body), "unlabelled"):
            return
        for kind, namespace, obj_name in await _served_objects(reconciler):
            if kind == EDGE and namespace == name:
                reconciler.schedule(kind, namespace, obj_name)

    return namespace_event


async def _served_objects(reconciler: Reconciler) -> list[tuple[str, str, str]]:
    """Every RelayEdge and StreamGateway the operator serves. Exact namespaces are listed one by
    one (a namespaced operator may not list cluster-wide); globs need the cluster-wide list."""
    patterns = reconciler.ctx.config.namespaces
    exact = bool(patterns) and not any(set(p) & set("*?[") for p in patterns)
    scopes: tuple[str | None, ...] = patterns if exact else (None,)
    found = []
    for res, kind in ((k8s.RELAY_EDGES, EDGE), (k8s.STREAM_GATEWAYS, GATEWAY)):
        for scope in scopes:
            for obj in await reconciler.ctx.kube.list(res, scope):
                namespace = obj["metadata"]["namespace"]
                if not patterns or any(fnmatch.fnmatchcase(namespace, p) for p in patterns):
                    found.append((kind, namespace, obj["metadata"]["name"]))
    return found
