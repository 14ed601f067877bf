"""The edge directory: where the relays are, as the token API advertises them in ``ice_servers``.

The operator renders this file from the RelayEdge resources (in a cluster it is a mounted
ConfigMap, reloaded on change), ``turnpike dev`` renders it for the fleet on one machine, and the
token API parses it; all three use this module (`EdgeDirectory.render`, `EdgeDirectory.parse`).
Format::

    {"global": {"host": "turn.example.org"},
     "edges": [{"name": "ashburn", "location": "US East Coast (Virginia)",
                "host": "ashburn.turn.example.org",
                "ports": {"udp": 3478, "tcp": 3478, "tls": 443}}]}

``ports`` (on the global entry and on each edge) and each of its keys are optional and default to
the values shown, which are the hosted service's. ``location`` is optional. A host may be a DNS
name or an IP address (an IPv6 address is written bare; the URLs bracket it).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from turnpike.core import validate

GLOBAL: Final = "global"
DEFAULT_PORTS: Final = {"udp": 3478, "tcp": 3478, "tls": 443}

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_EDGE_NAME = 'a lowercase DNS label such as "ashburn" ("global" is reserved)'


class EdgesError(ValueError):
    """An edges file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Ports:
    udp: int = DEFAULT_PORTS["udp"]
    tcp: int = DEFAULT_PORTS["tcp"]
    tls: int = DEFAULT_PORTS["tls"]


@dataclass(frozen=True, slots=True)
class Edge:
    """One place clients can reach relays: the global name or one regional edge."""

    name: str
    host: str
    location: str = ""
    ports: Ports = field(default_factory=Ports)

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def ice_servers(self, username: str, credential: str) -> list[dict[str, str]]:
        """The hosted service's four entries, in its order: STUN, TURN UDP, TURN TCP, TURN 443.

        Every entry carries both ``url`` (legacy) and ``urls``; TURN entries carry the credential.
        Like the hosted service, the last entry says ``turn:…:<tls port>?transport=tcp``, so
        clients speak plain TURN over TCP to that port.
        """
        h, p = self.url_host, self.ports
        stun = f"stun:{h}:{p.udp}"
        turns = (
            f"turn:{h}:{p.udp}?transport=udp",
            f"turn:{h}:{p.tcp}?transport=tcp",
            f"turn:{h}:{p.tls}?transport=tcp",
        )
        servers: list[dict[str, str]] = [{"url": stun, "urls": stun}]
        for url in turns:
            servers.append(
                {"url": url, "urls": url, "username": username, "credential": credential}
            )
        return servers


@dataclass(frozen=True, slots=True)
class EdgeDirectory:
    global_edge: Edge
    edges: tuple[Edge, ...] = ()

    def get(self, name: str) -> Edge | None:
        """The named edge; ``global`` is the global entry."""
        if name == GLOBAL:
            return self.global_edge
        return next((e for e in self.edges if e.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.edges)

    def status(self) -> dict[str, Any]:
        return {"edges": [GLOBAL, *self.names]}

    def document(self) -> dict[str, Any]:
        """The directory as the file's JSON document; `parse` reads it back unchanged. The global
        entry leaves out a location it lacks and the default ports; every edge has all fields."""
        top: dict[str, Any] = {"host": self.global_edge.host}
        if self.global_edge.location:
            top["location"] = self.global_edge.location
        if self.global_edge.ports != Ports():
            top["ports"] = _ports(self.global_edge.ports)
        edges = [
            {"name": e.name, "location": e.location, "host": e.host, "ports": _ports(e.ports)}
            for e in self.edges
        ]
        return {"global": top, "edges": edges}

    def render(self) -> str:
        return json.dumps(self.document(), indent=2) + "\n"

    @classmethod
    def parse(cls, data: bytes | str, source: str = "edges") -> EdgeDirectory:
        """Validate and parse an edges file; ``EdgesError`` names ``source``, the JSON path of the
        problem, what was expected and what was found."""
        root = validate.load(data, source, EdgesError).object("global", "edges")
        global_edge = _edge(GLOBAL, root.field("global").object("host", "location", "ports"))
        edges: list[Edge] = []
        for entry in root.field("edges").items(optional=True):
            entry.object("name", "location", "host", "ports")
            name = entry.field("name").once([e.name for e in edges]).text(_EDGE_NAME, _edge_name)
            edges.append(_edge(name, entry))
        return cls(global_edge, tuple(edges))


def _ports(ports: Ports) -> dict[str, int]:
    return {"udp": ports.udp, "tcp": ports.tcp, "tls": ports.tls}


def _edge(name: str, entry: validate.Node) -> Edge:
    ports = entry.field("ports").object(*DEFAULT_PORTS, optional=True)
    port = {t: ports.field(t).integer(1, 65535, default) for t, default in DEFAULT_PORTS.items()}
    return Edge(
        name,
        host=entry.field("host").text("a DNS name or an IP address", valid_host),
        location=entry.field("location").text("a string", validate.anything, default=""),
        ports=Ports(**port),
    )


def _edge_name(name: str) -> bool:
    return name != GLOBAL and _NAME.fullmatch(name) is not None


def valid_host(host: str) -> bool:
    """A DNS name (letters, digits, hyphens, dots) or an IPv4/IPv6 address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    name = host.removesuffix(".")
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def parse_edges(data: bytes, source: str) -> EdgeDirectory:
    """`FileWatcher` parser for edges files."""
    return EdgeDirectory.parse(data, source)
