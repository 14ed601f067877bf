"""Cluster-scoped objects every reconcile reads, cached from the operator's watches instead of
read from the API per reconcile.

- Nodes: every edge reconcile needs them (their addresses feed the published ranges and the
  relays' deny list); listing them each time made the API load grow with edges times nodes.
  The cache is filled by one LIST on first use.
- Namespaces: an edge reconcile needs its namespace's Pod Security label (`pod_security`). One
  is read from the API the first time it is asked for.

Both are then kept current by the watch events the operator already gets (``handlers``). Each
object keeps the newest version seen, by resourceVersion, so an event that overtakes a LIST or
GET is never undone by its answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from turnpike.operator import kube as k8s

Obj = dict[str, Any]


def _version(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class ClusterCache:
    def __init__(self, kube: k8s.Kube, resource: k8s.Resource) -> None:
        self.kube = kube
        self.resource = resource
        self.objects: dict[str, Obj] = {}
        self.gone: dict[str, int] = {}  # deleted object → the version its deletion was seen at
        self.primed = False
        self._priming = asyncio.Lock()

    async def list(self) -> list[Obj]:
        if not self.primed:
            async with self._priming:
                if not self.primed:
                    for obj in await self.kube.list(self.resource):
                        self._keep(obj)
                    self.primed = True
        return [self.objects[name] for name in sorted(self.objects)]

    async def get(self, name: str) -> Obj | None:
        if name not in self.objects:
            async with self._priming:  # a burst of reconciles in a new namespace reads it once
                if name not in self.objects:
                    found = await self.kube.get(self.resource, None, name)
                    if found is not None:
                        self._keep(found)
        return self.objects.get(name)

    def observe(self, event_type: str | None, body: Obj) -> None:
        """A watch event (ADDED, MODIFIED, DELETED; None for the watch's initial listing)."""
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        if event_type == "DELETED":
            current = self.objects.get(name)
            if current is None or _version(current) <= _version(body):
                self.objects.pop(name, None)
                self.gone[name] = _version(body)
            return
        self._keep(body)

    def _keep(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if self.gone.get(name, -1) >= _version(obj):
            return  # read before its deletion was seen
        current = self.objects.get(name)
        if current is None or _version(current) <= _version(obj):
            self.objects[name] = dict(obj)
            self.gone.pop(name, None)
