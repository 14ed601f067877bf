"""The operator re-adds served namespaces kopf's start-up listing race can miss."""

from __future__ import annotations

import asyncio

from support.kube_e2e import delete_namespace, new_namespace

from turnpike.operator import kube as k8s
from turnpike.operator.kopf_internals import Insights
from turnpike.operator.namespaces import add_missing


async def test_missing_matching_namespaces_are_added_and_announced(kube: k8s.Kube) -> None:
    served = await new_namespace(kube, "nsfix")
    other = await new_namespace(kube, "elsewhere")
    try:
        insights = Insights()
        woken = asyncio.Event()

        async def orchestrator() -> None:
            async with insights.revised:
                await insights.revised.wait()
                woken.set()

        waiter = asyncio.create_task(orchestrator())
        await asyncio.sleep(0)
        seen: list[str] = []

        async def each(namespace: str) -> None:
            seen.append(namespace)

        added = await add_missing(kube, insights, ["nsfix-*"], each)
        assert served in seen and other not in seen
        assert served in added and other not in added
        assert served in insights.namespaces and other not in insights.namespaces
        await asyncio.wait_for(woken.wait(), 5)
        await waiter
        # Nothing new: nothing added, no notification needed.
        assert served not in await add_missing(kube, insights, ["nsfix-*"])
    finally:
        await kube.delete(k8s.NAMESPACES, None, other)
        await delete_namespace(kube, served)


async def test_apply_objects_resolves_kinds_through_discovery(kube: k8s.Kube) -> None:
    from support.kube_e2e import apply_objects

    ns = await new_namespace(kube, "apply")
    try:
        objects = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "a"},
                "data": {"k": "1"},
            },
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "b"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"x": "y"}}},
            },
        ]
        await apply_objects(kube, objects, ns)
        objects[0]["data"] = {"k": "2"}
        await apply_objects(kube, objects, ns)
        cm = await kube.get(k8s.CONFIGMAPS, ns, "a")
        assert cm is not None and cm["data"] == {"k": "2"}
        assert await kube.get(k8s.PDBS, ns, "b") is not None
    finally:
        await delete_namespace(kube, ns)
