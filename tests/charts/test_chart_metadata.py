"""Chart.yaml: the Kubernetes versions the chart supports and the image version it runs by default
match what the chart and the package actually need."""

from __future__ import annotations

import re
import tomllib

from charts.chartkit import CHART, ROOT, load_yaml

SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def test_chart_is_helm_3_with_semver_versions() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "turnpike"
    assert chart["type"] == "application"
    assert SEMVER.match(chart["version"]), chart["version"]


def test_app_version_is_the_package_version() -> None:
    """The default image tag is appVersion: it must be the version the image is built from."""
    chart = load_yaml(CHART / "Chart.yaml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(chart["appVersion"], str), "quote appVersion: 0.10 is not 0.1"
    assert chart["appVersion"] == project["version"]


def test_kube_version_covers_what_the_chart_uses() -> None:
    """CRD validation rules (x-kubernetes-validations, CEL) are on by default from Kubernetes
    1.25 and policy/v1 PodDisruptionBudgets are served from 1.21: the chart's lower bound is at
    least that high, with the -0 suffix so that cloud builds (v1.28.3-eks-...) are accepted."""
    chart = load_yaml(CHART / "Chart.yaml")
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)-0", chart["kubeVersion"])
    assert match, chart["kubeVersion"]
    minimum = tuple(int(part) for part in match.groups())
    uses_cel = any(
        "x-kubernetes-validations" in path.read_text()
        for path in sorted((ROOT / "deploy" / "crds").glob("*.yaml"))
    )
    assert uses_cel
    assert minimum >= (1, 25, 0)
