"""A spec change right after a peering takeover is applied at once, not by the next resync."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.kube_e2e import (
    Cluster,
    Operator,
    delete_namespace,
    edge,
    eventually,
    new_namespace,
    published,
    ranges_doc,
)

from turnpike.operator import kube as k8s

pytestmark = pytest.mark.e2e


async def test_an_update_right_after_a_takeover_is_applied(
    cluster: Cluster, kube: k8s.Kube, tmp_path: Path
) -> None:
    ns = await new_namespace(kube, "to")
    args = ("--namespace", f"{ns}*", "--peering-lifetime", "4")
    low = Operator(cluster, tmp_path / "low.log", *args, "--priority", "100")
    high: Operator | None = None
    try:
        low.wait_live()
        await kube.create(k8s.RELAY_EDGES, ns, edge("a", addresses={"static": ["192.0.2.1"]}))

        async def located(where: str) -> bool:
            return published(await ranges_doc(kube, ns)).get("a", {}).get("location") == where

        await eventually(lambda: located("Somewhere"), what="edge a published by the first")
        mark = len(low.output)
        high = Operator(cluster, tmp_path / "high.log", *args, "--priority", "200")

        async def paused() -> bool:
            return "Pausing operations in favour of" in low.output[mark:]

        await eventually(paused, what="the first replica pausing for the second")
        await kube.patch(k8s.RELAY_EDGES, ns, "a", {"spec": {"location": "Elsewhere"}})
        # The resync interval of the test operators is 20 s: well inside it.
        await eventually(lambda: located("Elsewhere"), timeout=10, what="the change applied")
        await delete_namespace(kube, ns)
    finally:
        low.stop()
        if high is not None:
            high.stop()
