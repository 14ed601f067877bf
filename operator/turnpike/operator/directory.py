"""The edge directory the token API reads (ConfigMap `turnpike-edges`, key ``edges.json``), made
from the RelayEdges; the file's format and renderer are `turnpike.core.edges`.

Each edge's ``tls`` port is the port of the fourth ICE server the token API hands out
(``turn:host:PORT?transport=tcp``, the hosted service's port-443 entry): the edge's first TLS
port, or its TCP port for an edge without a TLS certificate, so that entry still reaches a
listener.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from turnpike.core.edges import GLOBAL, Edge, EdgeDirectory
from turnpike.operator.model import RelayEdge
from turnpike.operator.publication import Publication

Published = RelayEdge | Publication


def global_host(edges: Sequence[Published], configured: str) -> str:
    """The configured global name, else ``global.`` + the first edge's parent domain, else the
    first edge's own name."""
    if configured:
        return configured
    for edge in edges:
        _, dot, parent = edge.hostname.partition(".")
        if dot and "." in parent:
            return f"global.{parent}"
    return edges[0].hostname if edges else "localhost"


def directory(edges: Iterable[Published], configured_global: str) -> EdgeDirectory:
    """The directory of ``edges``: parsed RelayEdges, or the publications kept for edges whose
    spec is invalid."""
    ordered = sorted(
        (e if isinstance(e, Publication) else Publication.of(e) for e in edges),
        key=lambda e: e.name,
    )
    return EdgeDirectory(
        Edge(GLOBAL, global_host(ordered, configured_global)),
        tuple(e.directory_entry() for e in ordered),
    )


def document(edges: Iterable[Published], configured_global: str) -> dict[str, Any]:
    return directory(edges, configured_global).document()


def render(edges: Iterable[Published], configured_global: str) -> str:
    return directory(edges, configured_global).render()
