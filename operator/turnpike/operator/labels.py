"""Names, labels and owner references of everything the operator creates."""

from __future__ import annotations

from typing import Any

PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
INSTANCE = "app.kubernetes.io/instance"
NAME = "app.kubernetes.io/name"
EDGE = "turnpike.io/edge"
GATEWAY = "turnpike.io/stream-gateway"
CONFIG_HASH = "turnpike.io/config-hash"

MANAGER = "turnpike-operator"
FINALIZER = "turnpike.io/finalizer"
"""The finalizer older versions had kopf put on RelayEdges and StreamGateways (and, earlier, the
keyring Secret); this version puts it on nothing and removes it where it finds it."""
KOPF_DEFAULT_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
MANAGED = {MANAGED_BY: MANAGER}
"""The selector of every child, used to watch them for drift."""

IP_RANGES = "turnpike-ip-ranges"
EDGE_DIRECTORY = "turnpike-edges"
EDGE_DIRECTORY_KEY = "edges.json"
KEYRING_KEY = "keyring.json"


def relay_name(edge: str) -> str:
    return f"turnpike-relay-{edge}"


def gateway_name(gateway: str) -> str:
    return f"turnpike-streamgw-{gateway}"


def relay_selector(edge: str) -> dict[str, str]:
    return {NAME: "turnpike-relay", INSTANCE: edge}


def gateway_selector(gateway: str) -> dict[str, str]:
    return {NAME: "turnpike-streamgw", INSTANCE: gateway}


def relay_labels(edge: str) -> dict[str, str]:
    return {**relay_selector(edge), COMPONENT: "relay", PART_OF: "turnpike", EDGE: edge, **MANAGED}


def gateway_labels(gateway: str, edge: str) -> dict[str, str]:
    return {
        **gateway_selector(gateway),
        COMPONENT: "streamgw",
        PART_OF: "turnpike",
        EDGE: edge,
        GATEWAY: gateway,
        **MANAGED,
    }


def published_labels() -> dict[str, str]:
    return {PART_OF: "turnpike", **MANAGED}


def keyring_labels() -> dict[str, str]:
    return {NAME: "turnpike", COMPONENT: "keyring", **published_labels()}


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
