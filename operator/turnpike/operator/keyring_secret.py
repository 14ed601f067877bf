"""Everything rotation reads from and writes to Kubernetes, behind one small interface.

`Cluster` is what the rotation engine needs; `KubeCluster` does it over the operator's REST client.
Keeping the engine's I/O this narrow is what lets a test drive a simulated fleet through days of
rotations with a fake clock, and the end-to-end tests drive the same engine against an API server.

How pods are found, in a real cluster and in the emulator alike: every pod in the namespace that
mounts the keyring Secret as a volume, or carries the label ``turnpike.io/keyring: <secret name>``,
is a holder; its health port is the container port named ``health`` (or ``metrics``), or the one
in the annotation ``turnpike.io/health-port``. The operator asks ``http://<podIP>:<port>/ready``
for the key ids the pod has loaded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from turnpike.core.keyring import Keyring
from turnpike.operator import conditions, labels
from turnpike.operator.kube import EVENTS, PODS, RELAY_EDGES, SECRETS, ApiError, Kube, timestamp
from turnpike.operator.rotation_state import PodReport, initial, report_from_ready

DATA_KEY = labels.KEYRING_KEY
CONSUMER_LABEL = "turnpike.io/keyring"
HEALTH_PORT_ANNOTATION = "turnpike.io/health-port"
HEALTH_PORT_NAMES = ("health", "metrics")
COMPONENT = "turnpike-operator"
PROBE_TIMEOUT = 3.0

Obj = dict[str, Any]


class Conflict(Exception):
    """The Secret changed since it was read; read again and decide again."""


@dataclass(frozen=True, slots=True)
class SecretView:
    name: str
    namespace: str
    keyring_json: str | None
    annotations: Mapping[str, str]
    resource_version: str
    uid: str = ""


@dataclass(frozen=True, slots=True)
class Consumer:
    """A started pod that holds the keyring, and where it reports what it loaded."""

    pod: str
    url: str


@dataclass(frozen=True, slots=True)
class KeyringSummary:
    """What every RelayEdge in the namespace shows about the keyring."""

    version: int
    signing: str
    last_rotation: str | None
    blocked: str | None

    def status(self) -> Obj:
        return {
            "keyringVersion": self.version,
            "keyringSigningKey": self.signing,
            "lastKeyRotation": self.last_rotation,
            # Why rotation cannot go on (None: it can); the Degraded condition says the same.
            "keyringRotationBlocked": self.blocked,
        }


class Cluster(Protocol):
    async def read_secret(self, namespace: str, name: str) -> SecretView | None: ...

    async def create_secret(
        self, namespace: str, name: str, keyring_json: str, annotations: Mapping[str, str | None]
    ) -> bool:
        """Create the Secret (annotations set to None are left out); False if it exists."""
        ...

    async def write_secret(
        self,
        view: SecretView,
        keyring_json: str | None,
        annotations: Mapping[str, str | None],
    ) -> None:
        """Replace data and annotations in one write; `Conflict` if the Secret moved on."""
        ...

    async def consumers(self, namespace: str, secret: str) -> list[Consumer]: ...

    async def probe(self, consumer: Consumer) -> PodReport: ...

    async def event(
        self, view: SecretView, warning: bool, reason: str, message: str, on_edges: bool
    ) -> None: ...

    async def publish(self, namespace: str, summary: KeyringSummary) -> None: ...


def secret_body(
    namespace: str, name: str, keyring_json: str, annotations: Mapping[str, str | None]
) -> Obj:
    """The keyring Secret as the operator creates it: its one shape and its labels."""
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels.keyring_labels(),
            "annotations": {k: v for k, v in annotations.items() if v is not None},
        },
        "type": "Opaque",
        "data": {DATA_KEY: base64.b64encode(keyring_json.encode()).decode()},
    }


# One check-then-create at a time per Secret in this process: when many edges of a namespace are
# reconciled at once (start-up), the first creates the Secret and the others find it, instead of
# racing to create it and failing with 409s.
_ensuring: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str], asyncio.Lock]
] = weakref.WeakKeyDictionary()


async def ensure_secret(cluster: Cluster, namespace: str, name: str, now: float) -> Keyring | None:
    """Create the namespace's keyring Secret with one fresh signing key and the rotation state
    of a new keyring, unless it exists; the keyring created, or None."""
    locks = _ensuring.setdefault(asyncio.get_running_loop(), {})
    async with locks.setdefault((namespace, name), asyncio.Lock()):
        if await cluster.read_secret(namespace, name) is not None:
            return None
        keyring, state = initial(now)
        created = await cluster.create_secret(
            namespace, name, keyring.to_json(), state.annotations()
        )
        return keyring if created else None


def _started(pod: Obj) -> bool:
    """Its containers are starting or running (it has a pod IP), and it is neither finished nor
    going away. Ready or not: a pod that is still starting has already mounted the keyring and
    may become Ready (and get traffic) at any moment with the keys it read then, so a rotation
    must wait for it like for any other."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and status.get("phase") not in ("Succeeded", "Failed")


def health_port(pod: Obj) -> int | None:
    """The pod's declared health port: the annotation, else a port named health or metrics."""
    annotated = (pod.get("metadata", {}).get("annotations") or {}).get(HEALTH_PORT_ANNOTATION)
    if annotated and annotated.isdigit():
        return int(annotated)
    ports = [
        p
        for c in (pod.get("spec") or {}).get("containers") or []
        for p in c.get("ports") or []
        if isinstance(p, dict)
    ]
    for name in HEALTH_PORT_NAMES:
        for port in ports:
            if port.get("name") == name and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return None


def holds_keyring(pod: Obj, secret: str) -> bool:
    """A pod labelled as a holder of ``secret``, or one that mounts it (directly or projected)."""
    if (pod.get("metadata", {}).get("labels") or {}).get(CONSUMER_LABEL) == secret:
        return True
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName") == secret:
            return True
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name") == secret:
                return True
    return False


def consumer_of(pod: Obj) -> Consumer | None:
    if not _started(pod):
        return None
    name = str(pod["metadata"]["name"])
    ip = str(pod["status"]["podIP"])
    port = health_port(pod)
    if port is None:
        # A pod we cannot ask still counts: report it so the rotation waits and says why.
        return Consumer(name, "")
    host = f"[{ip}]" if ":" in ip else ip
    return Consumer(name, f"http://{host}:{port}/ready")


class KubeCluster:
    """`Cluster` over the operator's REST client."""

    def __init__(
        self, kube: Kube | Callable[[], Kube], http: aiohttp.ClientSession | None = None
    ) -> None:
        # The operator's client may only exist once it has logged in: accept a getter too.
        self._kube = kube
        self._http = http

    @property
    def kube(self) -> Kube:
        return self._kube if isinstance(self._kube, Kube) else self._kube()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
            self._http = aiohttp.ClientSession(timeout=timeout)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def read_secret(self, namespace: str, name: str) -> SecretView | None:
        obj = await self.kube.get(SECRETS, namespace, name)
        if obj is None:
            return None
        meta = obj.get("metadata") or {}
        raw = (obj.get("data") or {}).get(DATA_KEY)
        text = None
        if isinstance(raw, str):
            try:
                text = base64.b64decode(raw).decode()
            except (ValueError, UnicodeDecodeError):
                text = None
        return SecretView(
            name=name,
            namespace=namespace,
            keyring_json=text,
            annotations=dict(meta.get("annotations") or {}),
            resource_version=str(meta.get("resourceVersion", "")),
            uid=str(meta.get("uid", "")),
        )

    async def create_secret(
        self, namespace: str, name: str, keyring_json: str, annotations: Mapping[str, str | None]
    ) -> bool:
        body = secret_body(namespace, name, keyring_json, annotations)
        try:
            await self.kube.create(SECRETS, namespace, body)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def write_secret(
        self,
        view: SecretView,
        keyring_json: str | None,
        annotations: Mapping[str, str | None],
    ) -> None:
        # Read-modify-replace with the resourceVersion we decided on: a concurrent writer (a
        # person, kopf adding its finalizer, a second operator) makes this fail, not get lost.
        obj = await self.kube.get(SECRETS, view.namespace, view.name)
        if obj is None or str(obj["metadata"].get("resourceVersion")) != view.resource_version:
            raise Conflict(view.name)
        meta = obj["metadata"]
        merged = dict(meta.get("annotations") or {})
        for key, value in annotations.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        meta["annotations"] = merged
        if keyring_json is not None:
            obj.setdefault("data", {})[DATA_KEY] = base64.b64encode(keyring_json.encode()).decode()
        try:
            await self.kube.replace(SECRETS, view.namespace, view.name, obj)
        except ApiError as exc:
            if exc.status == 409:
                raise Conflict(view.name) from None
            raise

    async def consumers(self, namespace: str, secret: str) -> list[Consumer]:
        pods = await self.kube.list(PODS, namespace)
        found = (consumer_of(p) for p in pods if holds_keyring(p, secret))
        return sorted((c for c in found if c is not None), key=lambda c: c.pod)

    async def probe(self, consumer: Consumer) -> PodReport:
        if not consumer.url:
            return PodReport(consumer.pod, error="declares no health port")
        try:
            async with self._session().get(consumer.url) as resp:
                # A draining pod answers 503 but still says what it has loaded.
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return PodReport(consumer.pod, error=f"/ready: {type(exc).__name__}")
        return report_from_ready(consumer.pod, body)

    async def event(
        self, view: SecretView, warning: bool, reason: str, message: str, on_edges: bool
    ) -> None:
        targets: list[Obj] = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "name": view.name,
                "namespace": view.namespace,
                "uid": view.uid,
            }
        ]
        if on_edges:
            for edge in await self._edges(view.namespace):
                meta = edge.get("metadata") or {}
                targets.append(
                    {
                        "apiVersion": RELAY_EDGES.api_version,
                        "kind": RELAY_EDGES.kind,
                        "name": meta.get("name"),
                        "namespace": view.namespace,
                        "uid": meta.get("uid", ""),
                    }
                )
        stamp = timestamp()
        for target in targets:
            body: Obj = {
                "metadata": {"generateName": f"{target['name']}.", "namespace": view.namespace},
                "involvedObject": target,
                "reason": reason,
                "message": message[:1024],
                "type": "Warning" if warning else "Normal",
                "action": "Rotate",
                "source": {"component": COMPONENT},
                "reportingComponent": COMPONENT,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            # An Event is a courtesy; never let it stop a rotation step.
            with contextlib.suppress(ApiError):
                await self.kube.create(EVENTS, view.namespace, body)

    async def _edges(self, namespace: str) -> list[Obj]:
        try:
            return await self.kube.list(RELAY_EDGES, namespace)
        except ApiError as exc:
            if exc.status == 404:  # RelayEdge CRD not installed: a token-API-only cluster
                return []
            raise

    async def publish(self, namespace: str, summary: KeyringSummary) -> None:
        """Keyring fields and rotation's verdict on Degraded on every RelayEdge's status."""
        for edge in await self._edges(namespace):
            status = edge.get("status") or {}
            want = summary.status()
            before = list(status.get("conditions") or [])
            generation = edge["metadata"].get("generation")
            after = conditions.with_rotation_verdict(before, summary.blocked, generation)
            if all(status.get(k) == v for k, v in want.items()) and after == before:
                continue
            patch: Obj = {"status": {**want}}
            if after != before:
                patch["status"]["conditions"] = after
                # Conditions are a list, replaced whole by a merge patch: only write them against
                # the version we read, so another writer's condition is never lost.
                patch["metadata"] = {"resourceVersion": edge["metadata"]["resourceVersion"]}
            try:
                await self.kube.patch(
                    RELAY_EDGES, namespace, edge["metadata"]["name"], patch, sub="status"
                )
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise


async def probe_all(cluster: Cluster, consumers: list[Consumer]) -> list[PodReport]:
    return list(await asyncio.gather(*(cluster.probe(c) for c in consumers)))
