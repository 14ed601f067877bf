"""Fixtures of the operator suite; see tests/support/kube_e2e.py for the real-cluster switch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.kube_e2e import (
    REAL_KUBECONFIG,
    SHARED_PATTERN,
    Cluster,
    Operator,
    _connection,
    _prepare,
    delete_namespace,
    new_namespace,
)
from support.kubeapi import KubeAPI

from turnpike.operator import kube as k8s


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if REAL_KUBECONFIG:
        path = Path(REAL_KUBECONFIG)
        server, headers, ssl = _connection(path)
        found = Cluster(path, None, server, headers, ssl)
        asyncio.run(_prepare(found))
        yield found
        return
    with KubeAPI() as api:
        path = api.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
        found = Cluster(path, api, api.url)
        asyncio.run(_prepare(found))
        yield found


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """One operator for most tests: standalone, serving the ``tp-*`` namespaces."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = Operator(cluster, log, "--standalone", "--namespace", SHARED_PATTERN)
    try:
        process.wait_live()
        yield process
    finally:
        process.stop()


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[k8s.Kube]:
    client = cluster.client()
    yield client
    await client.close()


@pytest.fixture
async def ns(kube: k8s.Kube, operator: Operator) -> AsyncIterator[str]:
    """A fresh namespace served by the shared operator; deleted afterwards."""
    name = await new_namespace(kube, "tp")
    yield name
    await delete_namespace(kube, name)
