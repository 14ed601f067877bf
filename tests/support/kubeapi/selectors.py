"""Label and field selectors (``a=b,c!=d,e in (x,y),!f``) as the API server parses them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


@dataclass(frozen=True)
class _Term:
    key: str
    op: str  # = != in notin exists !exists
    values: tuple[str, ...] = ()

    def matches(self, found: dict[str, str]) -> bool:
        value = found.get(self.key)
        if self.op == "exists":
            return self.key in found
        if self.op == "!exists":
            return self.key not in found
        if self.op == "=":
            return value == self.values[0]
        if self.op == "!=":
            return value != self.values[0]
        if self.op == "in":
            return value in self.values
        return value not in self.values  # notin


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


class Selector:
    def __init__(self, text: str | None = None) -> None:
        self.terms: list[_Term] = []
        for part in _split(text or ""):
            match = _SET.match(part)
            if match:
                values = tuple(v.strip() for v in match.group(3).split(",") if v.strip())
                self.terms.append(_Term(match.group(1), match.group(2), values))
            elif "!=" in part:
                key, value = part.split("!=", 1)
                self.terms.append(_Term(key.strip(), "!=", (value.strip(),)))
            elif "=" in part:
                key, value = part.replace("==", "=").split("=", 1)
                self.terms.append(_Term(key.strip(), "=", (value.strip(),)))
            elif part.startswith("!"):
                self.terms.append(_Term(part[1:].strip(), "!exists"))
            else:
                self.terms.append(_Term(part, "exists"))

    def _matches(self, found: dict[str, str]) -> bool:
        return all(term.matches(found) for term in self.terms)

    def matches_labels(self, obj: dict[str, Any]) -> bool:
        return self._matches(obj.get("metadata", {}).get("labels") or {})

    def matches_fields(self, obj: dict[str, Any]) -> bool:
        if not self.terms:
            return True
        meta = obj.get("metadata", {})
        found = {
            "metadata.name": meta.get("name", ""),
            "metadata.namespace": meta.get("namespace", ""),
        }
        for term in self.terms:
            if term.key not in found:
                value: Any = obj
                for part in term.key.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if value is not None:
                    found[term.key] = str(value)
        return self._matches(found)
