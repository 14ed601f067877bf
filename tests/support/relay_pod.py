"""The relay pod the operator renders for a RelayEdge, ready to run from the image under test,
and a network namespace shaped like a pod's to run it in (tests/container)."""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import require_tool
from support.container import PodRun, container_named, pod_spec
from support.relay import write_self_signed
from turnpike.operator import labels, relay
from turnpike.operator.model import RelayEdge

SECRET = "north"
KEYRING_SECRET = "turnpike-keyring"
TLS_SECRET = "edge-tls"
OWNER = {
    "apiVersion": "turnpike.io/v1alpha1",
    "kind": "RelayEdge",
    "metadata": {"name": "edge", "namespace": "turnpike", "uid": "u-1"},
}


def relay_ports() -> dict[str, int]:
    low = random.randrange(40000, 48000)
    return {"min": low, "max": low + 199}


def edge_pod(image: str, workdir: Path, **spec: Any) -> PodRun:
    """The relay container of the pod the operator renders for an edge with ``spec``."""
    body = {
        "metadata": {"name": "edge", "namespace": "turnpike", "uid": "u-1"},
        "spec": {
            "location": "Test",
            "publicHostname": "edge.turn.example.com",
            "peers": {"allow": ["127.0.0.0/8"], "denyClusterNetworks": False},
            "quotas": {"perUser": 50},
            "relayPorts": relay_ports(),
            "terminationGracePeriodSeconds": 31,  # a 1 s drain when the test stops the relay
            **spec,
        },
    }
    config, workload, *_ = relay.children(
        RelayEdge.parse(body, image), OWNER, [], None, KEYRING_SECRET
    )
    pod = pod_spec(workload)
    cert, key = write_self_signed(workdir)
    keyring = {"keys": [{"id": "k1", "secret": SECRET, "signing": True}]}
    return PodRun(
        image=image,
        spec=pod,
        container=container_named(pod, "relay"),
        workdir=workdir,
        secrets={
            KEYRING_SECRET: {labels.KEYRING_KEY: json.dumps(keyring)},
            TLS_SECRET: {"tls.crt": cert.read_text(), "tls.key": key.read_text()},
        },
        config_maps={config["metadata"]["name"]: config["data"]},
    )


@dataclass(frozen=True)
class PodNetwork:
    """A network namespace of the test's own: its name (for ``ip netns exec``), its path (for
    ``podman run --network=ns:PATH``) and the pod's address on its eth0."""

    name: str
    path: str
    address: str


@contextlib.contextmanager
def pod_network_namespace() -> Iterator[PodNetwork]:
    """A network namespace of the test's own, shaped like a pod's: loopback plus an interface
    with an address and a default route (a veth pair with both ends inside: nothing reaches
    the host)."""
    ip = require_tool("ip", "apt-get install iproute2")
    name = f"turnpike-test-{secrets.token_hex(4)}"
    address = "10.254.0.2"
    subprocess.run([ip, "netns", "add", name], check=True)
    try:
        for command in (
            "link set lo up",
            "link add eth0 type veth peer name eth1",
            f"addr add {address}/24 dev eth0",
            "link set eth1 up",
            "link set eth0 up",
            "route add default via 10.254.0.1 dev eth0",
        ):
            subprocess.run([ip, "-n", name, *command.split()], check=True)
        yield PodNetwork(name, f"/run/netns/{name}", address)
    finally:
        subprocess.run([ip, "netns", "delete", name], check=True)
