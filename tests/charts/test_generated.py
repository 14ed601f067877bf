"""Derived files stay equal to their sources: the chart's CRDs to deploy/crds (which the operator's
code generates), the plain manifests to a fresh render of the chart, the schema and the README's
values table to values.yaml. `python deploy/generate.py` rewrites them all."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from charts.chartkit import CHART, DEPLOY, NAMESPACE, RELEASE, Render, load_yaml

HELM_ADDED_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "helm.sh/chart",
}


def test_every_derived_file_is_up_to_date(generate: ModuleType) -> None:
    stale = [str(path.relative_to(generate.ROOT)) for path in generate.stale_files()]
    assert stale == [], "run: python deploy/generate.py"


def test_the_staleness_check_can_fail(
    generate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(generate.MANIFESTS, manifests)
    target = manifests / "20-operator.yaml"
    target.write_text(target.read_text().replace("replicas: 2", "replicas: 5"))
    (manifests / "99-leftover.yaml").write_text("{}\n")
    monkeypatch.setattr(generate, "MANIFESTS", manifests)
    stale = sorted(p.name for p in generate.stale_files())
    assert stale == ["20-operator.yaml", "99-leftover.yaml"]


def _without_chart_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    meta = dict(crd["metadata"])
    labels = {k: v for k, v in meta.pop("labels", {}).items() if k not in HELM_ADDED_LABELS}
    annotations = {
        k: v for k, v in meta.pop("annotations", {}).items() if k != "helm.sh/resource-policy"
    }
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {**crd, "metadata": meta}


def test_chart_crds_are_the_deploy_crds(render: Render) -> None:
    deploy = {
        load_yaml(path)["metadata"]["name"]: load_yaml(path)
        for path in sorted((DEPLOY / "crds").glob("*.yaml"))
    }
    assert {"relayedges.turnpike.io", "streamgateways.turnpike.io"} <= set(deploy)
    templated = {
        crd["metadata"]["name"]: _without_chart_metadata(crd)
        for crd in render({})
        if crd["kind"] == "CustomResourceDefinition"
    }
    helm_native = {
        load_yaml(path)["metadata"]["name"]: path
        for path in sorted((CHART / "crds").glob("*.yaml"))
    }
    # Each CRD of deploy/crds is in the chart exactly once, with the same content.
    assert sorted([*templated, *helm_native]) == sorted(deploy)
    for name, crd in templated.items():
        assert crd == deploy[name], name
    for name, path in helm_native.items():
        assert path.read_bytes() == (DEPLOY / "crds" / path.name).read_bytes(), name
    # The operator's own CRDs evolve with upgrades: they are templates, not Helm's crds/.
    assert not any(name.endswith(".turnpike.io") for name in helm_native)


def _as_kubectl_manages_it(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "labels" and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != "helm.sh/chart"}
                if value.get("app.kubernetes.io/managed-by") == "Helm":
                    value["app.kubernetes.io/managed-by"] = "kubectl"
                out[key] = value
            else:
                out[key] = _as_kubectl_manages_it(value)
        return out
    if isinstance(node, list):
        return [_as_kubectl_manages_it(item) for item in node]
    return node


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def test_plain_manifests_are_the_chart_rendered(render: Render) -> None:
    files = sorted((DEPLOY / "manifests").glob("*.yaml"))
    assert [f.name for f in files] == [
        "00-namespace.yaml",
        "10-rbac.yaml",
        "20-operator.yaml",
        "30-tokens.yaml",
    ]
    on_disk = [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]
    namespace = [obj for obj in on_disk if obj["kind"] == "Namespace"]
    assert [obj["metadata"]["name"] for obj in namespace] == [NAMESPACE]
    fresh = [
        _as_kubectl_manages_it(obj)
        for obj in render({"crds": {"enabled": False}}, name=RELEASE, namespace=NAMESPACE)
    ]
    assert sorted((o for o in on_disk if o["kind"] != "Namespace"), key=_key) == sorted(
        fresh, key=_key
    )
    for obj in on_disk:
        assert "helm.sh/chart" not in obj["metadata"].get("labels", {})
        assert obj["metadata"]["labels"].get("app.kubernetes.io/managed-by", "kubectl") == "kubectl"


def test_readme_has_the_install_path_and_every_value(generate: ModuleType) -> None:
    readme = (CHART / "README.md").read_text()
    for command in (
        "helm install turnpike charts/turnpike -n turnpike --create-namespace",
        "kubectl apply -f deploy/examples/edge-ashburn.yaml",
        "kubectl -n turnpike get configmap turnpike-ip-ranges -o jsonpath='{.data.ranges\\.txt}'",
        "kubectl apply -f deploy/manifests/",
    ):
        assert command in readme
    assert generate.values_table() in readme
    for key in ("`operator.replicas`", "`keyring.rotationIntervalSeconds`", "`crds.keep`"):
        assert key in readme


def test_an_undocumented_value_stops_the_generator(
    generate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert generate.value_docs("a:\n  # -- documented\n  b: 1\n  c: 2\n") == {"a.b": "documented"}
    text = (CHART / "values.yaml").read_text()
    doc = "  # -- Number of token API pods.\n"
    assert doc + "  replicas: 2\n" in text
    (tmp_path / "values.yaml").write_text(text.replace(doc, ""))
    monkeypatch.setattr(generate, "CHART", tmp_path)
    with pytest.raises(generate.ValuesError, match="tokens.replicas: no '# --' comment"):
        generate.values_schema()
    (tmp_path / "values.yaml").write_text(text + "# -- New.\nbrandNew: {}\n")
    with pytest.raises(generate.ValuesError, match="brandNew: an empty default needs an entry"):
        generate.values_schema()
