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

GLOBAL: Final = "global"
DEFAULT_PORTS: Final = {"udp": 3478, "tcp": 3478, "tls": 443}

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_EDGE_FIELDS = frozenset({"name", "location", "host", "ports"})
_GLOBAL_FIELDS = frozenset({"host", "ports", "location"})


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
        def fail(problem: str) -> EdgesError:
            return EdgesError(f"{source}: {problem}")

        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise fail(f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise fail('expected an object with "global" and "edges"')
        unknown = set(doc) - {"global", "edges"}
        if unknown:
            raise fail(f"unknown fields {sorted(unknown)}")
        raw_global = doc.get("global")
        if not isinstance(raw_global, dict):
            raise fail('"global" must be an object with a "host"')
        extra = set(raw_global) - _GLOBAL_FIELDS
        if extra:
            raise fail(f'"global" has unknown fields {sorted(extra)}')
        global_edge = _edge(GLOBAL, raw_global, '"global"', fail)
        raw_edges: Any = doc.get("edges", [])
        if not isinstance(raw_edges, list):
            raise fail('"edges" must be a list')
        edges: list[Edge] = []
        seen: set[str] = set()
        for n, raw in enumerate(raw_edges):
            where = f"edge #{n + 1}"
            if not isinstance(raw, dict):
                raise fail(f"{where} is not an object")
            extra = set(raw) - _EDGE_FIELDS
            if extra:
                raise fail(f"{where} has unknown fields {sorted(extra)}")
            name = raw.get("name")
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise fail(f'{where}: "name" must be a lowercase DNS label such as "ashburn"')
            if name == GLOBAL:
                raise fail(f'{where}: "global" is reserved for the global entry')
            if name in seen:
                raise fail(f"edge {name!r} is listed twice")
            seen.add(name)
            edges.append(_edge(name, raw, f"edge {name!r}", fail))
        return cls(global_edge, tuple(edges))


def _ports(ports: Ports) -> dict[str, int]:
    return {"udp": ports.udp, "tcp": ports.tcp, "tls": ports.tls}


def _edge(name: str, raw: dict[str, Any], where: str, fail: Any) -> Edge:
    host = raw.get("host")
    if not isinstance(host, str) or not valid_host(host):
        raise fail(f'{where}: "host" must be a DNS name or an IP address')
    location = raw.get("location", "")
    if not isinstance(location, str):
        raise fail(f'{where}: "location" must be a string')
    raw_ports = raw.get("ports", {})
    if not isinstance(raw_ports, dict):
        raise fail(f'{where}: "ports" must be an object')
    extra = set(raw_ports) - set(DEFAULT_PORTS)
    if extra:
        raise fail(f'{where}: "ports" has unknown transports {sorted(extra)}')
    ports = dict(DEFAULT_PORTS)
    for transport, value in raw_ports.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise fail(f'{where}: port "{transport}" must be an integer 1-65535')
        ports[transport] = value
    return Edge(name, host, location, Ports(**ports))


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
