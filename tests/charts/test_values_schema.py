"""values.schema.json: strict everywhere, documented, and the messages a user gets from a bad
value name the key and what is wrong (checked through Helm's own validation)."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest
from charts.chartkit import CHART, load_yaml


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        found += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _walk(schema["additionalProperties"], f"{path}.*")
    return found


def test_every_object_in_the_schema_is_closed() -> None:
    schema = load_yaml(CHART / "values.schema.json")
    open_objects = [
        path
        for path, node in _walk(schema)
        if node.get("type") == "object"
        and "additionalProperties" not in node
        and "$comment" not in node  # Kubernetes types passed through, validated by the API server
    ]
    assert open_objects == []


def test_every_value_is_documented_with_a_type() -> None:
    schema = load_yaml(CHART / "values.schema.json")
    values = load_yaml(CHART / "values.yaml")

    def leaves(node: Any, path: str = "") -> list[str]:
        passed_through = path.endswith(("resources", "ecurityContext"))
        if isinstance(node, dict) and node and not passed_through:
            return [p for k, v in node.items() for p in leaves(v, f"{path}.{k}" if path else k)]
        return [path]

    for path in leaves(values):
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
        assert node.get("description"), path
        assert "type" in node or "enum" in node, path


def test_defaults_and_scenarios_pass(chart: helm_python.Chart) -> None:
    chart.validate_schema({})
    for path in sorted((CHART / "ci").glob("*.yaml")):
        chart.validate_schema(load_yaml(path))


EDGE = {"location": "x", "publicHostname": "a.b"}
BAD_VALUES = [
    pytest.param(
        {"operator": {"replicass": 3}},
        "at '/operator': additional properties 'replicass' not allowed",
        id="misspelled-key",
    ),
    pytest.param(
        {"tokns": {"enabled": False}},
        "additional properties 'tokns' not allowed",
        id="misspelled-section",
    ),
    pytest.param(
        {"operator": {"replicas": "two"}},
        "at '/operator/replicas': got string, want integer",
        id="wrong-type",
    ),
    pytest.param(
        {"operator": {"replicas": 0}},
        "at '/operator/replicas': minimum: got 0, want 1",
        id="out-of-range",
    ),
    pytest.param(
        {"operator": {"logLevel": "verbose"}},
        "at '/operator/logLevel': value must be one of 'debug', 'info', 'warning', 'error'",
        id="not-in-enum",
    ),
    pytest.param(
        {"tokens": {"metricsPort": 80}},
        "at '/tokens/metricsPort': minimum: got 80, want 1,024",
        id="privileged-port",
    ),
    pytest.param(
        {"keyring": {"maxTokenLifetimeSeconds": 172800}},
        "at '/keyring/maxTokenLifetimeSeconds': maximum: got 172,800, want 86,400",
        id="token-lifetime-above-api-maximum",
    ),
    pytest.param(
        {"image": {"digest": "latest"}},
        "at '/image/digest'",
        id="bad-digest",
    ),
    pytest.param(
        {"operator": {"watchNamespaces": ["Edges_East"]}},
        "at '/operator/watchNamespaces/0'",
        id="namespace-not-a-dns-label",
    ),
    pytest.param(
        {"operator": {"extraEnv": [{"name": "A", "vaule": "b"}]}},
        "at '/operator/extraEnv/0': additional properties 'vaule' not allowed",
        id="misspelled-env-field",
    ),
    pytest.param(
        {"relayEdges": [{"name": "ashburn", "spec": {"location": "Virginia"}}]},
        "at '/relayEdges/0/spec': missing property 'publicHostname'",
        id="edge-missing-required-field",
    ),
    pytest.param(
        {
            "relayEdges": [
                {"name": "a", "spec": {"location": "x", "publicHostname": "a.b", "replica": 1}}
            ]
        },
        "at '/relayEdges/0/spec': additional properties 'replica' not allowed",
        id="edge-misspelled-field",
    ),
    pytest.param(
        {"relayEdges": [{"name": "a", "spec": {**EDGE, "quotas": {"reservePercent": 100}}}]},
        "at '/relayEdges/0/spec/quotas/reservePercent': maximum: got 100, want 99",
        id="edge-reserve-percent-too-high",
    ),
    pytest.param(
        {"relayEdges": [{"name": "a", "spec": {**EDGE, "quotas": {"perToken": 50}}}]},
        "at '/relayEdges/0/spec/quotas': additional properties 'perToken' not allowed",
        id="edge-misspelled-quota",
    ),
    pytest.param(
        {
            "streamGateways": [
                {"name": "a", "spec": {"edge": "a", "rtpPorts": {"min": 0, "max": 9}}}
            ]
        },
        "at '/streamGateways/0/spec/rtpPorts/min': minimum: got 0, want 1",
        id="gateway-port-out-of-range",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_bad_values_are_rejected_with_a_readable_message(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as raised:
        chart.validate_schema(values)
    assert message in str(raised.value)
    # `helm install` / `helm template` refuse them the same way, before rendering anything.
    with pytest.raises(helm_python.HelmValuesError) as rendered:
        chart.render(values, name="turnpike", namespace="turnpike")
    assert message in str(rendered.value)
    assert "values don't meet the specifications of the schema" in str(rendered.value)
