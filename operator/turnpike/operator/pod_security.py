"""Whether a namespace's Pod Security admission lets an edge's relays use the kernel fast path.

The fast path needs the relay container to run as uid 0 holding CAP_BPF and CAP_NET_ADMIN
(`relay.container_security` says why). Kubernetes' Pod Security admission refuses such a pod at
the ``baseline`` and ``restricted`` levels, and only pods are refused, not their Deployment or
DaemonSet: rendering the capabilities into a namespace that enforces either level would leave
the edge with no relay at all. So the operator reads the level the namespace enforces (its
``pod-security.kubernetes.io/enforce`` label, else the cluster's default, which the API does not
expose and the operator is told) and decides what a RelayEdge's ``offload`` becomes:

- ``off``: the userspace relay, restricted pods.
- ``auto`` (the default): the fast path where the level is ``privileged``; elsewhere the
  capabilities are withheld, the relay runs restricted in userspace, and the edge's status says
  so. A relay given the capabilities still falls back by itself when its kernel cannot load the
  program.
- ``tc`` (required): refused as an invalid spec where the level forbids it, so the edge keeps
  what it had instead of rolling out pods that admission would reject.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from turnpike.operator.model import RelayEdge, SpecError

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
LEVELS = ("privileged", "baseline", "restricted")
PERMITS_FAST_PATH = "privileged"


def enforced_level(namespace: dict[str, Any] | None, cluster_default: str) -> str:
    """The Pod Security level admission enforces on ``namespace``'s pods. A value admission
    cannot parse counts as ``restricted``, as admission itself treats it."""
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    level = labels.get(ENFORCE_LABEL)
    if level is None:
        return cluster_default
    return level if level in LEVELS else "restricted"


@dataclass(frozen=True, slots=True)
class Offload:
    """What an edge asked for, what its relays are given, and why, for the edge's status."""

    requested: str
    rendered: str
    reason: str

    def to_status(self) -> dict[str, str]:
        return {"requested": self.requested, "rendered": self.rendered, "reason": self.reason}


def decide(edge: RelayEdge, level: str) -> tuple[RelayEdge, Offload]:
    """The edge as its relays are rendered, and the decision; SpecError for ``tc`` where the
    level refuses it."""
    requested = edge.offload
    if requested == "off":
        return edge, Offload("off", "off", "spec.offload is off")
    if level == PERMITS_FAST_PATH:
        reason = (
            f'Pod Security level "{level}" permits CAP_BPF and CAP_NET_ADMIN; each relay reports '
            "whether its kernel and runtime let it load the program "
            "(turnpike_relay_offload_active, /ready)"
        )
        return edge, Offload(requested, requested, reason)
    refusal = (
        f'namespace "{edge.namespace}" enforces Pod Security level "{level}", which refuses '
        "the CAP_BPF and CAP_NET_ADMIN the kernel fast path needs"
    )
    if requested == "tc":
        raise SpecError(
            f"spec.offload: tc is required but {refusal}; use auto (the userspace path where "
            "the fast path is not allowed) or off, or label the namespace "
            f"{ENFORCE_LABEL}={PERMITS_FAST_PATH}"
        )
    withheld = dataclasses.replace(edge, offload="off")
    return withheld, Offload(requested, "off", f"{refusal}: relaying in userspace")
