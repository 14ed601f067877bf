"""The relay from the image, in the pod the operator renders for an edge: coturn's client relays
through the container over UDP and TCP; a host-network edge with TLS on 443 starts (where the
former rendering, non-root holding NET_BIND_SERVICE, cannot bind); off the host network the
pod's sysctl opens 443 to the non-root relay."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import time
from pathlib import Path

import pytest
from support import free_dual_port, free_port, require_tool
from support.container import Podman, PodRun, run_pod, wait_ready
from support.relay_pod import SECRET, TLS_SECRET, edge_pod, pod_network_namespace

from turnpike.operator import relay

pytestmark = [pytest.mark.interop, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


async def uclient(server: str, port: int, peer_port: int, *flags: str) -> tuple[int, int]:
    tool = require_tool("turnutils_uclient", "apt-get install coturn")
    proc = await asyncio.create_subprocess_exec(
        tool, *flags, "-W", SECRET, "-u", "alice", "-e", "127.0.0.1", "-r", str(peer_port),
        "-p", str(port), "-m", "2", "-n", "30", "-l", "170", "-z", "5", "-X", "-g", server,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode(errors="replace")
    totals = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", text, re.M)
    assert totals, text
    return int(totals[1]), int(totals[2])


async def relayed(server: str, port: int, *flags: str) -> tuple[int, int]:
    """(sent, received back) by uclient through the relay to a coturn peer on loopback."""
    peer_tool = require_tool("turnutils_peer", "apt-get install coturn")
    peer_port = free_port(socket.SOCK_DGRAM)
    peer = await asyncio.create_subprocess_exec(
        peer_tool, "-L", "127.0.0.1", "-p", str(peer_port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return await uclient(server, port, peer_port, *flags)
    finally:
        peer.terminate()
        await peer.wait()


async def test_coturn_relays_through_the_relay_container_over_udp_and_tcp(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    pod = edge_pod(image, tmp_path)
    port, metrics = free_dual_port(), free_port()
    pod.listen = {3478: f"127.0.0.1:{port}", relay.METRICS_PORT: f"127.0.0.1:{metrics}"}
    assert "--read-only" in pod.security_flags() and "--cap-drop=ALL" in pod.security_flags()
    with run_pod(podman, pod) as running:
        await asyncio.to_thread(wait_ready, running, f"http://127.0.0.1:{metrics}/ready")
        for flags in ([], ["-t"]):
            sent, received = await relayed("127.0.0.1", port, *flags)
            assert sent > 0 and sent == received, (flags, running.output)


def free_loopback_443() -> str:
    """A loopback address whose port 443 is free for TCP (nothing else on the host is touched)."""
    for _ in range(50):
        address = (
            f"127.{random.randrange(1, 255)}.{random.randrange(0, 255)}.{random.randrange(1, 255)}"
        )
        with socket.socket() as s:
            try:
                s.bind((address, 443))
            except OSError:
                continue
            return address
    raise AssertionError("no loopback address with port 443 free")


def host_network_443_pod(image: str, workdir: Path) -> tuple[PodRun, str, int, int]:
    """The pod of a host-network edge with TURN over TLS on 443 (deploy/examples/edge-dublin),
    without the kernel fast path: NET_BIND_SERVICE is then its only capability."""
    pod = edge_pod(
        image,
        workdir,
        mode="DaemonSet",
        hostNetwork=True,
        tlsSecretName=TLS_SECRET,
        ports={"udp": 3478, "tcp": 3478, "tls": [443]},
        offload="off",
    )
    assert pod.spec["hostNetwork"] is True
    address, port, metrics = free_loopback_443(), free_dual_port(), free_port()
    pod.listen = {
        3478: f"127.0.0.1:{port}",
        443: f"{address}:443",
        relay.METRICS_PORT: f"127.0.0.1:{metrics}",
    }
    return pod, address, port, metrics


async def test_host_network_relay_serves_turn_over_tls_on_443(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    pod, address, _, metrics = host_network_443_pod(image, tmp_path)
    flags = pod.security_flags()
    assert "--user=0:65532" in flags and "--cap-add=NET_BIND_SERVICE" in flags
    with run_pod(podman, pod) as running:
        await asyncio.to_thread(wait_ready, running, f"http://127.0.0.1:{metrics}/ready")
        sent, received = await relayed(address, 443, "-t", "-S")
        assert sent > 0 and sent == received, running.output


def test_non_root_with_net_bind_service_cannot_bind_443_on_the_host_network(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    """Why the relay container runs as uid 0 there: the former rendering (the pod's non-root
    user holding NET_BIND_SERVICE) fails to bind, the capability being in the bounding set only."""
    pod, _, _, _ = host_network_443_pod(image, tmp_path)
    security = pod.container["securityContext"]
    del security["runAsUser"]
    security["runAsNonRoot"] = True
    assert security["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    with run_pod(podman, pod) as running:
        assert running.proc.wait(30) != 0
    assert "Permission denied" in running.output, running.output


def test_pod_network_relay_binds_443_through_the_sysctl_as_non_root(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    pod = edge_pod(image, tmp_path, tlsSecretName=TLS_SECRET, ports={"tls": [443]}, offload="off")
    flags = pod.security_flags()
    assert "--sysctl=net.ipv4.ip_unprivileged_port_start=0" in flags
    assert "--user=65532:65532" in flags and not any("--cap-add" in f for f in flags)
    probe = (
        "import socket, urllib.request;"
        f"urllib.request.urlopen('http://127.0.0.1:{relay.METRICS_PORT}/ready', timeout=2);"
        "socket.create_connection(('127.0.0.1', 443), timeout=2).close()"
    )
    with pod_network_namespace() as netns:
        pod.network = f"ns:{netns.path}"  # the wildcard addresses stay: nothing else is in there
        with run_pod(podman, pod) as running:
            deadline = time.monotonic() + 30
            while True:
                assert running.alive(), running.output
                check = podman("exec", running.name, "python3", "-c", probe, check=False)
                if check.returncode == 0:
                    break
                assert time.monotonic() < deadline, check.stderr + running.output
                time.sleep(0.3)
