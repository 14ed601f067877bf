"""Keeping kopf's list of served namespaces complete.

kopf learns which namespaces match ``--namespace`` patterns from an initial listing and then a
watch. The watch starts with a listing of its own whose events kopf ignores, so a namespace
created between the two listings is never served until the operator restarts (seen on a busy
machine with a namespace created right as the operator starts). This re-lists the namespaces on a
slow beat, with a burst at start-up, and adds any matching one kopf missed.

It needs kopf's ``Insights`` (the structure ``kopf.operator(insights=…)`` accepts), which kopf does
not re-export: every use of it goes through `turnpike.operator.kopf_internals`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Collection

from turnpike.operator import kopf_internals as internals
from turnpike.operator import kube as k8s
from turnpike.operator.kopf_internals import Insights

log = logging.getLogger("turnpike.operator")

SCHEDULE = (0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
BEAT = 30.0


Served = Callable[[str], Awaitable[None]]


async def _no_op(namespace: str) -> None:
    del namespace


async def add_missing(
    kube: k8s.Kube, insights: Insights, patterns: Collection[str], each: Served = _no_op
) -> list[str]:
    """Add matching, live namespaces kopf does not serve yet; returns the names added. ``each``
    runs for every matching namespace (the operator uses it to keep peering records there)."""
    added: list[str] = []
    for namespace in await kube.list(k8s.NAMESPACES):
        meta = namespace["metadata"]
        name = str(meta["name"])
        if meta.get("deletionTimestamp") or not any(
            internals.matches(name, pattern) for pattern in patterns
        ):
            continue
        await each(name)
        if name not in internals.served(insights):
            added.append(name)
    if added:
        await internals.serve(insights, added)
        log.info("serving namespaces kopf had missed: %s", ", ".join(added))
    return added


async def keep_complete(
    kube: k8s.Kube, insights: Insights, patterns: Collection[str], each: Served = _no_op
) -> None:
    if not patterns:
        return  # cluster-wide: kopf watches without per-namespace bookkeeping
    await internals.wait_until_listed(insights)
    for delay in itertools.chain(SCHEDULE, itertools.repeat(BEAT)):
        await asyncio.sleep(delay)
        try:
            await add_missing(kube, insights, patterns, each)
        except k8s.ApiError as exc:
            log.warning("could not list namespaces: %s", exc)
