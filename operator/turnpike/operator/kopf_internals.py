"""The only module that touches kopf's internals; everything else uses kopf's public API.

kopf has no public API for keeping its list of served namespaces complete (see `namespaces`):
that needs the ``Insights`` structure ``kopf.operator(insights=…)`` accepts (its type is in that
public signature, but kopf does not re-export it) and the namespace pattern matcher kopf applies
to ``--namespace`` patterns (``match_namespace``, so the operator reads the patterns exactly as
kopf does). tests/operator/test_kopf_internals.py checks every name and behaviour used here, so a
kopf upgrade that moves or changes them fails that test (and importing this module) loudly, and
the kopf range in pyproject.toml bounds the versions this was checked against.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import version

try:
    from kopf._cogs.structs.references import Insights, NamespaceName, match_namespace
except ImportError as exc:  # pragma: no cover - only on a kopf upgrade that moved them
    raise ImportError(
        f"kopf {version('kopf')} no longer provides Insights, NamespaceName and match_namespace "
        "in kopf._cogs.structs.references; turnpike.operator.kopf_internals must be adapted"
    ) from exc

__all__ = ["Insights", "matches", "serve", "served", "wait_until_listed"]


def matches(namespace: str, pattern: str) -> bool:
    """Whether kopf serves ``namespace`` for the ``--namespace`` pattern ``pattern``."""
    return bool(match_namespace(NamespaceName(namespace), pattern))


def served(insights: Insights) -> frozenset[str]:
    """The namespaces kopf serves now."""
    return frozenset(str(n) for n in insights.namespaces)


async def serve(insights: Insights, namespaces: Iterable[str]) -> None:
    """Add ``namespaces`` to those kopf serves; its orchestrator starts their watches."""
    async with insights.revised:
        insights.namespaces.update(NamespaceName(n) for n in namespaces)
        insights.revised.notify_all()


async def wait_until_listed(insights: Insights) -> None:
    """Until kopf has made its initial listing of the namespaces."""
    await insights.ready_namespaces.wait()
