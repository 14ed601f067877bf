"""SIP over TLS on a StreamGateway (``spec.sip.tls``): what the operator renders starts a real
gateway that answers SIP over TLS with the mounted certificate, and the operator wires, publishes
and checks it against the Kubernetes API."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
from support import free_dual_port, free_port, free_udp_range, turnpike
from support.kube_e2e import condition, edge, eventually, gateway, published, ranges_doc
from support.media import TestCA
from support.streamgw import write_accounts

from turnpike.operator import gateway as gateway_builder
from turnpike.operator import kube as k8s
from turnpike.operator import labels
from turnpike.operator.model import SpecError, StreamGateway

OWNER = {
    "apiVersion": "turnpike.io/v1alpha1",
    "kind": "StreamGateway",
    "metadata": {"name": "trunk", "namespace": "ns", "uid": "u-1"},
}
NUMBER = "+15550002222"
OPTIONS = (
    "OPTIONS sip:{number}@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1\r\n"
    "From: <sip:+15550001111@127.0.0.1>;tag=abc\r\n"
    "To: <sip:{number}@127.0.0.1>\r\n"
    "Call-ID: tls1@test\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)


def _gateway(**spec: Any) -> StreamGateway:
    body = {"metadata": {"name": "trunk", "namespace": "ns"}, "spec": {"edge": "ashburn", **spec}}
    return StreamGateway.parse(body, "turnpike:test")


def test_tls_port_must_not_take_another_listener() -> None:
    numbers = {"configMapName": "numbers"}
    for tls_port in (5060, 8080, 9642):
        with pytest.raises(SpecError, match=rf"spec.sip.tls.port: {tls_port} is already taken"):
            _gateway(sip={"numbers": numbers, "tls": {"secretName": "c", "port": tls_port}})
    with pytest.raises(SpecError, match="spec.sip.tls.secretName: required"):
        _gateway(sip={"numbers": numbers, "tls": {"port": 5061}})
    assert _gateway(sip={"numbers": numbers, "tls": {"secretName": "c"}}).sip is not None


def _pod_files(root: Path, ca: TestCA, numbers: dict[str, Any]) -> dict[str, Path]:
    """What the kubelet mounts, laid out under ``root``: the accounts Secret, the numbers
    ConfigMap and the kubernetes.io/tls Secret (its keys are tls.crt and tls.key)."""
    mounts = {
        gateway_builder.ACCOUNTS_DIR: root / "accounts",
        gateway_builder.NUMBERS_DIR: root / "numbers",
        gateway_builder.TLS_DIR: root / "tls",
    }
    for directory in mounts.values():
        directory.mkdir(parents=True)
    write_accounts(mounts[gateway_builder.ACCOUNTS_DIR] / "accounts.json")
    (mounts[gateway_builder.NUMBERS_DIR] / "numbers.json").write_text(json.dumps(numbers))
    shutil.copy(ca.cert_file, mounts[gateway_builder.TLS_DIR] / "tls.crt")
    shutil.copy(ca.key_file, mounts[gateway_builder.TLS_DIR] / "tls.key")
    return mounts


@pytest.mark.e2e
async def test_rendered_gateway_answers_sip_over_tls(tmp_path: Path) -> None:
    """The container and ConfigMap the operator renders, run as the kubelet would run them (the
    mounts under a temporary directory, loopback for the pod's address, a free metrics port):
    the real gateway answers OPTIONS over TLS with the Secret's certificate."""
    ca = TestCA(tmp_path / "ca")
    sip_port, tls_port, http_port = free_dual_port(), free_port(), free_port()
    rtp_low = free_udp_range(20)
    spec = {
        "port": http_port,
        "rtpPorts": {"min": rtp_low, "max": rtp_low + 19},
        "sip": {
            "port": sip_port,
            "trustedCidrs": ["127.0.0.1/32"],
            "numbers": {"secretName": "routes"},
            "tls": {"port": tls_port, "secretName": "sip-cert"},
        },
    }
    gw = _gateway(**spec)
    config, deployment, service = gateway_builder.children(gw, OWNER)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "tls", "secret": {"secretName": "sip-cert", "defaultMode": 0o440}} in (
        pod["volumes"]
    )
    assert {"name": "tls", "mountPath": gateway_builder.TLS_DIR, "readOnly": True} in (
        container["volumeMounts"]
    )
    tls_entry = {"name": "sip-tls", "port": tls_port, "targetPort": tls_port, "protocol": "TCP"}
    assert tls_entry in service["spec"]["ports"]

    route = {"number": NUMBER, "accountSid": "AC" + "1" * 32, "twiml": "<Response/>"}
    routes = {"numbers": [route]}
    mounts = _pod_files(tmp_path / "pod", ca, routes)
    metrics = free_port()
    env = {"TURNPIKE_RTP_IP": "127.0.0.1"}  # the downward API's status.podIP
    for name, value in config["data"].items():
        for mount, local in mounts.items():
            value = value.replace(mount, str(local))
        env[name] = value.replace("0.0.0.0:", "127.0.0.1:")
    env["TURNPIKE_METRICS"] = f"127.0.0.1:{metrics}"  # 9642 in the pod's own network
    async with turnpike(
        container["args"], ready_url=f"http://127.0.0.1:{metrics}/ready", env=env
    ) as proc:
        context = ssl.create_default_context(cafile=str(ca.ca_file))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port, ssl=context, server_hostname="localhost"
        )
        writer.write(OPTIONS.format(number=NUMBER).encode())
        await writer.drain()
        async with asyncio.timeout(10):
            status = await reader.readline()
        writer.close()
        assert status == b"SIP/2.0 200 OK\r\n", proc.text


@pytest.mark.e2e
async def test_sip_tls_is_wired_published_and_checked(kube: k8s.Kube, ns: str) -> None:
    """Against the Kubernetes API with the real operator: the TLS port reaches the Deployment,
    the Service and `turnpike-ip-ranges`; a missing certificate Secret is Degraded
    TLSSecretNotFound until it exists."""
    await kube.create(k8s.RELAY_EDGES, ns, edge("ashburn", addresses={"static": ["192.0.2.0/24"]}))
    numbers = {"metadata": {"name": "numbers"}, "data": {"numbers.json": '{"numbers": []}'}}
    await kube.create(k8s.CONFIGMAPS, ns, numbers)
    sip = {"numbers": {"configMapName": "numbers"}, "tls": {"secretName": "sip-cert"}}
    spec = {"egress": {"static": ["198.51.100.16/28"]}, "sip": sip}
    await kube.create(k8s.STREAM_GATEWAYS, ns, gateway("trunk", "ashburn", **spec))

    async def sip_ranges() -> dict[str, Any] | None:
        found: dict[str, Any] | None = published(await ranges_doc(kube, ns)).get("ashburn", {})
        return (found or {}).get("sip")

    entry = await eventually(sip_ranges, what="SIP ranges")
    assert entry["ports"] == [
        {"port": 5060, "protocol": "udp"},
        {"port": 5060, "protocol": "tcp"},
        {"port": 5061, "protocol": "tcp"},
    ]
    name = labels.gateway_name("trunk")
    service = await kube.get(k8s.SERVICES, ns, name)
    assert service is not None
    assert ("sip-tls", 5061, "TCP") in [
        (p["name"], p["port"], p["protocol"]) for p in service["spec"]["ports"]
    ]
    config = await kube.get(k8s.CONFIGMAPS, ns, name)
    assert config is not None and config["data"]["TURNPIKE_SIP_TLS"] == "0.0.0.0:5061"

    async def reason() -> str | None:
        cond = condition(await kube.get(k8s.STREAM_GATEWAYS, ns, "trunk"), "Degraded")
        return str(cond.get("reason")) if cond.get("status") == "True" else None

    assert await eventually(reason, what="TLSSecretNotFound") == "TLSSecretNotFound"
    cert = {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}
    secret = {"metadata": {"name": "sip-cert"}, "type": "kubernetes.io/tls", "data": cert}
    await kube.create(k8s.SECRETS, ns, secret)
    await kube.patch(k8s.STREAM_GATEWAYS, ns, "trunk", {"metadata": {"annotations": {"t": "1"}}})

    async def fixed() -> bool:
        cond = condition(await kube.get(k8s.STREAM_GATEWAYS, ns, "trunk"), "Degraded")
        return cond.get("status") == "False"

    await eventually(fixed, what="Degraded cleared once the certificate exists")


def test_ranges_list_the_tls_port_once_with_the_sip_ports() -> None:
    from turnpike.operator import ranges

    cidrs = ("198.51.100.16/28",)
    gateways = (
        ranges.SipEntry(cidrs, 5060, (20000, 29999), 5061),
        ranges.SipEntry(cidrs, 5060, (20000, 29999), 5061),  # a second gateway, same ports
        ranges.SipEntry(cidrs, 5080, (30000, 30999)),  # no TLS
    )
    entry = ranges.EdgeRanges("ashburn", "US East", (), (), (49152, 65535), cidrs, gateways)
    doc = ranges.document([entry])
    assert doc["edges"][0]["sip"]["ports"] == [
        {"port": 5060, "protocol": "udp"},
        {"port": 5060, "protocol": "tcp"},
        {"port": 5080, "protocol": "udp"},
        {"port": 5080, "protocol": "tcp"},
        {"port": 5061, "protocol": "tcp"},
    ]
    (line,) = [row for row in ranges.render_txt(doc, "now").splitlines() if "sip (inbound)" in row]
    assert line.endswith("5060/udp, 5060/tcp, 5080/udp, 5080/tcp, 5061/tcp")
