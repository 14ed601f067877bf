"""Fleet-wide TURN keyring rotation: the engine, its metrics and its kopf handlers.

`register` adds the handlers to an operator's kopf registry:

* a daemon per RelayEdge that calls `Rotator.tick` on its namespace's keyring Secret every
  ``check_interval`` seconds (at most one tick per namespace and interval, however many edges).
  kopf stops daemons while another operator replica holds priority (peering), so only the
  active replica rotates. The daemons live on the edges, which carry the operator's finalizer
  anyway, and not on the Secret: a kopf daemon puts a finalizer on its object, and a finalizer
  on the Secret would hang its deletion (and the namespace's) once the operator is gone;
* on RelayEdge create/resume, `Rotator.ensure` creates the namespace's keyring Secret if missing;
* events of the keyring Secret (label-selected: no other Secret reaches the operator) recreate a
  deleted one and remove a finalizer an older version left on it.

All rotation state lives in the Secret (see `rotation_state`), so each tick starts from what the
API server says and a killed operator resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import kopf
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from turnpike.core.keyring import Keyring, KeyringError
from turnpike.operator import labels
from turnpike.operator.keyring_secret import (
    Cluster,
    Conflict,
    KeyringSummary,
    KubeCluster,
    SecretView,
    ensure_secret,
    probe_all,
)
from turnpike.operator.kube import RELAY_EDGES, SECRETS, ApiError, Kube
from turnpike.operator.outages import Outages
from turnpike.operator.rotation_settings import RotationSettings
from turnpike.operator.rotation_state import (
    A_REVOKE,
    A_ROTATE_NOW,
    Look,
    RotationState,
    Step,
    decide,
    format_time,
    needs_reports,
    parse_revoke,
    read_state,
)

log = logging.getLogger(__name__)
Clock = Callable[[], float]
_FALSE = {"", "0", "false", "no", "off"}


class RotationMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.key_age = Gauge(
            "turnpike_keyring_signing_key_age_seconds",
            "How long the current signing key has been signing",
            ["namespace"],
            registry=registry,
        )
        self.version = Gauge(
            "turnpike_keyring_version",
            "Keyring version (bumped on every change of the keys)",
            ["namespace"],
            registry=registry,
        )
        self.keys = Gauge(
            "turnpike_keyring_keys", "Keys in the keyring", ["namespace"], registry=registry
        )
        self.rotations = Counter(
            "turnpike_keyring_rotations",
            "Rotation steps by outcome: started, promoted, completed, blocked, revoked",
            ["namespace", "outcome"],
            registry=registry,
        )


class Rotator:
    """One rotation step per `tick`, from the Secret's state, for one keyring Secret."""

    def __init__(
        self,
        cluster: Cluster,
        settings: RotationSettings,
        clock: Clock = time.time,
        metrics: RotationMetrics | None = None,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.clock = clock
        self.metrics = metrics

    async def ensure(self, namespace: str) -> bool:
        """Create the namespace's keyring Secret with one strong random key; True if created."""
        name = self.settings.secret_name
        keyring = await ensure_secret(self.cluster, namespace, name, self.clock())
        if keyring is not None:
            log.info("created keyring Secret %s/%s (key %s)", namespace, name, keyring.ids[0])
        return keyring is not None

    async def tick(self, namespace: str, name: str | None = None) -> Step | None:
        """Look once and make at most one change. Returns the change made, if any."""
        name = name or self.settings.secret_name
        view = await self.cluster.read_secret(namespace, name)
        if view is None:
            return None
        look = await self._look(view)
        if look is None:
            return None
        step = decide(look, self.settings)
        if not await self._write(view, look, step):
            return None
        if step is not None:
            await self._announce(view, step)
        final = step.keyring if step is not None and step.keyring is not None else look.keyring
        written = look.state if step is None else step.state
        self._observe(namespace, final, written, look.now)
        await self.cluster.publish(namespace, summary_of(final, written))
        return step

    async def _look(self, view: SecretView) -> Look | None:
        """The keyring, its state and the manual requests from the Secret, and the pods' reports
        when the phase needs them; None (reported) when the keyring cannot be used."""
        source = f"Secret {view.namespace}/{view.name}"
        try:
            if view.keyring_json is None:
                raise KeyringError(f"{source} has no keyring.json")
            keyring = Keyring.parse(view.keyring_json, source)
        except KeyringError as exc:
            # Never "repair" a broken keyring by generating keys: that would cut off every pod.
            message = f"keyring unusable, rotation paused: {exc}"
            log.error("%s", message)
            await self.cluster.publish(view.namespace, KeyringSummary(0, "", None, message))
            return None
        now = self.clock()
        state = read_state(view.annotations, keyring, now)
        rotate_now = view.annotations.get(A_ROTATE_NOW, "").strip().lower() not in _FALSE
        revoke_ids = tuple(parse_revoke(view.annotations.get(A_REVOKE)))
        reports = None
        if needs_reports(state) and not revoke_ids:
            consumers = await self.cluster.consumers(view.namespace, view.name)
            reports = await probe_all(self.cluster, consumers)
        return Look(keyring, state, now, reports, rotate_now, revoke_ids)

    async def _write(self, view: SecretView, look: Look, step: Step | None) -> bool:
        """Write the step's keyring and state (and clear the requests it acted on) in one write
        of the Secret; False when the Secret changed meanwhile (the next tick decides again)."""
        annotations = dict((look.state if step is None else step.state).annotations())
        if step is not None:
            if step.clear_rotate_now:
                annotations[A_ROTATE_NOW] = None
            if step.clear_revoke:
                annotations[A_REVOKE] = None
        new_json = None if step is None or step.keyring is None else step.keyring.to_json()
        if new_json is None and not _differs(view.annotations, annotations):
            return True
        try:
            await self.cluster.write_secret(view, new_json, annotations)
        except Conflict:
            log.info(
                "keyring Secret %s/%s changed meanwhile; deciding again", view.namespace, view.name
            )
            return False
        return True

    async def _announce(self, view: SecretView, step: Step) -> None:
        log.log(logging.WARNING if step.warning else logging.INFO, "%s", step.message)
        await self.cluster.event(
            view, step.warning, step.reason, step.message, on_edges=step.warning
        )
        if self.metrics is not None and step.outcome is not None:
            self.metrics.rotations.labels(view.namespace, step.outcome).inc()

    def _observe(self, namespace: str, keyring: Keyring, state: RotationState, now: float) -> None:
        if self.metrics is None:
            return
        self.metrics.key_age.labels(namespace).set(max(0.0, now - state.signing_since))
        self.metrics.version.labels(namespace).set(state.version)
        self.metrics.keys.labels(namespace).set(len(keyring.keys))


def summary_of(keyring: Keyring, state: RotationState) -> KeyringSummary:
    last = None if state.last_rotation is None else format_time(state.last_rotation)
    return KeyringSummary(state.version, keyring.signing_key.id, last, state.blocked)


def _differs(current: dict[str, str] | Any, wanted: dict[str, str | None]) -> bool:
    return any(current.get(k) != v for k, v in wanted.items())


# -- kopf wiring ---------------------------------------------------------------------------------


def register(
    registry: kopf.OperatorRegistry,
    settings: RotationSettings,
    kube: Kube | Callable[[], Kube],
    *,
    clock: Clock = time.time,
    metrics_registry: CollectorRegistry | None = None,
) -> Rotator:
    """Add the rotation handlers to ``registry``. ``kube`` is the operator's REST client, or a
    function returning it once the operator has logged in. Returns the engine (for tests and
    for `ensure_keyring_secret`)."""
    cluster = KubeCluster(kube)
    engine = Rotator(cluster, settings, clock, RotationMetrics(metrics_registry))

    def is_keyring(name: str | None, **_: Any) -> bool:
        return name == settings.secret_name

    # The daemons live on the RelayEdges (which carry the operator's finalizer anyway), never on
    # the Secret: a kopf daemon puts a finalizer on its object.
    edges = (RELAY_EDGES.group, RELAY_EDGES.version, RELAY_EDGES.plural)
    kopf.daemon(*edges, id="keyring-rotation", cancellation_timeout=5, registry=registry)(
        _daemon(engine)
    )
    hook = _edge_hook(engine)
    for on in (kopf.on.create, kopf.on.resume):
        on(*edges, id="keyring-secret", registry=registry)(hook)
    kopf.on.event(
        "v1",
        "secrets",
        labels=labels.MANAGED,
        when=is_keyring,
        id="keyring-recreate",
        registry=registry,
    )(_keyring_events(engine, cluster))

    async def close(**_: Any) -> None:
        await cluster.close()

    kopf.on.cleanup(id="keyring-rotation-cleanup", registry=registry)(close)
    return engine


def _daemon(engine: Rotator) -> Any:
    """One tick every check interval for each namespace's keyring Secret, however many edges the
    namespace has (each edge's daemon skips a namespace another one just ticked); a failing tick
    is logged once per cause, not once per tick."""
    locks: dict[str, asyncio.Lock] = {}
    last_tick: dict[str, float] = {}  # namespace → loop time of its last tick
    outages = Outages(log)

    async def keyring_daemon(namespace: str | None, stopped: kopf.DaemonStopped, **_: Any) -> None:
        if namespace is None:
            return
        interval = engine.settings.check_interval
        lock = locks.setdefault(namespace, asyncio.Lock())
        loop = asyncio.get_running_loop()
        while not stopped:
            async with lock:
                if loop.time() - last_tick.get(namespace, -math.inf) >= interval / 2:
                    last_tick[namespace] = loop.time()
                    work = f"keyring rotation in {namespace}"
                    try:
                        await engine.tick(namespace, engine.settings.secret_name)
                    except Exception as exc:  # the next tick starts from the Secret again
                        outages.failed(work, exc)
                    else:
                        outages.succeeded(work)
            await stopped.wait(interval)

    return keyring_daemon


def _edge_hook(engine: Rotator) -> Any:
    """A RelayEdge appeared (or the operator resumed): its namespace needs a keyring Secret."""

    async def edge_needs_keyring(namespace: str | None, **_: Any) -> None:
        if namespace is not None:
            await ensure_keyring_secret(engine, namespace)

    return edge_needs_keyring


def _keyring_events(engine: Rotator, cluster: KubeCluster) -> Any:
    """The keyring Secret's events (label-selected: no other Secret reaches the operator).
    Deleted while the namespace still has edges: recreated (with a new key; the old keys went
    with the Secret), since relay and token pods mount it as a required volume and any pod that
    restarts would never start. Otherwise: a finalizer an older version left on it is removed."""

    async def keyring_event(body: Any, namespace: str | None, type: str | None, **_: Any) -> None:
        if namespace is None:
            return
        if type != "DELETED":
            await release_secret(cluster.kube, namespace, body)
            return
        if await cluster.kube.list(RELAY_EDGES, namespace):
            name = engine.settings.secret_name
            log.warning("keyring Secret %s/%s was deleted; recreating it", namespace, name)
            await engine.ensure(namespace)

    return keyring_event


_OLD_FINALIZERS = (labels.FINALIZER, labels.KOPF_DEFAULT_FINALIZER)


async def release_secret(kube: Kube, namespace: str, body: Any) -> None:
    """Remove the finalizer an older version's daemon put on the keyring Secret (nothing of this
    version adds one), so deleting the Secret or its namespace never waits for the operator."""
    meta = body.get("metadata") or {}
    held = list(meta.get("finalizers") or [])
    kept = [f for f in held if f not in _OLD_FINALIZERS]
    if kept == held:
        return
    patch = {"metadata": {"finalizers": kept or None, "resourceVersion": meta["resourceVersion"]}}
    try:
        await kube.patch(SECRETS, namespace, meta["name"], patch)
    except ApiError as exc:
        if exc.status not in (404, 409):  # gone, or changed: the next event tries again
            raise
    log.info("removed the old finalizer from Secret %s/%s", namespace, meta["name"])


async def ensure_keyring_secret(engine: Rotator, namespace: str) -> bool:
    """Create the namespace's keyring Secret if it does not exist (when an edge or a token API
    appears there); True if it was created. API errors become kopf retries."""
    try:
        return await engine.ensure(namespace)
    except Exception as exc:
        raise kopf.TemporaryError(f"cannot ensure the keyring Secret: {exc}", delay=5) from exc
