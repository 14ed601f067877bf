"""Reconciling one RelayEdge, one StreamGateway, or one namespace's published ConfigMaps.

Each function reads the cluster, computes what should exist with the pure builders, writes only
what differs, and records the outcome in the object's status (through `status`). They are
idempotent: running one twice in a row writes nothing the second time. kopf handlers, timers and
watch events all end up here (through ``Reconciler``), so there is exactly one code path per
resource kind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from turnpike.operator import (
    apply,
    conditions,
    directory,
    events,
    gateway,
    labels,
    networks,
    pod_security,
    ranges,
    relay,
    relay_reports,
)
from turnpike.operator import kube as k8s
from turnpike.operator import status as st
from turnpike.operator.cluster_cache import ClusterCache
from turnpike.operator.conditions import DEGRADED, Condition
from turnpike.operator.config import OperatorConfig
from turnpike.operator.keyring_secret import KubeCluster, ensure_secret
from turnpike.operator.metrics import Metrics
from turnpike.operator.model import RelayEdge, SpecError, StreamGateway
from turnpike.operator.outages import Outages
from turnpike.operator.publication import Publication
from turnpike.operator.status import readiness

Obj = dict[str, Any]
log = logging.getLogger("turnpike.operator")

EDGE = "RelayEdge"
GATEWAY = "StreamGateway"
NAMESPACE = "Namespace"
NOT_DEGRADED = Condition(DEGRADED, False, "AsExpected", "no errors")
# A namespace publishes at once after a quiet spell, then at most once per PUBLISH_SPACING while
# changes keep coming: a burst of N edge reconciles costs about burst/SPACING publishes, not N, and
# the last change of a burst is published within SPACING (plus one publish's own time).
PUBLISH_SPACING = 0.2

__all__ = ["EDGE", "GATEWAY", "NAMESPACE", "Context", "Reconciler", "readiness"]


@dataclass
class Context:
    kube: k8s.Kube
    config: OperatorConfig
    metrics: Metrics
    nodes: ClusterCache = field(init=False)
    namespaces: ClusterCache = field(init=False)
    cluster: KubeCluster = field(init=False)  # the keyring Secret, and pods' /ready
    relay_pods: relay_reports.RelayPods = field(default_factory=relay_reports.RelayPods)
    keyrings: set[str] = field(default_factory=set)  # namespaces whose keyring Secret was ensured
    keyring_checks: dict[str, asyncio.Future[None]] = field(default_factory=dict)  # under way
    settled: dict[str, Any] = field(default_factory=dict)  # edge uid → generation cleaned up

    def __post_init__(self) -> None:
        self.nodes = ClusterCache(self.kube, k8s.NODES)
        self.namespaces = ClusterCache(self.kube, k8s.NAMESPACES)
        self.cluster = KubeCluster(self.kube)


def _deleting(obj: Obj) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


async def ensure_keyring(ctx: Context, namespace: str) -> None:
    """The keyring Secret relays mount, created when missing exactly as keyring rotation creates
    it (rotation owns it from then on). Checked once per namespace by this process: keyring
    rotation watches the Secret and recreates it if it is deleted later. The reconciles of a
    burst of new edges share one check instead of queueing for it one by one."""
    if namespace in ctx.keyrings:
        return
    check = ctx.keyring_checks.get(namespace)
    if check is None:
        check = asyncio.ensure_future(_ensure_keyring(ctx, namespace))
        ctx.keyring_checks[namespace] = check
        check.add_done_callback(lambda _: ctx.keyring_checks.pop(namespace, None))
    await asyncio.shield(check)  # one waiter cancelled does not cancel the others' check


async def _ensure_keyring(ctx: Context, namespace: str) -> None:
    name = ctx.config.keyring_secret
    created = await ensure_secret(ctx.cluster, namespace, name, time.time())
    if created is not None:
        log.info("created keyring Secret %s/%s (key %s)", namespace, name, created.ids[0])
    ctx.keyrings.add(namespace)


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


def _ready_conditions(
    is_ready: bool, reason: str, done: str, waiting: str, stable: str
) -> tuple[Condition, Condition]:
    """Ready (``reason``, ``done``) and Progressing (``stable``) once every pod is ready; else
    not ready and rolling out, both saying ``waiting``."""
    if is_ready:
        return Condition("Ready", True, reason, done), Condition(
            "Progressing", False, "Stable", stable
        )
    return (
        Condition("Ready", False, "NotReady", waiting),
        Condition("Progressing", True, "RollingOut", waiting),
    )


# -- RelayEdge -----------------------------------------------------------------------------------


async def reconcile_edge(ctx: Context, body: Obj) -> bool:
    """The relay's children from the spec, the addresses discovered now, and the status; True
    when what the edge publishes (addresses, publication) may have changed, so the namespace
    must be republished."""
    namespace = await ctx.namespaces.get(body["metadata"]["namespace"])
    level = pod_security.enforced_level(namespace, ctx.config.pod_security_default)
    try:
        edge, offload = pod_security.decide(RelayEdge.parse(body, ctx.config.image), level)
    except SpecError as exc:
        await st.invalid(ctx.kube, k8s.RELAY_EDGES, body, exc)
        raise
    nodes = await ctx.nodes.list()
    await ensure_keyring(ctx, edge.namespace)
    addresses = await _edge_addresses(ctx, edge, nodes)
    workload, changes = await _edge_children(ctx, edge, body, nodes, addresses)
    problem = await _edge_problem(ctx, edge)
    fast = offload.rendered != "off"
    pods = ctx.relay_pods.of(edge.namespace, edge.name)
    kernel = await relay_reports.kernel_path(ctx.cluster, pods) if fast else None
    offload_status = relay_reports.offload_status(offload, kernel)

    def status_of(body: Obj) -> Obj:
        status = _edge_status(ctx, edge, body, workload, addresses, problem)
        return {**status, "offload": offload_status}

    before = body.get("status") or {}
    publishes = (
        before.get("addresses") != addresses
        or before.get("publication") != Publication.of(edge).to_status()
        or before.get("observedGeneration") != body["metadata"].get("generation")
    )
    written = await st.write(ctx.kube, k8s.RELAY_EDGES, body, status_of)
    if written is None:
        return True
    st.warn_if_new(written, _degraded(problem, written))
    for change in changes:
        st.event(body, "Reconciled", change)
    _offload_events(body, before.get("offload") or {}, offload, offload_status, kernel)
    if addresses != ((written.get("status") or {}).get("addresses") or []):
        shown = ", ".join(addresses) or "none"
        st.event(body, "AddressesChanged", f"published addresses: {shown}", action=events.PUBLISH)
    return publishes


def _offload_events(
    body: Obj,
    was: Obj,
    offload: pod_security.Offload,
    now: dict[str, str],
    kernel: tuple[int, int] | None,
) -> None:
    """An Event when the fast path is withheld, or granted after it was not (a new edge that gets
    it, as asked, posts none), and a Warning when relays given it report they could not load it
    (once per count)."""
    decided = (was.get("requested"), was.get("rendered")) != (offload.requested, offload.rendered)
    granted = offload.rendered != "off"
    if decided and offload.requested != "off" and (was or not granted):
        st.event(body, "OffloadGranted" if granted else "OffloadWithheld", offload.reason)
    short = kernel is not None and kernel[0] < kernel[1]
    if short and was.get("relaysInKernel") != now.get("relaysInKernel"):
        st.event(body, "OffloadUnavailable", now["reason"], warning=True)


async def _edge_addresses(ctx: Context, edge: RelayEdge, nodes: list[Obj]) -> list[str]:
    """The edge's public ranges as discovery sees them now; a change re-runs the reconcile
    through the watch events."""
    if edge.static_addresses:
        return ranges.collapse(edge.static_addresses)
    if edge.address_source == "LoadBalancer":
        # Every Service's address (one per protocol when split: clouds may give each its own).
        found: list[str] = []
        for name in relay.service_names(edge):
            svc = await ctx.kube.get(k8s.SERVICES, edge.namespace, name)
            found += networks.load_balancer_ips(svc)
        return ranges.collapse(found)
    pods = await ctx.kube.list(k8s.PODS, edge.namespace, labels.relay_selector(edge.name))
    return networks.external_ips(nodes, networks.nodes_running(pods))


async def _edge_children(
    ctx: Context, edge: RelayEdge, body: Obj, nodes: list[Obj], addresses: list[str]
) -> tuple[Obj, list[str]]:
    """Ensure the relay's children and remove the ones its spec no longer asks for; returns the
    relay workload as it is now and the changes made."""
    cfg = ctx.config
    deny = networks.cluster_deny(nodes, cfg.service_cidrs, cfg.pod_cidrs)
    changes: list[str] = []
    workload: Obj = {}
    for child in relay.children(edge, body, deny, _single_ip(addresses), cfg.keyring_secret):
        current = await _apply(ctx, body, child, changes)
        if child["kind"] in ("Deployment", "DaemonSet"):
            workload = current
    # Children an earlier spec had (a Deployment before DaemonSet mode, a Service before
    # hostNetwork or a split): looked for once per generation, as only a spec change makes them.
    uid, generation = body["metadata"]["uid"], body["metadata"].get("generation")
    if ctx.settled.get(uid) != generation:
        name = labels.relay_name(edge.name)
        stale = [(k8s.DEPLOYMENTS if edge.daemonset else k8s.DAEMONSETS, name)]
        stale += [(k8s.SERVICES, svc) for svc in relay.stale_service_names(edge)]
        for res, stale_name in stale:
            if await apply.remove_owned(
                ctx.kube, res, edge.namespace, stale_name, body["metadata"]["uid"]
            ):
                changes.append(f"deleted {res.kind} {stale_name}")
        ctx.settled[uid] = generation
    return workload, changes


async def _edge_problem(ctx: Context, edge: RelayEdge) -> Condition:
    """Reconcile's own verdict on Degraded for an edge whose children were written."""
    if edge.tls and await ctx.kube.get(k8s.SECRETS, edge.namespace, edge.tls_secret) is None:
        # The pods cannot start without it; say why here rather than leave it to pod events.
        message = f'TLS Secret "{edge.tls_secret}" does not exist in namespace "{edge.namespace}"'
        return Condition(DEGRADED, True, "TLSSecretNotFound", message)
    return NOT_DEGRADED


def _degraded(problem: Condition, body: Obj) -> Condition:
    """Degraded from reconcile's verdict and rotation's (kept in the status)."""
    verdict = conditions.degraded([problem, conditions.rotation_verdict(body.get("status"))])
    return verdict or problem


def _edge_status(
    ctx: Context,
    edge: RelayEdge,
    body: Obj,
    workload: Obj,
    addresses: list[str],
    problem: Condition,
) -> Obj:
    ready, desired, rolled_out = readiness(workload, edge.daemonset)
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
    done = f"{ready}/{desired} relays ready, {len(addresses)} address range(s) published"
    ready_cond, progressing = _ready_conditions(
        is_ready, "RelaysReady", done, waiting, "nothing to roll out"
    )
    status = {
        "observedGeneration": body["metadata"].get("generation", 1),
        "replicas": desired,
        "readyReplicas": ready,
        "ready": f"{ready}/{desired}",
        "addresses": addresses,
        "hostname": edge.hostname,
        "keyring": ctx.config.keyring_secret,
        # Published as long as a later spec is invalid (see publication.py).
        "publication": Publication.of(edge).to_status(),
    }
    return st.with_conditions(body, status, ready_cond, progressing, _degraded(problem, body))


# -- StreamGateway -------------------------------------------------------------------------------


async def reconcile_gateway(ctx: Context, body: Obj) -> bool:
    """The gateway's children once its edge exists, its egress addresses, and the status; True
    when its published egress ranges may have changed."""
    try:
        gw = StreamGateway.parse(body, ctx.config.image)
    except SpecError as exc:
        await st.invalid(ctx.kube, k8s.STREAM_GATEWAYS, body, exc)
        raise
    edge_body = await ctx.kube.get(k8s.RELAY_EDGES, gw.namespace, gw.edge)
    if edge_body is None or _deleting(edge_body):
        # Not an error to retry quickly: the gateway waits until the edge exists (creating
        # the edge re-runs this), and says so in its status instead of failing over and over.
        message = f'RelayEdge "{gw.edge}" does not exist in namespace "{gw.namespace}"'
        why = Condition(DEGRADED, True, "EdgeNotFound", message)
        await st.stuck(
            ctx.kube, k8s.STREAM_GATEWAYS, body, why, "waiting for the edge", edge=gw.edge
        )
        return True
    changes: list[str] = []
    deployment: Obj = {}
    announce = await _sip_announce(ctx, gw)
    for child in gateway.children(gw, body, announce):
        current = await _apply(ctx, body, child, changes)
        if child["kind"] == "Deployment":
            deployment = current
    addresses = await _gateway_addresses(ctx, gw)
    location = _location(ctx, gw, edge_body)
    problem = await _gateway_problem(ctx, gw)

    def status_of(body: Obj) -> Obj:
        return _gateway_status(gw, body, deployment, addresses, location, problem)

    before = body.get("status") or {}
    publishes = (
        before.get("addresses") != addresses
        or before.get("edge") != gw.edge
        or before.get("observedGeneration") != body["metadata"].get("generation")  # e.g. SIP
    )
    written = await st.write(ctx.kube, k8s.STREAM_GATEWAYS, body, status_of)
    if written is None:
        return True
    st.warn_if_new(written, problem, same_message=True)
    for change in changes:
        st.event(body, "Reconciled", change)
    was = conditions.find(written.get("status"), DEGRADED) or {}
    if was.get("status") == "True" and not problem.status:
        fixed = was.get("reason") or "Degraded"
        news = f"bound to RelayEdge {gw.edge}" if fixed == "EdgeNotFound" else f"{fixed}: fixed"
        st.event(body, "Recovered", news)
    return publishes


async def _sip_announce(ctx: Context, gw: StreamGateway) -> str | None:
    """The address a SIP gateway announces in SDP and Contact: ``spec.sip.announceAddress``,
    else its LoadBalancer Service's ingress IP once the cloud has assigned one (the Service's
    status change re-runs this through the watch), else None: the pod's own address."""
    if gw.sip is None:
        return None
    if gw.sip.announce_address is not None:
        return gw.sip.announce_address
    if gw.exposure.type != "LoadBalancer":
        return None
    svc = await ctx.kube.get(k8s.SERVICES, gw.namespace, labels.gateway_name(gw.name))
    found = networks.load_balancer_ips(svc)
    return found[0].rsplit("/", 1)[0] if found else None


async def _gateway_problem(ctx: Context, gw: StreamGateway) -> Condition:
    """Reconcile's verdict on Degraded for a gateway whose children were written: a SIP
    gateway's pods cannot start, or exit at once, without their certificate or numbers file."""
    sip = gw.sip
    if sip is None:
        return NOT_DEGRADED
    if sip.tls_port is not None and not await ctx.kube.get(
        k8s.SECRETS, gw.namespace, sip.tls_secret
    ):
        message = (
            f'TLS Secret "{sip.tls_secret}" (spec.sip.tls) does not exist in namespace '
            f'"{gw.namespace}"'
        )
        return Condition(DEGRADED, True, "TLSSecretNotFound", message)
    secret = sip.numbers_kind == "secret"
    kind = "Secret" if secret else "ConfigMap"
    source = await ctx.kube.get(
        k8s.SECRETS if secret else k8s.CONFIGMAPS, gw.namespace, sip.numbers_name
    )
    where = f'{kind} "{sip.numbers_name}" (spec.sip.numbers)'
    if source is None:
        message = f'{where} does not exist in namespace "{gw.namespace}"'
        return Condition(DEGRADED, True, "NumbersNotFound", message)
    # Only the keys are read, never a value (a Secret's values are secret).
    keys = {*(source.get("data") or {}), *(source.get("binaryData") or {})}
    if sip.numbers_key not in keys:
        message = f'{where} has no key "{sip.numbers_key}"'
        return Condition(DEGRADED, True, "NumbersNotFound", message)
    return NOT_DEGRADED


async def _gateway_addresses(ctx: Context, gw: StreamGateway) -> list[str]:
    """The gateway's egress ranges: declared, else the ExternalIPs of its pods' nodes."""
    if gw.static_egress:
        return ranges.collapse(gw.static_egress)
    nodes = await ctx.nodes.list()
    pods = await ctx.kube.list(k8s.PODS, gw.namespace, labels.gateway_selector(gw.name))
    return networks.external_ips(nodes, networks.nodes_running(pods))


def _location(ctx: Context, gw: StreamGateway, edge_body: Obj) -> str:
    """The location of the gateway's edge (as written, when the edge's spec is invalid)."""
    try:
        return RelayEdge.parse(edge_body, ctx.config.image).location
    except SpecError:
        return str((edge_body.get("spec") or {}).get("location", gw.edge))


def _gateway_status(
    gw: StreamGateway,
    body: Obj,
    deployment: Obj,
    addresses: list[str],
    location: str,
    problem: Condition,
) -> Obj:
    ready, desired, rolled_out = readiness(deployment, False)
    is_ready = desired > 0 and ready >= desired and rolled_out
    message = f"{ready}/{desired} gateways ready"
    ready_cond, progressing = _ready_conditions(
        is_ready, "GatewaysReady", message, message, message
    )
    status = {
        "observedGeneration": body["metadata"].get("generation", 1),
        "replicas": desired,
        "readyReplicas": ready,
        "ready": f"{ready}/{desired}",
        "addresses": addresses,
        "edge": gw.edge,
        "location": location,
    }
    return st.with_conditions(body, status, ready_cond, progressing, problem)


# -- the namespace's published ConfigMaps --------------------------------------------------------


async def _put_configmap(
    ctx: Context, namespace: str, name: str, data: dict[str, str], create: bool = True
) -> None:
    body: Obj = {
        "metadata": {"name": name, "namespace": namespace, "labels": labels.published_labels()},
        "data": data,
    }
    current = await ctx.kube.get(k8s.CONFIGMAPS, namespace, name)
    if current is None:
        if not create:
            return
        await ctx.kube.create(k8s.CONFIGMAPS, namespace, body)
    else:
        # Guarded by resourceVersion: a concurrent writer makes this a 409 and a retry.
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await ctx.kube.replace(k8s.CONFIGMAPS, namespace, name, body)
    ctx.metrics.published.labels(name).inc()


def _sip_entry(body: Obj, addresses: list[str], image: str) -> ranges.SipEntry | None:
    """A gateway answering SIP: carriers send signalling and RTP to its addresses."""
    try:
        gw = StreamGateway.parse(body, image)
    except SpecError:
        return None  # reported on the gateway itself
    if gw.sip is None:
        return None
    return ranges.SipEntry(tuple(addresses), gw.sip.port, gw.rtp_ports, gw.sip.tls_port)


async def publish(ctx: Context, namespace: str) -> None:
    """Rewrite `turnpike-ip-ranges` and `turnpike-edges` in ``namespace`` when content changed.

    An edge whose spec cannot be parsed keeps its last valid publication (``status.publication``,
    see publication.py): a typo must never withdraw a serving edge from the firewall ranges or
    the token API. Once its last edge is gone a namespace keeps empty documents, not missing
    ConfigMaps."""
    kube, cfg = ctx.kube, ctx.config
    edge_bodies = [e for e in await kube.list(k8s.RELAY_EDGES, namespace) if not _deleting(e)]
    gateway_bodies = [
        g for g in await kube.list(k8s.STREAM_GATEWAYS, namespace) if not _deleting(g)
    ]
    published: list[tuple[Publication, Obj]] = []
    for body in edge_bodies:
        try:
            published.append((Publication.of(RelayEdge.parse(body, cfg.image)), body))
        except SpecError:  # reported on the edge itself; it keeps what it published last
            kept = Publication.from_status(body["metadata"]["name"], body.get("status"))
            if kept is not None:
                published.append((kept, body))
    streams: dict[str, list[str]] = {}
    sip: dict[str, list[ranges.SipEntry]] = {}
    for body in gateway_bodies:
        edge_name = (body.get("spec") or {}).get("edge", "")
        addresses = (body.get("status") or {}).get("addresses") or []
        streams.setdefault(edge_name, []).extend(addresses)
        entry = _sip_entry(body, addresses, cfg.image)
        if entry is not None:
            sip.setdefault(edge_name, []).append(entry)
    doc = ranges.document(
        pub.ranges(
            (body.get("status") or {}).get("addresses") or [],
            streams.get(pub.name, []),
            tuple(sip.get(pub.name, [])),
        )
        for pub, body in published
    )
    ctx.metrics.edges.labels(namespace).set(len(published))
    # Without edges the documents become empty, but only where they exist: a namespace that
    # never had edges, or one being deleted, gets nothing created.
    any_edges = bool(published)
    current = await kube.get(k8s.CONFIGMAPS, namespace, labels.IP_RANGES)
    if (
        current is None
        or not ranges.same_content(current.get("data"), doc)
        or not _has_labels(current)
    ):
        await _put_configmap(
            ctx,
            namespace,
            labels.IP_RANGES,
            ranges.configmap_data(doc, k8s.timestamp()),
            any_edges,
        )
    text = directory.render([pub for pub, _ in published], cfg.global_host)
    current = await kube.get(k8s.CONFIGMAPS, namespace, labels.EDGE_DIRECTORY)
    if (
        current is None
        or _data(current) != {labels.EDGE_DIRECTORY_KEY: text}
        or not _has_labels(current)
    ):
        await _put_configmap(
            ctx, namespace, labels.EDGE_DIRECTORY, {labels.EDGE_DIRECTORY_KEY: text}, any_edges
        )


def _data(configmap: Obj | None) -> dict[str, str]:
    return dict((configmap or {}).get("data") or {})


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
    outages: Outages = field(default_factory=lambda: Outages(log))
    published: set[str] = field(default_factory=set)  # namespaces published by this process
    publish_started: dict[str, float] = field(default_factory=dict)  # namespace → monotonic time

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
                self.publish_started[namespace] = started
                await publish(ctx, namespace)
                self.published.add(namespace)
                return
            result, publishes = await self._object(kind, namespace, name)
            if result == "retry":
                return
            # Only when something published may have changed (a resync that changes nothing
            # publishes nothing; the first reconcile in a namespace always does, to repair what
            # changed while no operator ran), and once per namespace per burst of changes: a
            # publish reads every edge of the namespace.
            if publishes or namespace not in self.published:
                self.schedule_publish(namespace)
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

    async def _object(self, kind: str, namespace: str, name: str) -> tuple[str, bool]:
        """Reconcile one RelayEdge or StreamGateway as it is now: "success", "gone", or "retry"
        (it changed while being reconciled: reconciled again at once), and whether what it
        publishes may have changed. A failure other than an invalid spec is reported in its
        status, then raised."""
        res = k8s.RELAY_EDGES if kind == EDGE else k8s.STREAM_GATEWAYS
        body = await self.ctx.kube.get(res, namespace, name)
        if body is None or _deleting(body):
            return "gone", True
        try:
            publishes = await (reconcile_edge if kind == EDGE else reconcile_gateway)(
                self.ctx, body
            )
        except st.Stale:
            self.schedule(kind, namespace, name)
            return "retry", False
        except SpecError:
            raise  # reported on the object already
        except Exception as exc:
            await st.failed(self.ctx.kube, res, body, f"{type(exc).__name__}: {exc}")
            raise
        return "success", publishes

    async def wake_gateways(self, namespace: str, edge: str) -> None:
        for body in await self.ctx.kube.list(k8s.STREAM_GATEWAYS, namespace):
            if (body.get("spec") or {}).get("edge") == edge:
                self.schedule(GATEWAY, namespace, body["metadata"]["name"])

    def schedule_publish(self, namespace: str) -> None:
        """Publish ``namespace`` at once if its last publish started PUBLISH_SPACING ago or more,
        else when that much time has passed; a change while one is queued is folded into it."""
        last = self.publish_started.get(namespace)
        wait = 0.0 if last is None else last + PUBLISH_SPACING - time.monotonic()
        self.schedule(NAMESPACE, namespace, "", delay=max(0.0, wait))

    def schedule(self, kind: str, namespace: str, name: str, delay: float = 0.0) -> None:
        """Reconcile soon (after ``delay``); a trigger while one is queued is absorbed by it."""
        key = (kind, namespace, name)
        if key in self.queued:
            return
        self.queued.add(key)

        async def job() -> None:
            work = f"reconcile of {kind} {namespace}/{name}".replace(" /", " ")
            try:
                if delay:
                    await asyncio.sleep(delay)
                await self.run(kind, namespace, name)
            except SpecError:
                pass  # reported in the object's status already
            except Exception as exc:  # retried after the retry delay
                self.outages.failed(work, exc)
                await asyncio.sleep(self.ctx.config.retry_delay)
                self.schedule(kind, namespace, name)
            else:
                self.outages.succeeded(work)

        task = asyncio.get_running_loop().create_task(job())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.ctx.cluster.close()
