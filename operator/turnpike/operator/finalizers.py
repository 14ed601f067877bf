"""Removing the finalizers older operator versions left behind.

Nothing of this version puts a finalizer on any object (see `loops` for why), but an older one
put kopf's on RelayEdges, StreamGateways and the keyring Secret. `release` removes them when the
operator sees such an object, so deleting it, or its namespace, never waits for an operator that
is gone. The patch carries the resourceVersion read: a concurrent change makes it fail (409) and
the change's own watch event tries again, rather than overwriting someone else's finalizers.
"""

from __future__ import annotations

import logging
from typing import Any

from turnpike.operator import labels
from turnpike.operator.kube import ApiError, Kube, Resource

log = logging.getLogger(__name__)

OLD = (labels.FINALIZER, labels.KOPF_DEFAULT_FINALIZER)


async def release(kube: Kube, res: Resource, namespace: str, body: Any) -> None:
    """Remove this operator's old finalizers from ``body`` (an object of ``res``), if any."""
    meta = body.get("metadata") or {}
    held = list(meta.get("finalizers") or [])
    kept = [f for f in held if f not in OLD]
    if kept == held:
        return
    patch = {"metadata": {"finalizers": kept or None, "resourceVersion": meta["resourceVersion"]}}
    try:
        await kube.patch(res, namespace, meta["name"], patch)
    except ApiError as exc:
        if exc.status in (404, 409):  # gone, or changed: its next event tries again
            return
        raise
    log.info("removed an old finalizer from %s %s/%s", res.kind, namespace, meta["name"])
