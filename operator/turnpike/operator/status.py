"""Writing a RelayEdge's or StreamGateway's status, and the Events that go with it.

Every status the reconciler writes goes through `write`: it writes only what changed, and only
against the version of the object it read (another writer, keyring rotation, also writes the
conditions list, which a merge patch replaces whole). The ``Degraded`` condition is merged from
its owners in `turnpike.operator.conditions`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from turnpike.operator import conditions, events
from turnpike.operator import kube as k8s
from turnpike.operator.conditions import DEGRADED, Condition

Obj = dict[str, Any]
log = logging.getLogger("turnpike.operator")


ATTEMPTS = 5


class Stale(Exception):
    """The object kept changing while its status was written; reconcile it again."""


async def write(
    kube: k8s.Kube, res: k8s.Resource, body: Obj, status_of: Callable[[Obj], Obj]
) -> Obj | None:
    """Patch the status subresource to ``status_of(body)`` when that changes it, against the
    version read; when the object changed meanwhile, read it again and recompute. Returns the
    object the written status was computed from, None when the object is gone."""
    for _ in range(ATTEMPTS):
        status = status_of(body)
        if conditions.same_status(body.get("status"), status):
            return body
        meta = body["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            await kube.patch(res, meta["namespace"], meta["name"], patch, sub="status")
        except k8s.ApiError as exc:
            if exc.status == 404:
                return None
            if exc.status != 409:
                raise
            fresh = await kube.get(res, meta["namespace"], meta["name"])
            if fresh is None:
                return None
            body = fresh
        else:
            return body
    raise Stale(body["metadata"]["name"])


def event(
    body: Obj, reason: str, message: str, warning: bool = False, action: str = events.RECONCILE
) -> None:
    """A Kubernetes Event on ``body``, posted in the background."""
    events.post(body, reason, message, warning=warning, action=action)


def kept(body: Obj) -> Obj:
    """The current status without kopf's own field, as the base of a status that keeps it."""
    return {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}


def with_conditions(body: Obj, status: Obj, *current: Condition) -> Obj:
    """``status`` with its conditions set to ``current`` as of the object's generation."""
    generation = body["metadata"].get("generation", 1)
    previous = (body.get("status") or {}).get("conditions")
    return {**status, "conditions": conditions.merge(previous, list(current), generation)}


def warn_if_new(body: Obj, degraded: Condition, same_message: bool = False) -> None:
    """One Warning Event when the object becomes degraded or its reason changes (or, with
    ``same_message``, its message), rather than one per retry."""
    was = conditions.find(body.get("status"), DEGRADED) or {}
    repeat = was.get("status") == "True" and was.get("reason") == degraded.reason
    if same_message:
        repeat = repeat and was.get("message") == degraded.message
    if degraded.status and not repeat:
        action = events.VALIDATE if degraded.reason == "InvalidSpec" else events.RECONCILE
        event(body, degraded.reason, degraded.message, warning=True, action=action)


async def stuck(
    kube: k8s.Kube, res: k8s.Resource, body: Obj, why: Condition, waiting: str, **fields: Any
) -> None:
    """Not ready and not progressing for a reason the user must fix (``why``, a true Degraded
    verdict); the rest of the status is kept."""

    def status_of(body: Obj) -> Obj:
        generation = body["metadata"].get("generation", 1)
        return with_conditions(
            body,
            {**kept(body), "observedGeneration": generation, **fields},
            Condition("Ready", False, why.reason, why.message),
            Condition("Progressing", False, why.reason, waiting),
            why,
        )

    written = await write(kube, res, body, status_of)
    if written is not None:
        warn_if_new(written, why, same_message=True)


async def invalid(kube: k8s.Kube, res: k8s.Resource, body: Obj, problem: Exception) -> None:
    """The spec cannot be used: say why, until the spec changes."""
    why = Condition(DEGRADED, True, "InvalidSpec", str(problem))
    await stuck(kube, res, body, why, "fix the spec to continue")


async def failed(kube: k8s.Kube, res: k8s.Resource, body: Obj, message: str) -> None:
    """Say in the object's status why its reconcile failed (it is retried; the next success
    clears it); the other conditions stay as they are."""
    why = Condition(DEGRADED, True, "ReconcileFailed", message)

    def status_of(body: Obj) -> Obj:
        previous = kept(body)
        others = [c for c in previous.get("conditions") or [] if c.get("type") != DEGRADED]
        status = with_conditions(body, previous, why)
        return {**status, "conditions": others + status["conditions"]}

    try:
        await write(kube, res, body, status_of)
    except Exception as exc:  # the API may be what fails; the retry reports again
        log.warning("cannot report the failure on %s: %s", body["metadata"]["name"], exc)
    warn_if_new(body, why, same_message=True)


def readiness(workload: Obj, daemonset: bool) -> tuple[int, int, bool]:
    """(ready pods, desired pods, whether the current template has fully rolled out)."""
    status = workload.get("status") or {}
    seen = int(status.get("observedGeneration") or 0)
    current = seen >= int((workload.get("metadata") or {}).get("generation") or 0)
    if daemonset:
        desired = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        return int(status.get("numberReady") or 0), desired, current and updated >= desired
    desired = int((workload.get("spec") or {}).get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    return int(status.get("readyReplicas") or 0), desired, current and updated >= desired
