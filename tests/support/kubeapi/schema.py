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


_OPENAPI_TYPE = {dict: "object", list: "array", str: "string", int: "integer", bool: "boolean"}


_MISSING = object()


def _child(old: Any, key: Any) -> Any:
    """The old value at the same place, for ratcheting (list items are not correlated)."""
    return old.get(key, _MISSING) if isinstance(old, dict) and isinstance(key, str) else _MISSING


def _cel_errors(value: Any, schema: Schema, path: list[Any], old: Any = _MISSING) -> list[str]:
    if old is not _MISSING and old == value:
        return []  # ratcheting: an unchanged value keeps passing, whatever the rules say now
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        try:
            ok = evaluate(rule["rule"], value)
        except CelError as exc:
            errors.append(f"{_path(path) or '<root>'}: Invalid value: rule {rule['rule']!r}: {exc}")
            continue
        if ok is not True:
            where = _path(path) or "<root>"
            message = _message(rule, value)
            shown = _OPENAPI_TYPE.get(type(value), type(value).__name__)
            errors.append(f'{where}: Invalid value: "{shown}": {message}')
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += _cel_errors(value[key], sub, [*path, key], _child(old, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            errors += _cel_errors(item, schema["items"], [*path, n])
    return errors


def _message(rule: Schema, value: Any) -> str:
    """A failed rule's message: messageExpression when it evaluates to a non-empty string (as
    the API server, falling back to message otherwise), else message, else the rule."""
    fallback = str(rule.get("message") or f"failed rule: {rule['rule']}")
    expression = rule.get("messageExpression")
    if not expression:
        return fallback
    try:
        text = evaluate(expression, value)
    except CelError:
        return fallback
    return text if isinstance(text, str) and text.strip() else fallback


def _list_type_errors(
    value: Any, schema: Schema, path: list[Any], old: Any = _MISSING
) -> list[str]:
    """Duplicates in an ``x-kubernetes-list-type: set`` list (a real server refuses them)."""
    if old is not _MISSING and old == value:
        return []
    errors: list[str] = []
    if isinstance(value, list) and schema.get("x-kubernetes-list-type") == "set":
        seen: list[Any] = []
        for n, item in enumerate(value):
            if item in seen:
                errors.append(f"{_path([*path, n])}: Duplicate value: {item!r}")
            seen.append(item)
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += _list_type_errors(value[key], sub, [*path, key], _child(old, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            errors += _list_type_errors(item, schema["items"], [*path, n])
    return errors


def _unchanged(obj: Any, old: Any, path: Any) -> bool:
    for key in path:
        try:
            obj, old = obj[key], old[key]
        except (KeyError, IndexError, TypeError):
            return False
    return bool(obj == old)


def validate(obj: dict[str, Any], schema: Schema, old: dict[str, Any] | None = None) -> list[str]:
    """Field errors of ``obj`` (already pruned and defaulted), empty when valid. On an update
    (``old`` given), values that did not change are not re-judged: the API server's validation
    ratcheting, so status writes and finalizer patches work on an object stored before a rule."""
    validator = jsonschema.Draft4Validator(schema)
    errors = [
        _describe(e)
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
        if old is None or not _unchanged(obj, old, e.absolute_path)
    ]
    before: Any = _MISSING if old is None else old
    errors += _list_type_errors(obj, schema, [], before)
    if errors:
        return errors
    return _cel_errors(obj, schema, [], before)
