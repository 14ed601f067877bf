"""The edge directory the token API reads (ConfigMap `turnpike-edges`, key ``edges.json``)::

    {"global": {"host": "global.turn.example.com"},
     "edges": [{"name": "ashburn", "location": "US East Coast (Virginia)",
                "host": "ashburn.turn.example.com",
                "ports": {"udp": 3478, "tcp": 3478, "tls": 443}}]}

``tls`` is the port of the fourth ICE server the token API hands out (``turn:host:PORT?transport=
tcp``, the hosted service's port-443 entry): the edge's first TLS port, or its TCP port for an
edge without a TLS certificate, so that entry still reaches a listener. The token API parses this
file with ``turnpike.tokens.edges.EdgeDirectory``; a test keeps the two in agreement.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

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


def document(edges: Iterable[RelayEdge], configured_global: str) -> dict[str, Any]:
    ordered = sorted(edges, key=lambda e: e.name)
    return {
        "global": {"host": global_host(ordered, configured_global)},
        "edges": [
            {
                "name": e.name,
                "location": e.location,
                "host": e.hostname,
                "ports": {
                    "udp": e.udp_port,
                    "tcp": e.tcp_port,
                    "tls": e.tls_ports[0] if e.tls else e.tcp_port,
                },
            }
            for e in ordered
        ],
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"
