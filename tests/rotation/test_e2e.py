"""Rotation end to end: the real kopf runner with the rotation handlers, the Kubernetes API
emulator, real `turnpike relay` and `turnpike tokens` processes reading keyring files that a
kubelet stand-in writes from the Secret with per-pod delays, and aioice allocating with the API's
tokens.

Time is real but shrunk: a token lives 3 s, an allocation counts 1 s, a rotation is due 4 s after
the last one, so many rotations pass in well under a minute. The engine is the same one the
simulated-fleet tests drive through days on a fake clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import free_port
from support.kubeapi import KubeAPI
from support.rotation_fleet import (
    Kubelet,
    Member,
    Operator,
    Token,
    add_pod,
    allocate,
    get_token,
    mark_ready,
    relay,
    start_pod,
    token_api,
    wait_for,
)

from turnpike.core.keyring import Keyring
from turnpike.operator import crds
from turnpike.operator.keyring_secret import DATA_KEY
from turnpike.operator.kube import (
    CRDS,
    EVENTS,
    NAMESPACES,
    PEERINGS,
    PODS,
    RELAY_EDGES,
    SECRETS,
    Kube,
)
from turnpike.operator.rotation_state import A_PHASE, A_REVOKE, A_ROTATE_NOW, A_VERSION

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(150)]

SECRET = "turnpike-keyring"
TOKEN_TTL = 3


def settings_env(**overrides: float) -> dict[str, str]:
    values = {
        "ROTATION_INTERVAL": 4.0,
        "MAX_TOKEN_LIFETIME": float(TOKEN_TTL),
        "MAX_ALLOCATION_LIFETIME": 1.0,
        "ROTATION_WAIT_TIMEOUT": 20.0,
        "ROTATION_CHECK_INTERVAL": 0.2,
    }
    values.update({k.upper(): v for k, v in overrides.items()})
    return {f"TURNPIKE_{k}": str(v) for k, v in values.items()}


async def new_namespace(kube: Kube, name: str) -> None:
    await kube.create(NAMESPACES, None, {"metadata": {"name": name}})
    await kube.create(
        RELAY_EDGES,
        name,
        {
            "metadata": {"name": "east"},
            "spec": {"location": "US East Coast (Virginia)", "publicHostname": "east.example.org"},
        },
    )


async def secret(kube: Kube, ns: str) -> tuple[Keyring, dict[str, str]]:
    obj = await kube.get(SECRETS, ns, SECRET)
    assert obj is not None
    ring = Keyring.parse(base64.b64decode(obj["data"][DATA_KEY]))
    return ring, dict(obj["metadata"].get("annotations") or {})


@dataclass
class Checker:
    """Issues a token every round and allocates with every live token on every relay."""

    tokens_api: str
    relays: list[Member]
    tokens: list[Token] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    allocations: int = 0
    inconclusive: int = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                self.tokens.append(await get_token(session, self.tokens_api, TOKEN_TTL))
                now = time.time()
                # Until just before expiry: the relay refuses a token once its second has passed.
                live = [t for t in self.tokens if now < t.expiry - 0.3]
                pairs = [(r, t) for t in live for r in self.relays]
                results = await asyncio.gather(*(allocate(r.turn, t) for r, t in pairs))  # type: ignore[arg-type]
                done = time.time()
                for (member, tok), error in zip(pairs, results, strict=True):
                    self.allocations += 1
                    if error is None:
                        continue
                    if done > tok.expiry or not error.startswith("refused"):
                        # On a busy machine the attempt outlasted the token (expiry, not
                        # rotation, may be why) or timed out: only a relay refusing a token
                        # that was surely still valid counts as broken.
                        self.inconclusive += 1
                        continue
                    age = done - tok.issued
                    self.failures.append(f"{member.name}: token {age:.1f}s old: {error}")
                await asyncio.sleep(0.1)


async def test_rotations_never_break_a_live_token_even_when_the_operator_is_killed(
    api: KubeAPI, kube: Kube, tmp_path: Path
) -> None:
    ns = "rotation-main"
    await new_namespace(kube, ns)
    operator = Operator(api.write_kubeconfig(tmp_path / "kubeconfig"), ns, settings_env())
    await operator.start()
    try:
        async with Kubelet(kube, ns, SECRET) as kubelet:
            await kubelet.wait_synced()  # the operator made the Secret when it saw the edge
            delays = {"relay-0": 0.1, "relay-1": 0.5, "relay-2": 1.0, "tokens-0": 0.3}
            # As in a cluster, each Pod exists (started, not Ready) before its process reads the
            # keyring, so a rotation that comes due while the fleet starts waits for it.
            health = {n: free_port() for n in delays}
            for name, port in health.items():
                await start_pod(kube, ns, SECRET, name, port, labelled=name.startswith("tokens"))
            vols = {n: kubelet.volume(tmp_path / n, d) for n, d in delays.items()}
            async with (
                relay("relay-0", vols["relay-0"], health["relay-0"]) as r0,
                relay("relay-1", vols["relay-1"], health["relay-1"]) as r1,
                relay("relay-2", vols["relay-2"], health["relay-2"]) as r2,
                token_api("tokens-0", vols["tokens-0"], tmp_path, health["tokens-0"]) as tokens,
            ):
                for member in (r0, r1, r2, tokens):
                    await mark_ready(kube, ns, member.name)
                # A pod that mounts some other Secret is none of the rotation's business.
                await kube.create(
                    PODS,
                    ns,
                    {
                        "metadata": {"name": "bystander"},
                        "spec": {
                            "containers": [{"name": "c", "image": "x"}],
                            "volumes": [{"name": "v", "secret": {"secretName": "other"}}],
                        },
                    },
                )
                ready = {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
                await kube.patch(PODS, ns, "bystander", {"status": ready}, sub="status")
                assert tokens.api is not None
                checker = Checker(tokens.api, [r0, r1, r2])
                task = asyncio.create_task(checker.run())
                try:
                    steps = await rotate_and_kill(kube, ns, operator)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                assert not checker.failures, "\n".join(checker.failures[:20])
                assert checker.allocations > 100
                assert checker.inconclusive < checker.allocations / 20
                assert len(checker.tokens) > 30
                assert steps["promoted"] >= 5 and steps["removed"] >= 3, steps
                assert operator.starts >= 5
                await check_visibility(kube, ns)
                await check_revoke(kube, ns, [r0, r1, r2], tokens)
    finally:
        await operator.stop()


async def rotate_and_kill(kube: Kube, ns: str, operator: Operator) -> dict[str, int]:
    """Watch the Secret; the first time each kind of step happens, SIGKILL the operator right
    after it and start a new one. Returns how many of each step were seen."""
    steps = {"added": 0, "promoted": 0, "rotated": 0, "removed": 0}
    killed: set[str] = set()
    ring, ann = await secret(kube, ns)
    deadline = time.monotonic() + 100
    while steps["promoted"] < 6 or steps["removed"] < 4:
        assert time.monotonic() < deadline, f"rotation stalled: {steps}\n{operator.log[-3000:]}"
        await asyncio.sleep(0.05)
        new_ring, new_ann = await secret(kube, ns)
        seen = []
        before, after = ann.get(A_PHASE), new_ann.get(A_PHASE)
        if (before, after) == ("stable", "adding"):
            seen.append("added")
        if (before, after) == ("adding", "switching"):
            seen.append("promoted")
        if (before, after) == ("switching", "stable"):
            seen.append("rotated")
        if set(ring.ids) - set(new_ring.ids):
            seen.append("removed")
        ring, ann = new_ring, new_ann
        for step in seen:
            steps[step] += 1
            if step not in killed:
                killed.add(step)
                await operator.kill()
                await operator.start()
    return steps


async def check_visibility(kube: Kube, ns: str) -> None:
    ring, ann = await secret(kube, ns)

    async def edge_caught_up() -> Any:
        edge = await kube.get(RELAY_EDGES, ns, "east")
        status = (edge or {}).get("status") or {}
        if status.get("keyringVersion", 0) >= int(ann[A_VERSION]) - 2:
            return status
        return None

    status = await wait_for(edge_caught_up, "RelayEdge status to show the keyring version")
    assert status["lastKeyRotation"].endswith("Z")
    assert status["keyringSigningKey"] in ring.ids or status["keyringVersion"] < int(ann[A_VERSION])
    events = await kube.list(EVENTS, ns)
    reasons = {e["reason"] for e in events if e["involvedObject"]["kind"] == "Secret"}
    assert {"KeyAdded", "KeyPromoted", "KeyRotated", "KeyRemoved"} <= reasons, reasons


async def check_revoke(kube: Kube, ns: str, relays: list[Member], tokens: Member) -> None:
    assert tokens.api is not None
    async with aiohttp.ClientSession() as session:
        await wait_for(
            lambda: phase_is(kube, ns, "stable"), "a stable keyring before revoking", timeout=20
        )
        ring, _ = await secret(kube, ns)
        compromised = ring.signing_key.id
        await wait_for(
            lambda: signs_with(tokens, compromised), "the token API to sign with the key"
        )
        long_lived = await get_token(session, tokens.api, 120)
        for r in relays:
            assert await allocate(r.turn, long_lived) is None  # type: ignore[arg-type]

        patch = {"metadata": {"annotations": {A_REVOKE: compromised}}}
        await kube.patch(SECRETS, ns, SECRET, patch)

        async def dropped_everywhere() -> bool:
            reports = [await m.ready() for m in (*relays, tokens)]
            return all(compromised not in r["keys"] for r in reports)

        await wait_for(dropped_everywhere, "every pod to drop the revoked key", timeout=20)
        _, ann = await secret(kube, ns)
        assert A_REVOKE not in ann
        for r in relays:
            assert await allocate(r.turn, long_lived) == "refused (401, 'Unauthorized')", r.name  # type: ignore[arg-type]
        fresh = await get_token(session, tokens.api, TOKEN_TTL)
        for r in relays:
            assert await allocate(r.turn, fresh) is None  # type: ignore[arg-type]


async def phase_is(kube: Kube, ns: str, phase: str) -> bool:
    obj = await kube.get(SECRETS, ns, SECRET)
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(A_PHASE) == phase)


async def signs_with(member: Member, key: str) -> bool:
    return (await member.ready()).get("signing") == key


async def test_a_relay_that_never_loads_the_new_key_blocks_promotion(
    api: KubeAPI, kube: Kube, tmp_path: Path
) -> None:
    ns = "rotation-blocked"
    await new_namespace(kube, ns)
    env = settings_env(rotation_interval=3600.0, rotation_wait_timeout=1.5)
    operator = Operator(api.write_kubeconfig(tmp_path / "kubeconfig"), ns, env)
    await operator.start()
    try:
        async with Kubelet(kube, ns, SECRET) as kubelet:
            await kubelet.wait_synced()
            vols = {n: kubelet.volume(tmp_path / n, 0.1) for n in ("relay-0", "relay-1", "tok")}
            async with (
                relay("relay-0", vols["relay-0"]) as r0,
                relay("relay-1", vols["relay-1"]) as r1,
                token_api("tokens-0", vols["tok"], tmp_path) as tokens,
            ):
                for member in (r0, r1):
                    await add_pod(kube, ns, SECRET, member)
                await add_pod(kube, ns, SECRET, tokens, labelled=True)
                await blocked_then_released(kube, ns, [r0, r1], tokens, vols["relay-1"])
    finally:
        await operator.stop()


async def blocked_then_released(
    kube: Kube, ns: str, relays: list[Member], tokens: Member, stuck: Any, hold: float = 1.0
) -> None:
    assert tokens.api is not None
    before, _ = await secret(kube, ns)
    stuck.stuck = True  # relay-1's node stops syncing the volume
    await kube.patch(SECRETS, ns, SECRET, {"metadata": {"annotations": {A_ROTATE_NOW: "true"}}})

    async def degraded() -> Any:
        edge = await kube.get(RELAY_EDGES, ns, "east")
        for cond in ((edge or {}).get("status") or {}).get("conditions") or []:
            if cond["type"] == "Degraded" and cond["status"] == "True":
                return cond
        return None

    cond = await wait_for(degraded, "the Degraded condition", timeout=30)
    assert cond["reason"] == "KeyRotationBlocked"
    assert "relay-1" in cond["message"] and "relay-0" not in cond["message"]
    warnings = [
        e
        for e in await kube.list(EVENTS, ns)
        if e["reason"] == "KeyRotationBlocked" and e["type"] == "Warning"
    ]
    assert {e["involvedObject"]["kind"] for e in warnings} == {"Secret", "RelayEdge"}
    # Held where it is: the old key still signs, and the token API's tokens still work everywhere;
    # the condition stays (nothing else writing the edge's status flips it back).
    until = time.monotonic() + hold
    while time.monotonic() < until:
        assert await degraded() is not None, "the Degraded condition did not stay"
        await asyncio.sleep(0.05)
    ring, ann = await secret(kube, ns)
    assert ann[A_PHASE] == "adding" and ring.signing_key.id == before.signing_key.id
    async with aiohttp.ClientSession() as session:
        tok = await get_token(session, tokens.api, TOKEN_TTL)
        for r in relays:
            assert await allocate(r.turn, tok) is None  # type: ignore[arg-type]

    stuck.stuck = False  # the node catches up: the rotation goes on by itself
    await wait_for(lambda: phase_is(kube, ns, "stable"), "the rotation to finish", timeout=30)
    ring, _ = await secret(kube, ns)
    assert ring.signing_key.id != before.signing_key.id

    async def recovered() -> bool:
        edge = await kube.get(RELAY_EDGES, ns, "east")
        conds = ((edge or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Degraded" and c["status"] == "False" for c in conds)

    await wait_for(recovered, "Degraded to clear", timeout=10)


async def test_with_two_replicas_only_the_active_one_rotates(
    api: KubeAPI, kube: Kube, tmp_path: Path
) -> None:
    ns = "rotation-peers"
    with contextlib.suppress(Exception):
        await kube.create(CRDS, None, crds.all_crds()["kopf.dev_kopfpeerings.yaml"])
    await new_namespace(kube, ns)
    await kube.create(PEERINGS, ns, {"metadata": {"name": "rotation-peers"}})
    # No pods hold the keyring here, so every step goes as fast as the checks come.
    env = settings_env(rotation_interval=1.0, max_token_lifetime=1.0, max_allocation_lifetime=0.5)
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")

    def replica(priority: int) -> Operator:
        peering = ("--verbose", "--peering", "rotation-peers", "--priority", str(priority))
        return Operator(kubeconfig, ns, env, peering=peering)

    high, low = replica(200), replica(100)
    await high.start()
    try:
        await wait_for(lambda: phase_is(kube, ns, "stable"), "the first replica's keyring")
        await low.start()
        # A replica that finds a higher-priority peer already there starts paused (kopf logs the
        # paused watch at debug level, and logs "Pausing operations" only for a running one).
        await wait_for(
            lambda: (
                "Keep-alive in 'rotation-peers'" in low.output
                and "Pausing the watch-stream for secrets.v1" in low.output
            ),
            "the low replica to join the peering, paused",
        )
        _, ann = await secret(kube, ns)
        start = int(ann[A_VERSION])

        async def advanced_by(n: int) -> bool:
            _, ann = await secret(kube, ns)
            return int(ann[A_VERSION]) >= start + n

        await wait_for(lambda: advanced_by(6), "rotations by the active replica", timeout=30)
        assert "signs new credentials" in high.output
        assert "added key" not in low.output and "signs new credentials" not in low.output

        await high.stop()  # a graceful exit hands over at once
        await wait_for(
            lambda: "Resuming operations after the pause" in low.output,
            "the other replica to take over",
            timeout=30,
        )
        _, ann = await secret(kube, ns)
        start = int(ann[A_VERSION])
        await wait_for(lambda: advanced_by(4), "rotations by the new active replica", timeout=30)
        assert "signs new credentials" in low.output
    finally:
        await high.stop()
        await low.stop()


async def test_a_running_replica_stops_rotating_when_a_higher_one_joins(
    api: KubeAPI, kube: Kube, tmp_path: Path
) -> None:
    # Rotation is a task of the operator, not a kopf daemon: kopf's pause does not stop it, so
    # it must read the peering itself and leave the ticks to the replica of higher priority.
    ns = "rotation-handover"
    with contextlib.suppress(Exception):
        await kube.create(CRDS, None, crds.all_crds()["kopf.dev_kopfpeerings.yaml"])
    await new_namespace(kube, ns)
    await kube.create(PEERINGS, ns, {"metadata": {"name": "rotation-handover"}})
    env = settings_env(rotation_interval=1.0, max_token_lifetime=1.0, max_allocation_lifetime=0.5)
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")

    def replica(priority: int) -> Operator:
        peering = ("--verbose", "--peering", "rotation-handover", "--priority", str(priority))
        return Operator(kubeconfig, ns, env, peering=peering)

    low, high = replica(100), replica(200)
    await low.start()
    try:
        await wait_for(lambda: phase_is(kube, ns, "stable"), "the first replica's keyring")
        await wait_for(
            lambda: "signs new credentials" in low.output, "rotations by the first", timeout=30
        )
        await high.start()
        await wait_for(
            lambda: "Pausing operations in favour of" in low.output,
            "the first replica pausing for the second",
            timeout=30,
        )

        async def advanced_by(start: int, n: int) -> bool:
            _, ann = await secret(kube, ns)
            return int(ann[A_VERSION]) >= start + n

        # A tick already under way when the pause came may still finish: start counting after
        # the next rotation step.
        _, ann = await secret(kube, ns)
        await wait_for(lambda: advanced_by(int(ann[A_VERSION]), 1), "a step after the pause")
        mark = len(low.output)
        _, ann = await secret(kube, ns)
        start = int(ann[A_VERSION])
        await wait_for(lambda: advanced_by(start, 6), "rotations by the second", timeout=30)
        assert "signs new credentials" in high.output
        assert "signs new credentials" not in low.output[mark:]
    finally:
        await high.stop()
        await low.stop()


async def test_a_deleted_keyring_secret_comes_back_while_the_namespace_has_edges(
    api: KubeAPI, kube: Kube, tmp_path: Path
) -> None:
    ns = "rotation-recreate"
    await new_namespace(kube, ns)
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    operator = Operator(kubeconfig, ns, settings_env(rotation_interval=3600.0))
    await operator.start()
    try:
        await wait_for(lambda: phase_is(kube, ns, "stable"), "the first keyring")
        first, _ = await secret(kube, ns)
        first_uid = (await kube.get(SECRETS, ns, SECRET) or {})["metadata"]["uid"]
        await kube.delete(SECRETS, ns, SECRET)

        async def recreated() -> bool:
            obj = await kube.get(SECRETS, ns, SECRET)
            return obj is not None and obj["metadata"]["uid"] != first_uid

        await wait_for(recreated, "the keyring to be recreated")
        second, _ = await secret(kube, ns)
        assert second.ids != first.ids  # a fresh key: the old ones went with the Secret
        assert "was deleted; recreating it" in operator.output
        # Without edges nothing needs the keyring: a deleted Secret stays deleted.
        await kube.delete(RELAY_EDGES, ns, "east")
        await wait_for(
            lambda: _gone(kube, RELAY_EDGES, ns, "east"), "the edge to be deleted", timeout=15
        )
        await kube.delete(SECRETS, ns, SECRET)
        await wait_for(lambda: _gone(kube, SECRETS, ns, SECRET), "the Secret to be deleted")
        await asyncio.sleep(1.0)  # several check intervals: nothing may recreate it
        assert await kube.get(SECRETS, ns, SECRET) is None
    finally:
        await operator.stop()


async def _gone(kube: Kube, res: Any, ns: str, name: str) -> bool:
    return await kube.get(res, ns, name) is None
