"""The chart's RBAC is exactly what the operator uses: the resources and verbs its code declares
(``turnpike.operator.kube.RESOURCES``) and every API call and kopf handler found in its source —
nothing missing (the operator would fail with 403) and nothing more (an admin would object)."""

from __future__ import annotations

import re
from typing import Any

from charts.chartkit import NAMESPACE, ROOT, Obj, Render

Grants = dict[tuple[str, str], set[str]]

# Kube client methods → RBAC verbs
_METHOD_VERBS = {
    "get": {"get"},
    "list": {"list"},
    "watch": {"watch"},
    "create": {"create"},
    "replace": {"update"},
    "patch": {"patch"},
    "delete": {"delete"},
}
# What kopf does for a resource it serves with handlers or daemons: list and watch it, and patch
# it (finalizers, progress and last-handled annotations).
_KOPF_VERBS = {"list", "watch", "patch"}
_KUBE_CALL = re.compile(
    r"\bkube\.(get|list|watch|create|replace|patch|delete)\(\s*([A-Z][A-Z0-9_]*)\b"
)
# kopf handlers, as decorators or registered by calling the decorator: kopf.daemon("v1", …)(fn)
_KOPF_HANDLER = re.compile(
    r"\bkopf\.(?P<kind>on\.\w+|daemon|timer|index)\(\s*(?P<args>[^)]*)\)", re.MULTILINE
)
# Event handlers only watch; the others also patch (finalizers, progress annotations).
_KOPF_WATCH_ONLY = {"on.event", "index"}


def _merge(into: Grants, more: Grants) -> Grants:
    for key, verbs in more.items():
        into.setdefault(key, set()).update(verbs)
    return into


def declared_grants() -> Grants:
    """The operator's own declaration of every (resource, verbs) it uses."""
    from turnpike.operator import kube

    grants: Grants = {}
    for resource, verbs, _why in kube.RESOURCES:
        _merge(grants, {(resource.group, resource.plural): set(verbs)})
    return grants


def scanned_grants(sources: dict[str, str]) -> Grants:
    """(resource, verbs) for every call on a named resource constant (``kube.replace(SECRETS, …)``)
    and every kopf handler or daemon in the given sources."""
    from turnpike.operator import kube

    grants: Grants = {}
    for text in sources.values():
        for method, constant in _KUBE_CALL.findall(text):
            resource = getattr(kube, constant)
            _merge(grants, {(resource.group, resource.plural): set(_METHOD_VERBS[method])})
        for match in _KOPF_HANDLER.finditer(text):
            verbs = {"list", "watch"} if match["kind"] in _KOPF_WATCH_ONLY else set(_KOPF_VERBS)
            _merge(grants, _kopf_target(match["args"], verbs))
    return grants


def _kopf_target(args: str, verbs: set[str]) -> Grants:
    from turnpike.operator import kube

    constant = re.match(r"\s*([A-Z][A-Z0-9_]*)\.group\b", args)
    if constant:
        resource = getattr(kube, constant[1])
        return {(resource.group, resource.plural): set(verbs)}
    strings = re.findall(r"^\s*((?:\"[^\"]*\"\s*,\s*)+)", args)
    if not strings:
        return {}  # startup/cleanup/login handlers: no resource
    parts = re.findall(r"\"([^\"]*)\"", strings[0])
    if len(parts) >= 3:
        group, plural = parts[0], parts[2]
    elif len(parts) == 2:
        group = "" if parts[0] == "v1" else parts[0].split("/")[0]
        plural = parts[1]
    else:
        return {}
    return {(group, plural): set(verbs)}


def operator_sources() -> dict[str, str]:
    return {
        path.name: path.read_text()
        for path in sorted((ROOT / "operator" / "turnpike" / "operator").glob("*.py"))
    }


def chart_grants(rules: list[dict[str, Any]]) -> Grants:
    grants: Grants = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                _merge(grants, {(group, resource): set(rule["verbs"])})
    return grants


def _rules(objects: list[Obj], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        rule
        for obj in objects
        if obj["kind"] == kind and (namespace is None or obj["metadata"]["namespace"] == namespace)
        for rule in obj["rules"]
    ]


def expected_grants(mode: str) -> Grants:
    grants = _merge(declared_grants(), scanned_grants(operator_sources()))
    # kopf peers through a ClusterKopfPeering when serving every namespace, KopfPeerings otherwise.
    unused = "kopfpeerings" if mode == "cluster" else "clusterkopfpeerings"
    grants.pop(("kopf.dev", unused), None)
    return grants


def test_the_scan_finds_the_calls_it_should() -> None:
    sample = {
        "x.py": (
            "await self.kube.replace(SECRETS, ns, name, obj)\n"
            "pods = await kube.list(PODS, ns)\n"
            'kopf.daemon(\n    "v1",\n    "secrets",\n    labels=L, id="r")(tick)\n'
            'kopf.on.event("", "v1", "pods", registry=r, id="p")(placed)\n'
            "@kopf.on.create(RELAY_EDGES.group, RELAY_EDGES.version, RELAY_EDGES.plural)\n"
            '@kopf.on.startup(id="s")\n'
        )
    }
    assert scanned_grants(sample) == {
        ("", "secrets"): {"update", "list", "watch", "patch"},
        ("", "pods"): {"list", "watch"},
        ("turnpike.io", "relayedges"): {"list", "watch", "patch"},
    }
    # ...and the real operator does make calls (an empty scan would prove nothing).
    assert scanned_grants(operator_sources())


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(render: Render) -> None:
    objects = render({})
    assert not [o for o in objects if o["kind"] == "Role"]
    assert chart_grants(_rules(objects, "ClusterRole")) == expected_grants("cluster")


def test_namespaced_rbac_is_exactly_what_the_operator_uses(render: Render) -> None:
    objects = render({"operator": {"watchNamespaces": ["edges-east"]}})
    cluster = chart_grants(_rules(objects, "ClusterRole"))
    # Cluster-scoped resources only in the ClusterRole: no namespaced access everywhere.
    from turnpike.operator import kube

    namespaced = {(r.group, r.plural) for r, _, _ in kube.RESOURCES if r.namespaced}
    assert not set(cluster) & namespaced
    watched = _merge(dict(cluster), chart_grants(_rules(objects, "Role", "edges-east")))
    assert watched == expected_grants("namespaced")
    # The release namespace (token API keyring) gets the same minus the peering record.
    release = _merge(dict(cluster), chart_grants(_rules(objects, "Role", NAMESPACE)))
    expected = expected_grants("namespaced")
    expected.pop(("kopf.dev", "kopfpeerings"))
    assert release == expected


def test_no_wildcards_and_no_escalation(render: Render) -> None:
    for mode in ({}, {"operator": {"watchNamespaces": ["a"]}}):
        objects = render(mode)
        for rule in _rules(objects, "ClusterRole") + _rules(objects, "Role"):
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert "secrets" not in rule["resources"] or "delete" not in rule["verbs"]


def test_plain_manifests_carry_the_same_rbac() -> None:
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "manifests" / "10-rbac.yaml").read_text()))
    rules = [rule for doc in docs if doc and doc["kind"] == "ClusterRole" for rule in doc["rules"]]
    assert chart_grants(rules) == expected_grants("cluster")
