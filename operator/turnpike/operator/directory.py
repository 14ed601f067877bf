"""The edge directory the token API reads (ConfigMap `turnpike-edges`, key ``edges.json``), made
from the RelayEdges; the file's format and renderer are `turnpike.core.edges`.

Each edge's ``tls`` port is the port of the fourth ICE server the token API hands out
(``turn:host:PORT?transport=tcp``, the hosted service's port-443 entry): the edge's first TLS
port, or its TCP port for an edge without a TLS certificate, so that entry still reaches a
listener.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from turnpike.core.edges import GLOBAL, Edge, EdgeDirectory, Ports
from turnpike.operator.model import RelayEdge


def global_host(edges: list[RelayEdge], configured: str) -> str:
    """The configured global name, else ``global.`` + the first edge's parent domain, else the
    first edge's own name."""
    if configured:
        return configured
    for edge in edges:
        _, dot, parent = edge.hostname.partition(".")
        if dot and "." in parent:
            return f"global.{parent}"
    return edges[0].hostname if edges else "localhost"


def directory(edges: Iterable[RelayEdge], configured_global: str) -> EdgeDirectory:
    ordered = sorted(edges, key=lambda e: e.name)
    return EdgeDirectory(
        Edge(GLOBAL, global_host(ordered, configured_global)),
        tuple(
            Edge(
                e.name,
                e.hostname,
                e.location,
                Ports(e.udp_port, e.tcp_port, e.tls_ports[0] if e.tls else e.tcp_port),
            )
            for e in ordered
        ),
    )


def document(edges: Iterable[RelayEdge], configured_global: str) -> dict[str, Any]:
    return directory(edges, configured_global).document()


def render(edges: Iterable[RelayEdge], configured_global: str) -> str:
    return directory(edges, configured_global).render()
