"""Fixtures for the chart and deploy/ tests (helpers live in chartkit.py)."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import helm_python
import pytest
from charts.chartkit import CHART, DEPLOY, NAMESPACE, RELEASE, Obj, Render, parse_render


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Render:
    """render(values, name=, namespace=) → the rendered objects (NOTES.txt left out)."""
    cache: dict[str, list[Obj]] = {}

    def _render(
        values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE
    ) -> list[Obj]:
        key = repr((values, name, namespace))
        if key not in cache:
            cache[key] = parse_render(chart.render(values or {}, name=name, namespace=namespace))
        return copy.deepcopy(cache[key])

    return _render


@pytest.fixture(scope="session")
def notes(chart: helm_python.Chart) -> Callable[..., str]:
    """notes(values, namespace=) → the rendered NOTES.txt."""

    def _notes(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> str:
        rendered = chart.render(values or {}, name=RELEASE, namespace=namespace)
        return next(text for name, text in rendered.items() if name.endswith("NOTES.txt"))

    return _notes


@pytest.fixture(scope="session")
def generate() -> ModuleType:
    """deploy/generate.py, the script that derives the schema, README table, manifests and CRD
    copies; imported from its path (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "turnpike_deploy_generate", DEPLOY / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
