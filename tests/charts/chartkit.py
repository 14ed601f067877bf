"""Shared by the chart and deploy/ tests: the chart loaded in Helm's own engine
(helm-python-sdk), renders parsed into objects, the generator script, and checkers for custom
resources (against their CRD) and built-in kinds (against the Kubernetes API types)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "turnpike"
DEPLOY = ROOT / "deploy"
RELEASE = "turnpike"
NAMESPACE = "turnpike"

Obj = dict[str, Any]
Render = Callable[..., list[Obj]]


def parse_render(rendered: dict[str, str]) -> list[Obj]:
    """Every object of a render (template path → text), in template order; NOTES.txt left out."""
    objects: list[Obj] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def scenario_files() -> list[Path]:
    return sorted((CHART / "ci").glob("*.yaml"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------------------------------
# Custom resources against their CRD, as the API server sees them


def crd_by_kind() -> dict[str, Obj]:
    crds = {}
    for path in sorted((DEPLOY / "crds").glob("*.yaml")):
        crd = load_yaml(path)
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def _unknown_fields(value: Any, schema: Obj, path: str) -> list[str]:
    """Fields the API server would silently prune: for a user, a typo that does nothing."""
    errors: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema:
            return errors
        props: dict[str, Obj] = schema.get("properties", {})
        for key, sub in value.items():
            where = f"{path}.{key}" if path else key
            if key not in props:
                errors.append(f'{where}: Unknown field "{key}"')
            else:
                errors.extend(_unknown_fields(sub, props[key], where))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors.extend(_unknown_fields(item, schema["items"], f"{path}[{index}]"))
    return errors


def validate_custom_resource(obj: Obj) -> tuple[Obj, list[str]]:
    """(the object with defaults applied, the field errors a user would read) for a RelayEdge or
    StreamGateway, against the OpenAPI schema of its CRD in deploy/crds: unknown fields (kubectl's
    strict field validation), then the API server's defaulting, OpenAPI and CEL validation as the
    operator tests' Kubernetes API emulator implements them."""
    from support.kubeapi.schema import prune_and_default, validate

    crd = crd_by_kind().get(obj.get("kind", ""))
    if crd is None:
        return obj, [f"no CRD for kind {obj.get('kind')!r}"]
    version = crd["spec"]["versions"][0]
    group_version = f"{crd['spec']['group']}/{version['name']}"
    if obj.get("apiVersion") != group_version:
        return obj, [f"apiVersion: expected {group_version}, got {obj.get('apiVersion')!r}"]
    schema = version["schema"]["openAPIV3Schema"]
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = _unknown_fields(body, schema, "")
    defaulted = {**obj, **prune_and_default(body, schema)}
    errors += validate(defaulted, schema)
    return defaulted, errors


# ---------------------------------------------------------------------------------------------
# Built-in kinds against the Kubernetes API's own types (from the kubernetes client's models)

KUBERNETES_MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Service"): "V1Service",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "V1CustomResourceDefinition",
}


def check_kubernetes_model(value: Any, type_name: str, path: str = "") -> list[str]:
    """Every field of `value` exists in the Kubernetes type `type_name` with the right JSON type
    (a misspelled field such as `readinesProbe` is an error here, not a silent no-op)."""
    from kubernetes import client

    inner = _container_type(type_name)
    if type_name.lower().startswith("list["):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [
            e for i, v in enumerate(value) for e in check_kubernetes_model(v, inner, f"{path}[{i}]")
        ]
    if type_name.lower().startswith(("dict[", "dict(")):
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [
            e for k, v in value.items() for e in check_kubernetes_model(v, inner, f"{path}.{k}")
        ]
    scalars: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "datetime": (str,),
    }
    if type_name == "object":
        return []
    if type_name in scalars:
        ok = isinstance(value, scalars[type_name]) and not (
            type_name in ("int", "float") and isinstance(value, bool)
        )
        return [] if ok else [f"{path}: expected {type_name}, got {value!r}"]
    model = getattr(client, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} object"]
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    errors = []
    for key, sub in value.items():
        where = f"{path}.{key}" if path else key
        if key not in by_json:
            errors.append(f"{where}: unknown field of {type_name}")
        else:
            errors.extend(check_kubernetes_model(sub, model.openapi_types[by_json[key]], where))
    return errors


def _container_type(type_name: str) -> str:
    """The element type of "List[X]" / "list[X]" or the value type of "Dict[str, X]" /
    "dict(str, X)" (the client's spelling changed between versions)."""
    if type_name.lower().startswith("list["):
        return type_name[5:-1]
    if type_name.lower().startswith(("dict[", "dict(")):
        return type_name[type_name.index(",") + 1 : -1].strip()
    return type_name


def deserialize_kubernetes(obj: Obj) -> Any:
    """Build the kubernetes client's model: raises ValueError when a required field is missing."""
    from kubernetes import client

    type_name = KUBERNETES_MODELS[(obj["apiVersion"], obj["kind"])]
    api = client.ApiClient()
    return api._ApiClient__deserialize(obj, type_name)  # type: ignore[attr-defined]
