"""A StreamGateway's ``spec.sip`` is refused when it could not work: ports that collide (in the
CRD, and again by the operator for objects stored earlier), a numbers key that is no file name, and
a numbers ConfigMap or Secret that does not exist or lacks the key (Degraded until it is fixed)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from support.kube_e2e import condition, edge, events_for, eventually, gateway
from support.kubeapi import schema as schema_support

from turnpike.operator import crds
from turnpike.operator import kube as k8s
from turnpike.operator.model import SpecError, StreamGateway

_SCHEMA = crds.stream_gateway_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
NUMBERS = {"configMapName": "numbers"}


def _errors(spec: dict[str, Any]) -> list[str]:
    """What the API server (the emulator's validator, as on every write) says about ``spec``."""
    obj = schema_support.prune_and_default({"spec": {"edge": "ashburn", **spec}}, _SCHEMA)
    return schema_support.validate(obj, _SCHEMA)


def _parse(spec: dict[str, Any]) -> StreamGateway:
    body = {"metadata": {"name": "media", "namespace": "ns"}, "spec": {"edge": "a", **spec}}
    return StreamGateway.parse(body, "image")


@pytest.mark.parametrize(
    ("spec", "message", "operator_message"),
    [
        (
            {"sip": {"numbers": NUMBERS}, "rtpPorts": {"min": 5000, "max": 5999}},
            "rtpPorts 5000-5999 include sip.port 5060: RTP and SIP both use UDP",
            r"spec.rtpPorts: 5000-5999 include spec.sip.port 5060",
        ),
        (
            {"sip": {"port": 8080, "numbers": NUMBERS}},
            "sip.port 8080 is also port: the SIP and HTTP listeners both use TCP",
            r"spec.sip.port: 8080 is also spec.port",
        ),
        (
            {"sip": {"port": 9642, "numbers": NUMBERS}},
            "sip.port must not be 9642, the gateway's metrics port",
            r"spec.sip.port: 9642 is the gateway's metrics port",
        ),
        (
            {"sip": {"numbers": NUMBERS, "tls": {"secretName": "c", "port": 5060}}},
            "sip.tls.port 5060 is already taken: sip.port, port and the metrics port 9642",
            r"spec.sip.tls.port: 5060 is already taken",
        ),
        (
            {"sip": {"numbers": NUMBERS, "tls": {"secretName": "c", "port": 9642}}},
            "sip.tls.port 9642 is already taken",
            r"spec.sip.tls.port: 9642 is already taken",
        ),
        (
            {"port": 9642},
            "port must not be 9642, the gateway's metrics port",
            r"spec.port: 9642 is the gateway's metrics port",
        ),
    ],
)
def test_colliding_ports_are_refused_naming_them(
    spec: dict[str, Any], message: str, operator_message: str
) -> None:
    errors = _errors(spec)
    assert len(errors) == 1 and errors[0].startswith('spec: Invalid value: "object": '), errors
    assert message in errors[0]
    with pytest.raises(SpecError, match=operator_message):
        _parse(spec)


def test_ports_that_work_together_pass() -> None:
    for spec in (
        {"sip": {"numbers": NUMBERS}},  # 5060 beside 8080, RTP 20000-29999
        {"sip": {"port": 5080, "numbers": NUMBERS}, "rtpPorts": {"min": 5081, "max": 6000}},
        {"port": 5060, "rtpPorts": {"min": 5000, "max": 5999}},  # no SIP: HTTP is TCP only
        {"sip": {"numbers": NUMBERS, "tls": {"secretName": "c"}}},  # 5061 beside 5060
    ):
        assert _errors(spec) == [], spec
        _parse(spec)


@pytest.mark.parametrize("key", ["../accounts.json", "numbers json", ".."])
def test_numbers_key_must_be_a_file_name(key: str) -> None:
    spec = {"sip": {"numbers": {**NUMBERS, "key": key}}}
    if key != "..":  # the pattern cannot tell; the operator does
        errors = _errors(spec)
        assert errors and errors[0].startswith("spec.sip.numbers.key: Invalid value"), errors
    with pytest.raises(SpecError, match=r"spec.sip.numbers.key: .* is not a ConfigMap or Secret"):
        _parse(spec)
    assert _parse({"sip": {"numbers": {**NUMBERS, "key": "routes-v2.json"}}}).sip is not None


@pytest.mark.e2e
async def test_api_refuses_sip_port_inside_the_rtp_range(kube: k8s.Kube, ns: str) -> None:
    spec = {"sip": {"numbers": NUMBERS}, "rtpPorts": {"min": 5000, "max": 5999}}
    with pytest.raises(k8s.ApiError) as err:
        await kube.create(k8s.STREAM_GATEWAYS, ns, gateway("trunk", "ashburn", **spec))
    assert err.value.status == 422
    assert "rtpPorts 5000-5999 include sip.port 5060" in err.value.message


async def _degraded(kube: k8s.Kube, ns: str, name: str) -> dict[str, Any]:
    return condition(await kube.get(k8s.STREAM_GATEWAYS, ns, name), "Degraded")


@pytest.mark.e2e
async def test_missing_numbers_degrade_the_gateway_until_they_exist(
    kube: k8s.Kube, ns: str
) -> None:
    """A SIP gateway whose numbers Secret is missing, then lacks the key, says so (one Warning
    Event per cause) and recovers once the file is there, without printing any Secret value."""
    await kube.create(k8s.RELAY_EDGES, ns, edge("ashburn", addresses={"static": ["192.0.2.0/24"]}))
    sip = {"numbers": {"secretName": "routes", "key": "numbers.json"}}
    await kube.create(k8s.STREAM_GATEWAYS, ns, gateway("trunk", "ashburn", sip=sip))

    async def reason_is(reason: str, text: str) -> dict[str, Any] | None:
        cond = await _degraded(kube, ns, "trunk")
        wanted = cond.get("status") == "True" and cond.get("reason") == reason
        return cond if wanted and text in cond.get("message", "") else None

    missing = await eventually(
        lambda: reason_is("NumbersNotFound", "does not exist"), what="NumbersNotFound"
    )
    assert missing["message"] == (
        f'Secret "routes" (spec.sip.numbers) does not exist in namespace "{ns}"'
    )
    # The children are there all the same: the pods start as soon as the Secret exists.
    assert await kube.get(k8s.DEPLOYMENTS, ns, "turnpike-streamgw-trunk") is not None

    value = base64.b64encode(json.dumps({"numbers": []}).encode()).decode()
    await kube.create(
        k8s.SECRETS, ns, {"metadata": {"name": "routes"}, "data": {"routes.json": value}}
    )
    touch = {"metadata": {"annotations": {"example/touched": "1"}}}
    await kube.patch(k8s.STREAM_GATEWAYS, ns, "trunk", touch)
    lacking = await eventually(
        lambda: reason_is("NumbersNotFound", "has no key"), what="the missing key"
    )
    assert lacking["message"] == 'Secret "routes" (spec.sip.numbers) has no key "numbers.json"'
    assert value not in lacking["message"]

    await kube.patch(k8s.SECRETS, ns, "routes", {"data": {"numbers.json": value}})
    await kube.patch(k8s.STREAM_GATEWAYS, ns, "trunk", {"metadata": {"annotations": {"t": "2"}}})

    async def fixed() -> bool:
        return (await _degraded(kube, ns, "trunk")).get("status") == "False"

    await eventually(fixed, what="Degraded cleared once the numbers file exists")

    async def told() -> list[tuple[str, str]] | None:
        events = [(e["reason"], e["message"]) for e in await events_for(kube, ns, "trunk")]
        return events if ("Recovered", "NumbersNotFound: fixed") in events else None

    events = await eventually(told, what="a Recovered Event")
    warnings = [m for r, m in events if r == "NumbersNotFound"]
    assert sorted(warnings) == sorted([missing["message"], lacking["message"]])
