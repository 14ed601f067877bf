"""Fixtures of the rotation tests: one Kubernetes API emulator per module, a client for it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from support.kubeapi import KubeAPI

from turnpike.operator import crds
from turnpike.operator.kube import CRDS, Kube


@pytest.fixture(scope="module")
def api() -> Iterator[KubeAPI]:
    with KubeAPI(simulate=False) as server:
        yield server


@pytest.fixture
async def kube(api: KubeAPI) -> AsyncIterator[Kube]:
    client = Kube.connect(api.url)
    with contextlib.suppress(Exception):
        await client.create(CRDS, None, crds.relay_edge_crd())
    yield client
    await client.close()
