"""deploy/examples: each example is valid against its CRD (with the server's defaults applied),
says what it is in comments, and a broken one is refused with the message a user would read."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from charts.chartkit import DEPLOY, validate_custom_resource

EXAMPLES = sorted((DEPLOY / "examples").glob("*.yaml"))


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "examples" / name).read_text())
    return loaded


def test_the_examples_the_readme_promises() -> None:
    assert [path.name for path in EXAMPLES] == [
        "edge-ashburn.yaml",
        "edge-dublin.yaml",
        "gateway-ashburn.yaml",
        "gateway-sip.yaml",
    ]
    ashburn, dublin, gateway, sip = (_load(path.name) for path in EXAMPLES)
    assert (ashburn["kind"], ashburn["metadata"]["name"]) == ("RelayEdge", "ashburn")
    assert ashburn["spec"]["location"] == "US East Coast (Virginia)"
    assert (dublin["kind"], dublin["metadata"]["name"]) == ("RelayEdge", "dublin")
    assert dublin["spec"]["location"] == "Ireland"
    assert (gateway["kind"], gateway["spec"]["edge"]) == ("StreamGateway", "ashburn")
    assert (sip["kind"], sip["spec"]["edge"]) == ("StreamGateway", "ashburn")
    assert sip["spec"]["sip"]["numbers"] == {"configMapName": "turnpike-numbers"}
    # The README reads the ranges from namespace turnpike, where the chart installs by default.
    docs = (ashburn, dublin, gateway, sip)
    assert {doc["metadata"]["namespace"] for doc in docs} == {"turnpike"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_against_its_crd(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert len(docs) == 1
    defaulted, errors = validate_custom_resource(docs[0])
    assert errors == []
    # Defaults were applied (what `kubectl get -o yaml` shows), and nothing written was dropped.
    assert defaulted["spec"] != docs[0]["spec"]
    assert _contains(defaulted["spec"], docs[0]["spec"])


def _contains(big: Any, small: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and _contains(big[k], v) for k, v in small.items()
        )
    return bool(big == small)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_commented(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# "), "starts by saying what it is"
    assert "kubectl apply -f deploy/examples/" + path.name in path.read_text()
    comments = [line for line in lines if line.lstrip().startswith("#")]
    assert len(comments) >= 8


INVALID = [
    pytest.param(
        "edge-ashburn.yaml",
        lambda spec: spec.pop("location"),
        "spec.location: Required value",
        id="missing-location",
    ),
    pytest.param(
        "edge-ashburn.yaml",
        lambda spec: spec.update(mode="StatefulSet"),
        "spec.mode: Unsupported value: 'StatefulSet': "
        'supported values: "Deployment", "DaemonSet"',
        id="unknown-mode",
    ),
    pytest.param(
        "edge-ashburn.yaml",
        lambda spec: spec.update(relayPorts={"min": 60000, "max": 50000}),
        'spec.relayPorts: Invalid value: "object": min must not be greater than max',
        id="inverted-port-range",
    ),
    pytest.param(
        "edge-ashburn.yaml",
        lambda spec: spec["addresses"].update(static=["203.0.113.0/28"]),
        "addresses.static and addresses.source are mutually exclusive",
        id="static-and-discovered-addresses",
    ),
    pytest.param(
        "edge-dublin.yaml",
        lambda spec: spec.update(replica=3),
        'spec.replica: Unknown field "replica"',
        id="misspelled-field",
    ),
    pytest.param(
        "gateway-sip.yaml",
        lambda spec: spec["rtpPorts"].update(min=5000, max=5999),
        "rtpPorts 5000-5999 include sip.port 5060: RTP and SIP both use UDP",
        id="sip-port-in-rtp-range",
    ),
    pytest.param(
        "gateway-sip.yaml",
        lambda spec: spec["sip"]["numbers"].update(secretName="numbers"),
        "numbers needs exactly one of configMapName and secretName",
        id="numbers-from-two-sources",
    ),
    pytest.param(
        "gateway-ashburn.yaml",
        lambda spec: spec.update(replicas=0),
        "spec.replicas: Invalid value: 0",
        id="no-replicas",
    ),
]


@pytest.mark.parametrize(("name", "break_it", "message"), INVALID)
def test_broken_example_is_refused_with_a_readable_message(
    name: str, break_it: Any, message: str
) -> None:
    obj = copy.deepcopy(_load(name))
    break_it(obj["spec"])
    _, errors = validate_custom_resource(obj)
    assert any(message in error for error in errors), errors
