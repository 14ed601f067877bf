"""What one edge publishes, remembered in its status so an invalid new spec never withdraws it.

The ranges ConfigMap and the edge directory are rebuilt from every edge of the namespace on each
change. An edge whose spec no longer parses still has to be there as it was (its relays keep
serving): its last valid publication is kept in ``status.publication`` by every successful
reconcile and read back from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from turnpike.core.edges import Edge, Ports
from turnpike.operator import ranges
from turnpike.operator.model import RelayEdge

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Publication:
    name: str
    location: str
    hostname: str
    ports: Ports  # what the token API hands out: UDP, TCP and the fourth ICE server's port
    listeners: tuple[tuple[int, str], ...]  # every client-facing (port, protocol)
    relay_ports: tuple[int, int]

    @classmethod
    def of(cls, edge: RelayEdge) -> Publication:
        return cls(
            name=edge.name,
            location=edge.location,
            hostname=edge.hostname,
            ports=Ports(
                edge.udp_port, edge.tcp_port, edge.tls_ports[0] if edge.tls else edge.tcp_port
            ),
            listeners=tuple(edge.client_ports()),
            relay_ports=edge.relay_ports,
        )

    def to_status(self) -> Obj:
        return {
            "location": self.location,
            "hostname": self.hostname,
            "ports": {"udp": self.ports.udp, "tcp": self.ports.tcp, "tls": self.ports.tls},
            "listeners": [{"port": p, "protocol": proto} for p, proto in self.listeners],
            "relayPorts": {"min": self.relay_ports[0], "max": self.relay_ports[1]},
        }

    @classmethod
    def from_status(cls, name: str, status: Obj | None) -> Publication | None:
        """The publication kept in a status; None when there is none (or it is unreadable)."""
        saved = (status or {}).get("publication")
        if not isinstance(saved, dict):
            return None
        try:
            ports = saved["ports"]
            return cls(
                name=name,
                location=str(saved["location"]),
                hostname=str(saved["hostname"]),
                ports=Ports(int(ports["udp"]), int(ports["tcp"]), int(ports["tls"])),
                listeners=tuple((int(x["port"]), str(x["protocol"])) for x in saved["listeners"]),
                relay_ports=(int(saved["relayPorts"]["min"]), int(saved["relayPorts"]["max"])),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def ranges(
        self,
        relay_cidrs: list[str],
        stream_cidrs: list[str],
        sip: tuple[ranges.SipEntry, ...] = (),
    ) -> ranges.EdgeRanges:
        return ranges.EdgeRanges(
            edge=self.name,
            location=self.location,
            relay_cidrs=tuple(relay_cidrs),
            relay_ports=self.listeners,
            relay_port_range=self.relay_ports,
            stream_cidrs=tuple(stream_cidrs),
            sip=sip,
        )

    def directory_entry(self) -> Edge:
        return Edge(self.name, self.hostname, self.location, self.ports)
