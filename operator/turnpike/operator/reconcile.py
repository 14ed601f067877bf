"""Reconciling one RelayEdge, one StreamGateway, or one namespace's published ConfigMaps.

Each function reads the cluster, computes what should exist with the pure builders, writes only
what differs, and records the outcome in the object's status. They are idempotent: running one
twice in a row writes nothing the second time. kopf handlers, timers and watch events all end
up here (through ``Reconciler``), so there is exactly one code path per resource kind.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import kopf

from turnpike.core.keyring import Key, Keyring
from turnpike.operator import apply, conditions, directory, gateway, labels, networks, ranges, relay
from turnpike.operator import kube as k8s
from turnpike.operator.conditions import Condition
from turnpike.operator.config import OperatorConfig
from turnpike.operator.metrics import Metrics
from turnpike.operator.model import RelayEdge, SpecError, StreamGateway

Obj = dict[str, Any]
log = logging.getLogger("turnpike.operator")

EDGE = "RelayEdge"
GATEWAY = "StreamGateway"
NAMESPACE = "Namespace"


@dataclass
class Context:
    kube: k8s.Kube
    config: OperatorConfig
    metrics: Metrics


def _deleting(obj: Obj) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _write_status(ctx: Context, res: k8s.Resource, body: Obj, status: Obj) -> bool:
    """Patch the status subresource when it changed; False when the object is gone."""
    if conditions.same_status(body.get("status"), status):
        return True
    meta = body["metadata"]
    try:
        await ctx.kube.patch(res, meta["namespace"], meta["name"], {"status": status}, sub="status")
    except k8s.ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _event(body: Obj, reason: str, message: str, warning: bool = False) -> None:
    """A Kubernetes Event on ``body`` (posted by kopf in the background)."""
    try:
        target: Any = body
        (kopf.warn if warning else kopf.info)(target, reason=reason, message=message)
    except LookupError:  # outside a running operator (unit tests): log only
        log.info("event %s on %s: %s", reason, body["metadata"]["name"], message)


async def _invalid(ctx: Context, res: k8s.Resource, body: Obj, exc: SpecError) -> None:
    old = conditions.find(body.get("status"), "Degraded")
    generation = body["metadata"].get("generation", 1)
    status = {
        **{k: v for k, v in (body.get("status") or {}).items() if k != "kopf"},
        "observedGeneration": generation,
        "conditions": conditions.merge(
            (body.get("status") or {}).get("conditions"),
            [
                Condition("Ready", False, "InvalidSpec", str(exc)),
                Condition("Progressing", False, "InvalidSpec", "fix the spec to continue"),
                Condition("Degraded", True, "InvalidSpec", str(exc)),
            ],
            generation,
        ),
    }
    await _write_status(ctx, res, body, status)
    if not old or old.get("message") != str(exc) or old.get("status") != "True":
        _event(body, "InvalidSpec", str(exc), warning=True)


async def _failed(ctx: Context, res: k8s.Resource, body: Obj, message: str) -> None:
    """Say in the object's status why its reconcile failed (it is retried; the next success
    clears it), with one Warning Event per distinct failure rather than one per retry."""
    old = conditions.find(body.get("status"), "Degraded") or {}
    previous = body.get("status") or {}
    others = [c for c in previous.get("conditions") or [] if c.get("type") != "Degraded"]
    degraded = Condition("Degraded", True, "ReconcileFailed", message)
    generation = body["metadata"].get("generation", 1)
    status = {
        **{k: v for k, v in previous.items() if k != "kopf"},
        "conditions": others + conditions.merge(previous.get("conditions"), [degraded], generation),
    }
    try:
        await _write_status(ctx, res, body, status)
    except Exception as exc:  # the API may be what fails; the retry reports again
        log.warning("cannot report the failure on %s: %s", body["metadata"]["name"], exc)
    if old.get("reason") != "ReconcileFailed" or old.get("message") != message:
        _event(body, "ReconcileFailed", message, warning=True)


async def ensure_keyring(ctx: Context, namespace: str) -> None:
    """The keyring Secret relays mount; created with one fresh signing key when missing (its
    rotation belongs to the keyring rotation controller, which owns it from then on)."""
    name = ctx.config.keyring_secret
    if await ctx.kube.get(k8s.SECRETS, namespace, name) is not None:
        return
    key_id = "k" + time.strftime("%Y%m%d%H%M%S", time.gmtime())
    keyring = Keyring((Key(key_id, secrets.token_urlsafe(32), True),))
    body = {
        "metadata": {"name": name, "labels": labels.published_labels()},
        "type": "Opaque",
        "stringData": {labels.KEYRING_KEY: keyring.to_json()},
    }
    try:
        await ctx.kube.create(k8s.SECRETS, namespace, body)
    except k8s.ApiError as exc:
        if exc.status != 409:  # a concurrent reconcile created it first
            raise


def readiness(workload: Obj, daemonset: bool) -> tuple[int, int, bool]:
    """(ready pods, desired pods, whether the current template has fully rolled out)."""
    status = workload.get("status") or {}
    seen = int(status.get("observedGeneration") or 0)
    current = seen >= int((workload.get("metadata") or {}).get("generation") or 0)
    if daemonset:
        desired = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        return int(status.get("numberReady") or 0), desired, current and updated >= desired
    desired = int((workload.get("spec") or {}).get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    return int(status.get("readyReplicas") or 0), desired, current and updated >= desired


def _single_ip(cidrs: list[str]) -> str | None:
    """The relay's advertised address when the edge has exactly one."""
    if len(cidrs) == 1 and cidrs[0].endswith(("/32", "/128")):
        return cidrs[0].rsplit("/", 1)[0]
    return None


async def _apply(ctx: Context, owner: Obj, child: Obj, changes: list[str]) -> Obj:
    """Ensure one child; a write is an "update" when the owner's spec changed since the last
    reconcile, a "repair" (drift: someone edited or deleted it) when it did not."""
    action, current = await apply.ensure(ctx.kube, child)
    if action == "unchanged":
        return current
    seen = (owner.get("status") or {}).get("observedGeneration")
    if action == "repaired" and seen != owner["metadata"].get("generation"):
        action = "updated"
    ctx.metrics.repairs.labels(child["kind"], action).inc()
    changes.append(f"{action} {child['kind']} {child['metadata']['name']}")
    return current


async def reconcile_edge(ctx: Context, body: Obj) -> None:
    kube, cfg = ctx.kube, ctx.config
    try:
        edge = RelayEdge.parse(body, cfg.image)
    except SpecError as exc:
        await _invalid(ctx, k8s.RELAY_EDGES, body, exc)
        raise
    ns, name = edge.namespace, labels.relay_name(edge.name)
    nodes = await kube.list(k8s.NODES)
    deny = networks.cluster_deny(nodes, cfg.service_cidrs, cfg.pod_cidrs)
    await ensure_keyring(ctx, ns)

    # Discovery reads what exists now; a change re-runs this through the watch events.
    if edge.static_addresses:
        addresses = ranges.collapse(edge.static_addresses)
    elif edge.address_source == "LoadBalancer":
        addresses = networks.load_balancer_ips(await kube.get(k8s.SERVICES, ns, name))
    else:
        pods = await kube.list(k8s.PODS, ns, labels.relay_selector(edge.name))
        addresses = networks.external_ips(nodes, networks.nodes_running(pods))

    changes: list[str] = []
    workload: Obj = {}
    for child in relay.children(edge, body, deny, _single_ip(addresses), cfg.keyring_secret):
        current = await _apply(ctx, body, child, changes)
        if child["kind"] in ("Deployment", "DaemonSet"):
            workload = current
    uid = body["metadata"]["uid"]
    stale = [(k8s.DEPLOYMENTS if edge.daemonset else k8s.DAEMONSETS, name)]
    if edge.host_network:
        stale.append((k8s.SERVICES, name))
    for res, stale_name in stale:
        if await apply.remove_owned(kube, res, ns, stale_name, uid):
            changes.append(f"deleted {res.kind} {stale_name}")

    ready, desired, rolled_out = readiness(workload, edge.daemonset)
    # Keyring rotation writes its own verdict into the status; fold it in here, since this
    # rewrites the whole conditions list and the two writers would otherwise flip Degraded.
    blocked = (body.get("status") or {}).get("keyringRotationBlocked")
    degraded = (
        Condition("Degraded", True, "KeyRotationBlocked", blocked)
        if blocked
        else Condition("Degraded", False, "AsExpected", "no errors")
    )
    if edge.tls and await kube.get(k8s.SECRETS, ns, edge.tls_secret) is None:
        # The pods cannot start without it; say why here rather than leave it to pod events.
        message = f'TLS Secret "{edge.tls_secret}" does not exist in namespace "{ns}"'
        degraded = Condition("Degraded", True, "TLSSecretNotFound", message)
    generation = body["metadata"].get("generation", 1)
    is_ready = desired > 0 and ready >= desired and bool(addresses) and rolled_out
    if not addresses:
        waiting = (
            "waiting for the LoadBalancer address"
            if edge.address_source == "LoadBalancer"
            else "waiting for relay pods on nodes with an ExternalIP"
        )
    elif not rolled_out:
        waiting = f"rolling out: {ready}/{desired} relays ready"
    else:
        waiting = f"{ready}/{desired} relays ready"
    previous = body.get("status") or {}
    status = {
        "observedGeneration": generation,
        "replicas": desired,
        "readyReplicas": ready,
        "ready": f"{ready}/{desired}",
        "addresses": addresses,
        "hostname": edge.hostname,
        "keyring": cfg.keyring_secret,
        "conditions": conditions.merge(
            previous.get("conditions"),
            [
                Condition(
                    "Ready",
                    is_ready,
                    "RelaysReady" if is_ready else "NotReady",
                    f"{ready}/{desired} relays ready, {len(addresses)} address range(s) published"
                    if is_ready
                    else waiting,
                ),
                Condition(
                    "Progressing",
                    not is_ready,
                    "RollingOut" if not is_ready else "Stable",
                    waiting if not is_ready else "nothing to roll out",
                ),
                degraded,
            ],
            generation,
        ),
    }
    was = conditions.find(previous, "Degraded") or {}
    if not await _write_status(ctx, k8s.RELAY_EDGES, body, status):
        return
    if degraded.status and (was.get("status") != "True" or was.get("reason") != degraded.reason):
        _event(body, degraded.reason, degraded.message, warning=True)
    for change in changes:
        _event(body, "Reconciled", change)
    if addresses != (previous.get("addresses") or []):
        shown = ", ".join(addresses) or "none"
        _event(body, "AddressesChanged", f"published addresses: {shown}")


async def reconcile_gateway(ctx: Context, body: Obj) -> None:
    kube, cfg = ctx.kube, ctx.config
    try:
        gw = StreamGateway.parse(body, cfg.image)
    except SpecError as exc:
        await _invalid(ctx, k8s.STREAM_GATEWAYS, body, exc)
        raise
    generation = body["metadata"].get("generation", 1)
    previous = body.get("status") or {}
    edge_body = await kube.get(k8s.RELAY_EDGES, gw.namespace, gw.edge)
    if edge_body is None or _deleting(edge_body):
        # Not an error to retry quickly: the gateway waits until the edge exists (creating
        # the edge re-runs this), and says so in its status instead of failing over and over.
        message = f'RelayEdge "{gw.edge}" does not exist in namespace "{gw.namespace}"'
        old = conditions.find(previous, "Degraded")
        status = {
            **{k: v for k, v in previous.items() if k != "kopf"},
            "observedGeneration": generation,
            "edge": gw.edge,
            "conditions": conditions.merge(
                previous.get("conditions"),
                [
                    Condition("Ready", False, "EdgeNotFound", message),
                    Condition("Progressing", False, "EdgeNotFound", "waiting for the edge"),
                    Condition("Degraded", True, "EdgeNotFound", message),
                ],
                generation,
            ),
        }
        if await _write_status(ctx, k8s.STREAM_GATEWAYS, body, status) and (
            not old or old.get("status") != "True" or old.get("reason") != "EdgeNotFound"
        ):
            _event(body, "EdgeNotFound", message, warning=True)
        return
    try:
        location = RelayEdge.parse(edge_body, cfg.image).location
    except SpecError:
        location = str((edge_body.get("spec") or {}).get("location", gw.edge))

    changes: list[str] = []
    deployment: Obj = {}
    for child in gateway.children(gw, body):
        current = await _apply(ctx, body, child, changes)
        if child["kind"] == "Deployment":
            deployment = current
    if gw.static_egress:
        addresses = ranges.collapse(gw.static_egress)
    else:
        nodes = await kube.list(k8s.NODES)
        pods = await kube.list(k8s.PODS, gw.namespace, labels.gateway_selector(gw.name))
        addresses = networks.external_ips(nodes, networks.nodes_running(pods))
    ready, desired, rolled_out = readiness(deployment, False)
    is_ready = desired > 0 and ready >= desired and rolled_out
    message = f"{ready}/{desired} gateways ready"
    status = {
        "observedGeneration": generation,
        "replicas": desired,
        "readyReplicas": ready,
        "ready": f"{ready}/{desired}",
        "addresses": addresses,
        "edge": gw.edge,
        "location": location,
        "conditions": conditions.merge(
            previous.get("conditions"),
            [
                Condition("Ready", is_ready, "GatewaysReady" if is_ready else "NotReady", message),
                Condition(
                    "Progressing", not is_ready, "RollingOut" if not is_ready else "Stable", message
                ),
                Condition("Degraded", False, "AsExpected", "no errors"),
            ],
            generation,
        ),
    }
    if not await _write_status(ctx, k8s.STREAM_GATEWAYS, body, status):
        return
    for change in changes:
        _event(body, "Reconciled", change)
    if (conditions.find(previous, "Degraded") or {}).get("status") == "True":
        _event(body, "Recovered", f"bound to RelayEdge {gw.edge}")


async def _put_configmap(ctx: Context, namespace: str, name: str, data: dict[str, str]) -> None:
    body: Obj = {
        "metadata": {"name": name, "namespace": namespace, "labels": labels.published_labels()},
        "data": data,
    }
    current = await ctx.kube.get(k8s.CONFIGMAPS, namespace, name)
    if current is None:
        await ctx.kube.create(k8s.CONFIGMAPS, namespace, body)
    else:
        # Guarded by resourceVersion: a concurrent writer makes this a 409 and a retry.
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await ctx.kube.replace(k8s.CONFIGMAPS, namespace, name, body)
    ctx.metrics.published.labels(name).inc()


async def publish(ctx: Context, namespace: str) -> None:
    """Rewrite `turnpike-ip-ranges` and `turnpike-edges` in ``namespace`` when content changed."""
    kube, cfg = ctx.kube, ctx.config
    edge_bodies = [e for e in await kube.list(k8s.RELAY_EDGES, namespace) if not _deleting(e)]
    gateway_bodies = [
        g for g in await kube.list(k8s.STREAM_GATEWAYS, namespace) if not _deleting(g)
    ]
    edges: list[tuple[RelayEdge, Obj]] = []
    for body in edge_bodies:
        try:
            edges.append((RelayEdge.parse(body, cfg.image), body))
        except SpecError:
            continue  # reported on the edge itself; an invalid edge publishes nothing
    streams: dict[str, list[str]] = {}
    for body in gateway_bodies:
        edge_name = (body.get("spec") or {}).get("edge", "")
        streams.setdefault(edge_name, []).extend((body.get("status") or {}).get("addresses") or [])
    doc = ranges.document(
        ranges.EdgeRanges(
            edge=edge.name,
            location=edge.location,
            relay_cidrs=tuple((body.get("status") or {}).get("addresses") or []),
            relay_ports=tuple(edge.client_ports()),
            relay_port_range=edge.relay_ports,
            stream_cidrs=tuple(streams.get(edge.name, [])),
        )
        for edge, body in edges
    )
    ctx.metrics.edges.labels(namespace).set(len(edges))
    if not edges:
        for name in (labels.IP_RANGES, labels.EDGE_DIRECTORY):
            existing = await kube.get(k8s.CONFIGMAPS, namespace, name)
            if (
                existing is not None
                and (existing["metadata"].get("labels") or {}).get(labels.MANAGED_BY)
                == labels.MANAGER
            ):
                await kube.delete(k8s.CONFIGMAPS, namespace, name)
        return
    current = await kube.get(k8s.CONFIGMAPS, namespace, labels.IP_RANGES)
    if (
        current is None
        or not ranges.same_content(current.get("data"), doc)
        or not _has_labels(current)
    ):
        await _put_configmap(ctx, namespace, labels.IP_RANGES, ranges.configmap_data(doc, _now()))
    text = directory.render(directory.document([e for e, _ in edges], cfg.global_host))
    current = await kube.get(k8s.CONFIGMAPS, namespace, labels.EDGE_DIRECTORY)
    if (
        current is None
        or (current.get("data") or {}) != {labels.EDGE_DIRECTORY_KEY: text}
        or not _has_labels(current)
    ):
        await _put_configmap(
            ctx, namespace, labels.EDGE_DIRECTORY, {labels.EDGE_DIRECTORY_KEY: text}
        )


def _has_labels(obj: Obj) -> bool:
    found = obj["metadata"].get("labels") or {}
    return all(found.get(k) == v for k, v in labels.published_labels().items())


Key_ = tuple[str, str, str]  # (kind, namespace, name)


@dataclass
class Reconciler:
    """Runs reconciles one at a time per object and coalesces bursts of triggers.

    Watch events (a child changed, a pod moved, a node's address changed) only *schedule* a
    reconcile; while one is queued for an object, further triggers are absorbed by it.
    """

    ctx: Context
    locks: dict[Key_, asyncio.Lock] = field(default_factory=dict)
    queued: set[Key_] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            self.queued.discard(key)
            await self._once(kind, namespace, name)

    async def _once(self, kind: str, namespace: str, name: str) -> None:
        ctx, started = self.ctx, time.monotonic()
        result = "success"
        try:
            if kind == NAMESPACE:
                await publish(ctx, namespace)
                return
            res = k8s.RELAY_EDGES if kind == EDGE else k8s.STREAM_GATEWAYS
            body = await ctx.kube.get(res, namespace, name)
            if body is None or _deleting(body):
                result = "gone"
            else:
                try:
                    await (reconcile_edge if kind == EDGE else reconcile_gateway)(ctx, body)
                except SpecError:
                    raise  # reported on the object already
                except Exception as exc:
                    await _failed(ctx, res, body, f"{type(exc).__name__}: {exc}")
                    raise
            await self.run(NAMESPACE, namespace, "")
            if kind == EDGE:
                await self.wake_gateways(namespace, name)
        except SpecError:
            result = "invalid"
            raise
        except k8s.ApiError as exc:
            result = "retry" if exc.status in (409, 429) or exc.status >= 500 else "error"
            raise
        except Exception:
            result = "error"
            raise
        finally:
            if kind != NAMESPACE or result != "success":
                ctx.metrics.reconciles.labels(kind, result).inc()
                ctx.metrics.duration.labels(kind).observe(time.monotonic() - started)

    async def wake_gateways(self, namespace: str, edge: str) -> None:
        for body in await self.ctx.kube.list(k8s.STREAM_GATEWAYS, namespace):
            if (body.get("spec") or {}).get("edge") == edge:
                self.schedule(GATEWAY, namespace, body["metadata"]["name"])

    def schedule(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        if key in self.queued:
            return
        self.queued.add(key)

        async def job() -> None:
            try:
                await self.run(kind, namespace, name)
            except SpecError:
                pass  # reported in the object's status already
            except Exception as exc:  # the next trigger or the resync timer retries
                log.warning("reconcile of %s %s/%s failed: %s", kind, namespace, name, exc)
                await asyncio.sleep(self.ctx.config.retry_delay)
                self.schedule(kind, namespace, name)

        task = asyncio.get_running_loop().create_task(job())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
