"""The relay's kernel fast path from the image, in the pod the operator renders for an edge with
``offload: auto``: exactly CAP_BPF and CAP_NET_ADMIN are enough, and each of them is needed.

Each pod runs in a network namespace shaped like a pod's that the test makes (the relay attaches
its program to every interface of its namespace; the host's are never touched), with coturn's
``turnutils_uclient`` and ``turnutils_peer`` inside that namespace too.

The pods run under RuntimeDefault as two generations of Kubernetes runtimes define it for bpf(2)
(`bpf_seccomp_profile`, derived from Podman's own profile): allowed with CAP_BPF (containerd
1.6.9 and 1.7 on, CRI-O 1.31 on), or only with CAP_SYS_ADMIN (the runtimes before them, and the
Podman 4.3 these tests run on). Under the older one the fast path cannot load with the rendered
capabilities; the relay says so in its one line and relays in userspace.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import require_tool
from support.container import Podman, PodRun, Running, bpf_seccomp_profile, run_pod
from support.netns import Topology
from support.relay_pod import SECRET, PodNetwork, edge_pod, pod_network_namespace

from turnpike.operator import relay

pytestmark = [pytest.mark.interop, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

CAPABILITY_BITS = {"NET_ADMIN": 12, "BPF": 39}  # <linux/capability.h>
PEER_PORT = 3480  # in the test's own namespace: nothing else is there


def offload_pod(image: str, workdir: Path, offload: str) -> PodRun:
    """The rendered relay pod of an edge asking for the fast path (given explicitly: the
    default may change), whose peers are on the pod's own network."""
    workdir.mkdir(parents=True, exist_ok=True)
    return edge_pod(
        image,
        workdir,
        offload=offload,
        peers={"allow": ["10.254.0.0/24"], "denyClusterNetworks": False},
    )


@contextlib.contextmanager
def run_in(podman: Podman, pod: PodRun, netns: PodNetwork) -> Iterator[Running]:
    pod.network = f"ns:{netns.path}"  # the wildcard addresses stay: nothing else is in there
    with run_pod(podman, pod) as running:
        yield running


def http_get(netns: PodNetwork, path: str) -> str:
    """GET on the relay's metrics port, from inside the pod's namespace."""
    url = f"http://127.0.0.1:{relay.METRICS_PORT}{path}"
    with Topology.inside(netns.name), urllib.request.urlopen(url, timeout=2) as resp:
        return str(resp.read().decode())


def wait_ready(running: Running, netns: PodNetwork, timeout: float = 30) -> dict[str, Any]:
    """The relay's /ready answer once it is ready (the container must stay up)."""
    deadline = time.monotonic() + timeout
    while True:
        assert running.alive(), f"the container exited:\n{running.output}"
        try:
            return dict(json.loads(http_get(netns, "/ready")))
        except OSError:
            assert time.monotonic() < deadline, f"not ready in {timeout}s:\n{running.output}"
            time.sleep(0.2)


def metrics(netns: PodNetwork) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(http_get(netns, "/metrics"))
        for s in family.samples
    }


def sample(values: dict[Any, float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_bound(netns: PodNetwork, port: int, timeout: float = 10) -> None:
    """Until something holds UDP ``port`` on the pod's address (the peer has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Topology.inside(netns.name), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((netns.address, port))
            except OSError:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing bound UDP port {port} in {timeout}s")


def relay_through(netns: PodNetwork) -> tuple[int, int]:
    """(sent, echoed back) by coturn's client, which relays ChannelData (its default mode) from
    inside the pod's namespace to the relay at the pod's address, to a coturn peer there."""
    ip = require_tool("ip", "apt-get install iproute2")
    uclient = require_tool("turnutils_uclient", "apt-get install coturn")
    peer_tool = require_tool("turnutils_peer", "apt-get install coturn")
    inside = [ip, "netns", "exec", netns.name]
    peer = subprocess.Popen(
        [*inside, peer_tool, "-L", netns.address, "-p", str(PEER_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_bound(netns, PEER_PORT)
        proc = subprocess.run(
            [*inside, uclient, "-W", SECRET, "-u", "alice", "-e", netns.address,
             "-r", str(PEER_PORT), "-m", "2", "-n", "30", "-l", "172", "-z", "5", "-X",
             "-g", netns.address],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        peer.terminate()
        peer.wait(10)
    text = proc.stdout + proc.stderr
    totals = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", text, re.M)
    assert totals, text
    return int(totals[1]), int(totals[2])


def process_status(podman: Podman, running: Running) -> dict[str, str]:
    """/proc/1/status of the container (the relay: the entrypoint execs it as pid 1)."""
    read = "print(open('/proc/1/status').read(), end='')"
    text = podman("exec", running.name, "python3", "-c", read).stdout
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


def capabilities(mask: str) -> set[str]:
    """Capability names in a /proc status mask; unnamed bits as their numbers."""
    value = int(mask, 16)
    named = {name for name, bit in CAPABILITY_BITS.items() if value >> bit & 1}
    rest = value & ~sum(1 << bit for bit in CAPABILITY_BITS.values())
    return named | {str(bit) for bit in range(64) if rest >> bit & 1}


def interfaces(netns: PodNetwork) -> int:
    ip = require_tool("ip", "apt-get install iproute2")
    links = subprocess.run([ip, "-n", netns.name, "-o", "link", "show"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    return len(links.splitlines())


def fast_path_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "kernel fast path" in line]


def test_auto_relays_channel_data_in_the_kernel_with_bpf_and_net_admin_alone(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    pod = offload_pod(image, tmp_path, "auto")
    flags = pod.security_flags()
    assert [f for f in flags if f.startswith("--cap-")] == [
        "--cap-drop=ALL", "--cap-add=BPF", "--cap-add=NET_ADMIN"
    ]  # fmt: skip
    users = [f for f in flags if f.startswith("--user=")]
    assert len(users) == 1 and users[0].startswith("--user=0:"), users
    assert "--read-only" in flags and "--security-opt=no-new-privileges" in flags
    pod.seccomp_profile = bpf_seccomp_profile(podman, tmp_path, cap_bpf=True)
    with pod_network_namespace() as netns, run_in(podman, pod, netns) as running:
        ready = wait_ready(running, netns)
        status = process_status(podman, running)
        before = metrics(netns)
        sent, received = relay_through(netns)
        after = metrics(netns)
        attached = interfaces(netns)
    # The relay held exactly the two capabilities, could not gain more, under seccomp.
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert capabilities(status[field]) == {"BPF", "NET_ADMIN"}, (field, status)
    assert capabilities(status["CapAmb"]) == set(), status
    assert status["Uid"].split()[:2] == ["0", "0"] and status["NoNewPrivs"] == "1", status
    assert status["Seccomp"] == "2", status
    assert ready["offload"] == "tc", ready
    assert sample(before, "turnpike_relay_offload_active") == 1
    assert sample(before, "turnpike_relay_offload_interfaces") == attached > 0
    lines = fast_path_lines(running.output)
    assert len(lines) == 1 and "kernel fast path on" in lines[0], running.output
    assert sent > 0 and sent == received, running.output
    # Every relayed packet is counted once, and the kernel relayed them.
    for direction, count in (("to_peer", sent), ("to_client", received)):
        total = sample(after, "turnpike_relay_packets_total", direction=direction)
        kernel = sample(after, "turnpike_relay_offload_packets_total", direction=direction)
        assert total == count and kernel == count, (direction, count, total, kernel)


# The pod as rendered but for one thing: (capabilities added, bpf(2) allowed with CAP_BPF by
# the runtime's profile, what the relay's line says).
SHORT = {
    "without CAP_BPF": (["NET_ADMIN"], True, "lacks CAP_BPF"),
    "without CAP_NET_ADMIN": (["BPF"], True, "lacks CAP_NET_ADMIN"),
    "under an older runtime's profile": (["BPF", "NET_ADMIN"], False, "seccomp filter refused"),
}


@pytest.mark.parametrize("case", list(SHORT))
def test_one_thing_short_auto_relays_in_userspace_and_tc_refuses_to_start(
    podman: Podman, image: str, tmp_path: Path, case: str
) -> None:
    add, cap_bpf, reason = SHORT[case]
    profile = bpf_seccomp_profile(podman, tmp_path, cap_bpf=cap_bpf)
    pods = {mode: offload_pod(image, tmp_path / mode, mode) for mode in ("auto", "tc")}
    for pod in pods.values():
        pod.container["securityContext"]["capabilities"]["add"] = add
        pod.seccomp_profile = profile
        assert [f for f in pod.security_flags() if f.startswith("--cap-add")] == [
            f"--cap-add={cap}" for cap in add
        ]
    with pod_network_namespace() as netns:
        with run_in(podman, pods["auto"], netns) as running:
            ready = wait_ready(running, netns)
            sent, received = relay_through(netns)
            values = metrics(netns)
            output = running.output
        with run_in(podman, pods["tc"], netns) as refused:
            code = refused.proc.wait(60)
            refusal = refused.output
    assert ready["offload"] == "off", ready
    assert sample(values, "turnpike_relay_offload_active") == 0
    assert sample(values, "turnpike_relay_offload_interfaces") == 0
    assert sent > 0 and sent == received, output
    for direction, count in (("to_peer", sent), ("to_client", received)):
        assert sample(values, "turnpike_relay_packets_total", direction=direction) == count
        assert sample(values, "turnpike_relay_offload_packets_total", direction=direction) == 0
    lines = fast_path_lines(output)
    assert len(lines) == 1, output
    assert "unavailable" in lines[0] and "userspace" in lines[0] and reason in lines[0], lines
    assert code != 0, refusal
    assert "--offload tc" in refusal and reason in refusal and "Traceback" not in refusal, refusal
