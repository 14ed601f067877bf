"""RelayEdge and StreamGateway specs as typed values.

The API server applies the CRD's defaults, but the operator does not rely on it (an object stored
before a default was added has none): every default is repeated here, read from the same schema.
What a schema cannot check (that a CIDR really is one) raises SpecError with a message that names
the field, which the operator reports as a Degraded condition and a Warning Event.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from turnpike.operator import crds

Obj = dict[str, Any]


class SpecError(ValueError):
    """A spec the operator cannot act on; the message names the field."""


def _default(schema: Obj, *path: str) -> Any:
    for part in path:
        schema = schema["properties"][part]
    return schema.get("default")


_EDGE = crds.relay_edge_spec()
_GATEWAY = crds.stream_gateway_spec()


def _cidrs(values: Any, field: str) -> tuple[str, ...]:
    out = []
    for value in values or ():
        try:
            out.append(str(ipaddress.ip_network(str(value), strict=False)))
        except ValueError:
            raise SpecError(f"{field}: {value!r} is not an IP address or CIDR") from None
    return tuple(out)


def _ip(value: Any, field: str) -> str | None:
    """An IP address (no prefix), or None when absent."""
    if value is None or value == "":
        return None
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise SpecError(f"{field}: {value!r} is not an IP address") from None


def _port_range(value: Any, field: str, default: Obj) -> tuple[int, int]:
    value = value or default
    low, high = int(value["min"]), int(value["max"])
    if not 1 <= low <= high <= 65535:
        raise SpecError(f"{field}: {low}-{high} is not a port range within 1-65535")
    return low, high


def _resources(spec: Obj, default: Obj) -> Obj:
    """The container resources: the defaults when absent, none at all for {} (or null)."""
    if "resources" not in spec:
        return copy.deepcopy(default)
    return dict(spec["resources"] or {})


@dataclass(frozen=True, slots=True)
class Workload:
    image: str
    image_pull_policy: str
    resources: Obj
    node_selector: dict[str, str]
    affinity: Obj
    tolerations: tuple[Obj, ...]
    priority_class: str
    topology_spread: tuple[Obj, ...] | None  # None: the operator's default spread

    @classmethod
    def parse(cls, spec: Obj, default_image: str, default_resources: Obj) -> Workload:
        spread = spec.get("topologySpreadConstraints")
        return cls(
            image=spec.get("image") or default_image,
            image_pull_policy=spec.get("imagePullPolicy") or "IfNotPresent",
            resources=_resources(spec, default_resources),
            node_selector=dict(spec.get("nodeSelector") or {}),
            affinity=dict(spec.get("affinity") or {}),
            tolerations=tuple(spec.get("tolerations") or ()),
            priority_class=spec.get("priorityClassName") or "",
            topology_spread=None if spread is None else tuple(spread),
        )


@dataclass(frozen=True, slots=True)
class Exposure:
    """Service settings a cloud needs (see ``crds._service``)."""

    annotations: dict[str, str]
    load_balancer_class: str
    source_ranges: tuple[str, ...]
    split_protocols: bool
    type: str

    @classmethod
    def parse(cls, spec: Obj, default_type: str) -> Exposure:
        service = spec.get("service") or {}
        ranges = _cidrs(
            service.get("loadBalancerSourceRanges"), "spec.service.loadBalancerSourceRanges"
        )
        kind = service.get("type") or default_type
        if kind != "LoadBalancer" and (ranges or service.get("loadBalancerClass")):
            raise SpecError(
                "spec.service: loadBalancerClass and loadBalancerSourceRanges need type "
                "LoadBalancer"
            )
        return cls(
            annotations={str(k): str(v) for k, v in (service.get("annotations") or {}).items()},
            load_balancer_class=service.get("loadBalancerClass") or "",
            source_ranges=ranges,
            split_protocols=bool(service.get("splitProtocols", False)),
            type=kind,
        )


def _count(value: Any, field: str, top: int | None = None, low: int = 0) -> int | None:
    """An optional whole number of at least ``low`` (and at most ``top``); None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{field}: {value!r} is not a whole number")
    if value < low or (top is not None and value > top):
        bounds = f"{low}-{top}" if top is not None else f"at least {low}"
        raise SpecError(f"{field}: {value} is out of range ({bounds})")
    return value


@dataclass(frozen=True, slots=True)
class Quotas:
    """``spec.quotas``: the relay's fair-share flags; None leaves the relay's default."""

    per_user: int | None = None
    per_account: int | None = None
    per_ip: int | None = None
    total: int | None = None
    connections_per_ip: int | None = None
    reserve_percent: int | None = None

    @classmethod
    def parse(cls, spec: Any) -> Quotas:
        if spec is None:
            return cls()
        if not isinstance(spec, dict):
            raise SpecError("spec.quotas: must be an object")
        field = "spec.quotas."
        return cls(
            per_user=_count(spec.get("perUser"), field + "perUser"),
            per_account=_count(spec.get("perAccount"), field + "perAccount"),
            per_ip=_count(spec.get("perIP"), field + "perIP"),
            total=_count(spec.get("total"), field + "total"),
            connections_per_ip=_count(spec.get("connectionsPerIP"), field + "connectionsPerIP"),
            reserve_percent=_count(spec.get("reservePercent"), field + "reservePercent", 99),
        )


OFFLOAD_MODES = ("off", "auto", "tc")


def _offload(value: Any) -> str:
    mode = str(value or "auto")
    if mode not in OFFLOAD_MODES:
        raise SpecError(f"spec.offload: one of {', '.join(OFFLOAD_MODES)}, not {mode!r}")
    return mode


@dataclass(frozen=True, slots=True)
class RelayEdge:
    name: str
    namespace: str
    location: str
    hostname: str
    realm: str
    daemonset: bool
    replicas: int
    host_network: bool
    udp_port: int
    tcp_port: int
    tls_ports: tuple[int, ...]
    tls_secret: str
    relay_ports: tuple[int, int]
    static_addresses: tuple[str, ...]
    address_source: str  # NodeExternalIP | LoadBalancer | "" when static
    quotas: Quotas
    allow_peers: tuple[str, ...]
    deny_peers: tuple[str, ...]
    deny_cluster_networks: bool
    grace_seconds: int
    workload: Workload
    exposure: Exposure
    offload: str = "auto"  # the relay's --offload: off, auto or tc

    @property
    def tls(self) -> bool:
        return bool(self.tls_secret and self.tls_ports)

    def client_ports(self) -> list[tuple[int, str]]:
        """(port, protocol) of every client-facing listener, as the ranges ConfigMap lists them."""
        ports = [(self.udp_port, "udp"), (self.tcp_port, "tcp")]
        if self.tls:
            ports += [(p, "tcp") for p in self.tls_ports if (p, "tcp") not in ports]
        return ports

    @classmethod
    def parse(cls, body: Obj, default_image: str) -> RelayEdge:
        meta, spec = body["metadata"], body.get("spec") or {}
        ports = spec.get("ports") or {}
        addresses = spec.get("addresses") or {}
        peers = spec.get("peers") or {}
        host_network = bool(spec.get("hostNetwork", False))
        static = _cidrs(addresses.get("static"), "spec.addresses.static")
        source = addresses.get("source") or ""
        if static and source:
            raise SpecError("spec.addresses: static and source are mutually exclusive")
        if not static and not source:
            source = "NodeExternalIP" if host_network else "LoadBalancer"
        if host_network and source == "LoadBalancer":
            raise SpecError("spec.addresses.source: hostNetwork relays have no LoadBalancer")
        hostname = spec.get("publicHostname") or ""
        if not hostname:
            raise SpecError("spec.publicHostname: required")
        edge = cls(
            name=meta["name"],
            namespace=meta["namespace"],
            location=str(spec.get("location") or meta["name"]),
            hostname=hostname,
            realm=spec.get("realm") or hostname,
            daemonset=spec.get("mode", "Deployment") == "DaemonSet",
            replicas=int(spec.get("replicas") or _default(_EDGE, "replicas")),
            host_network=host_network,
            udp_port=int(ports.get("udp") or 3478),
            tcp_port=int(ports.get("tcp") or 3478),
            tls_ports=tuple(int(p) for p in ports.get("tls", [443, 5349])),
            tls_secret=spec.get("tlsSecretName") or "",
            relay_ports=_port_range(
                spec.get("relayPorts"), "spec.relayPorts", _default(_EDGE, "relayPorts")
            ),
            static_addresses=static,
            address_source=source if not static else "",
            quotas=Quotas.parse(spec.get("quotas")),
            allow_peers=_cidrs(peers.get("allow"), "spec.peers.allow"),
            deny_peers=_cidrs(peers.get("deny"), "spec.peers.deny"),
            deny_cluster_networks=bool(peers.get("denyClusterNetworks", True)),
            grace_seconds=int(spec.get("terminationGracePeriodSeconds", 3600)),
            workload=Workload.parse(spec, default_image, crds.RELAY_RESOURCES),
            exposure=Exposure.parse(spec, "LoadBalancer"),
            offload=_offload(spec.get("offload")),
        )
        edge.check_ports()
        return edge

    def check_ports(self) -> None:
        """The CRD's listener rules, repeated for objects stored before they existed: ports
        that would make every relay fail with "Address already in use"."""
        if self.tls and self.tcp_port in self.tls_ports:
            raise SpecError(
                f"spec.ports.tcp: {self.tcp_port} is also in spec.ports.tls: TURN over TCP and "
                "TURN over TLS need different ports"
            )
        low, high = self.relay_ports
        listeners = [("udp", self.udp_port), ("tcp", self.tcp_port)]
        listeners += [("tls", p) for p in self.tls_ports] if self.tls else []
        for name, port in listeners:
            if low <= port <= high:
                raise SpecError(
                    f"spec.relayPorts: {low}-{high} include the spec.ports.{name} listener port "
                    f"{port}: relayed ports and listener ports must not overlap"
                )


def _config_key(value: Any, field: str) -> str:
    """A ConfigMap/Secret key, which names a file in the mounted volume."""
    key = str(value)
    if key in (".", "..") or not re.fullmatch(crds.CONFIG_KEY_PATTERN, key):
        raise SpecError(f"{field}: {key!r} is not a ConfigMap or Secret key (letters, digits, -._)")
    return key


def _sip_tls(spec: Any) -> dict[str, Any]:
    """``spec.sip.tls`` as SipSettings fields (none when absent)."""
    if spec is None:
        return {}
    if not isinstance(spec, dict) or not spec.get("secretName"):
        raise SpecError("spec.sip.tls.secretName: required (a kubernetes.io/tls Secret)")
    port = spec.get("port") or _default(_GATEWAY, "sip", "tls", "port")
    return {"tls_port": int(port), "tls_secret": str(spec["secretName"])}


@dataclass(frozen=True, slots=True)
class SipSettings:
    """``spec.sip``: the gateway answers SIP; the numbers file comes from a ConfigMap or Secret."""

    port: int
    trusted: tuple[str, ...]
    realm: str | None
    numbers_kind: str  # "configMap" or "secret"
    numbers_name: str
    numbers_key: str
    tls_port: int | None = None  # SIP over TLS, with the certificate in tls_secret
    tls_secret: str = ""
    invite_rate: int | None = None  # None: the gateway's default
    announce_address: str | None = None  # None: discovered (LoadBalancer) or the pod's address

    @classmethod
    def parse(cls, spec: Any) -> SipSettings | None:
        if spec is None:
            return None
        if not isinstance(spec, dict):
            raise SpecError("spec.sip: must be an object")
        numbers = spec.get("numbers") or {}
        config_map, secret = numbers.get("configMapName"), numbers.get("secretName")
        if bool(config_map) == bool(secret):
            raise SpecError("spec.sip.numbers: give exactly one of configMapName and secretName")
        return cls(
            port=int(spec.get("port") or _default(_GATEWAY, "sip", "port")),
            trusted=_cidrs(spec.get("trustedCidrs"), "spec.sip.trustedCidrs"),
            realm=spec.get("realm") or None,
            numbers_kind="configMap" if config_map else "secret",
            numbers_name=str(config_map or secret),
            numbers_key=_config_key(numbers.get("key") or "numbers.json", "spec.sip.numbers.key"),
            **_sip_tls(spec.get("tls")),
            invite_rate=_count(spec.get("inviteRate"), "spec.sip.inviteRate"),
            announce_address=_ip(spec.get("announceAddress"), "spec.sip.announceAddress"),
        )


def _calls(spec: Any) -> dict[str, int | None]:
    """``spec.calls`` as StreamGateway fields."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise SpecError("spec.calls: must be an object")
    total = _count(spec.get("max"), "spec.calls.max", low=1)
    per_account = _count(spec.get("perAccount"), "spec.calls.perAccount", low=1)
    if total is not None and per_account is not None and per_account > total:
        raise SpecError(
            f"spec.calls.perAccount: {per_account} is greater than spec.calls.max {total}"
        )
    return {"max_calls": total, "max_account_calls": per_account}


@dataclass(frozen=True, slots=True)
class StreamGateway:
    name: str
    namespace: str
    edge: str
    replicas: int
    port: int
    accounts_secret: str
    rtp_ports: tuple[int, int]
    allowed_destinations: tuple[str, ...]
    static_egress: tuple[str, ...]
    workload: Workload
    exposure: Exposure
    sip: SipSettings | None = None
    host_network: bool = False
    max_calls: int | None = None  # None: the gateway's defaults
    max_account_calls: int | None = None

    @classmethod
    def parse(cls, body: Obj, default_image: str) -> StreamGateway:
        meta, spec = body["metadata"], body.get("spec") or {}
        egress = spec.get("egress") or {}
        static = _cidrs(egress.get("static"), "spec.egress.static")
        if static and egress.get("source"):
            raise SpecError("spec.egress: static and source are mutually exclusive")
        if not spec.get("edge"):
            raise SpecError("spec.edge: required")
        gateway = cls(
            name=meta["name"],
            namespace=meta["namespace"],
            edge=spec["edge"],
            replicas=int(spec.get("replicas") or _default(_GATEWAY, "replicas")),
            port=int(spec.get("port") or _default(_GATEWAY, "port")),
            accounts_secret=spec.get("accountsSecretName") or "turnpike-accounts",
            rtp_ports=_port_range(
                spec.get("rtpPorts"), "spec.rtpPorts", _default(_GATEWAY, "rtpPorts")
            ),
            allowed_destinations=_cidrs(
                spec.get("allowedDestinations"), "spec.allowedDestinations"
            ),
            static_egress=static,
            workload=Workload.parse(spec, default_image, crds.GATEWAY_RESOURCES),
            exposure=Exposure.parse(spec, "ClusterIP"),
            sip=SipSettings.parse(spec.get("sip")),
            host_network=bool(spec.get("hostNetwork", False)),
            **_calls(spec.get("calls")),
        )
        gateway.check_ports()
        return gateway

    def lowest_port(self) -> int:
        """The lowest port a gateway pod binds: a listener or the start of the RTP range."""
        ports = [self.port, self.rtp_ports[0]]
        if self.sip is not None:
            ports += [self.sip.port] + ([self.sip.tls_port] if self.sip.tls_port else [])
        return min(ports)

    def check_ports(self) -> None:
        """The CRD's listener rules, repeated for objects stored before they existed."""
        metrics = crds.GATEWAY_METRICS_PORT
        if self.host_network and self.lowest_port() < 1024:
            raise SpecError(
                f"spec.hostNetwork: port {self.lowest_port()} is below 1024, which the non-root "
                "gateway cannot bind on the node's network; use ports from 1024"
            )
        if self.port == metrics:
            raise SpecError(f"spec.port: {metrics} is the gateway's metrics port")
        if self.sip is None:
            return
        port = self.sip.port
        if port == self.port:
            raise SpecError(
                f"spec.sip.port: {port} is also spec.port: the SIP and HTTP listeners both use TCP"
            )
        if port == metrics:
            raise SpecError(f"spec.sip.port: {metrics} is the gateway's metrics port")
        tls = self.sip.tls_port
        if tls is not None and tls in (port, self.port, metrics):
            raise SpecError(
                f"spec.sip.tls.port: {tls} is already taken: spec.sip.port, spec.port and the "
                f"metrics port {metrics} are TCP listeners too"
            )
        low, high = self.rtp_ports
        if low <= port <= high:
            raise SpecError(
                f"spec.rtpPorts: {low}-{high} include spec.sip.port {port}: RTP and SIP both "
                "use UDP"
            )
