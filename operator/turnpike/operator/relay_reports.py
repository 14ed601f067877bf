"""What an edge's relays say about the kernel fast path they were given.

`pod_security` decides whether a relay pod may load the fast path; whether it does is up to the
node's kernel and container runtime (a runtime whose seccomp profile refuses bpf(2) with
CAP_BPF, say), and only the relay knows: its /ready says ``"offload": "tc"`` or ``"off"``. For an
edge whose relays were given the fast path, the operator asks every started relay pod, at the
address the keyring rotation asks them (`keyring_secret.consumer_of`), and ``status.offload``
counts the answers, so a grant the relays could not use shows in ``kubectl get relayedge``.
The relay pods come from the operator's pod watch (`RelayPods`), not from a LIST per reconcile.
"""

from __future__ import annotations

import asyncio
from typing import Any

from turnpike.operator import labels
from turnpike.operator.keyring_secret import KubeCluster, consumer_of
from turnpike.operator.pod_security import Offload

Obj = dict[str, Any]
KERNEL = "tc"  # the relay's /ready "offload" while the kernel relays its channels
CANNOT_LOAD = (
    "; {missing} of {asked} relays could not load it and relay in userspace: their log says why "
    "(a kernel without the program's features, or a runtime whose seccomp profile allows bpf(2) "
    "only with CAP_SYS_ADMIN; see the chart README)"
)


class RelayPods:
    """The relay pods of every edge as the operator's pod watch last reported them."""

    def __init__(self) -> None:
        self._pods: dict[str, dict[str, Obj]] = {}  # namespace -> pod name -> pod

    def observe(self, event_type: str | None, body: Obj) -> None:
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if not namespace or not name:
            return
        pods = self._pods.setdefault(namespace, {})
        if event_type == "DELETED":
            pods.pop(name, None)
        else:
            pods[name] = body

    def of(self, namespace: str, edge: str) -> list[Obj]:
        selector = labels.relay_selector(edge).items()
        return [
            pod
            for pod in self._pods.get(namespace, {}).values()
            if selector <= ((pod.get("metadata") or {}).get("labels") or {}).items()
        ]


async def kernel_path(cluster: KubeCluster, pods: list[Obj]) -> tuple[int, int]:
    """(relays relaying in the kernel, relays that answered) among ``pods``, each asked on its
    /ready as the keyring rotation asks it (a relay not up yet, or going, is asked again at the
    next reconcile)."""
    consumers = [c for c in map(consumer_of, pods) if c is not None]
    reports = await asyncio.gather(*(cluster.probe(c) for c in consumers))
    answered = [r.offload for r in reports if r.offload is not None]
    return sum(mode == KERNEL for mode in answered), len(answered)


def offload_status(offload: Offload, kernel: tuple[int, int] | None) -> dict[str, str]:
    """``status.offload``: the decision, and for relays given the fast path how many of those
    that answered run it (``relaysInKernel``, "2/2")."""
    status = offload.to_status()
    if kernel is None or kernel[1] == 0:
        return status
    running, asked = kernel
    status["relaysInKernel"] = f"{running}/{asked}"
    if running < asked:
        status["reason"] += CANNOT_LOAD.format(missing=asked - running, asked=asked)
    return status
