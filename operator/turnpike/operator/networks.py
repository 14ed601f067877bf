"""Addresses read from the cluster: what an edge publishes, and what its relays must refuse.

Pure functions over API objects (nodes, pods, Services), so they are tested without a cluster.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from turnpike.operator.ranges import collapse

Obj = dict[str, Any]


def node_addresses(node: Obj, kind: str) -> list[str]:
    """A node's addresses of one type (``ExternalIP``, ``InternalIP``), valid IPs only."""
    out = []
    for entry in (node.get("status") or {}).get("addresses") or []:
        if entry.get("type") == kind:
            try:
                out.append(str(ipaddress.ip_address(entry.get("address", ""))))
            except ValueError:
                continue
    return out


def _host_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def cluster_deny(
    nodes: Iterable[Obj], service_cidrs: Iterable[str], pod_cidrs: Iterable[str]
) -> list[str]:
    """The cluster's own networks: Service CIDRs, pod CIDRs, node internal addresses.

    Nodes' ExternalIPs are deliberately absent: relays in hostNetwork mode own those addresses,
    and a TURN client must be able to reach a peer relayed by another relay of the fleet.
    """
    cidrs = [*service_cidrs, *pod_cidrs]
    for node in nodes:
        spec = node.get("spec") or {}
        cidrs += spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        cidrs += [_host_cidr(a) for a in node_addresses(node, "InternalIP")]
    return collapse(cidrs)


def nodes_running(pods: Iterable[Obj]) -> set[str]:
    """Names of the nodes where the given pods are scheduled and not going away."""
    return {
        pod["spec"]["nodeName"]
        for pod in pods
        if (pod.get("spec") or {}).get("nodeName")
        and not pod["metadata"].get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") in (None, "Pending", "Running")
    }


def external_ips(nodes: Iterable[Obj], names: set[str]) -> list[str]:
    found = [
        _host_cidr(ip)
        for node in nodes
        if node["metadata"]["name"] in names
        for ip in node_addresses(node, "ExternalIP")
    ]
    return collapse(found)


def load_balancer_ips(service: Obj | None) -> list[str]:
    """IPs of a Service's load balancer (ingress given only as a hostname cannot be published)."""
    ingress = (((service or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress")
    return collapse(_host_cidr(i["ip"]) for i in ingress or [] if i.get("ip"))
