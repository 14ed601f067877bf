"""Status conditions (Ready, Progressing, Degraded) the way Kubernetes tools expect them."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(previous: list[Obj] | None, current: list[Condition], generation: int) -> list[Obj]:
    """Conditions as status entries; a condition whose status did not change keeps its
    lastTransitionTime, so the time says when it last flipped, not when it was last written."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    for cond in current:
        status = "True" if cond.status else "False"
        old = before.get(cond.type) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        out.append(
            {
                "type": cond.type,
                "status": status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": since or _now(),
                "observedGeneration": generation,
            }
        )
    return out


def same_status(old: Obj | None, new: Obj) -> bool:
    """Whether writing ``new`` would change anything but timestamps."""

    def strip(status: Obj | None) -> Obj:
        status = dict(status or {})
        status.pop("kopf", None)
        status["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return status

    return strip(old) == strip(new)


def find(status: Obj | None, kind: str) -> Obj | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None
