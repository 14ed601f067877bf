"""Server-side printing: the ``as=Table`` lists kubectl asks for, with a CRD's printer columns.

JSONPath support covers what printer columns use: ``.a.b``, ``.a[0]`` and filters such as
``.status.conditions[?(@.type=="Ready")].status``.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from .store import Obj, ResourceType

_FILTER = re.compile(r'^\[\?\(@\.([\w.]+)\s*==\s*["\']([^"\']*)["\']\)\]')
_INDEX = re.compile(r"^\[(\d+)\]")
_FIELD = re.compile(r"^\.([\w-]+)")


def jsonpath(obj: Any, path: str) -> list[Any]:
    current = [obj]
    rest = path.strip()
    while rest:
        if match := _FIELD.match(rest):
            current = [
                c[match.group(1)] for c in current if isinstance(c, dict) and match.group(1) in c
            ]
        elif match := _INDEX.match(rest):
            n = int(match.group(1))
            current = [c[n] for c in current if isinstance(c, list) and len(c) > n]
        elif match := _FILTER.match(rest):
            keys, wanted = match.group(1).split("."), match.group(2)
            found = []
            for c in current:
                for item in c if isinstance(c, list) else []:
                    value: Any = item
                    for key in keys:
                        value = value.get(key) if isinstance(value, dict) else None
                    if str(value) == wanted:
                        found.append(item)
            current = found
        else:
            raise ValueError(f"unsupported JSONPath {path!r}")
        rest = rest[match.end() :]
    return current


def _age(stamp: str) -> str:
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _cell(obj: Obj, column: Obj) -> Any:
    values = jsonpath(obj, column["jsonPath"])
    if not values:
        return None
    value = values[0] if len(values) == 1 else values
    if column.get("type") == "date" and isinstance(value, str):
        return _age(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def table(rt: ResourceType, items: list[Obj], rv: int) -> Obj:
    columns = rt.columns or [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]
    definitions = [
        {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}
    ]
    definitions += [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": "",
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = [
        {
            "cells": [item["metadata"]["name"], *(_cell(item, c) for c in columns)],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": item["metadata"],
            },
        }
        for item in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": definitions,
        "rows": rows,
    }
