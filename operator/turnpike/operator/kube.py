"""The operator's own small Kubernetes client, and the list of every API call it makes.

kopf has no public CRUD client, so the operator talks REST itself over aiohttp, with the same
credentials kopf logged in with. ``RESOURCES`` below is the complete set of resources and verbs
the operator uses; the Helm chart's RBAC is derived from it (``rbac_rules()``), and the e2e suite
checks that every request the operator sent is covered by it.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from turnpike.core.version import __version__

Obj = dict[str, Any]
USER_AGENT = f"turnpike-operator/{__version__}"


def timestamp() -> str:
    """Now, as Kubernetes writes times (RFC 3339, UTC, whole seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if sub:
            base += f"/{sub}"
        return base


RELAY_EDGES = Resource("turnpike.io", "v1alpha1", "relayedges", "RelayEdge")
STREAM_GATEWAYS = Resource("turnpike.io", "v1alpha1", "streamgateways", "StreamGateway")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
SERVICES = Resource("", "v1", "services", "Service")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
PODS = Resource("", "v1", "pods", "Pod")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
EVENTS = Resource("", "v1", "events", "Event")
EVENTS_V1 = Resource("events.k8s.io", "v1", "events", "Event")
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
PEERINGS = Resource("kopf.dev", "v1", "kopfpeerings", "KopfPeering")
CLUSTER_PEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", False)

_READ = ("get", "list", "watch")
_WRITE = ("create", "update", "patch", "delete")

# Every (resource, verbs) the operator needs, by the operator's code and by kopf itself
# (kopf watches CRDs and namespaces, posts Events and keeps its peering records).
RESOURCES: tuple[tuple[Resource, tuple[str, ...], str], ...] = (
    (RELAY_EDGES, (*_READ, "patch", "update"), "reconciled; finalizers and progress annotations"),
    (
        Resource("turnpike.io", "v1alpha1", "relayedges/status", "RelayEdge"),
        ("get", "patch", "update"),
        "status",
    ),
    (STREAM_GATEWAYS, (*_READ, "patch", "update"), "reconciled"),
    (
        Resource("turnpike.io", "v1alpha1", "streamgateways/status", "StreamGateway"),
        ("get", "patch", "update"),
        "status",
    ),
    (DEPLOYMENTS, (*_READ, *_WRITE), "relay and gateway workloads"),
    (DAEMONSETS, (*_READ, *_WRITE), "relay workloads in DaemonSet mode"),
    (SERVICES, (*_READ, *_WRITE), "relay and gateway Services"),
    (PDBS, (*_READ, *_WRITE), "relay PodDisruptionBudgets"),
    (CONFIGMAPS, (*_READ, *_WRITE), "component config, turnpike-ip-ranges, turnpike-edges"),
    (
        SECRETS,
        (*_READ, "create", "update", "patch"),
        "the keyring Secret: created when missing, watched and rotated (guarded replaces)",
    ),
    (PODS, _READ, "which nodes run an edge's pods"),
    (NODES, _READ, "node addresses: discovery and the relay peer deny list"),
    (
        NAMESPACES,
        _READ,
        "kopf's namespace scanning; the Pod Security level a namespace enforces",
    ),
    (EVENTS, ("create", "patch"), "Events on RelayEdges and StreamGateways"),
    (EVENTS_V1, ("create", "patch"), "Events (newer API group)"),
    (CRDS, _READ, "kopf's resource discovery"),
    (PEERINGS, (*_READ, "create", "patch"), "kopf peering, namespaced operators"),
    (CLUSTER_PEERINGS, (*_READ, "create", "patch"), "kopf peering, cluster-wide operators"),
)


def rbac_rules() -> list[dict[str, Any]]:
    """RBAC PolicyRules (as ClusterRole rules) for exactly the calls in ``RESOURCES``."""
    return [
        {"apiGroups": [res.group], "resources": [res.plural], "verbs": sorted(verbs)}
        for res, verbs, _ in RESOURCES
    ]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class Kube:
    """A thin async REST client: JSON in, JSON out, Status failures as ApiError."""

    def __init__(self, session: aiohttp.ClientSession, server: str) -> None:
        self.session = session
        self.server = server.rstrip("/")

    @classmethod
    def connect(
        cls,
        server: str,
        headers: Mapping[str, str] | None = None,
        ssl: Any = None,
        user_agent: str = USER_AGENT,
    ) -> Kube:
        connector = aiohttp.TCPConnector(limit=20, ssl=ssl if ssl is not None else True)
        timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)
        session = aiohttp.ClientSession(
            connector=connector,
            headers={**dict(headers or {}), "User-Agent": user_agent},
            timeout=timeout,
        )
        return cls(session, server)

    async def close(self) -> None:
        await self.session.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self.session.request(
            method, self.server + path, data=data, params=params, headers=headers
        ) as resp:
            text = await resp.text()
            try:
                payload: Any = json.loads(text) if text else {}
            except ValueError:
                payload = {"message": text}
            if resp.status >= 400:
                if not isinstance(payload, dict):
                    payload = {}
                raise ApiError(
                    resp.status,
                    str(payload.get("reason", resp.reason)),
                    str(payload.get("message", text)),
                )
            return payload if isinstance(payload, dict) else {}

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self._request("GET", res.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        params = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        result = await self._request("GET", res.path(namespace), params=params)
        items: list[Obj] = result.get("items") or []
        return items

    async def create(self, res: Resource, namespace: str | None, body: Obj) -> Obj:
        body = {"apiVersion": res.api_version, "kind": res.kind, **body}
        return await self._request("POST", res.path(namespace), body)

    async def replace(self, res: Resource, namespace: str | None, name: str, body: Obj) -> Obj:
        body = {"apiVersion": res.api_version, "kind": res.kind, **body}
        return await self._request("PUT", res.path(namespace, name), body)

    async def patch(
        self, res: Resource, namespace: str | None, name: str, patch: Obj, sub: str = ""
    ) -> Obj:
        return await self._request(
            "PATCH",
            res.path(namespace, name, sub),
            patch,
            content_type="application/merge-patch+json",
        )

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self._request("DELETE", res.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


if __name__ == "__main__":
    # `python -m turnpike.operator.kube` prints the ClusterRole rules, for charts and manifests.
    import yaml

    print(yaml.safe_dump({"rules": rbac_rules()}, sort_keys=False), end="")
