"""The cluster's Nodes, cached from the operator's Node watch instead of listed per reconcile.

Every edge reconcile needs the nodes (their addresses feed the published ranges and the relays'
deny list); listing them each time made the API load grow with edges times nodes. The cache is
filled by one LIST on first use and kept current by the watch events the operator already gets
(``handlers._node_events``). Each node keeps the newest version seen, by resourceVersion, so an
event that overtakes the first LIST is never undone by it.
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


class NodeCache:
    def __init__(self, kube: k8s.Kube) -> None:
        self.kube = kube
        self.nodes: dict[str, Obj] = {}
        self.gone: dict[str, int] = {}  # deleted node → the version its deletion was seen at
        self.primed = False
        self._priming = asyncio.Lock()

    async def list(self) -> list[Obj]:
        if not self.primed:
            async with self._priming:
                if not self.primed:
                    for node in await self.kube.list(k8s.NODES):
                        self._keep(node)
                    self.primed = True
        return [self.nodes[name] for name in sorted(self.nodes)]

    def observe(self, event_type: str | None, body: Obj) -> None:
        """A watch event (ADDED, MODIFIED, DELETED; None for the watch's initial listing)."""
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        if event_type == "DELETED":
            current = self.nodes.get(name)
            if current is None or _version(current) <= _version(body):
                self.nodes.pop(name, None)
                self.gone[name] = _version(body)
            return
        self._keep(body)

    def _keep(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        if self.gone.get(name, -1) >= _version(node):
            return  # listed before its deletion was seen
        current = self.nodes.get(name)
        if current is None or _version(current) <= _version(node):
            self.nodes[name] = dict(node)
            self.gone.pop(name, None)
