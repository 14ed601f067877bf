"""What the operator asks of the API server: only what it owns, once."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse

import pytest
from support.kube_e2e import Cluster, edge, eventually, published, ranges_doc

from turnpike.operator import kube as k8s
from turnpike.operator import labels
from turnpike.operator.cluster_cache import ClusterCache
from turnpike.operator.outages import Outages


@pytest.mark.e2e
async def test_many_edges_at_once_create_one_keyring_secret_and_watch_only_owned_secrets(
    cluster: Cluster, kube: k8s.Kube, ns: str
) -> None:
    if cluster.api is None or cluster.api.routes is None:
        pytest.skip("counts requests in the emulator's log")
    start = len(cluster.api.routes.requests)
    names = [f"e{n}" for n in range(12)]
    await asyncio.gather(
        *(
            kube.create(k8s.RELAY_EDGES, ns, edge(name, addresses={"static": [f"192.0.2.{n}"]}))
            for n, name in enumerate(names, 1)
        )
    )

    async def all_published() -> bool:
        return set(published(await ranges_doc(kube, ns))) == set(names)

    await eventually(all_published, what="12 edges published")
    requests = [
        (method, path, query)
        for method, path, query, agent in list(cluster.api.routes.requests)[start:]
        if agent.startswith(k8s.USER_AGENT)
    ]
    creates = [p for m, p, _ in requests if m == "POST" and p.endswith(f"/{ns}/secrets")]
    assert len(creates) == 1, creates
    # Every watch or list of Secrets the operator (or kopf inside it) makes is label-selected.
    every = [
        (path, query)
        for method, path, query, agent in list(cluster.api.routes.requests)
        if agent.startswith((k8s.USER_AGENT, "kopf/"))
        and method == "GET"
        and path.endswith("/secrets")
    ]
    for path, query in every:
        selector = urllib.parse.parse_qs(query).get("labelSelector", [""])[0]
        assert f"{labels.MANAGED_BY}={labels.MANAGER}" in selector, (path, query)


def test_outages_log_one_line_per_cause_and_one_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = Outages(logging.getLogger("test.outages"))
    down = ConnectionRefusedError("connect to 10.0.0.1:443 refused")
    with caplog.at_level(logging.INFO, logger="test.outages"):
        for _ in range(50):
            for n in range(20):
                outages.failed(f"reconcile of edge-{n}", down)
        outages.failed("reconcile of edge-0", TimeoutError("read timed out"))
        outages.succeeded("reconcile of edge-0")
        outages.succeeded("reconcile of edge-0")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "reconcile of edge-0 failed (ConnectionRefusedError: connect to 10.0.0.1:443 refused); "
        "retrying, repeats not logged",
        "reconcile of edge-0 failed (TimeoutError: read timed out); retrying, repeats not logged",
        "reconcile of edge-0 works again after 0 more failure(s)",
    ]


def test_node_cache_keeps_the_newest_version_seen() -> None:
    cache = ClusterCache(kube=None, resource=k8s.NODES)  # type: ignore[arg-type]

    def node(name: str, rv: int, ip: str) -> dict[str, object]:
        return {"metadata": {"name": name, "resourceVersion": str(rv)}, "status": {"ip": ip}}

    cache.observe("ADDED", node("a", 5, "new"))
    cache._keep(node("a", 3, "old"))  # a LIST answered before the event arrived
    assert cache.objects["a"]["status"] == {"ip": "new"}
    cache.observe("DELETED", node("a", 7, "new"))
    cache._keep(node("a", 6, "stale"))  # listed before its deletion
    assert "a" not in cache.objects
    cache.observe("ADDED", node("a", 9, "back"))
    assert cache.objects["a"]["status"] == {"ip": "back"}
