"""Fleet-wide TURN keyring rotation: the engine, its metrics and its kopf handlers.

`register` adds the handlers to an operator's kopf registry:

* one operator task per namespace with RelayEdges (`loops.NamespaceLoops`, started by the
  edges' watch events, stopped when the last edge goes) that calls `Rotator.tick` on the
  namespace's keyring Secret every ``check_interval`` seconds, when ``may_act`` says this replica
  is the active one (peering). Not a kopf daemon: a daemon puts a finalizer on its object, and
  a finalizer on an edge or the Secret hangs its deletion (and the namespace's) once the
  operator is gone;
* on RelayEdge create/resume, `Rotator.ensure` creates the namespace's keyring Secret if missing;
* events of the keyring Secret (label-selected: no other Secret reaches the operator) recreate a
  deleted one and remove a finalizer an older version left on it.

All rotation state lives in the Secret (see `rotation_state`), so each tick starts from what the
API server says and a killed operator resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from turnpike.core.keyring import Keyring, KeyringError
from turnpike.operator import finalizers, labels
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
from turnpike.operator.loops import NamespaceLoops
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
MayAct = Callable[[str], Awaitable[bool]]
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
    may_act: MayAct | None = None,
    edge_hooks: bool = True,
) -> Rotator:
    """Add the rotation handlers to ``registry``. ``kube`` is the operator's REST client, or a
    function returning it once the operator has logged in; ``may_act(namespace)`` says whether
    this replica may rotate there now (`loops.Leadership`; None: always). Returns the engine
    (for tests and for `ensure_keyring_secret`).

    ``edge_hooks`` adds create/resume handlers on RelayEdges that create the keyring Secret. The
    operator turns them off: its own reconcile creates the Secret, and a second changing handler
    on the same object lets an update be lost (kopf runs one handler per processing cycle; a spec
    change between the two cycles of a resume becomes an update whose reconcile kopf counts as
    done by the resume's, which read the old spec)."""
    cluster = KubeCluster(kube)
    engine = Rotator(cluster, settings, clock, RotationMetrics(metrics_registry))

    def is_keyring(name: str | None, **_: Any) -> bool:
        return name == settings.secret_name

    # No kopf daemon (it would put a finalizer on its object): one operator task per namespace
    # with RelayEdges, started and stopped from the edges' watch events.
    edges = (RELAY_EDGES.group, RELAY_EDGES.version, RELAY_EDGES.plural)
    loops = NamespaceLoops(_tick(engine, may_act), settings.check_interval, "keyring rotation")
    kopf.on.event(*edges, id="keyring-rotation", registry=registry)(_edge_events(loops, cluster))
    if edge_hooks:
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
        await loops.close()
        await cluster.close()

    kopf.on.cleanup(id="keyring-rotation-cleanup", registry=registry)(close)
    return engine


def _tick(engine: Rotator, may_act: MayAct | None) -> Callable[[str], Awaitable[None]]:
    """One rotation step for a namespace's keyring Secret, if this replica may act there."""

    async def tick(namespace: str) -> None:
        if may_act is None or await may_act(namespace):
            await engine.tick(namespace, engine.settings.secret_name)

    return tick


def _edge_events(loops: NamespaceLoops, cluster: KubeCluster) -> Any:
    """Any event of a RelayEdge (the initial listing too): its namespace's rotation runs. Its
    deletion: the rotation stops when it was the namespace's last edge."""

    async def edge_event(namespace: str | None, type: str | None, **_: Any) -> None:
        if namespace is None:
            return
        if type != "DELETED":
            loops.start(namespace)
        elif not await cluster.kube.list(RELAY_EDGES, namespace):
            await loops.stop(namespace)

    return edge_event


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
            await finalizers.release(cluster.kube, SECRETS, namespace, body)
            return
        if await cluster.kube.list(RELAY_EDGES, namespace):
            name = engine.settings.secret_name
            log.warning("keyring Secret %s/%s was deleted; recreating it", namespace, name)
            try:
                await engine.ensure(namespace)
            except ApiError as exc:
                # The namespace itself is being deleted (its edges go too, none holds it).
                if exc.status != 403 or "being terminated" not in exc.message:
                    raise
                log.info("not recreating %s/%s: the namespace is being deleted", namespace, name)

    return keyring_event


async def ensure_keyring_secret(engine: Rotator, namespace: str) -> bool:
    """Create the namespace's keyring Secret if it does not exist (when an edge or a token API
    appears there); True if it was created. API errors become kopf retries."""
    try:
        return await engine.ensure(namespace)
    except Exception as exc:
        raise kopf.TemporaryError(f"cannot ensure the keyring Secret: {exc}", delay=5) from exc
