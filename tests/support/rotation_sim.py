"""A simulated fleet for the rotation engine: one keyring Secret, pods that load it late, a clock.

It implements the engine's `Cluster` interface in memory so a test can run days of rotations in a
second. Its Secret behaves like the API server where the engine depends on it (a resourceVersion
that must match on write); its pods behave like kubelet plus a component's file watcher: each pod
sees a written keyring only after its own delay, a "stuck" pod never does, and every pod reports
what it has loaded the way /ready does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from turnpike.core.keyring import Keyring
from turnpike.operator.keyring_secret import Consumer, KeyringSummary, SecretView
from turnpike.operator.rotation_state import PodReport


class Crash(Exception):
    """The operator died here."""


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class SimPod:
    name: str
    delay: float
    relay: bool
    loaded: Keyring
    stuck: bool = False
    pending: list[tuple[float, Keyring]] = field(default_factory=list)


@dataclass
class SimEvent:
    at: float
    warning: bool
    reason: str
    message: str


class SimCluster:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.secret: dict[str, object] | None = None
        self.rv = 0
        self.pods: list[SimPod] = []
        self.events: list[SimEvent] = []
        self.summary: KeyringSummary | None = None
        self.writes = 0
        self.crash_before_write_at: set[int] = set()
        self.crash_after_write_at: set[int] = set()

    # -- what a test looks at and does --------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        assert self.secret is not None
        return Keyring.parse(str(self.secret["data"]))

    @property
    def annotations(self) -> dict[str, str]:
        assert self.secret is not None
        return dict(self.secret["annotations"])  # type: ignore[call-overload]

    def annotate(self, key: str, value: str) -> None:
        assert self.secret is not None
        self.secret["annotations"] = {**self.annotations, key: value}
        self.rv += 1

    def add_pod(self, name: str, delay: float, relay: bool = True) -> SimPod:
        pod = SimPod(name, delay, relay, self.keyring)
        self.pods.append(pod)
        return pod

    def advance(self, to: float) -> None:
        """Move time forward, delivering every keyring whose delay has passed, in order."""
        self.clock.now = to
        for pod in self.pods:
            due = [p for p in pod.pending if p[0] <= to]
            if due and not pod.stuck:
                pod.loaded = due[-1][1]
                pod.pending = [p for p in pod.pending if p[0] > to]

    # -- the engine's Cluster interface -------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> SecretView | None:
        if self.secret is None:
            return None
        return SecretView(
            name, namespace, str(self.secret["data"]), self.annotations, str(self.rv), "uid-1"
        )

    async def create_secret(
        self, namespace: str, name: str, keyring_json: str, annotations: Mapping[str, str | None]
    ) -> bool:
        if self.secret is not None:
            return False
        kept = {k: v for k, v in annotations.items() if v is not None}
        self.secret = {"data": keyring_json, "annotations": kept}
        self.rv += 1
        return True

    async def write_secret(
        self, view: SecretView, keyring_json: str | None, annotations: Mapping[str, str | None]
    ) -> None:
        from turnpike.operator.keyring_secret import Conflict

        self.writes += 1
        if self.writes in self.crash_before_write_at:
            raise Crash(f"killed before write {self.writes}")
        if view.resource_version != str(self.rv):
            raise Conflict(view.name)
        assert self.secret is not None
        merged = self.annotations
        for key, value in annotations.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self.secret["annotations"] = merged
        if keyring_json is not None and keyring_json != self.secret["data"]:
            self.secret["data"] = keyring_json
            ring = Keyring.parse(keyring_json)
            for pod in self.pods:
                pod.pending.append((self.clock.now + pod.delay, ring))
        self.rv += 1
        if self.writes in self.crash_after_write_at:
            raise Crash(f"killed after write {self.writes}")

    async def consumers(self, namespace: str, secret: str) -> list[Consumer]:
        return [Consumer(p.name, f"sim://{p.name}") for p in self.pods]

    async def probe(self, consumer: Consumer) -> PodReport:
        pod = next(p for p in self.pods if p.name == consumer.pod)
        status = pod.loaded.status()
        return PodReport(pod.name, tuple(status["keys"]), status["signing"])

    async def event(
        self, view: SecretView, warning: bool, reason: str, message: str, on_edges: bool
    ) -> None:
        self.events.append(SimEvent(self.clock.now, warning, reason, message))

    async def publish(self, namespace: str, summary: KeyringSummary) -> None:
        self.summary = summary


def dump(cluster: SimCluster) -> str:
    """For assertion messages."""
    return json.dumps(
        {
            "annotations": cluster.annotations,
            "keys": list(cluster.keyring.ids),
            "pods": {p.name: list(p.loaded.ids) for p in cluster.pods},
        },
        indent=1,
    )
