"""Days of rotations in about a second: the real engine, a simulated fleet, a clock the test moves.

The invariant checked at every simulated instant is the issue's promise: a credential signed at
time t by any token pod with the key it had loaded is accepted by every relay until t plus the
longest token lifetime plus the longest allocation lifetime.
"""

from __future__ import annotations

import pytest
from support.rotation_sim import Crash, FakeClock, SimCluster, dump

from turnpike.operator.rotation import Rotator
from turnpike.operator.rotation_settings import RotationSettings
from turnpike.operator.rotation_state import (
    A_PHASE,
    A_REVOKE,
    A_ROTATE_NOW,
)

NS = "edge-ns"
DAY = 86400.0


class Fleet:
    def __init__(self, settings: RotationSettings, delays: dict[str, float]) -> None:
        self.clock = FakeClock()
        self.cluster = SimCluster(self.clock)
        self.settings = settings
        self.rotator = Rotator(self.cluster, settings, self.clock)
        self.last_signed: dict[str, float] = {}
        self.signers: list[str] = []
        self.removed: set[str] = set()
        self.crashes = 0
        self.delays = delays
        self._next_tick = self.clock.now

    async def start(self) -> None:
        assert await self.rotator.ensure(NS)
        assert not await self.rotator.ensure(NS)  # idempotent
        for name, delay in self.delays.items():
            self.cluster.add_pod(name, delay, relay=name.startswith("relay"))

    def check(self) -> None:
        now = self.clock.now
        ring = self.cluster.keyring
        if not self.signers or self.signers[-1] != ring.signing_key.id:
            self.signers.append(ring.signing_key.id)
        self.removed |= set(self.signers) - set(ring.ids)
        for pod in self.cluster.pods:
            if not pod.relay and not pod.stuck:
                self.last_signed[pod.loaded.signing_key.id] = now
        horizon = self.settings.retire_after
        for kid, signed in self.last_signed.items():
            if now > signed + horizon:
                continue
            for relay in self.cluster.pods:
                if relay.relay and not relay.stuck:
                    assert kid in relay.loaded.ids, (
                        f"t+{now - signed:.0f}s after key {kid} last signed, relay {relay.name} "
                        f"refuses it\n{dump(self.cluster)}"
                    )

    async def run(self, seconds: float, step: float = 5.0) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.cluster.advance(self.clock.now + step)
            self.check()
            if self.clock.now >= self._next_tick:
                self._next_tick += self.settings.check_interval
                try:
                    await self.rotator.tick(NS)
                except Crash:
                    # A new operator process: nothing survives but the Secret.
                    self.crashes += 1
                    self.rotator = Rotator(self.cluster, self.settings, self.clock)
                self.check()

    def reasons(self, reason: str) -> int:
        return sum(1 for e in self.cluster.events if e.reason == reason)


DELAYS = {"relay-a": 5.0, "relay-b": 65.0, "relay-c": 110.0, "tokens-a": 20.0, "tokens-b": 90.0}


@pytest.mark.parametrize(
    ("settings", "days", "at_least"),
    [
        (RotationSettings(check_interval=30.0), 5, 4),
        (
            RotationSettings(
                interval=3600.0,
                max_token_lifetime=2 * 3600.0,
                max_allocation_lifetime=1800.0,
                wait_timeout=600.0,
                check_interval=15.0,
            ),
            2,
            40,
        ),
    ],
    ids=["defaults-5-days", "hourly-2-days"],
)
async def test_days_of_rotations_never_break_a_live_token(
    settings: RotationSettings, days: int, at_least: int
) -> None:
    fleet = Fleet(settings, DELAYS)
    await fleet.start()
    first = fleet.cluster.keyring.signing_key.id
    await fleet.run(days * DAY)
    promoted = fleet.reasons("KeyPromoted")
    assert promoted >= at_least, dump(fleet.cluster)
    assert fleet.reasons("KeyRotated") >= promoted - 1
    assert fleet.reasons("KeyRemoved") >= promoted - 3
    assert fleet.reasons("KeyRotationBlocked") == 0
    ring = fleet.cluster.keyring
    assert first not in ring.ids
    # Retired keys go: the keyring holds what the retirement period needs, not every key ever made.
    bound = settings.retire_after / settings.interval + 3
    assert len(ring.keys) <= bound, dump(fleet.cluster)
    annotations = fleet.cluster.annotations
    assert int(annotations["rotation.turnpike.io/version"]) > 2 * promoted
    assert fleet.cluster.summary is not None
    assert fleet.cluster.summary.signing == ring.signing_key.id
    assert fleet.cluster.summary.last_rotation is not None


async def test_operator_killed_before_and_after_every_write_still_rotates_safely() -> None:
    settings = RotationSettings(
        interval=3600.0,
        max_token_lifetime=2 * 3600.0,
        max_allocation_lifetime=600.0,
        check_interval=15.0,
    )
    fleet = Fleet(settings, DELAYS)
    await fleet.start()
    # Die right after every odd write and right before every fourth: each phase change is hit
    # both ways, many times over.
    fleet.cluster.crash_after_write_at = set(range(1, 2000, 2))
    fleet.cluster.crash_before_write_at = set(range(4, 2000, 4))
    await fleet.run(DAY)
    assert fleet.crashes > 50
    # Events of a step whose operator died just after writing are lost; the Secret is not.
    assert len(fleet.signers) >= 19, dump(fleet.cluster)
    assert len(fleet.removed) >= 15


async def test_a_relay_that_never_loads_the_key_blocks_promotion_and_says_so() -> None:
    settings = RotationSettings(interval=3600.0, wait_timeout=300.0, check_interval=10.0)
    fleet = Fleet(settings, DELAYS)
    await fleet.start()
    signing = fleet.cluster.keyring.signing_key.id
    fleet.cluster.pods[1].stuck = True  # relay-b's kubelet never updates its volume
    await fleet.run(3600.0 + 600.0)
    assert fleet.cluster.annotations[A_PHASE] == "adding"
    assert fleet.cluster.keyring.signing_key.id == signing, "promoted past a relay without the key"
    blocked = [e for e in fleet.cluster.events if e.reason == "KeyRotationBlocked"]
    assert len(blocked) == 1 and blocked[0].warning
    assert "relay-b" in blocked[0].message and "relay-a" not in blocked[0].message
    assert fleet.cluster.summary is not None and fleet.cluster.summary.blocked is not None
    await fleet.run(3 * 3600.0)
    assert len([e for e in fleet.cluster.events if e.reason == "KeyRotationBlocked"]) == 1

    fleet.cluster.pods[1].stuck = False
    await fleet.run(600.0)
    assert fleet.cluster.keyring.signing_key.id != signing
    assert fleet.cluster.summary is not None and fleet.cluster.summary.blocked is None
    assert "rotation.turnpike.io/blocked" not in fleet.cluster.annotations


async def test_rotate_now_annotation_starts_a_rotation_and_is_cleared() -> None:
    fleet = Fleet(RotationSettings(check_interval=10.0), DELAYS)
    await fleet.start()
    await fleet.run(600.0)
    assert fleet.reasons("KeyAdded") == 0
    fleet.cluster.annotate(A_ROTATE_NOW, "true")
    await fleet.run(20.0)
    assert fleet.reasons("KeyAdded") == 1
    assert A_ROTATE_NOW not in fleet.cluster.annotations
    await fleet.run(600.0)
    assert fleet.reasons("KeyPromoted") == 1
    assert fleet.reasons("KeyRotated") == 1


async def test_emergency_revoke_drops_the_key_at_once() -> None:
    settings = RotationSettings(interval=3600.0, check_interval=10.0)
    fleet = Fleet(settings, DELAYS)
    await fleet.start()
    await fleet.run(3600.0 + 900.0)  # one full rotation: an old key is retired, still accepted
    ring = fleet.cluster.keyring
    assert len(ring.keys) == 2
    retired = next(k.id for k in ring.keys if not k.signing)
    fleet.cluster.annotate(A_REVOKE, retired)
    fleet.cluster.advance(fleet.clock.now + 10.0)
    step = await fleet.rotator.tick(NS)
    assert step is not None and step.reason == "KeyRevoked"
    assert retired not in fleet.cluster.keyring.ids
    assert A_REVOKE not in fleet.cluster.annotations
    fleet.cluster.advance(fleet.clock.now + 200.0)
    assert all(retired not in p.loaded.ids for p in fleet.cluster.pods)

    # Revoking the signing key: another key signs straight away.
    signing = fleet.cluster.keyring.signing_key.id
    fleet.cluster.annotate(A_REVOKE, f"{signing}, no-such-key")
    step = await fleet.rotator.tick(NS)
    assert step is not None and step.reason == "KeyRevoked" and "no-such-key" in step.message
    ring = fleet.cluster.keyring
    assert signing not in ring.ids and ring.signing_key.id != signing
    assert [e.warning for e in fleet.cluster.events if e.reason == "KeyRevoked"] == [True, True]
    # And rotation carries on normally once every pod has reloaded (until then, credentials from
    # a token pod that already signs with the fresh key may meet a relay that has not loaded it:
    # the documented price of revoking the signing key).
    fleet.cluster.advance(fleet.clock.now + 200.0)
    fleet.last_signed.clear()
    await fleet.run(2 * 3600.0)
    assert fleet.reasons("KeyPromoted") >= 2


async def test_a_secret_made_elsewhere_is_adopted_and_metrics_follow_the_rotation() -> None:
    """The operator's reconciler (or a person) may create the Secret with just a keyring in it."""
    from prometheus_client import CollectorRegistry

    from turnpike.core.keyring import Keyring
    from turnpike.operator.rotation import RotationMetrics

    fleet = Fleet(RotationSettings(interval=3600.0, check_interval=10.0), DELAYS)
    assert await fleet.cluster.create_secret(
        NS, "turnpike-keyring", Keyring.generate().to_json(), {}
    )
    for name, delay in DELAYS.items():
        fleet.cluster.add_pod(name, delay, relay=name.startswith("relay"))
    registry = CollectorRegistry()
    fleet.rotator = Rotator(fleet.cluster, fleet.settings, fleet.clock, RotationMetrics(registry))
    await fleet.rotator.tick(NS)
    assert fleet.cluster.annotations[A_PHASE] == "stable"
    assert fleet.cluster.annotations["rotation.turnpike.io/version"] == "1"

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"namespace": NS, **labels})

    await fleet.run(1800.0)
    age = sample("turnpike_keyring_signing_key_age_seconds")
    assert age is not None and 1700 <= age <= 1800
    await fleet.run(3600.0)
    assert sample("turnpike_keyring_rotations_total", outcome="started") == 1
    assert sample("turnpike_keyring_rotations_total", outcome="promoted") == 1
    assert sample("turnpike_keyring_rotations_total", outcome="completed") == 1
    assert sample("turnpike_keyring_rotations_total", outcome="blocked") is None
    age = sample("turnpike_keyring_signing_key_age_seconds")
    assert age is not None and age < 1800
    assert sample("turnpike_keyring_keys") == 2
