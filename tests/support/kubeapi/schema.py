"""Structural-schema handling of custom resources, as the API server does it on every write:
prune unknown fields, apply defaults, validate (OpenAPI via jsonschema, then CEL rules), and
report failures as Kubernetes field errors (``spec.relayPorts: Invalid value: ...``)."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from .cel import CelError, evaluate

Schema = dict[str, Any]


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def prune_and_default(value: Any, schema: Schema) -> Any:
    """Drop fields the schema does not know; fill in defaults (recursively, as the server does)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in props:
                out[key] = prune_and_default(item, props[key])
            elif isinstance(extra, dict):
                out[key] = prune_and_default(item, extra)
            elif _preserves(schema) or extra is True:
                out[key] = item
        for key, sub in props.items():
            if key not in out and "default" in sub:
                out[key] = prune_and_default(copy.deepcopy(sub["default"]), sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune_and_default(item, schema["items"]) for item in value]
    return value


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: jsonschema.ValidationError) -> str:
    where = _path(error.absolute_path) or "<root>"
    if error.validator == "required":
        missing = str(error.message).split("'")[1]
        field = f"{where}.{missing}" if error.absolute_path else missing
        return f"{field}: Required value"
    if error.validator == "enum":
        allowed = ", ".join(f'"{v}"' for v in error.validator_value)
        return f"{where}: Unsupported value: {error.instance!r}: supported values: {allowed}"
    if error.validator == "type":
        expected = error.validator_value
        return f"{where}: Invalid value: {_kind(error.instance)}: must be of type {expected}"
    return f"{where}: Invalid value: {error.instance!r}: {error.message}"


def _kind(value: Any) -> str:
    return f'"{type(value).__name__}"'


def _cel_errors(value: Any, schema: Schema, path: list[Any]) -> list[str]:
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        try:
            ok = evaluate(rule["rule"], value)
        except CelError as exc:
            errors.append(f"{_path(path) or '<root>'}: Invalid value: rule {rule['rule']!r}: {exc}")
            continue
        if ok is not True:
            where = _path(path) or "<root>"
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            shown = "object" if isinstance(value, dict) else type(value).__name__
            errors.append(f'{where}: Invalid value: "{shown}": {message}')
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += _cel_errors(value[key], sub, [*path, key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            errors += _cel_errors(item, schema["items"], [*path, n])
    return errors


def validate(obj: dict[str, Any], schema: Schema) -> list[str]:
    """Field errors of ``obj`` (already pruned and defaulted), empty when valid."""
    validator = jsonschema.Draft4Validator(schema)
    errors = [_describe(e) for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.path))]
    if errors:
        return errors
    return _cel_errors(obj, schema, [])
