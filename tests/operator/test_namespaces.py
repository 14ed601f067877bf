"""The operator re-adds served namespaces kopf's start-up listing race can miss."""

from __future__ import annotations

import asyncio

from kopf._cogs.structs.references import Insights
from support.kube_e2e import delete_namespace, new_namespace

from turnpike.operator import kube as k8s
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
        added = await add_missing(kube, insights, ["nsfix-*"])
        assert served in added and other not in added
        assert served in insights.namespaces and other not in insights.namespaces
        await asyncio.wait_for(woken.wait(), 5)
        await waiter
        # Nothing new: nothing added, no notification needed.
        assert served not in await add_missing(kube, insights, ["nsfix-*"])
    finally:
        await kube.delete(k8s.NAMESPACES, None, other)
        await delete_namespace(kube, served)
