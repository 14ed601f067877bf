"""The one source of truth for Turnpike's CustomResourceDefinitions.

``deploy/crds/*.yaml`` are generated from here (``python -m turnpike.operator.crds deploy/crds``)
and a test keeps them equal; the Helm chart copies those files. The schemas are structural (every
field typed, defaults in the schema so ``kubectl get -o yaml`` shows what the operator will use)
and say in CEL what plain OpenAPI cannot: that an address really is an IP address or CIDR, ordered
port ranges, listener ports that do not collide, mutually exclusive fields — each with a message
that names the field and, where CEL can, the value. Only CEL that every supported API server
(1.27+) compiles is used: ``matches()`` rather than the 1.31 ``isCIDR()``, and list macros only
over short, bounded lists, so the server's cost estimate never rejects a rule. The operator
repeats every check (``model.py``) for objects stored before a rule existed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

GROUP = "turnpike.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

Schema = dict[str, Any]


def _ipv6() -> str:
    """An RE2-and-Python regex of an IPv6 address in any ``::`` compression (no dotted tail)."""
    group = "[0-9a-fA-F]{1,4}"
    forms = [f"({group}:){{7}}{group}"]
    for left in range(8):  # groups before the ``::``
        head = "::" if left == 0 else f"({group}:){{{left}}}:"
        room = 7 - left  # ``::`` stands for at least one group
        tail = f"({group}(:{group}){{0,{room - 1}}})?" if room else ""
        forms.append(head + tail)
    return "(" + "|".join(forms) + ")"


_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_CIDR = f"{_OCTET}([.]{_OCTET}){{3}}(/(3[0-2]|[12]?[0-9]))?"
_IPV6_CIDR = f"{_ipv6()}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?"
# An IP address or CIDR: IPv4 with a prefix of at most 32, IPv6 with at most 128. Written with
# character classes, not backslashes, so the same text is valid in CEL, RE2 and Python.
CIDR_REGEX = f"^({_IPV4_CIDR}|{_IPV6_CIDR})$"
IP_REGEX = f"^({_OCTET}([.]{_OCTET}){{3}}|{_ipv6()})$"  # an address, no prefix
_HOSTNAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# A ConfigMap or Secret key: it becomes a file name in the mounted volume.
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


def _string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _integer(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "description": description, **extra}


def _port(description: str, default: int | None = None) -> Schema:
    schema = _integer(description, minimum=1, maximum=65535)
    if default is not None:
        schema["default"] = default
    return schema


def _cidrs(description: str) -> Schema:
    return {
        "type": "array",
        "description": description,
        "maxItems": 256,
        "items": {
            "type": "string",
            "maxLength": 64,
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches('{CIDR_REGEX}')",
                    "message": "must be an IP address or CIDR, such as 192.0.2.0/24 or "
                    "2001:db8::/32 (prefix at most 32 for IPv4, 128 for IPv6)",
                    "messageExpression": "'\"' + self + '\" is not an IP address or CIDR, such "
                    "as 192.0.2.0/24 or 2001:db8::/32 (prefix at most 32 for IPv4, 128 for IPv6)'",
                }
            ],
        },
    }


def _port_range(description: str, low: int, high: int) -> Schema:
    return {
        "type": "object",
        "description": description,
        "required": ["min", "max"],
        "default": {"min": low, "max": high},
        "properties": {
            "min": _port("lowest port of the range"),
            "max": _port("highest port of the range"),
        },
        "x-kubernetes-validations": [
            {"rule": "self.min <= self.max", "message": "min must not be greater than max"}
        ],
    }


def _free_form(description: str, kind: str = "object") -> Schema:
    """Kubernetes types copied into pod specs as they are (affinity, resources, tolerations)."""
    if kind == "array":
        return {
            "type": "array",
            "description": description,
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        }
    return {
        "type": "object",
        "description": description,
        "x-kubernetes-preserve-unknown-fields": True,
    }


# Starting points, not measured sizing: requests so the scheduler places pods sensibly, a memory
# limit so a leak cannot take the node, and no CPU limit (throttling a relay adds jitter).
RELAY_RESOURCES = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
GATEWAY_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def _workload_fields(resources: dict[str, Any]) -> dict[str, Schema]:
    return {
        "image": _string("container image; the operator's own image when empty", maxLength=512),
        "imagePullPolicy": _string(
            "image pull policy", enum=["Always", "IfNotPresent", "Never"], default="IfNotPresent"
        ),
        "resources": {
            **_free_form("container resources (requests and limits); {} for none"),
            "default": resources,
        },
        "priorityClassName": _string(
            "PriorityClass of the pods (none when empty)",
            maxLength=253,
            pattern=_HOSTNAME_PATTERN,
        ),
        "topologySpreadConstraints": _free_form(
            "how the pods spread over failure domains; by default across zones and nodes, as "
            "far as the cluster allows ([] for none)",
            "array",
        ),
        "nodeSelector": {
            "type": "object",
            "description": "node labels the pods must match",
            "additionalProperties": {"type": "string"},
        },
        "affinity": _free_form("pod affinity rules"),
        "tolerations": _free_form("pod tolerations", "array"),
    }


def _service(split: bool) -> Schema:
    """How the pods are exposed: what clouds need on a Service to give it the right kind of
    load balancer (annotations, class), who may reach it, and for relays whether UDP and TCP get
    a Service each (clouds whose load balancers take one protocol only)."""
    properties: dict[str, Schema] = {
        "annotations": {
            "type": "object",
            "description": "annotations for the Service(s), e.g. a cloud's load balancer type",
            "additionalProperties": {"type": "string"},
        },
        "loadBalancerClass": _string(
            "load balancer implementation (spec.loadBalancerClass); fixed once the Service "
            "exists: changing it means deleting the Service",
            maxLength=253,
        ),
        "loadBalancerSourceRanges": _cidrs("client ranges the load balancer admits (all if empty)"),
    }
    if split:
        properties["splitProtocols"] = {
            "type": "boolean",
            "description": "one LoadBalancer Service for UDP (-udp) and one for TCP/TLS (-tcp) "
            "instead of one with both protocols",
            "default": False,
        }
        description = "the relays' LoadBalancer Service(s); unused with hostNetwork"
    else:
        properties["type"] = _string(
            "ClusterIP (in-cluster media servers) or LoadBalancer",
            enum=["ClusterIP", "LoadBalancer"],
            default="ClusterIP",
        )
        description = "the gateway's Service"
    schema: Schema = {
        "type": "object",
        "description": description,
        "default": {},
        "properties": properties,
    }
    if not split:
        schema["x-kubernetes-validations"] = [
            {
                "rule": "self.type == 'LoadBalancer' || !(has(self.loadBalancerClass) "
                "|| has(self.loadBalancerSourceRanges))",
                "message": "loadBalancerClass and loadBalancerSourceRanges need type LoadBalancer",
            }
        ]
    return schema


def _conditions() -> Schema:
    return {
        "type": "array",
        "description": "Ready, Progressing and Degraded, each with a reason and a message",
        "items": {
            "type": "object",
            "required": ["type", "status"],
            "properties": {
                "type": {"type": "string"},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "reason": {"type": "string"},
                "message": {"type": "string"},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "observedGeneration": {"type": "integer"},
            },
        },
    }


def _status(extra: dict[str, Schema]) -> Schema:
    # kopf keeps its own progress records under status.kopf: let it.
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": {"type": "integer"},
            "conditions": _conditions(),
            "replicas": {"type": "integer"},
            "readyReplicas": {"type": "integer"},
            "ready": {"type": "string", "description": "ready/desired replicas, for kubectl"},
            "addresses": {"type": "array", "items": {"type": "string"}},
            **extra,
        },
    }


def relay_edge_spec() -> Schema:
    return {
        "type": "object",
        "required": ["location", "publicHostname"],
        "properties": {
            "location": _string(
                "human-readable location, e.g. 'US East Coast (Virginia)'",
                minLength=1,
                maxLength=128,
            ),
            "publicHostname": _string(
                "DNS name clients use for this edge, e.g. ashburn.turn.example.com",
                pattern=_HOSTNAME_PATTERN,
                maxLength=253,
            ),
            "realm": _string("TURN realm; the public hostname when empty", maxLength=253),
            "mode": _string(
                "Deployment (replicas) or DaemonSet (one relay per selected node)",
                enum=["Deployment", "DaemonSet"],
                default="Deployment",
            ),
            "replicas": _integer("relay replicas in Deployment mode", minimum=1, default=2),
            "hostNetwork": {
                "type": "boolean",
                "description": "relays bind the node's addresses directly; no Service is created",
                "default": False,
            },
            "offload": _string(
                "the relay's kernel fast path for ChannelData over UDP, IPv4 and IPv6 "
                "(--offload): auto (the default: used where the namespace's Pod Security level "
                "is privileged and the program loads, else userspace), tc (required) or off. "
                "The fast path runs the relay container as UID 0 with only CAP_BPF and "
                "CAP_NET_ADMIN added; "
                "status.offload says what the relays were given and why",
                enum=["off", "auto", "tc"],
                default="auto",
            ),
            "ports": {
                "type": "object",
                "description": "client-facing listener ports",
                "default": {},
                "properties": {
                    "udp": _port("STUN/TURN over UDP", 3478),
                    "tcp": _port("TURN over TCP", 3478),
                    "tls": {
                        "type": "array",
                        "description": "TURN over TLS ports (used when tlsSecretName is set)",
                        "maxItems": 4,
                        "x-kubernetes-list-type": "set",
                        "default": [443, 5349],
                        "items": _port("TLS port"),
                    },
                },
            },
            "tlsSecretName": _string(
                "kubernetes.io/tls Secret with the certificate for TURN over TLS", maxLength=253
            ),
            "relayPorts": _port_range("UDP ports relayed allocations use", 49152, 65535),
            "addresses": {
                "type": "object",
                "description": (
                    "public addresses of the edge: static CIDRs, or a source to discover them from "
                    "(when both are empty: NodeExternalIP in hostNetwork mode, else LoadBalancer)"
                ),
                "default": {},
                "properties": {
                    "static": _cidrs("published as they are"),
                    "source": _string(
                        "where to discover them", enum=["NodeExternalIP", "LoadBalancer"]
                    ),
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "!(has(self.static) && has(self.source))",
                        "message": "addresses.static and addresses.source are mutually exclusive",
                    }
                ],
            },
            "quotas": _relay_quotas(),
            "peers": {
                "type": "object",
                "description": "extra peer filtering on top of the relay's closed defaults",
                "default": {},
                "properties": {
                    "allow": _cidrs("peer ranges re-opened (allow beats deny)"),
                    "deny": _cidrs("extra denied peer ranges"),
                    "denyClusterNetworks": {
                        "type": "boolean",
                        "description": "deny cluster pod/service CIDRs and node addresses",
                        "default": True,
                    },
                },
            },
            "terminationGracePeriodSeconds": _integer(
                "how long a draining relay may keep serving allocations",
                minimum=0,
                default=3600,
            ),
            "service": _service(split=True),
            **_workload_fields(RELAY_RESOURCES),
        },
        "x-kubernetes-validations": [
            {
                "rule": "!(self.hostNetwork && has(self.addresses.source) "
                "&& self.addresses.source == 'LoadBalancer')",
                "message": "hostNetwork relays have no LoadBalancer: use addresses.source "
                "NodeExternalIP or addresses.static",
            },
            *_listener_rules(),
        ],
    }


def _relay_quotas() -> Schema:
    """The relay's fair share (``turnpike relay --help``): every field optional, the relay's own
    default when absent; 0 turns a limit off, as the relay's flags do."""

    def limit(description: str) -> Schema:
        return _integer(f"{description}; 0 = no limit; the relay's default when absent", minimum=0)

    return {
        "type": "object",
        "description": "fair share of each relay process's ports and file descriptors "
        "(with --workers: of each worker's)",
        "properties": {
            "perUser": limit("allocations per token (TURN REST username)"),
            "perAccount": limit("allocations per account (the username's AccountSid)"),
            "perIP": limit("allocations per client address (IPv6: per /64)"),
            "total": limit("allocations in total"),
            "connectionsPerIP": limit("TCP/TLS connections per client address (IPv6: per /64)"),
            # A whole number: Kubernetes API conventions avoid floating point in specs.
            "reservePercent": _integer(
                "the last PERCENT of relay ports and file descriptors go only to accounts and "
                "addresses holding little; the relay's default when absent",
                minimum=0,
                maximum=99,
            ),
        },
    }


_TLS_ON = "has(self.tlsSecretName) && self.tlsSecretName != ''"


def _in_relay_range(port: str) -> str:
    return f"self.relayPorts.min <= {port} && {port} <= self.relayPorts.max"


def _listener_rules() -> list[Schema]:
    """Listener ports that would make a relay fail to start with "Address already in use"."""
    relay_range = "'relayPorts ' + string(self.relayPorts.min) + '-' + string(self.relayPorts.max)"
    return [
        {
            "rule": f"!({_TLS_ON}) || !(self.ports.tcp in self.ports.tls)",
            "message": "ports.tcp must not also be a TLS port (ports.tls): TURN over TCP and "
            "TURN over TLS need different ports",
            "messageExpression": "'ports.tcp ' + string(self.ports.tcp) + ' is also in ports.tls: "
            "TURN over TCP and TURN over TLS need different ports'",
        },
        *(
            {
                "rule": f"!({_in_relay_range(f'self.ports.{proto}')})",
                "message": f"relayPorts must not include the ports.{proto} listener port",
                "messageExpression": f"{relay_range} + ' include the ports.{proto} listener "
                f"port ' + string(self.ports.{proto}) + ': relayed ports and listener ports must "
                "not overlap'",
            }
            for proto in ("udp", "tcp")
        ),
        {
            "rule": f"!({_TLS_ON}) || !self.ports.tls.exists(p, {_in_relay_range('p')})",
            "message": "relayPorts must not include a ports.tls listener port",
            "messageExpression": f"{relay_range} + ' include a ports.tls listener port: relayed "
            "ports and listener ports must not overlap'",
        },
    ]


def stream_gateway_spec() -> Schema:
    return {
        "type": "object",
        "required": ["edge"],
        "properties": {
            "edge": _string(
                "name of the RelayEdge (same namespace) this gateway belongs to",
                minLength=1,
                maxLength=63,
            ),
            "replicas": _integer("gateway replicas", minimum=1, default=2),
            "port": _port("WebSocket/HTTP listener port", 8080),
            "accountsSecretName": _string(
                "Secret holding the accounts file (key accounts.json)",
                default="turnpike-accounts",
                maxLength=253,
            ),
            "rtpPorts": _port_range("UDP ports for RTP", 20000, 29999),
            "allowedDestinations": _cidrs(
                "private destination ranges the gateway may connect to (closed by default)"
            ),
            "egress": {
                "type": "object",
                "description": (
                    "addresses the gateway's outbound traffic comes from: static CIDRs, or the "
                    "ExternalIP of the nodes its pods run on (the default)"
                ),
                "default": {},
                "properties": {
                    "static": _cidrs("published as they are"),
                    "source": _string("where to discover them", enum=["NodeExternalIP"]),
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "!(has(self.static) && has(self.source))",
                        "message": "egress.static and egress.source are mutually exclusive",
                    }
                ],
            },
            "service": _service(split=False),
            "calls": {
                "type": "object",
                "description": "concurrent calls per gateway pod (the gateway's fair share); "
                "beyond them new calls are refused as the hosted service refuses them",
                "properties": {
                    "max": _integer(
                        "in total; the gateway's default (one per two RTP ports) when absent",
                        minimum=1,
                    ),
                    "perAccount": _integer(
                        "per account; the gateway's default (a tenth of its default total) "
                        "when absent",
                        minimum=1,
                    ),
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "!(has(self.max) && has(self.perAccount)) "
                        "|| self.perAccount <= self.max",
                        "message": "calls.perAccount must not be greater than calls.max",
                    }
                ],
            },
            "hostNetwork": {
                "type": "boolean",
                "description": "gateway pods use their node's network: carriers reach SIP and the "
                "RTP port range at the node's address (a Service cannot carry a port range); at "
                "most one gateway pod per node",
                "default": False,
            },
            "sip": _sip(),
            **_workload_fields(GATEWAY_RESOURCES),
        },
        "x-kubernetes-validations": _gateway_listener_rules(),
    }


GATEWAY_METRICS_PORT = 9642
_SIP_ON = "has(self.sip)"
_SIP_TLS_ON = "(has(self.sip) && has(self.sip.tls))"


def _gateway_listener_rules() -> list[Schema]:
    """Gateway ports that would make every gateway pod fail with "Address already in use": the
    HTTP listener and the SIP port (both TCP) against each other and the metrics port, and the
    SIP port (also UDP) inside the RTP range."""
    metrics = str(GATEWAY_METRICS_PORT)
    return [
        {
            "rule": f"self.port != {metrics}",
            "message": f"port must not be {metrics}, the gateway's metrics port",
        },
        {
            "rule": f"!{_SIP_ON} || self.sip.port != self.port",
            "message": "sip.port must differ from port: the SIP and HTTP listeners both use TCP",
            "messageExpression": "'sip.port ' + string(self.sip.port) + ' is also port: the SIP "
            "and HTTP listeners both use TCP'",
        },
        {
            "rule": f"!{_SIP_ON} || self.sip.port != {metrics}",
            "message": f"sip.port must not be {metrics}, the gateway's metrics port",
        },
        {
            "rule": f"!{_SIP_TLS_ON} || (self.sip.tls.port != self.sip.port "
            f"&& self.sip.tls.port != self.port && self.sip.tls.port != {metrics})",
            "message": f"sip.tls.port must differ from sip.port, port and {metrics} (all TCP)",
            "messageExpression": "'sip.tls.port ' + string(self.sip.tls.port) + ' is already "
            f"taken: sip.port, port and the metrics port {metrics} are TCP listeners too'",
        },
        {
            "rule": "!self.hostNetwork || (self.port >= 1024 && self.rtpPorts.min >= 1024 "
            f"&& (!{_SIP_ON} || self.sip.port >= 1024) "
            f"&& (!{_SIP_TLS_ON} || self.sip.tls.port >= 1024))",
            "message": "with hostNetwork every gateway port (port, rtpPorts, sip.port, "
            "sip.tls.port) must be 1024 or above: the non-root gateway cannot bind lower ports "
            "on the node",
        },
        {
            "rule": f"!{_SIP_ON} || !(self.rtpPorts.min <= self.sip.port "
            "&& self.sip.port <= self.rtpPorts.max)",
            "message": "rtpPorts must not include sip.port: RTP and SIP both use UDP",
            "messageExpression": "'rtpPorts ' + string(self.rtpPorts.min) + '-' + "
            "string(self.rtpPorts.max) + ' include sip.port ' + string(self.sip.port) + ': RTP "
            "and SIP both use UDP'",
        },
    ]


def _sip() -> Schema:
    """Calls from SIP trunks and PBXs: off unless ``spec.sip`` is set."""
    name = {"maxLength": 253, "minLength": 1}
    return {
        "type": "object",
        "description": "answer SIP calls from trunks and PBXs (UDP and TCP on one port)",
        "required": ["numbers"],
        "properties": {
            "port": _port("SIP port, UDP and TCP", 5060),
            "trustedCidrs": _cidrs("signalling ranges whose INVITEs are taken; others get 403"),
            "realm": _string(
                "digest realm: sources outside trustedCidrs may authenticate with the accounts "
                "file's sipCredentials",
                maxLength=128,
            ),
            "announceAddress": _string(
                "public address the gateway puts in SDP and Contact (callers behind the "
                "cluster's NAT or LoadBalancer reach it there); default: the LoadBalancer "
                "Service's ingress IP, else the pod's address",
                maxLength=45,
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": f"self.matches('{IP_REGEX}')",
                            "message": "must be an IP address, such as 203.0.113.7 or 2001:db8::7",
                            "messageExpression": "'\"' + self + '\" is not an IP address, such "
                            "as 203.0.113.7 or 2001:db8::7'",
                        }
                    ]
                },
            ),
            "inviteRate": _integer(
                "new INVITEs a second from one source address, in bursts of five seconds' worth "
                "(503 with Retry-After beyond); 0 = no limit; the gateway's default (10) when "
                "absent",
                minimum=0,
            ),
            "tls": {
                "type": "object",
                "description": "also answer SIP over TLS (SIPS), with this certificate",
                "required": ["secretName"],
                "properties": {
                    "port": _port("SIP over TLS port (TCP)", 5061),
                    "secretName": _string(
                        "kubernetes.io/tls Secret with the certificate (tls.crt, tls.key)",
                        minLength=1,
                        maxLength=253,
                    ),
                },
            },
            "numbers": {
                "type": "object",
                "description": "the numbers file (which account and TwiML answer each number)",
                "properties": {
                    "configMapName": _string("ConfigMap holding it", **name),
                    "secretName": _string("Secret holding it", **name),
                    "key": _string(
                        "key of the file",
                        default="numbers.json",
                        pattern=CONFIG_KEY_PATTERN,
                        **name,
                    ),
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "has(self.configMapName) != has(self.secretName)",
                        "message": "numbers needs exactly one of configMapName and secretName",
                    }
                ],
            },
        },
    }


def _ready_column() -> dict[str, Any]:
    return {"name": "Ready", "type": "string", "jsonPath": ".status.ready"}


def _status_column() -> dict[str, Any]:
    """The Degraded condition's reason: AsExpected, or what is wrong (InvalidSpec, …)."""
    return {
        "name": "Status",
        "type": "string",
        "description": "reason of the Degraded condition: AsExpected, or what is wrong",
        "jsonPath": '.status.conditions[?(@.type=="Degraded")].reason',
    }


def _crd(
    kind: str,
    plural: str,
    short_names: list[str],
    spec: Schema,
    status_extra: dict[str, Schema],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "turnpike"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["turnpike"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *columns,
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": _status(status_extra),
                            },
                        }
                    },
                }
            ],
        },
    }


def relay_edge_crd() -> dict[str, Any]:
    return _crd(
        "RelayEdge",
        "relayedges",
        ["redge", "edge"],
        relay_edge_spec(),
        {
            "hostname": {"type": "string"},
            "keyring": {"type": "string"},
            "offload": {
                "type": "object",
                "description": "the kernel fast path: what spec.offload asked for, what the "
                "relays were rendered with (off where the namespace's Pod Security level "
                "refuses it) and why",
                "properties": {
                    "requested": {"type": "string"},
                    "rendered": {"type": "string"},
                    "reason": {"type": "string"},
                    "relaysInKernel": {
                        "type": "string",
                        "description": "relays running the fast path / relays that answered, "
                        "when the relays were given it",
                    },
                },
            },
            "publication": {
                "type": "object",
                "description": "what the edge publishes (ranges, directory) as of its last "
                "valid spec; kept while a newer spec is invalid",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
        [
            {"name": "Location", "type": "string", "jsonPath": ".spec.location"},
            {"name": "Hostname", "type": "string", "jsonPath": ".spec.publicHostname"},
            _ready_column(),
            _status_column(),
            {"name": "Addresses", "type": "string", "jsonPath": ".status.addresses"},
        ],
    )


def stream_gateway_crd() -> dict[str, Any]:
    return _crd(
        "StreamGateway",
        "streamgateways",
        ["sgw"],
        stream_gateway_spec(),
        {"edge": {"type": "string"}, "location": {"type": "string"}},
        [
            {"name": "Edge", "type": "string", "jsonPath": ".spec.edge"},
            {"name": "Location", "type": "string", "jsonPath": ".status.location"},
            _ready_column(),
            _status_column(),
            {"name": "Addresses", "type": "string", "jsonPath": ".status.addresses"},
        ],
    )


def _peering_crd(scope: str) -> dict[str, Any]:
    """kopf's peering resource: how two operator replicas agree that only one acts."""
    kind = "KopfPeering" if scope == "Namespaced" else "ClusterKopfPeering"
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.kopf.dev",
            "labels": {"app.kubernetes.io/part-of": "turnpike"},
        },
        "spec": {
            "group": "kopf.dev",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD, in the order they are applied."""
    return {
        f"{GROUP}_relayedges.yaml": relay_edge_crd(),
        f"{GROUP}_streamgateways.yaml": stream_gateway_crd(),
        "kopf.dev_kopfpeerings.yaml": _peering_crd("Namespaced"),
        "kopf.dev_clusterkopfpeerings.yaml": _peering_crd("Cluster"),
    }


HEADER = "# Generated by `python -m turnpike.operator.crds`; edit operator/crds.py instead.\n"


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, crd in all_crds().items():
        path = directory / name
        path.write_text(render(crd))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/crds")):
        print(path)
