"""Periodic work of the operator itself, not of kopf daemons or timers.

kopf puts a finalizer on every object that has a daemon or a timer, and a finalizer on a RelayEdge
or StreamGateway makes deleting it, or its namespace, wait forever once the operator is
uninstalled. So the keyring rotation and the resync run as plain asyncio tasks of the operator:

- `NamespaceLoops`: one task per namespace calling ``work(namespace)`` every ``interval``
  seconds, started and stopped by the caller (the rotation starts one for each namespace that has
  RelayEdges); a failing call is logged once per cause and retried at the next interval.
- `Leadership`: whether this replica may act in a namespace now. kopf pauses its handlers while a
  peer of higher priority is alive, but plain tasks do not pause with them: they ask here, which
  reads the same peering record kopf keeps (one per served namespace, or one cluster-wide) and
  applies kopf's rule: a live peer of higher priority wins, and replicas of equal priority all
  wait. (kopf's record does not say which entry is this replica: so two live entries of this
  priority, this one and another, mean waiting.) A replica that acts a moment too long is
  harmless: every write the loops make is guarded by the object's resourceVersion.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from turnpike.operator import kube as k8s
from turnpike.operator.outages import Outages

log = logging.getLogger(__name__)
Work = Callable[[str], Awaitable[None]]


class NamespaceLoops:
    """At most one task per namespace, each calling ``work(namespace)`` every ``interval``."""

    def __init__(self, work: Work, interval: float, what: str) -> None:
        self._work = work
        self._interval = interval
        self._what = what
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._outages = Outages(log)

    def start(self, namespace: str) -> None:
        if namespace not in self._tasks:
            self._tasks[namespace] = asyncio.create_task(self._loop(namespace))

    async def stop(self, namespace: str) -> None:
        task = self._tasks.pop(namespace, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for namespace in list(self._tasks):
            await self.stop(namespace)

    async def _loop(self, namespace: str) -> None:
        work = f"{self._what} in {namespace}"
        while True:
            try:
                await self._work(namespace)
            except Exception as exc:  # the next call starts from the API server again
                self._outages.failed(work, exc)
            else:
                self._outages.succeeded(work)
            await asyncio.sleep(self._interval)


class Leadership:
    """Whether this replica is the one kopf lets act (see the module doc)."""

    def __init__(
        self,
        kube: k8s.Kube,
        *,
        standalone: bool,
        peering_name: str,
        priority: int,
        clusterwide: bool,
        mandatory: bool = True,
    ) -> None:
        self._kube = kube
        self._mandatory = mandatory
        self._standalone = standalone
        self._name = peering_name
        self._priority = priority
        self._clusterwide = clusterwide

    async def may_act(self, namespace: str) -> bool:
        if self._standalone:
            return True
        if self._clusterwide:
            record = await self._kube.get(k8s.CLUSTER_PEERINGS, None, self._name)
        else:
            record = await self._kube.get(k8s.PEERINGS, namespace, self._name)
        if record is None:
            # kopf does not act without its peering record when peering is mandatory either.
            return not self._mandatory
        now = datetime.datetime.now(datetime.UTC)
        alive = [
            int(peer.get("priority", 0))
            for peer in (record.get("status") or {}).values()
            if isinstance(peer, dict) and _alive(peer, now)
        ]
        higher = any(p > self._priority for p in alive)
        return not higher and alive.count(self._priority) <= 1


def _alive(peer: dict[str, Any], now: datetime.datetime) -> bool:
    try:
        seen = datetime.datetime.fromisoformat(str(peer["lastseen"]))
        lifetime = datetime.timedelta(seconds=int(peer.get("lifetime", 60)))
    except (KeyError, ValueError):
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.UTC)
    return seen + lifetime > now
