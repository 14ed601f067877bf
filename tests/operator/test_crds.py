"""The CRD files in deploy/crds are exactly what operator/crds.py generates."""

from __future__ import annotations

from pathlib import Path

import yaml

from turnpike.operator import crds

ROOT = Path(__file__).resolve().parents[2]


def test_deploy_crds_match_the_code() -> None:
    directory = ROOT / "deploy" / "crds"
    for name, crd in crds.all_crds().items():
        path = directory / name
        assert path.exists(), f"{path} is missing: run python -m turnpike.operator.crds deploy/crds"
        assert path.read_text() == crds.render(crd), (
            f"{path} is stale: run python -m turnpike.operator.crds deploy/crds"
        )
        assert yaml.safe_load(path.read_text()) == crd


def test_crds_are_structural_with_columns_and_status() -> None:
    for crd in (crds.relay_edge_crd(), crds.stream_gateway_crd()):
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert {"Location", "Ready", "Addresses", "Age"} <= set(columns)
        assert crd["spec"]["names"]["shortNames"]
        _assert_structural(version["schema"]["openAPIV3Schema"], "")


def _assert_structural(schema: dict, where: str) -> None:
    assert "type" in schema or schema.get("x-kubernetes-preserve-unknown-fields"), where
    for key, sub in schema.get("properties", {}).items():
        _assert_structural(sub, f"{where}.{key}")
    if isinstance(schema.get("items"), dict):
        _assert_structural(schema["items"], f"{where}[]")
