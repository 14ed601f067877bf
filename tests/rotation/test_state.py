"""The pure parts: reading state back from annotations, pod reports, conditions, pod discovery."""

from __future__ import annotations

import pytest

from turnpike.core.keyring import Key, Keyring
from turnpike.operator.conditions import with_rotation_verdict as merge_condition
from turnpike.operator.keyring_secret import consumer_of
from turnpike.operator.rotation_settings import RotationSettings
from turnpike.operator.rotation_state import (
    A_CANDIDATE,
    A_PHASE,
    A_RETIRED,
    A_VERSION,
    Look,
    Phase,
    RotationState,
    decide,
    format_time,
    parse_revoke,
    parse_time,
    read_state,
    report_from_ready,
)

NOW = 1_800_000_000.5
RING = Keyring((Key("a", "s-a", False), Key("b", "s-b", True), Key("c", "s-c", False)))


def test_state_round_trips_through_annotations() -> None:
    state = RotationState(
        version=7,
        phase=Phase.ADDING,
        candidate="c",
        phase_since=NOW - 10,
        signing_since=NOW - 100,
        last_rotation=NOW - 100,
        retired={"a": NOW - 50.25},
    )
    written = {k: v for k, v in state.annotations().items() if v is not None}
    assert read_state(written, RING, NOW) == state
    assert parse_time(format_time(NOW)) == pytest.approx(NOW, abs=0.001)


def test_hand_edited_or_missing_annotations_read_as_the_safe_state() -> None:
    # Nothing known: every non-signing key counts as retired just now (kept the full period).
    state = read_state({}, RING, NOW)
    assert state.phase is Phase.STABLE and state.candidate is None
    assert state.retired == {"a": NOW, "c": NOW}
    # Garbage everywhere.
    junk = {A_VERSION: "x", A_PHASE: "dancing", A_RETIRED: "[1, 2]", A_CANDIDATE: "zz"}
    assert read_state(junk, RING, NOW).retired == {"a": NOW, "c": NOW}
    # A candidate that is no longer in the keyring (someone removed it) ends the phase.
    gone = read_state({A_PHASE: "adding", A_CANDIDATE: "zz"}, RING, NOW)
    assert gone.phase is Phase.STABLE
    # "switching" only makes sense while the candidate signs.
    wrong = read_state({A_PHASE: "switching", A_CANDIDATE: "c"}, RING, NOW)
    assert wrong.phase is Phase.STABLE


def test_nothing_to_do_costs_nothing() -> None:
    state = RotationState(signing_since=NOW - 10, retired={"a": NOW, "c": NOW})
    assert decide(Look(RING, state, NOW), RotationSettings()) is None


def test_revoke_annotation_parsing() -> None:
    assert parse_revoke(" k1, k2  k3,") == ["k1", "k2", "k3"]
    assert parse_revoke(None) == [] == parse_revoke("")


def test_ready_bodies_of_relays_and_token_pods() -> None:
    flat = report_from_ready("p", {"ready": True, "keys": ["a", "b"], "signing": "b"})
    assert flat.keys == ("a", "b") and flat.signing == "b" and flat.error is None
    nested = report_from_ready("p", {"ready": True, "keyring": {"keys": ["a"], "signing": "a"}})
    assert nested.keys == ("a",)
    assert report_from_ready("p", {"ready": True}).error is not None
    assert report_from_ready("p", ["a"]).error is not None


def pod(**status: object) -> dict[str, object]:
    return {
        "metadata": {"name": "relay-0"},
        "spec": {"containers": [{"ports": [{"name": "turn", "containerPort": 3478}]}]},
        "status": {"podIP": "10.1.2.3", "conditions": [{"type": "Ready", "status": "True"}]}
        | status,
    }


def test_pods_are_asked_on_their_declared_health_port() -> None:
    p = pod()
    assert consumer_of(p) is not None and consumer_of(p).url == ""  # type: ignore[union-attr]
    p["spec"]["containers"][0]["ports"].append({"name": "metrics", "containerPort": 9100})  # type: ignore[index]
    assert consumer_of(p).url == "http://10.1.2.3:9100/ready"  # type: ignore[union-attr]
    p["metadata"]["annotations"] = {"turnpike.io/health-port": "9200"}  # type: ignore[index]
    assert consumer_of(p).url == "http://10.1.2.3:9200/ready"  # type: ignore[union-attr]
    v6 = pod(podIP="fd00::5")
    v6["metadata"]["annotations"] = {"turnpike.io/health-port": "9200"}  # type: ignore[index]
    assert consumer_of(v6).url == "http://[fd00::5]:9200/ready"  # type: ignore[union-attr]
    # A pod still starting is asked too: it may become Ready with the keys it read then.
    assert consumer_of(pod(conditions=[{"type": "Ready", "status": "False"}])) is not None
    assert consumer_of(pod(podIP="")) is None
    assert consumer_of(pod(phase="Succeeded")) is None and consumer_of(pod(phase="Failed")) is None
    going = pod()
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # type: ignore[index]
    assert consumer_of(going) is None


def test_degraded_condition_is_set_and_cleared_without_touching_other_causes() -> None:
    blocked = merge_condition([{"type": "Ready", "status": "True"}], "rotation blocked: x")
    assert blocked[1]["type"] == "Degraded" and blocked[1]["status"] == "True"
    assert blocked[1]["reason"] == "KeyRotationBlocked"
    assert merge_condition(blocked, "rotation blocked: x") == blocked
    cleared = merge_condition(blocked, None)
    assert cleared[1]["status"] == "False" and cleared[0] == blocked[0]
    other = [{"type": "Degraded", "status": "True", "reason": "EdgeMissing", "message": "m"}]
    assert merge_condition(other, "rotation blocked: x") == other
    assert merge_condition(other, None) == other
