"""The whole install path against the operator tests' Kubernetes API emulator: the chart as
`helm install turnpike charts/turnpike -n turnpike --create-namespace` renders it is applied in
Helm's order, the operator runs with exactly the command and environment its Deployment declares,
the examples are applied as a user would (`kubectl apply -f deploy/examples/…`), and the relay
workloads, the keyring and edge directory the token API mounts, and the `turnpike-ip-ranges`
ConfigMap appear.

The emulator does not enforce RBAC, so every request the operator replicas sent during the run is
audited against the rendered ClusterRole afterwards (test_rbac.py also checks the rules against the
operator's code); its stand-in kubelet makes pods Ready at once; nothing here needs a container
image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from charts.chartkit import CHART, DEPLOY, NAMESPACE, Obj, Render
from support import free_port
from support.kube_e2e import eventually, operator_requests, put_node, request_grant
from support.kubeapi import KubeAPI
from support.kubeapi.store import ResourceType

from turnpike.operator import kube as k8s

pytestmark = pytest.mark.e2e

# Kinds of the chart the emulator does not serve by itself.
EXTRA_TYPES = [
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
    ),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
]
# The order Helm installs kinds in (a subset of its InstallOrder).
HELM_ORDER = [
    "Namespace",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Deployment",
]
LOAD_BALANCER_IP = "198.51.100.20"
# The test's own client plays helm and kubectl; only the operator's requests are audited.
INSTALLER_AGENT = "kubectl/chart-install-test"
DUBLIN_NODE = ("tp-dublin-1", "203.0.113.77", "10.0.1.77")


@pytest.fixture(scope="module")
def api() -> Iterator[KubeAPI]:
    with KubeAPI() as emulator:

        def register() -> None:
            assert emulator.store is not None
            for rt in EXTRA_TYPES:
                emulator.store.register(rt)

        emulator.call(register)
        yield emulator


def _resource(api: KubeAPI, obj: Obj) -> k8s.Resource:
    group, _, version = obj["apiVersion"].rpartition("/")

    def find() -> ResourceType:
        assert api.store is not None
        for rt in api.store.types.values():
            if (rt.group, rt.version, rt.kind) == (group, version, obj["kind"]):
                return rt
        raise AssertionError(f"the emulator serves no {obj['apiVersion']} {obj['kind']}")

    rt = api.call(find)
    return k8s.Resource(rt.group, rt.version, rt.plural, rt.kind, rt.namespaced)


async def _apply(api: KubeAPI, kube: k8s.Kube, obj: Obj) -> None:
    """Create, or replace when it exists (kubectl apply, in short)."""
    res = _resource(api, obj)
    namespace = obj["metadata"].get("namespace") if res.namespaced else None
    current = await kube.get(res, namespace, obj["metadata"]["name"])
    if current is None:
        await kube.create(res, namespace, obj)
    else:
        version = current["metadata"]["resourceVersion"]
        body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}
        await kube.replace(res, namespace, obj["metadata"]["name"], body)


def _load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _operator_pods(
    objects: list[Obj], kubeconfig: Path
) -> list[tuple[list[str], dict[str, str], int]]:
    """(command, environment, metrics port) of each operator replica as its Deployment declares
    them, with only the listen address moved to a free loopback port and the cluster's address
    given by a kubeconfig."""
    (deployment,) = [
        o for o in objects if o["kind"] == "Deployment" and _component(o) == "operator"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    pods = []
    for replica in range(deployment["spec"]["replicas"]):
        port = free_port()
        args = [
            f"--metrics=127.0.0.1:{port}" if arg.startswith("--metrics=") else arg
            for arg in container["args"]
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TURNPIKE_")}
        for var in container["env"]:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
                env[var["name"]] = deployment["metadata"]["namespace"]
            else:
                env[var["name"]] = f"{deployment['metadata']['name']}-{replica}"
        env["KUBECONFIG"] = str(kubeconfig)
        pods.append(([sys.executable, "-m", "turnpike", *args], env, port))
    return pods


def test_request_grant_reads_urls() -> None:
    assert request_grant("GET", "/apis/turnpike.io/v1alpha1/relayedges", "watch=true") == (
        "turnpike.io",
        "relayedges",
        "watch",
    )
    assert request_grant("PATCH", "/api/v1/namespaces/t/services/x/status", "") == (
        "",
        "services/status",
        "patch",
    )
    assert request_grant("PUT", "/api/v1/namespaces/t/secrets/k", "") == ("", "secrets", "update")
    assert request_grant("GET", "/apis/apps/v1", "") is None


def _component(obj: Obj) -> str:
    return str(obj["metadata"]["labels"].get("app.kubernetes.io/component", ""))


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_live(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until the pod's liveness endpoint answers, as the startup probe waits."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"operator exited:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"operator not live:\n{log.read_text(errors='replace')}")


async def test_helm_install_then_kubectl_apply_edges(
    api: KubeAPI, render: Render, tmp_path: Path
) -> None:
    objects = render({})  # helm install turnpike charts/turnpike -n turnpike --create-namespace
    kube = k8s.Kube.connect(api.url, user_agent=INSTALLER_AGENT)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def output() -> str:
        return "\n".join(log.read_text(errors="replace") for log in logs)

    try:
        # Helm: the chart's crds/ first, then the namespace (--create-namespace), then the
        # templates in kind order.
        for path in sorted((CHART / "crds").glob("*.yaml")):
            for crd in _load_all(path):
                await _apply(api, kube, crd)
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await _apply(api, kube, namespace)
        for obj in sorted(objects, key=lambda o: HELM_ORDER.index(o["kind"])):
            await _apply(api, kube, obj)

        # The operator pods (both replicas), as declared.
        pods = _operator_pods(objects, api.write_kubeconfig(tmp_path / "kubeconfig"))
        assert len(pods) == 2
        for index, (command, env, port) in enumerate(pods):
            logs.append(tmp_path / f"operator-{index}.log")
            procs.append(_start(command, env, logs[-1]))
            _wait_live(procs[-1], port, logs[-1])

        # A node for the dublin edge (its DaemonSet selects region and relay labels).
        name, external, internal = DUBLIN_NODE
        await put_node(
            kube,
            {
                "metadata": {
                    "name": name,
                    "labels": {
                        "topology.kubernetes.io/region": "eu-west-1",
                        "turnpike.io/relay": "true",
                    },
                },
                "spec": {"podCIDR": "10.244.77.0/24"},
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": internal},
                        {"type": "ExternalIP", "address": external},
                    ]
                },
            },
        )
        # kubectl apply -f deploy/examples/edge-ashburn.yaml (and the others)
        for example in ("edge-ashburn.yaml", "edge-dublin.yaml", "gateway-ashburn.yaml"):
            for obj in _load_all(DEPLOY / "examples" / example):
                await _apply(api, kube, obj)

        async def relay_workloads() -> bool:
            ashburn = await kube.get(k8s.DEPLOYMENTS, NAMESPACE, "turnpike-relay-ashburn")
            dublin = await kube.get(k8s.DAEMONSETS, NAMESPACE, "turnpike-relay-dublin")
            service = await kube.get(k8s.SERVICES, NAMESPACE, "turnpike-relay-ashburn")
            return bool(ashburn and dublin and service)

        await eventually(relay_workloads, what=f"relay workloads\n{output()}")
        gateway = await eventually(
            lambda: kube.get(k8s.DEPLOYMENTS, NAMESPACE, "turnpike-streamgw-ashburn"),
            what="the ashburn stream gateway",
        )
        assert gateway["metadata"]["ownerReferences"][0]["kind"] == "StreamGateway"
        ashburn = await kube.get(k8s.DEPLOYMENTS, NAMESPACE, "turnpike-relay-ashburn")
        assert ashburn is not None
        assert ashburn["spec"]["replicas"] == 2
        # Relays run the chart's image unless an edge names its own.
        image = ashburn["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == pods[0][1]["TURNPIKE_IMAGE"]

        # The cloud's load balancer gives the ashburn Service its address.
        await kube.patch(
            k8s.SERVICES,
            NAMESPACE,
            "turnpike-relay-ashburn",
            {"status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP}]}}},
            sub="status",
        )

        async def ranges() -> dict[str, Any] | None:
            cm = await kube.get(k8s.CONFIGMAPS, NAMESPACE, "turnpike-ip-ranges")
            if cm is None:
                return None
            doc = json.loads(cm["data"]["ranges.json"])
            edges = {e["edge"]: e for e in doc["edges"]}
            ready = edges.get("ashburn", {}).get("relay", {}).get("cidrs") == [
                f"{LOAD_BALANCER_IP}/32"
            ] and edges.get("dublin", {}).get("relay", {}).get("cidrs") == [f"{external}/32"]
            return {"doc": doc, "text": cm["data"]["ranges.txt"]} if ready else None

        found = await eventually(ranges, what=f"turnpike-ip-ranges\n{output()}")
        edges = {e["edge"]: e for e in found["doc"]["edges"]}
        assert edges["ashburn"]["location"] == "US East Coast (Virginia)"
        assert edges["dublin"]["location"] == "Ireland"
        # What the README's jsonpath prints: a table a firewall team can read.
        for text in (
            "ashburn",
            "US East Coast (Virginia)",
            LOAD_BALANCER_IP,
            "dublin",
            "Ireland",
            external,
        ):
            assert text in found["text"]

        # The token API mounts what the operator wrote, under the names the chart gives.
        (tokens,) = [o for o in objects if o["kind"] == "Deployment" and _component(o) == "tokens"]
        volumes = {v["name"]: v for v in tokens["spec"]["template"]["spec"]["volumes"]}
        keyring = await kube.get(k8s.SECRETS, NAMESPACE, volumes["keyring"]["secret"]["secretName"])
        assert keyring is not None and "keyring.json" in keyring["data"]
        directory = await kube.get(k8s.CONFIGMAPS, NAMESPACE, volumes["edges"]["configMap"]["name"])
        assert directory is not None
        hosts = {e["name"]: e["host"] for e in json.loads(directory["data"]["edges.json"])["edges"]}
        assert hosts == {"ashburn": "ashburn.turn.example.com", "dublin": "dublin.turn.example.com"}

        # Both replicas meet at the peering object the chart names (each keeps a record there,
        # and only the one with the highest priority acts).
        async def peers() -> int:
            peering = await kube.get(
                k8s.CLUSTER_PEERINGS, None, pods[0][1]["TURNPIKE_PEERING_NAME"]
            )
            return len([p for p in ((peering or {}).get("status") or {}).values() if p])

        assert await eventually(peers, what="two peering records") == 2

        # Every request the operator made is one the chart's ClusterRole grants: on a cluster
        # that enforces RBAC, none of the above would have been refused.
        granted = {
            (group, resource, verb)
            for obj in objects
            if obj["kind"] == "ClusterRole"
            for rule in obj["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        used = operator_requests(api)
        assert used - granted == set(), f"the chart's RBAC refuses: {sorted(used - granted)}"
        for needed in (
            ("turnpike.io", "relayedges", "watch"),
            ("kopf.dev", "clusterkopfpeerings", "patch"),
            ("", "secrets", "create"),
            ("", "configmaps", "create"),
            ("apps", "daemonsets", "create"),
        ):
            assert needed in used, f"{needed} was never requested: the audit saw too little"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        await kube.close()
