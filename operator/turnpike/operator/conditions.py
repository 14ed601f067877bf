"""Status conditions (Ready, Progressing, Degraded) the way Kubernetes tools expect them, and
the one place where the two owners of a RelayEdge's ``Degraded`` condition are merged.

``Degraded`` has two writers: the object's reconcile (an invalid spec, a refused write, a missing
TLS Secret) and keyring rotation (a rotation blocked on pods that do not load the new key). Each
writer passes its own verdict and reads the other's from the status it is about to replace:
rotation keeps its verdict in ``status.keyringRotationBlocked``; reconcile's is the current
``Degraded`` condition whenever that carries a reason rotation does not use. `degraded` picks the
first true verdict, reconcile's before rotation's, so neither writer ever clears a reason the
other set; the hidden one comes back as soon as the other clears.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from turnpike.operator import kube

Obj = dict[str, Any]

DEGRADED = "Degraded"
KEY_ROTATION_BLOCKED = "KeyRotationBlocked"
KEY_ROTATED = "KeyRotated"
ROTATION_REASONS = frozenset({KEY_ROTATION_BLOCKED, KEY_ROTATED})
BLOCKED_FIELD = "keyringRotationBlocked"
"""The status field in which rotation keeps its verdict (None: not blocked)."""


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def entry(cond: Condition, old: Obj | None, generation: int | None) -> Obj:
    """``cond`` as a status entry; it keeps ``old``'s lastTransitionTime when its status did not
    change, so the time says when it last flipped, not when it was last written."""
    status = "True" if cond.status else "False"
    old = old or {}
    since = old.get("lastTransitionTime") if old.get("status") == status else None
    out: Obj = {
        "type": cond.type,
        "status": status,
        "reason": cond.reason,
        "message": cond.message,
        "lastTransitionTime": since or kube.timestamp(),
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def merge(previous: list[Obj] | None, current: list[Condition], generation: int) -> list[Obj]:
    """The entries of ``current`` (only those), each keeping its transition time from
    ``previous``."""
    before = {c.get("type"): c for c in previous or []}
    return [entry(cond, before.get(cond.type), generation) for cond in current]


def same_status(old: Obj | None, new: Obj) -> bool:
    """Whether merge-patching ``new`` into the status would change anything but timestamps.
    Fields ``new`` does not name (another writer's, such as keyring rotation's) are left as they
    are by such a patch, so they do not count: a resync that changes nothing writes nothing."""

    def strip(status: Obj | None) -> Obj:
        status = dict(status or {})
        status.pop("kopf", None)
        status["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return status

    before, after = strip(old), strip(new)
    return all(before.get(key) == after[key] for key in new if key != "kopf")


def find(status: Obj | None, kind: str) -> Obj | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


# -- the owners of Degraded ----------------------------------------------------------------------


def degraded(verdicts: Iterable[Condition | None]) -> Condition | None:
    """The first true verdict, else the first stated one; None: nobody has anything to say."""
    stated = [v for v in verdicts if v is not None]
    return next((v for v in stated if v.status), stated[0] if stated else None)


def rotation_verdict(status: Obj | None) -> Condition | None:
    """Rotation's verdict as kept in the status: degraded while it is blocked, else none."""
    blocked = (status or {}).get(BLOCKED_FIELD)
    return Condition(DEGRADED, True, KEY_ROTATION_BLOCKED, blocked) if blocked else None


def reconcile_verdict(conditions: list[Obj] | None) -> Condition | None:
    """Reconcile's standing verdict: the current Degraded condition when reconcile set it."""
    current = find({"conditions": conditions}, DEGRADED)
    if current is None or current.get("status") != "True":
        return None
    if current.get("reason") in ROTATION_REASONS:
        return None
    return Condition(DEGRADED, True, str(current.get("reason")), str(current.get("message")))


def with_rotation_verdict(
    conditions: list[Obj], blocked: str | None, generation: int | None = None
) -> list[Obj]:
    """``conditions`` after rotation states its verdict (``blocked``: why it cannot go on, or
    None): Degraded=True with reason KeyRotationBlocked while blocked, back to False once it is
    not, and never over a reason reconcile set."""
    out = [dict(c) for c in conditions]
    current = find({"conditions": out}, DEGRADED)
    own: Condition | None = None
    if blocked is not None:
        own = Condition(DEGRADED, True, KEY_ROTATION_BLOCKED, blocked)
    elif current is not None and current.get("reason") == KEY_ROTATION_BLOCKED:
        own = Condition(DEGRADED, False, KEY_ROTATED, "keyring rotation is no longer blocked")
    verdict = degraded([reconcile_verdict(out), own])
    if verdict is None or _states(current, verdict):
        return out
    fresh = entry(verdict, current, generation)
    if current is None:
        return [*out, fresh]
    return [fresh if c.get("type") == DEGRADED else c for c in out]


def _states(current: Obj | None, cond: Condition) -> bool:
    """Whether the entry ``current`` already says what ``cond`` says."""
    return current is not None and (
        current.get("status"),
        current.get("reason"),
        current.get("message"),
    ) == ("True" if cond.status else "False", cond.reason, cond.message)
