"""The CRD files in deploy/crds are exactly what operator/crds.py generates."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.kubeapi import schema as schema_support

from turnpike.operator import crds
from turnpike.operator.model import RelayEdge, SpecError

ROOT = Path(__file__).resolve().parents[2]


def test_deploy_crds_match_the_code() -> None:
    directory = ROOT / "deploy" / "crds"
    for name, crd in crds.all_crds().items():
        path = directory / name
        assert path.exists(), f"{path} is missing: run python -m turnpike.operator.crds deploy/crds"
        assert path.read_text() == crds.render(crd), (
            f"{path} is stale: run python -m turnpike.operator.crds deploy/crds"
        )
        assert yaml.safe_load(path.read_text()) == crd


def test_crds_are_structural_with_columns_and_status() -> None:
    for crd in (crds.relay_edge_crd(), crds.stream_gateway_crd()):
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert {"Location", "Ready", "Addresses", "Age"} <= set(columns)
        assert crd["spec"]["names"]["shortNames"]
        _assert_structural(version["schema"]["openAPIV3Schema"], "")


def _assert_structural(schema: dict, where: str) -> None:
    assert "type" in schema or schema.get("x-kubernetes-preserve-unknown-fields"), where
    for key, sub in schema.get("properties", {}).items():
        _assert_structural(sub, f"{where}.{key}")
    if isinstance(schema.get("items"), dict):
        _assert_structural(schema["items"], f"{where}[]")


# The CRD rules, run by the emulator's validator exactly as it runs them on every write.

_SCHEMA = crds.relay_edge_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
_GATEWAY_SCHEMA = crds.stream_gateway_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _errors(spec: dict[str, Any], schema: dict[str, Any] = _SCHEMA) -> list[str]:
    base = {"location": "Frankfurt", "publicHostname": "fra.example.com"}
    obj = schema_support.prune_and_default({"spec": {**base, **spec}}, schema)
    return schema_support.validate(obj, schema)


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.0/8",
        "192.0.2.1",
        "0.0.0.0/0",
        "255.255.255.255/32",
        "::",
        "::1",
        "1::8",
        "2001:db8::/32",
        "fe80::1:2",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "2001:db8::1/128",
        "10.0.0.0/33",
        "256.1.1.1",
        "1.2.3",
        "10.0.0.0/",
        "2001:::1",
        "1:2:3:4:5:6:7:8:9",
        "::/129",
        "a.b.c.d",
        "",
        "1:2:3:4:5:6:7::8",
        " 10.0.0.0/8",
        "010.0.0.1",
        "10.0.0.1/8",
        "12345::",
        "::ffff:1.2.3.4",
        "10.0.0.0/08",
    ],
)
def test_cidr_rule_agrees_with_the_operator(text: str) -> None:
    """The API server and the operator accept the same addresses, except two spellings only the
    operator understands: IPv6 with a dotted IPv4 tail, and a prefix with a leading zero."""
    try:
        ipaddress.ip_network(text, strict=False)
        operator_accepts = True
    except ValueError:
        operator_accepts = False
    errors = _errors({"peers": {"deny": [text]}})
    if text in ("::ffff:1.2.3.4", "10.0.0.0/08"):
        assert operator_accepts and errors
        return
    assert (not errors) == operator_accepts, errors
    if errors:
        assert errors == [
            f'spec.peers.deny[0]: Invalid value: "string": "{text}" is not an IP address or CIDR, '
            "such as 192.0.2.0/24 or 2001:db8::/32 (prefix at most 32 for IPv4, 128 for IPv6)"
        ]


def test_every_address_list_is_checked() -> None:
    for spec, field in [
        ({"peers": {"allow": ["10.0.0.0/33"]}}, "spec.peers.allow[0]"),
        ({"addresses": {"static": ["192.0.2.0/24", "999.1.2.3/8"]}}, "spec.addresses.static[1]"),
    ]:
        assert [e.split(":")[0] for e in _errors(spec)] == [field]
    for spec, field in [
        ({"allowedDestinations": ["10.0.0.0/33"]}, "spec.allowedDestinations[0]"),
        ({"egress": {"static": ["2001:::1"]}}, "spec.egress.static[0]"),
    ]:
        errors = _errors({"edge": "fra", **spec}, _GATEWAY_SCHEMA)
        assert [e.split(":")[0] for e in errors] == [field]


@pytest.mark.parametrize(
    ("spec", "message", "operator_message"),
    [
        (
            {"tlsSecretName": "tls", "ports": {"tcp": 443}},
            "ports.tcp 443 is also in ports.tls: TURN over TCP and TURN over TLS need different "
            "ports",
            "spec.ports.tcp: 443 is also in spec.ports.tls",
        ),
        (
            {"relayPorts": {"min": 3000, "max": 4000}},
            "relayPorts 3000-4000 include the ports.udp listener port 3478",
            "spec.relayPorts: 3000-4000 include the spec.ports.udp listener port 3478",
        ),
        (
            {"relayPorts": {"min": 40000, "max": 50000}, "ports": {"udp": 3478, "tcp": 40001}},
            "relayPorts 40000-50000 include the ports.tcp listener port 40001",
            "spec.relayPorts: 40000-50000 include the spec.ports.tcp listener port 40001",
        ),
        (
            {"tlsSecretName": "tls", "relayPorts": {"min": 400, "max": 500}},
            "relayPorts 400-500 include a ports.tls listener port",
            "spec.relayPorts: 400-500 include the spec.ports.tls listener port 443",
        ),
    ],
)
def test_listener_rules_name_the_ports(
    spec: dict[str, Any], message: str, operator_message: str
) -> None:
    errors = _errors(spec)
    assert errors and all(e.startswith('spec: Invalid value: "object": ') for e in errors)
    assert message in errors[0]
    # The operator refuses the same spec, naming the same ports (for objects stored earlier).
    body = {"metadata": {"name": "fra", "namespace": "ns"}, "spec": dict(spec)}
    body["spec"].update(location="Frankfurt", publicHostname="fra.example.com")
    with pytest.raises(SpecError, match=operator_message):
        RelayEdge.parse(body, "image")


def test_listener_rules_allow_what_works() -> None:
    # TCP 443 without TLS is a common way through firewalls; the TLS ports are then unused.
    assert _errors({"ports": {"tcp": 443}}) == []
    assert _errors({"tlsSecretName": "tls", "relayPorts": {"min": 10000, "max": 20000}}) == []
    assert _errors({"ports": {"udp": 3478, "tcp": 3478}}) == []  # different protocols
    for spec in ({"ports": {"tcp": 443}}, {"relayPorts": {"min": 10000, "max": 20000}}):
        body = {"metadata": {"name": "fra", "namespace": "ns"}, "spec": dict(spec)}
        body["spec"].update(location="Frankfurt", publicHostname="fra.example.com")
        RelayEdge.parse(body, "image")
