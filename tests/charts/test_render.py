"""The chart rendered by Helm's own engine: defaults and every ci/ scenario produce objects of
known kinds that are structurally sound, reference each other correctly and are hardened."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python
import pytest
from charts.chartkit import (
    CHART,
    KUBERNETES_MODELS,
    NAMESPACE,
    Obj,
    Render,
    check_kubernetes_model,
    deserialize_kubernetes,
    load_yaml,
    scenario_files,
    validate_custom_resource,
)

SCENARIOS = [pytest.param({}, id="defaults")] + [
    pytest.param(load_yaml(path), id=path.stem) for path in scenario_files()
]

CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ClusterKopfPeering",
}
OTHER_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("kopf.dev/v1", "ClusterKopfPeering"),
    ("kopf.dev/v1", "KopfPeering"),
    ("turnpike.io/v1alpha1", "RelayEdge"),
    ("turnpike.io/v1alpha1", "StreamGateway"),
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SHARED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)


def test_scenarios_exist() -> None:
    names = {path.stem for path in scenario_files()}
    assert {"namespaced-values", "hardened-values", "minimal-values", "edges-values"} <= names


def _of(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def structural_errors(objects: list[Obj]) -> list[str]:
    """Everything wrong with a render that a cluster would reject or an admin would object to."""
    errors: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        kind, meta = obj.get("kind", ""), obj.get("metadata") or {}
        ident = f"{kind}/{meta.get('name')}"
        key = (obj.get("apiVersion", ""), kind)
        if key in KUBERNETES_MODELS:
            errors += [f"{ident}: {e}" for e in check_kubernetes_model(obj, KUBERNETES_MODELS[key])]
            try:
                deserialize_kubernetes(obj)
            except ValueError as exc:
                errors.append(f"{ident}: {exc}")
        elif key in {
            ("turnpike.io/v1alpha1", "RelayEdge"),
            ("turnpike.io/v1alpha1", "StreamGateway"),
        }:
            errors += [f"{ident}: {e}" for e in validate_custom_resource(obj)[1]]
        elif key not in OTHER_KINDS:
            errors.append(f"{ident}: unknown apiVersion/kind {key}")
        name = meta.get("name", "")
        pattern = (
            DNS_SUBDOMAIN
            if kind in ("ClusterRole", "Role", "CustomResourceDefinition")
            else DNS_LABEL
        )
        if not pattern.match(name) or len(name) > 63:
            errors.append(f"{ident}: invalid name")
        if kind in CLUSTER_SCOPED:
            if "namespace" in meta:
                errors.append(f"{ident}: a cluster-scoped object has a namespace")
        elif not meta.get("namespace"):
            errors.append(f"{ident}: no namespace")
        labels = meta.get("labels") or {}
        errors += [
            f"{ident}: label {label} missing" for label in SHARED_LABELS if label not in labels
        ]
        identity = (kind, meta.get("namespace", ""), name)
        if identity in seen:
            errors.append(f"{ident}: rendered twice in namespace {meta.get('namespace')}")
        seen.add(identity)
    errors += _reference_errors(objects)
    return errors


def _reference_errors(objects: list[Obj]) -> list[str]:
    errors: list[str] = []
    deployments = _of(objects, "Deployment")
    pod_labels = [
        (d["metadata"]["namespace"], d["spec"]["template"]["metadata"]["labels"], d)
        for d in deployments
    ]
    for deployment in deployments:
        spec = deployment["spec"]
        if not _matches(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"]):
            errors.append(f"Deployment/{deployment['metadata']['name']}: selector misses its pods")
    for service in _of(objects, "Service"):
        targets = [
            d
            for ns, labels, d in pod_labels
            if ns == service["metadata"]["namespace"]
            and _matches(service["spec"]["selector"], labels)
        ]
        if len(targets) != 1:
            errors.append(
                f"Service/{service['metadata']['name']}: selects {len(targets)} Deployments"
            )
            continue
        ports = {
            p["name"]
            for c in targets[0]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in ports:
                errors.append(
                    f"Service/{service['metadata']['name']}: no container port {port['targetPort']}"
                )
    for pdb in _of(objects, "PodDisruptionBudget"):
        if not any(
            _matches(pdb["spec"]["selector"]["matchLabels"], labels) for _, labels, _ in pod_labels
        ):
            errors.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: selects no pods")
    roles = {
        (r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"]) for r in objects
    }
    accounts = {
        (a["metadata"]["namespace"], a["metadata"]["name"]) for a in _of(objects, "ServiceAccount")
    }
    for binding in _of(objects, "ClusterRoleBinding") + _of(objects, "RoleBinding"):
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
        if (ref["kind"], namespace, ref["name"]) not in roles:
            errors.append(
                f"{binding['kind']}/{binding['metadata']['name']}: no {ref['kind']} {ref['name']}"
            )
        for subject in binding["subjects"]:
            if accounts and (subject["namespace"], subject["name"]) not in accounts:
                errors.append(f"{binding['kind']}: subject {subject['name']} is not rendered")
    for deployment in deployments:
        account = deployment["spec"]["template"]["spec"].get("serviceAccountName")
        namespace = deployment["metadata"]["namespace"]
        if account and accounts and (namespace, account) not in accounts:
            errors.append(
                f"Deployment/{deployment['metadata']['name']}: no ServiceAccount {account}"
            )
    services = _of(objects, "Service")
    for monitor in _of(objects, "ServiceMonitor"):
        selected = [
            s
            for s in services
            if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        if (
            len(selected) != 1
            or selected[0]["spec"]["ports"][0]["name"] != monitor["spec"]["endpoints"][0]["port"]
        ):
            errors.append(
                f"ServiceMonitor/{monitor['metadata']['name']}: does not select one metrics Service"
            )
    return errors


def hardening_errors(objects: list[Obj]) -> list[str]:
    """Every pod of the chart is locked down the way a restricted Pod Security admission wants."""
    errors: list[str] = []
    for deployment in _of(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        pod_security = pod.get("securityContext", {})
        if pod_security.get("runAsNonRoot") is not True or pod_security.get("runAsUser", 0) == 0:
            errors.append(f"{name}: pod may run as root")
        if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            errors.append(f"{name}: no RuntimeDefault seccomp profile")
        for container in pod["containers"]:
            security = container.get("securityContext", {})
            if security.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{name}: privilege escalation allowed")
            if security.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{name}: writable root filesystem")
            if security.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"{name}: capabilities not all dropped")
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in container:
                    errors.append(f"{name}: no {probe}")
            resources = container.get("resources", {})
            if "memory" not in resources.get("limits", {}) or "cpu" not in resources.get(
                "requests", {}
            ):
                errors.append(f"{name}: no memory limit or cpu request")
            if container["image"].endswith(":latest") or not re.search(r"[:@]", container["image"]):
                errors.append(f"{name}: image not pinned")
            if container["args"][0] not in ("operator", "tokens"):
                errors.append(f"{name}: runs {container['args'][0]!r}")
    return errors


@pytest.mark.parametrize("values", SCENARIOS)
def test_render_is_structurally_sound(render: Render, values: dict[str, Any]) -> None:
    objects = render(values)
    assert objects
    assert structural_errors(objects) == []
    assert hardening_errors(objects) == []


@pytest.mark.parametrize("values", SCENARIOS)
def test_strict_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
    # severity 1 is information ("icon is recommended"); 2 warnings and 3 errors fail
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []
    assert report["errors"] == []


def test_structural_check_catches_mistakes(render: Render) -> None:
    """The checks above can fail: a misspelled field, a dangling reference, a root pod."""
    objects = render({})
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    service = next(o for o in objects if o["kind"] == "Service")
    service["spec"]["selector"] = {"app.kubernetes.io/name": "nothing"}
    objects.append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    del next(o for o in objects if o["kind"] == "ClusterRole")["metadata"]["labels"][
        "helm.sh/chart"
    ]
    errors = structural_errors(objects)
    assert any("readinesProbe: unknown field of V1Container" in e for e in errors)
    assert any("selects 0 Deployments" in e for e in errors)
    assert any("unknown apiVersion/kind ('example.com/v1', 'Widget')" in e for e in errors)
    assert any("label helm.sh/chart missing" in e for e in errors)
    hardening = hardening_errors(objects)
    assert any("pod may run as root" in e for e in hardening)
    assert any("no readinessProbe" in e for e in hardening)


def test_default_render_has_every_component(render: Render) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render({}))
    assert kinds == sorted(
        [
            ("ClusterRole", "turnpike-operator"),
            ("ClusterRoleBinding", "turnpike-operator"),
            ("CustomResourceDefinition", "relayedges.turnpike.io"),
            ("CustomResourceDefinition", "streamgateways.turnpike.io"),
            ("Deployment", "turnpike-operator"),
            ("Deployment", "turnpike-tokens"),
            ("PodDisruptionBudget", "turnpike-operator"),
            ("PodDisruptionBudget", "turnpike-tokens"),
            ("Service", "turnpike-operator-metrics"),
            ("Service", "turnpike-tokens"),
            ("Service", "turnpike-tokens-metrics"),
            ("ServiceAccount", "turnpike-operator"),
        ]
    )


def _deployment(objects: list[Obj], component: str) -> Obj:
    return next(
        o
        for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )


def test_operator_command_and_settings(render: Render) -> None:
    operator = _deployment(render({}), "operator")
    assert operator["spec"]["replicas"] == 2
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "operator",
        "--all-namespaces",
        "--metrics=0.0.0.0:9090",
        "--log-level=info",
        "--log-json",
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TURNPIKE_ROTATION_INTERVAL"] == "86400"
    assert env["TURNPIKE_MAX_TOKEN_LIFETIME"] == "86400"
    assert env["TURNPIKE_ROTATION_WAIT_TIMEOUT"] == "600"
    assert env["TURNPIKE_PEERING_NAME"] == "turnpike-operator"
    assert env["TURNPIKE_KEYRING_SECRET"] == "turnpike-keyring"
    assert "TURNPIKE_SERVICE_CIDR" not in env  # the operator's own default applies
    assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert (
        container["image"]
        == "ghcr.io/turnpike/turnpike:" + load_yaml(CHART / "Chart.yaml")["appVersion"]
    )

    namespaced = _deployment(render({"operator": {"watchNamespaces": ["a", "b"]}}), "operator")
    args = namespaced["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[1:3] == ["--namespace=a", "--namespace=b"]
    assert "--all-namespaces" not in args


def test_token_api_mounts_and_service(render: Render) -> None:
    objects = render({"tokens": {"accounts": {"existingSecret": "api-accounts", "key": "a.json"}}})
    tokens = _deployment(objects, "tokens")
    pod = tokens["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    args = pod["containers"][0]["args"]
    assert "--accounts=/etc/turnpike/accounts/a.json" in args
    assert "--keyring=/etc/turnpike/keyring/keyring.json" in args
    assert "--edges=/etc/turnpike/edges/edges.json" in args
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["accounts"]["secret"]["secretName"] == "api-accounts"
    assert volumes["keyring"]["secret"]["secretName"] == "turnpike-keyring"
    assert volumes["edges"]["configMap"]["name"] == "turnpike-edges"
    assert not any(o["kind"] == "Secret" for o in objects), "the chart never holds credentials"
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "turnpike-tokens"
    )
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]

    without = render({"tokens": {"enabled": False}})
    assert not any(o["metadata"]["name"].startswith("turnpike-tokens") for o in without)


def test_crds_toggle_and_keep(render: Render) -> None:
    crds = [o for o in render({}) if o["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 2
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    loose = [
        o for o in render({"crds": {"keep": False}}) if o["kind"] == "CustomResourceDefinition"
    ]
    assert all("helm.sh/resource-policy" not in c["metadata"].get("annotations", {}) for c in loose)
    assert not [
        o for o in render({"crds": {"enabled": False}}) if o["kind"] == "CustomResourceDefinition"
    ]


def test_custom_resources_wait_for_their_crds(render: Render, notes: Any) -> None:
    edge = {"name": "ashburn", "spec": {"location": "Ashburn", "publicHostname": "a.example.com"}}
    # The chart installs the CRDs in this release: the API cannot accept the edge yet.
    first = render({"relayEdges": [edge]})
    assert not [o for o in first if o["kind"] == "RelayEdge"]
    assert "Run the same\n`helm upgrade` once more" in notes({"relayEdges": [edge]})
    # CRDs managed elsewhere: the edge is rendered, in the release namespace by default.
    (rendered,) = [
        o
        for o in render({"crds": {"enabled": False}, "relayEdges": [edge]})
        if o["kind"] == "RelayEdge"
    ]
    assert rendered["metadata"]["namespace"] == NAMESPACE
    assert rendered["spec"] == edge["spec"]


def test_namespaced_rbac(render: Render) -> None:
    objects = render({"operator": {"watchNamespaces": ["edges-east", "edges-west"]}})
    roles = {
        o["metadata"]["namespace"]: {r for rule in o["rules"] for r in rule["resources"]}
        for o in objects
        if o["kind"] == "Role"
    }
    assert set(roles) == {"edges-east", "edges-west", NAMESPACE}
    # The peering object lives in the watched namespaces only.
    assert "kopfpeerings" in roles["edges-east"]
    assert "kopfpeerings" not in roles[NAMESPACE]
    (cluster_role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_resources == {"nodes", "namespaces", "customresourcedefinitions"}


def test_token_pods_are_keyring_consumers(render: Render) -> None:
    """The operator waits for every pod labelled with the keyring's name to load a new key,
    asking the port named metrics; the token API must be one of them."""
    tokens = _deployment(render({"keyring": {"secretName": "ring"}}), "tokens")
    template = tokens["spec"]["template"]
    assert template["metadata"]["labels"]["turnpike.io/keyring"] == "ring"
    assert "turnpike.io/keyring" not in tokens["spec"]["selector"]["matchLabels"]
    ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert "metrics" in ports
    assert template["spec"]["volumes"][0]["secret"]["secretName"] == "ring"


def test_names_are_truncated_for_long_release_names(render: Render) -> None:
    name = "a-very-long-release-name-that-goes-on-and-on-for-fifty"[:53]
    objects = render({}, name=name)
    assert structural_errors(objects) == []
    assert all(len(o["metadata"]["name"]) <= 63 for o in objects)


def test_image_digest_wins_over_tag(render: Render) -> None:
    digest = "sha256:" + "ab" * 32
    operator = _deployment(render({"image": {"tag": "9.9.9", "digest": digest}}), "operator")
    assert (
        operator["spec"]["template"]["spec"]["containers"][0]["image"]
        == f"ghcr.io/turnpike/turnpike@{digest}"
    )


def test_network_policies(render: Render) -> None:
    values = load_yaml(CHART / "ci" / "hardened-values.yaml")
    policies = {
        o["metadata"]["name"]: o["spec"] for o in render(values) if o["kind"] == "NetworkPolicy"
    }
    operator, tokens = policies["turnpike-operator"], policies["turnpike-tokens"]
    assert operator["ingress"][0]["from"] == values["networkPolicy"]["metricsFrom"]
    assert {"port": 443, "protocol": "TCP"} in operator["egress"][1]["ports"]
    assert operator["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert tokens["egress"] == []
    assert tokens["ingress"][0]["from"] == values["networkPolicy"]["tokensFrom"]
    # No metricsFrom: the operator accepts no connection at all.
    closed = {
        o["metadata"]["name"]: o["spec"]
        for o in render({"networkPolicy": {"enabled": True}})
        if o["kind"] == "NetworkPolicy"
    }
    assert closed["turnpike-operator"]["ingress"] == []


def test_monitoring_covers_every_component(render: Render) -> None:
    values = load_yaml(CHART / "ci" / "hardened-values.yaml")
    objects = render(values)
    monitors = [o for o in objects if o["kind"] in ("ServiceMonitor", "PodMonitor")]
    assert sorted(o["metadata"]["name"] for o in monitors) == [
        "turnpike-edges",
        "turnpike-operator",
        "turnpike-tokens",
    ]
    (pods,) = [o for o in monitors if o["kind"] == "PodMonitor"]
    # The labels the operator gives relay and gateway pods.
    from turnpike.operator import labels

    relay = labels.relay_labels("ashburn")
    gateway = labels.gateway_labels("ashburn", "ashburn")
    selector = pods["spec"]["selector"]
    for pod_labels in (relay, gateway):
        assert _matches(selector["matchLabels"], pod_labels)
        assert (
            pod_labels["app.kubernetes.io/component"] in selector["matchExpressions"][0]["values"]
        )
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pods["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"


def test_contradictory_values_fail_with_a_reason(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmError) as raised:
        chart.render(
            {"operator": {"replicas": 2, "podDisruptionBudget": {"minAvailable": 2}}},
            name="t",
            namespace="t",
        )
    assert (
        "operator.podDisruptionBudget.minAvailable (2) must be less than operator.replicas (2)"
        in str(raised.value)
    )
    with pytest.raises(helm_python.HelmError) as raised:
        chart.render(
            {"keyring": {"rotationIntervalSeconds": 600, "relayWaitTimeoutSeconds": 900}},
            name="t",
            namespace="t",
        )
    assert (
        "keyring.rotationIntervalSeconds (600) must be at least "
        "keyring.relayWaitTimeoutSeconds (900)" in str(raised.value)
    )


def test_notes_tell_the_admin_what_to_do_next(notes: Any) -> None:
    text = notes({})
    assert "kubectl apply -f deploy/examples/edge-ashburn.yaml" in text
    assert (
        "kubectl -n turnpike get configmap turnpike-ip-ranges -o jsonpath='{.data.ranges\\.txt}'"
        in text
    )
    assert "create secret generic turnpike-accounts" in text
    elsewhere = notes({}, namespace="relays")
    assert "kubectl -n relays get configmap turnpike-ip-ranges" in elsewhere
    assert "set metadata.namespace to relays" in elsewhere


def test_scenario_files_are_used(tmp_path: Path) -> None:
    """Every ci/ file parses to a mapping (an empty or broken file would test nothing)."""
    for path in scenario_files():
        assert isinstance(load_yaml(path), dict) and load_yaml(path), path
