"""RelayEdge ``offload`` against the namespace's Pod Security level, end to end: the real
operator process against the Kubernetes API.

``auto`` (the default) renders the kernel fast path's capabilities only where the namespace's
``pod-security.kubernetes.io/enforce`` level (else the cluster default the operator is told)
permits them; elsewhere the relays stay restricted in userspace and the status says why. ``tc``
where the level refuses it is an invalid spec. Relabelling a namespace takes effect at once,
through the operator's namespace watch, without touching the edge.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import free_port, turnpike
from support.kube_e2e import (
    Cluster,
    Operator,
    condition,
    delete_namespace,
    edge,
    events_for,
    eventually,
)
from support.netns import require_fast_path
from support.relay import write_keyring

from turnpike.operator import kube as k8s
from turnpike.operator import labels
from turnpike.operator.keyring_secret import HEALTH_PORT_ANNOTATION
from turnpike.operator.pod_security import ENFORCE_LABEL

pytestmark = pytest.mark.e2e

STATIC = {"static": ["192.0.2.10"]}


async def labelled_namespace(kube: k8s.Kube, prefix: str, level: str | None) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    meta: dict[str, Any] = {"name": name}
    if level is not None:
        meta["labels"] = {ENFORCE_LABEL: level}
    await kube.create(k8s.NAMESPACES, None, {"metadata": meta})
    return name


async def relay_of(kube: k8s.Kube, ns: str, name: str) -> tuple[dict[str, Any], str] | None:
    """The relay container's securityContext and its TURNPIKE_OFFLOAD, once both exist."""
    deployment = await kube.get(k8s.DEPLOYMENTS, ns, labels.relay_name(name))
    config = await kube.get(k8s.CONFIGMAPS, ns, labels.relay_name(name))
    if deployment is None or config is None:
        return None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return container["securityContext"], config["data"]["TURNPIKE_OFFLOAD"]


async def offload_status(kube: k8s.Kube, ns: str, name: str) -> dict[str, str]:
    obj = await kube.get(k8s.RELAY_EDGES, ns, name)
    return dict(((obj or {}).get("status") or {}).get("offload") or {})


def fast_path(security: dict[str, Any]) -> bool:
    """The rendering with the fast path: uid 0 holding exactly CAP_BPF and CAP_NET_ADMIN."""
    return security.get("runAsUser") == 0 and security["capabilities"] == {
        "drop": ["ALL"],
        "add": ["BPF", "NET_ADMIN"],
    }


def restricted(security: dict[str, Any]) -> bool:
    return (
        security["runAsNonRoot"] is True
        and "runAsUser" not in security
        and security["capabilities"] == {"drop": ["ALL"]}
    )


async def test_auto_follows_the_namespace_pod_security_level(
    kube: k8s.Kube, operator: Operator
) -> None:
    privileged = await labelled_namespace(kube, "tp", None)
    locked = await labelled_namespace(kube, "tp", "restricted")
    try:
        for ns in (privileged, locked):
            await kube.create(k8s.RELAY_EDGES, ns, edge("east", addresses=STATIC))

        security, mode = await eventually(
            lambda: relay_of(kube, privileged, "east"), what="relay without a label"
        )
        assert fast_path(security) and mode == "auto"
        status = await eventually(lambda: offload_status(kube, privileged, "east"))
        assert (status["requested"], status["rendered"]) == ("auto", "auto")

        security, mode = await eventually(
            lambda: relay_of(kube, locked, "east"), what="relay in a restricted namespace"
        )
        assert restricted(security) and mode == "off"
        status = await eventually(lambda: offload_status(kube, locked, "east"))
        assert (status["requested"], status["rendered"]) == ("auto", "off")
        assert '"restricted"' in status["reason"] and "userspace" in status["reason"]

        async def withheld_event() -> list[dict[str, Any]]:
            return [
                e
                for e in await events_for(kube, locked, "east")
                if e["reason"] == "OffloadWithheld"
            ]

        (event,) = await eventually(withheld_event, what="OffloadWithheld event")
        assert event["type"] == "Normal" and '"restricted"' in event["message"]
        obj = await kube.get(k8s.RELAY_EDGES, locked, "east")
        assert condition(obj, "Degraded")["status"] == "False"

        # The admin opens the namespace: the next resync gives the relays the fast path.
        await kube.patch(
            k8s.NAMESPACES, None, locked, {"metadata": {"labels": {ENFORCE_LABEL: "privileged"}}}
        )

        async def granted() -> bool:
            found = await relay_of(kube, locked, "east")
            return found is not None and fast_path(found[0]) and found[1] == "auto"

        await eventually(granted, what="fast path after relabelling")

        async def granted_event() -> list[dict[str, Any]]:
            found = await events_for(kube, locked, "east")
            return [e for e in found if e["reason"] == "OffloadGranted"]

        (event,) = await eventually(granted_event, what="OffloadGranted event")
        assert '"privileged"' in event["message"]
        # A new edge that gets the fast path as asked posts no Event about it.
        reasons = {e["reason"] for e in await events_for(kube, privileged, "east")}
        assert not reasons & {"OffloadGranted", "OffloadWithheld"}
    finally:
        for ns in (privileged, locked):
            await delete_namespace(kube, ns)


async def test_tc_where_the_level_refuses_it_is_an_invalid_spec(
    kube: k8s.Kube, operator: Operator
) -> None:
    ns = await labelled_namespace(kube, "tp", "baseline")
    try:
        await kube.create(k8s.RELAY_EDGES, ns, edge("west", addresses=STATIC, offload="tc"))

        async def invalid() -> dict[str, Any]:
            obj = await kube.get(k8s.RELAY_EDGES, ns, "west")
            degraded = condition(obj, "Degraded")
            return degraded if degraded.get("reason") == "InvalidSpec" else {}

        degraded = await eventually(invalid, what="InvalidSpec")
        assert "spec.offload: tc" in degraded["message"] and '"baseline"' in degraded["message"]
        assert ENFORCE_LABEL in degraded["message"]
        # No relay that admission would refuse was rolled out.
        assert await kube.get(k8s.DEPLOYMENTS, ns, labels.relay_name("west")) is None

        # An unparsable level is enforced as restricted by admission, and read so here.
        await kube.patch(
            k8s.NAMESPACES, None, ns, {"metadata": {"labels": {ENFORCE_LABEL: "lenient"}}}
        )

        async def says_restricted() -> bool:
            return '"restricted"' in (await invalid()).get("message", "")

        await eventually(says_restricted, what="an unknown level as restricted")

        await kube.patch(
            k8s.NAMESPACES, None, ns, {"metadata": {"labels": {ENFORCE_LABEL: "privileged"}}}
        )

        async def rolled_out() -> bool:
            found = await relay_of(kube, ns, "west")
            return found is not None and fast_path(found[0]) and found[1] == "tc"

        await eventually(rolled_out, what="tc relays after relabelling")
        obj = await kube.get(k8s.RELAY_EDGES, ns, "west")
        assert condition(obj, "Degraded")["status"] == "False"
    finally:
        await delete_namespace(kube, ns)


async def test_the_cluster_default_level_applies_to_unlabelled_namespaces(
    cluster: Cluster, kube: k8s.Kube, tmp_path: Path
) -> None:
    """A cluster whose admission enforces restricted by default (the API does not show it): the
    operator is told with --pod-security-default; a namespace's own label still wins, and a
    label added later takes effect through the namespace watch alone (this operator's resync is
    an hour away)."""
    unlabelled = await labelled_namespace(kube, "psd", None)
    opened = await labelled_namespace(kube, "psd", "privileged")
    process = Operator(
        cluster,
        tmp_path / "operator.log",
        "--standalone",
        "--namespace",
        "psd-*",
        "--pod-security-default",
        "restricted",
        "--resync-interval",
        "3600",
    )
    try:
        process.wait_live()
        for ns in (unlabelled, opened):
            await kube.create(k8s.RELAY_EDGES, ns, edge("north", addresses=STATIC))
        security, mode = await eventually(lambda: relay_of(kube, unlabelled, "north"))
        assert restricted(security) and mode == "off", process.output
        security, mode = await eventually(lambda: relay_of(kube, opened, "north"))
        assert fast_path(security) and mode == "auto", process.output

        await kube.patch(
            k8s.NAMESPACES,
            None,
            unlabelled,
            {"metadata": {"labels": {ENFORCE_LABEL: "privileged"}}},
        )

        async def granted() -> bool:
            found = await relay_of(kube, unlabelled, "north")
            return found is not None and fast_path(found[0]) and found[1] == "auto"

        await eventually(granted, what="fast path after labelling, without a resync")
    finally:
        for ns in (unlabelled, opened):
            await delete_namespace(kube, ns)
        process.stop()


async def relay_pod(kube: k8s.Kube, ns: str, edge_name: str, name: str, health: int) -> None:
    """The Pod object of a relay of ``edge_name`` already running on 127.0.0.1 (a Deployment's
    pod, as the emulator runs none), its health port declared as the rotation reads it."""
    meta = {
        "name": name,
        "labels": labels.relay_labels(edge_name),
        "annotations": {HEALTH_PORT_ANNOTATION: str(health)},
    }
    spec = {"containers": [{"name": "relay", "image": "turnpike"}]}
    await kube.create(k8s.PODS, ns, {"metadata": meta, "spec": spec})
    status = {"phase": "Running", "podIP": "127.0.0.1"}
    await kube.patch(k8s.PODS, ns, name, {"status": status}, sub="status")


@contextlib.asynccontextmanager
async def real_relay(
    tmp_path: Path, offload: str, prefix: Sequence[str] = ()
) -> AsyncIterator[int]:
    """A real relay on loopback; yields its health port."""
    health = free_port()
    keyring = write_keyring(tmp_path / f"keyring-{health}.json")
    args = ["relay", "--listen", "127.0.0.1:0", "--keyring", str(keyring),
            "--metrics", f"127.0.0.1:{health}", "--offload", offload]  # fmt: skip
    async with turnpike(args, ready_url=f"http://127.0.0.1:{health}/ready", prefix=prefix):
        yield health


async def test_status_counts_the_relays_that_run_the_fast_path(
    kube: k8s.Kube, operator: Operator, tmp_path: Path
) -> None:
    """Relays given the fast path say on /ready whether they run it: one whose process lacks
    CAP_BPF (as under a runtime whose seccomp profile refuses bpf(2)) falls back to userspace,
    the edge's status counts it and a Warning says why; one that loads the program counts too."""
    require_fast_path()
    ns = await labelled_namespace(kube, "tp", None)
    try:
        await kube.create(k8s.RELAY_EDGES, ns, edge("south", addresses=STATIC))
        await eventually(lambda: relay_of(kube, ns, "south"), what="relay children")
        # Root holding CAP_NET_ADMIN alone (CAP_SYS_ADMIN would stand in for CAP_BPF).
        without_bpf = ["setpriv", "--bounding-set", "-all,+net_admin", "--inh-caps", "-all", "--"]
        async with real_relay(tmp_path, "auto", without_bpf) as refused:
            await relay_pod(kube, ns, "south", "south-a", refused)

            async def counted(value: str) -> dict[str, str]:
                status = await offload_status(kube, ns, "south")
                return status if status.get("relaysInKernel") == value else {}

            status = await eventually(lambda: counted("0/1"), timeout=60, what="0/1 in kernel")
            assert status["rendered"] == "auto"
            assert "1 of 1 relays could not load it" in status["reason"]

            async def warned() -> list[dict[str, Any]]:
                found = await events_for(kube, ns, "south")
                return [e for e in found if e["reason"] == "OffloadUnavailable"]

            (event,) = await eventually(warned, what="OffloadUnavailable event")
            assert event["type"] == "Warning"

            async with real_relay(tmp_path, "tc") as loaded:
                await relay_pod(kube, ns, "south", "south-b", loaded)
                status = await eventually(lambda: counted("1/2"), timeout=60, what="1/2")
                assert "1 of 2 relays could not load it" in status["reason"]
    finally:
        await delete_namespace(kube, ns)
