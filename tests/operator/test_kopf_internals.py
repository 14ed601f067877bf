"""The kopf internals the operator relies on, all reached through one adapter module: a kopf
upgrade that moves or changes any of them fails here, naming what moved."""

from __future__ import annotations

import asyncio
import typing
from pathlib import Path

import kopf

from turnpike.operator import kopf_internals as internals


def test_insights_is_the_type_kopf_operator_accepts() -> None:
    assert typing.get_type_hints(kopf.operator)["insights"] == internals.Insights | None


def test_namespace_patterns_read_as_kopf_reads_them() -> None:
    pattern = "myapp-*, !*-pr-*, *pr-123"
    assert internals.matches("myapp-live", pattern)
    assert internals.matches("myapp-pr-123", pattern)
    assert not internals.matches("myapp-pr-456", pattern)
    assert not internals.matches("otherapp-pr-123", pattern)
    assert internals.matches("nsfix-a", "nsfix-*") and not internals.matches("nsfix", "nsfix-*")


async def test_serving_a_namespace_wakes_kopfs_orchestrator() -> None:
    insights = internals.Insights()
    assert internals.served(insights) == frozenset()
    woken = asyncio.Event()

    async def orchestrator() -> None:  # what kopf's orchestrator does: wait for a revision
        async with insights.revised:
            await insights.revised.wait()
            woken.set()

    waiter = asyncio.create_task(orchestrator())
    await asyncio.sleep(0)
    await internals.serve(insights, ["team-a", "team-b"])
    await asyncio.wait_for(woken.wait(), 5)
    await waiter
    assert internals.served(insights) == {"team-a", "team-b"}


async def test_waiting_for_kopfs_first_namespace_listing() -> None:
    insights = internals.Insights()
    waiting = asyncio.create_task(internals.wait_until_listed(insights))
    await asyncio.sleep(0)
    assert not waiting.done()
    insights.ready_namespaces.set()  # what kopf does once it has listed the namespaces
    await asyncio.wait_for(waiting, 5)


def test_no_other_module_reaches_into_kopf() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for folder in ("turnpike", "relay", "streamgw", "operator", "bench")
        for path in (root / folder).rglob("*.py")
        if "kopf._" in path.read_text(encoding="utf-8") and path.name != "kopf_internals.py"
    ]
    assert offenders == []
