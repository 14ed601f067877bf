"""Operator end-to-end support: a Kubernetes API (the emulator, or a real cluster) and the real
operator as a child process, plus readers for what it publishes.

By default the suite starts the Kubernetes API emulator (tests/support/kubeapi) on 127.0.0.1.
With ``TURNPIKE_E2E_KUBECONFIG=/path/to/kubeconfig`` the very same tests run against that cluster
instead: the CRDs are applied there, each test works in its own ``tp-…`` namespace (deleted
afterwards), and tests that need to fake node addresses or a cloud load balancer are skipped.
``TURNPIKE_E2E_IMAGE`` names a Turnpike image the cluster can pull; without it, readiness is not
asserted on a real cluster (pods cannot start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from support import free_port
from support.kubeapi import KubeAPI
from turnpike.operator import crds, labels
from turnpike.operator import kube as k8s

T = TypeVar("T")

REAL_KUBECONFIG = os.environ.get("TURNPIKE_E2E_KUBECONFIG", "")
IMAGE = os.environ.get("TURNPIKE_E2E_IMAGE", "")
SHARED_PATTERN = "tp-*"


@dataclass
class Cluster:
    kubeconfig: Path
    api: KubeAPI | None
    server: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl: Any = None

    @property
    def emulated(self) -> bool:
        return self.api is not None

    @property
    def runs_pods(self) -> bool:
        """Whether relay pods actually become ready (emulated kubelet, or a real image)."""
        return self.emulated or bool(IMAGE)

    def client(self) -> k8s.Kube:
        return k8s.Kube.connect(self.server, self.headers, self.ssl, user_agent="turnpike-tests")


def _connection(kubeconfig: Path) -> tuple[str, dict[str, str], Any]:
    from turnpike.operator.main import connection_info

    saved = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        info = connection_info()
    finally:
        if saved is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = saved
    return info.server, info.as_http_headers(), info.as_ssl_context()


async def _install_crds(kube: k8s.Kube) -> None:
    for crd in crds.all_crds().values():
        current = await kube.get(k8s.CRDS, None, crd["metadata"]["name"])
        if current is None:
            await kube.create(k8s.CRDS, None, crd)
        else:
            body = {**crd, "metadata": {**crd["metadata"], **_rv(current)}}
            await kube.replace(k8s.CRDS, None, crd["metadata"]["name"], body)


def _without_rules(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_rules(v) for k, v in schema.items() if k != "x-kubernetes-validations"}
    if isinstance(schema, list):
        return [_without_rules(v) for v in schema]
    return schema


@contextlib.asynccontextmanager
async def older_crds(kube: k8s.Kube) -> AsyncIterator[None]:
    """Turnpike's CRDs as an older release had them, without their CEL rules, for as long as
    the block runs: how an object the current rules refuse can still exist (stored before an
    upgrade), which is what the operator's own checks are for."""
    stripped = {
        name: _without_rules(crd)
        for name, crd in crds.all_crds().items()
        if crd["spec"]["group"] == crds.GROUP
    }
    try:
        for crd in stripped.values():
            current = await kube.get(k8s.CRDS, None, crd["metadata"]["name"])
            assert current is not None
            body = {**crd, "metadata": {**crd["metadata"], **_rv(current)}}
            await kube.replace(k8s.CRDS, None, crd["metadata"]["name"], body)
        yield
    finally:
        await _install_crds(kube)


def _rv(obj: dict[str, Any]) -> dict[str, str]:
    return {"resourceVersion": obj["metadata"]["resourceVersion"]}


NODES = {
    "tp-node-a": ("203.0.113.10", "10.0.0.10"),
    "tp-node-b": ("203.0.113.11", "10.0.0.11"),
}


def node_body(name: str, external: str, internal: str, pool: str = "shared") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"turnpike.test/pool": pool}},
        "spec": {"podCIDR": f"10.244.{int(internal.rsplit('.', 1)[1])}.0/24"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": internal},
                {"type": "ExternalIP", "address": external},
            ]
        },
    }


async def put_node(kube: k8s.Kube, body: dict[str, Any]) -> None:
    """Create or update a node with its status (what a kubelet would report)."""
    name = body["metadata"]["name"]
    if await kube.get(k8s.NODES, None, name) is None:
        await kube.create(k8s.NODES, None, {"metadata": body["metadata"], "spec": body["spec"]})
    await kube.patch(k8s.NODES, None, name, {"status": body["status"]}, sub="status")


async def _prepare(cluster: Cluster) -> None:
    kube = cluster.client()
    try:
        await _install_crds(kube)
        if cluster.emulated:
            for name, (external, internal) in NODES.items():
                await put_node(kube, node_body(name, external, internal))
    finally:
        await kube.close()


class Operator:
    """`turnpike operator` as a child process, its output in a file for failure messages."""

    def __init__(self, cluster: Cluster, log: Path, *args: str) -> None:
        self.log = log
        self._args = args
        self._env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        self._out = log.open("ab")
        self._spawn()

    def _spawn(self) -> None:
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self._start_offset = self.log.stat().st_size
        command = [
            sys.executable,
            "-m",
            "turnpike",
            "operator",
            "--resync-interval",
            "20",
            "--retry-delay",
            "0.5",
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            "--liveness",
            f"127.0.0.1:{self.liveness_port}",
            *self._args,
        ]
        if IMAGE:
            command += ["--image", IMAGE]
        self.proc = subprocess.Popen(
            command, stdout=self._out, stderr=subprocess.STDOUT, env=self._env
        )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_live(self, timeout: float = 30) -> None:
        """Wait for kopf's liveness endpoint; a port taken meanwhile by another process (free
        ports are only free when asked) means a retry on fresh ports."""
        import urllib.request

        deadline = time.monotonic() + timeout
        attempts = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                recent = self.output[self._start_offset :]
                if "address already in use" in recent and attempts < 3:
                    attempts += 1
                    self._spawn()
                    continue
                raise AssertionError(f"operator exited:\n{self.output}")
            try:
                url = f"http://127.0.0.1:{self.liveness_port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"operator not live within {timeout}s:\n{self.output}")

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


async def new_namespace(kube: k8s.Kube, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    await kube.create(k8s.NAMESPACES, None, {"metadata": {"name": name}})
    return name


async def delete_namespace(kube: k8s.Kube, name: str) -> None:
    """Delete our resources while an operator still runs (so it withdraws them, and removes any
    finalizer an older version left), then the namespace."""
    for res in (k8s.STREAM_GATEWAYS, k8s.RELAY_EDGES):
        for obj in await kube.list(res, name):
            await kube.delete(res, name, obj["metadata"]["name"])

    async def gone() -> bool:
        edges = await kube.list(k8s.RELAY_EDGES, name)
        return not edges and not await kube.list(k8s.STREAM_GATEWAYS, name)

    await eventually(gone, timeout=60, what=f"resources in {name} deleted")
    await kube.delete(k8s.NAMESPACES, None, name)


async def eventually(
    probe: Callable[[], Awaitable[T]], timeout: float = 30, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns a truthy value without raising; fail with the last
    value or error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = await probe()
        except AssertionError as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s; last: {last!r}")


def emulator_only(cluster: Cluster) -> None:
    if not cluster.emulated:
        pytest.skip("needs to fake node addresses or a cloud load balancer (emulator only)")


def edge(name: str, location: str = "Somewhere", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"location": location, "publicHostname": f"{name}.turn.example.com", **spec},
    }


def gateway(name: str, edge_name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"edge": edge_name, **spec}}


async def ranges_doc(kube: k8s.Kube, ns: str) -> dict[str, Any] | None:
    cm = await kube.get(k8s.CONFIGMAPS, ns, labels.IP_RANGES)
    if cm is None:
        return None
    doc: dict[str, Any] = json.loads(cm["data"]["ranges.json"])
    return doc


async def directory_doc(kube: k8s.Kube, ns: str) -> dict[str, Any] | None:
    cm = await kube.get(k8s.CONFIGMAPS, ns, labels.EDGE_DIRECTORY)
    if cm is None:
        return None
    doc: dict[str, Any] = json.loads(cm["data"][labels.EDGE_DIRECTORY_KEY])
    return doc


def published(doc: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {e["edge"]: e for e in (doc or {}).get("edges", [])}


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


async def events_for(kube: k8s.Kube, ns: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in await kube.list(k8s.EVENTS, ns)
        if (e.get("involvedObject") or {}).get("name") == name
    ]


async def resource_for(kube: k8s.Kube, api_version: str, kind: str) -> k8s.Resource:
    """The REST resource of ``kind`` from the server's discovery (any cluster, any kind)."""
    group, _, version = api_version.rpartition("/")
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    listing = await kube._request("GET", path)
    for entry in listing.get("resources", []):
        if entry.get("kind") == kind and "/" not in entry["name"]:
            return k8s.Resource(group, version, entry["name"], kind, entry["namespaced"])
    raise LookupError(f"{api_version} {kind} is not served")


async def apply_objects(
    kube: k8s.Kube, objects: list[dict[str, Any]], namespace: str | None = None
) -> list[dict[str, Any]]:
    """Create or replace rendered manifests (as `kubectl apply` would, minus the three-way merge);
    CRDs first, so custom resources in the same batch are served when their turn comes."""
    ordered = sorted(objects, key=lambda o: o["kind"] != "CustomResourceDefinition")
    applied = []
    for obj in ordered:
        res = await resource_for(kube, obj["apiVersion"], obj["kind"])
        ns = (obj["metadata"].get("namespace") or namespace) if res.namespaced else None
        name = obj["metadata"]["name"]
        current = await kube.get(res, ns, name)
        if current is None:
            applied.append(await kube.create(res, ns, obj))
        else:
            body = {**obj, "metadata": {**obj["metadata"], **_rv(current)}}
            applied.append(await kube.replace(res, ns, name, body))
    return applied


# -- fixtures: import them into a conftest.py (`from support.kube_e2e import cluster, …`) -------


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if REAL_KUBECONFIG:
        path = Path(REAL_KUBECONFIG)
        server, headers, ssl = _connection(path)
        found = Cluster(path, None, server, headers, ssl)
        asyncio.run(_prepare(found))
        yield found
        return
    with KubeAPI() as api:
        path = api.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
        found = Cluster(path, api, api.url)
        asyncio.run(_prepare(found))
        yield found


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """One operator for most tests: standalone, serving the ``tp-*`` namespaces."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = Operator(cluster, log, "--standalone", "--namespace", SHARED_PATTERN)
    try:
        process.wait_live()
        yield process
    finally:
        process.stop()


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[k8s.Kube]:
    client = cluster.client()
    yield client
    await client.close()


@pytest.fixture
async def ns(kube: k8s.Kube, operator: Operator) -> AsyncIterator[str]:
    """A fresh namespace served by the shared operator; deleted afterwards."""
    name = await new_namespace(kube, "tp")
    yield name
    await delete_namespace(kube, name)


def request_grant(method: str, path: str, query: str) -> tuple[str, str, str] | None:
    """(API group, resource[/subresource], RBAC verb) of a request URL; None for discovery."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) > 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    name = rest[1] if len(rest) > 1 else ""
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    if method == "GET":
        watch = urllib.parse.parse_qs(query).get("watch") == ["true"]
        verb = "get" if name else "watch" if watch else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return group, resource, verb


def operator_requests(api: KubeAPI) -> set[tuple[str, str, str]]:
    """The RBAC grants the operator (and kopf inside it) used, from the emulator's request log;
    the tests' own client, kubectl and probes are left out by their User-Agent."""
    assert api.routes is not None
    return {
        grant
        for method, path, query, agent in list(api.routes.requests)
        if agent.startswith((k8s.USER_AGENT, "kopf/"))
        and (grant := request_grant(method, path, query)) is not None
    }
