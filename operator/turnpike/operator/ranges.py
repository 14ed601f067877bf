"""The `turnpike-ip-ranges` ConfigMap: what a customer's firewall team reads.

Pure functions: per-edge addresses in, ``ranges.json`` and ``ranges.txt`` out. CIDRs are collapsed
to the fewest ranges and sorted (IPv4 first), so the content only changes when the addresses do;
``generated`` is left out of the comparison so an unchanged fleet never rewrites the ConfigMap.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

RANGES_JSON = "ranges.json"
RANGES_TXT = "ranges.txt"


def collapse(cidrs: Iterable[str]) -> list[str]:
    """The fewest CIDRs covering exactly ``cidrs``, IPv4 before IPv6, in address order."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for text in cidrs:
        net = ipaddress.ip_network(text, strict=False)
        if isinstance(net, ipaddress.IPv4Network):
            v4.append(net)
        else:
            v6.append(net)
    return [str(n) for n in ipaddress.collapse_addresses(v4)] + [
        str(n) for n in ipaddress.collapse_addresses(v6)
    ]


@dataclass(frozen=True, slots=True)
class EdgeRanges:
    edge: str
    location: str
    relay_cidrs: tuple[str, ...]
    relay_ports: tuple[tuple[int, str], ...]
    relay_port_range: tuple[int, int]
    stream_cidrs: tuple[str, ...]
    sip: tuple[SipEntry, ...] = ()  # gateways of the edge that answer SIP

    def as_json(self) -> dict[str, Any]:
        low, high = self.relay_port_range
        out: dict[str, Any] = {
            "edge": self.edge,
            "location": self.location,
            "relay": {
                "cidrs": collapse(self.relay_cidrs),
                "ports": [{"port": p, "protocol": proto} for p, proto in self.relay_ports],
                "relayPorts": f"{low}-{high}",
            },
            "streams": {"cidrs": collapse(self.stream_cidrs)},
        }
        if self.sip:
            ports = sorted({e.port for e in self.sip})
            tls = sorted({e.tls_port for e in self.sip if e.tls_port is not None} - set(ports))
            media = sorted({e.rtp_ports for e in self.sip})
            out["sip"] = {
                "cidrs": collapse(c for e in self.sip for c in e.cidrs),
                "ports": [{"port": p, "protocol": proto} for p in ports for proto in ("udp", "tcp")]
                + [{"port": p, "protocol": "tcp"} for p in tls],
                "rtpPorts": [f"{low}-{high}" for low, high in media],
            }
        return out


@dataclass(frozen=True, slots=True)
class SipEntry:
    """One SIP-answering gateway: its addresses, its SIP port, its RTP port range (and its SIP
    over TLS port, a TCP port)."""

    cidrs: tuple[str, ...]
    port: int
    rtp_ports: tuple[int, int]
    tls_port: int | None = None


def document(edges: Iterable[EdgeRanges]) -> dict[str, Any]:
    """The ranges.json body without its ``generated`` stamp, edges in name order."""
    return {"edges": [e.as_json() for e in sorted(edges, key=lambda e: e.edge)]}


def render_txt(doc: dict[str, Any], generated: str) -> str:
    header = ("EDGE", "LOCATION", "SERVICE", "CIDR", "PORTS")
    rows: list[tuple[str, ...]] = []
    for edge in doc["edges"]:
        relay = edge["relay"]
        listeners = ", ".join(f"{p['port']}/{p['protocol']}" for p in relay["ports"])
        relay_ports = f"{listeners}, {relay['relayPorts']}/udp (relayed media)"
        for cidr in relay["cidrs"] or ["(pending)"]:
            rows.append((edge["edge"], edge["location"], "relay (inbound)", cidr, relay_ports))
        for cidr in edge["streams"]["cidrs"]:
            rows.append(
                (edge["edge"], edge["location"], "streams (outbound)", cidr, "wss to your servers")
            )
        if "sip" in edge:
            sip = edge["sip"]
            signalling = ", ".join(f"{p['port']}/{p['protocol']}" for p in sip["ports"])
            media = ", ".join(f"{r}/udp" for r in sip["rtpPorts"])
            for cidr in sip["cidrs"] or ["(pending)"]:
                rows.append((edge["edge"], edge["location"], "sip (inbound)", cidr, signalling))
                rows.append((edge["edge"], edge["location"], "rtp (both ways)", cidr, media))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return f"# Turnpike edge IP ranges, generated {generated}\n" + "\n".join(lines) + "\n"


def configmap_data(doc: dict[str, Any], generated: str) -> dict[str, str]:
    body = {**doc, "generated": generated}
    return {
        RANGES_JSON: json.dumps(body, indent=2) + "\n",
        RANGES_TXT: render_txt(doc, generated),
    }


def same_content(data: dict[str, str] | None, doc: dict[str, Any]) -> bool:
    """Whether an existing ConfigMap's data already says ``doc`` (ignoring when it was made)."""
    try:
        current = json.loads((data or {})[RANGES_JSON])
    except (KeyError, ValueError):
        return False
    current.pop("generated", None)
    return bool(current == doc)
