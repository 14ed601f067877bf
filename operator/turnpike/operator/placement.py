"""Where pods run and how a Service exposes them: the settings relay and gateway share.

Pure builders from the parsed ``Workload`` and ``Exposure``: scheduling fields for a pod spec
(node selection, priority, spread over zones and nodes) and the cloud settings of a Service.
"""

from __future__ import annotations

from typing import Any

from turnpike.operator.model import Exposure, Workload

Obj = dict[str, Any]

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"


def default_spread(selector: dict[str, str]) -> list[Obj]:
    """Spread over zones, then nodes, as far as the cluster allows: ScheduleAnyway never leaves
    a pod pending on a single-zone or single-node cluster."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
        for key in (ZONE, HOST)
    ]


def scheduling(workload: Workload, selector: dict[str, str], spread: bool = True) -> Obj:
    """Pod spec fields for node selection, priority and spread (``spread=False`` for a
    DaemonSet, whose pods are placed one per node anyway)."""
    out: Obj = {}
    if workload.node_selector:
        out["nodeSelector"] = dict(workload.node_selector)
    if workload.affinity:
        out["affinity"] = dict(workload.affinity)
    if workload.tolerations:
        out["tolerations"] = list(workload.tolerations)
    if workload.priority_class:
        out["priorityClassName"] = workload.priority_class
    if spread:
        constraints = (
            default_spread(selector)
            if workload.topology_spread is None
            else list(workload.topology_spread)
        )
        if constraints:
            out["topologySpreadConstraints"] = constraints
    return out


def service_annotations(exposure: Exposure) -> dict[str, str]:
    return dict(exposure.annotations)


def load_balancer_fields(exposure: Exposure) -> Obj:
    """Service spec fields of a LoadBalancer: its class and the source ranges it admits."""
    out: Obj = {}
    if exposure.load_balancer_class:
        out["loadBalancerClass"] = exposure.load_balancer_class
    if exposure.source_ranges:
        out["loadBalancerSourceRanges"] = list(exposure.source_ranges)
    return out
