"""The pure parts of the operator: spec parsing, child builders, ranges, directory, discovery."""

from __future__ import annotations

import json
from typing import Any

import pytest

from turnpike.operator import apply, directory, gateway, labels, networks, ranges, relay
from turnpike.operator.model import RelayEdge, SpecError, StreamGateway

OWNER = {
    "apiVersion": "turnpike.io/v1alpha1",
    "kind": "RelayEdge",
    "metadata": {"name": "ashburn", "namespace": "ns", "uid": "u-1"},
}


def _edge(**spec: Any) -> RelayEdge:
    body = {
        "metadata": {"name": "ashburn", "namespace": "ns"},
        "spec": {"location": "US East", "publicHostname": "ashburn.turn.example.com", **spec},
    }
    return RelayEdge.parse(body, "turnpike:test")


def _kinds(children: list[dict[str, Any]]) -> list[str]:
    return [c["kind"] for c in children]


def test_collapse_merges_and_sorts_ipv4_before_ipv6() -> None:
    cidrs = ["2001:db8::/33", "10.0.1.0/24", "10.0.0.0/24", "10.0.0.7", "2001:db8:8000::/33"]
    assert ranges.collapse(cidrs) == ["10.0.0.0/23", "2001:db8::/32"]
    assert ranges.collapse([]) == []


def test_ranges_document_and_text() -> None:
    entry = ranges.EdgeRanges(
        edge="dublin",
        location="Ireland",
        relay_cidrs=("52.215.127.0/25", "52.215.127.128/25"),
        relay_ports=((3478, "udp"), (3478, "tcp")),
        relay_port_range=(49152, 65535),
        stream_cidrs=("3.249.63.128/25",),
    )
    pending = ranges.EdgeRanges("ashburn", "US East", (), ((3478, "udp"),), (10000, 60000), ())
    doc = ranges.document([entry, pending])
    assert [e["edge"] for e in doc["edges"]] == ["ashburn", "dublin"]
    assert doc["edges"][1]["relay"] == {
        "cidrs": ["52.215.127.0/24"],
        "ports": [{"port": 3478, "protocol": "udp"}, {"port": 3478, "protocol": "tcp"}],
        "relayPorts": "49152-65535",
    }
    data = ranges.configmap_data(doc, "2026-01-01T00:00:00Z")
    assert json.loads(data["ranges.json"])["generated"] == "2026-01-01T00:00:00Z"
    lines = data["ranges.txt"].splitlines()
    assert lines[0] == "# Turnpike edge IP ranges, generated 2026-01-01T00:00:00Z"
    assert lines[1].split() == ["EDGE", "LOCATION", "SERVICE", "CIDR", "PORTS"]
    assert "(pending)" in lines[2] and "52.215.127.0/24" in data["ranges.txt"]
    assert "3.249.63.128/25" in data["ranges.txt"] and "streams (outbound)" in data["ranges.txt"]
    # Same content at another time is the same content.
    assert ranges.same_content(data, doc)
    assert not ranges.same_content(data, ranges.document([entry]))
    assert not ranges.same_content(None, doc)


def test_edge_defaults_and_validation() -> None:
    edge = _edge()
    assert (edge.udp_port, edge.tcp_port, edge.relay_ports) == (3478, 3478, (49152, 65535))
    assert edge.address_source == "LoadBalancer" and edge.realm == "ashburn.turn.example.com"
    assert not edge.tls and edge.client_ports() == [(3478, "udp"), (3478, "tcp")]
    assert _edge(hostNetwork=True).address_source == "NodeExternalIP"
    tls = _edge(tlsSecretName="cert")
    assert tls.client_ports() == [(3478, "udp"), (3478, "tcp"), (443, "tcp"), (5349, "tcp")]
    with pytest.raises(SpecError, match=r"spec.addresses.static: 'nope' is not"):
        _edge(addresses={"static": ["nope"]})
    with pytest.raises(SpecError, match="spec.relayPorts"):
        _edge(relayPorts={"min": 9, "max": 8})
    with pytest.raises(SpecError, match="hostNetwork"):
        _edge(hostNetwork=True, addresses={"source": "LoadBalancer"})


def test_relay_children_load_balancer_mode() -> None:
    edge = _edge(
        peers={"deny": ["203.0.113.0/24"], "allow": ["10.1.0.0/16"]}, quotas={"perUser": 5}
    )
    children = relay.children(edge, OWNER, ["10.96.0.0/12"], "192.0.2.1", "keys")
    assert _kinds(children) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    config, deployment, pdb, service = children
    assert config["data"]["TURNPIKE_DENY_PEER"] == "203.0.113.0/24,10.96.0.0/12"
    assert config["data"]["TURNPIKE_ALLOW_PEER"] == "10.1.0.0/16"
    assert config["data"]["TURNPIKE_USER_QUOTA"] == "5"
    assert config["data"]["TURNPIKE_EXTERNAL_IP"] == "192.0.2.1"
    assert config["data"]["TURNPIKE_DRAIN_GRACE"] == "3570"  # inside the 3600 s grace period
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "keys"
    assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": "turnpike-relay-ashburn"}}]
    assert "NET_BIND_SERVICE" not in json.dumps(pod) and "sysctls" not in pod["securityContext"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] != 0
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert pdb["spec"]["maxUnavailable"] == 1
    for child in children:
        assert child["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert child["metadata"]["labels"][labels.MANAGED_BY] == labels.MANAGER
    # A config change changes the pod template (so the relays roll).
    other = relay.children(edge, OWNER, ["10.96.0.0/12"], None, "keys")[1]
    annotations = other["spec"]["template"]["metadata"]["annotations"]
    assert annotations != deployment["spec"]["template"]["metadata"]["annotations"]


def test_relay_kernel_fast_path_adds_exactly_bpf_and_net_admin() -> None:
    assert _edge().offload == "auto"
    off = relay.children(_edge(offload="off"), OWNER, [], None, "keys")
    assert off[0]["data"]["TURNPIKE_OFFLOAD"] == "off"
    security = off[1]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert security["runAsNonRoot"] is True and "runAsUser" not in security
    assert security["capabilities"] == {"drop": ["ALL"]}
    for mode in ("auto", "tc"):
        config, deployment, *_ = relay.children(_edge(offload=mode), OWNER, [], None, "keys")
        assert config["data"]["TURNPIKE_OFFLOAD"] == mode
        security = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        assert security["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "NET_ADMIN"]}
        assert security["runAsUser"] == 0 and security["runAsNonRoot"] is False
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert "privileged" not in json.dumps(deployment)
    host = relay.children(
        _edge(offload="auto", hostNetwork=True, tlsSecretName="cert"), OWNER, [], None, "keys"
    )
    security = host[1]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert security["capabilities"]["add"] == ["BPF", "NET_ADMIN", "NET_BIND_SERVICE"]
    with pytest.raises(SpecError, match="spec.offload"):
        _edge(offload="xdp")


def test_relay_children_host_network_daemonset_with_tls() -> None:
    edge = _edge(
        mode="DaemonSet",
        hostNetwork=True,
        tlsSecretName="cert",
        peers={"denyClusterNetworks": False},
        offload="off",
    )
    children = relay.children(edge, OWNER, ["10.96.0.0/12"], None, "keys")
    assert _kinds(children) == ["ConfigMap", "DaemonSet", "PodDisruptionBudget"]
    config, daemonset, _ = children
    assert "TURNPIKE_DENY_PEER" not in config["data"]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    args = pod["containers"][0]["args"]
    assert args == [
        "relay",
        "--listen",
        "0.0.0.0:3478",
        "--tls-listen",
        "0.0.0.0:443",
        "--tls-listen",
        "0.0.0.0:5349",
    ]
    # Port 443 on the host network: uid 0 holding NET_BIND_SERVICE only, in this container only.
    assert pod["containers"][0]["securityContext"] == {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    }
    assert pod["securityContext"]["runAsUser"] != 0 and "sysctls" not in pod["securityContext"]


def _relay_pod(**spec: Any) -> dict[str, Any]:
    """The relay pod of an edge without the kernel fast path (whose rendering is tested above)."""
    children = relay.children(_edge(offload="off", **spec), OWNER, [], None, "k")
    return dict(children[1]["spec"]["template"]["spec"])


def test_privileged_ports_are_opened_only_when_needed_and_least_privileged() -> None:
    # Off the host network, 443 is opened by the pod's own sysctl: still non-root, no capability.
    pod = _relay_pod(tlsSecretName="cert")
    assert pod["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}
    ]
    security = pod["containers"][0]["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]} and "runAsUser" not in security
    # A relay port range below 1024 needs it as much as a listener does.
    pod = _relay_pod(hostNetwork=True, relayPorts={"min": 900, "max": 2000})
    assert pod["containers"][0]["securityContext"]["runAsUser"] == 0
    # Host network with every port at or above 1024: nothing added.
    for spec in (
        {"hostNetwork": True},
        {"hostNetwork": True, "tlsSecretName": "c", "ports": {"tls": [5349]}},
    ):
        pod = _relay_pod(**spec)
        security = pod["containers"][0]["securityContext"]
        assert security["runAsNonRoot"] is True and "runAsUser" not in security
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert "sysctls" not in pod["securityContext"]


def test_gateway_children() -> None:
    body = {
        "metadata": {"name": "media", "namespace": "ns"},
        "spec": {"edge": "ashburn", "allowedDestinations": ["10.0.0.0/8"]},
    }
    gw = StreamGateway.parse(body, "turnpike:test")
    assert gw.rtp_ports == (20000, 29999) and gw.replicas == 2 and gw.port == 8080
    children = gateway.children(gw, {**OWNER, "kind": "StreamGateway"})
    assert _kinds(children) == ["ConfigMap", "Deployment", "Service"]
    config, deployment, _ = children
    assert config["data"]["TURNPIKE_ALLOW_DESTINATION"] == "10.0.0.0/8"
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    with pytest.raises(SpecError, match="spec.edge"):
        StreamGateway.parse({"metadata": body["metadata"], "spec": {}}, "x")


def test_directory_document() -> None:
    edges = [
        _edge(tlsSecretName="cert"),
        RelayEdge.parse(
            {
                "metadata": {"name": "dublin", "namespace": "ns"},
                "spec": {"location": "Ireland", "publicHostname": "dublin.turn.example.com"},
            },
            "x",
        ),
    ]
    doc = directory.document(edges, "")
    assert doc["global"] == {"host": "global.turn.example.com"}
    assert [e["name"] for e in doc["edges"]] == ["ashburn", "dublin"]
    assert doc["edges"][0]["ports"] == {"udp": 3478, "tcp": 3478, "tls": 443}
    assert doc["edges"][1]["ports"]["tls"] == 3478  # no certificate: the TCP listener
    assert directory.document(edges, "turn.example.org")["global"]["host"] == "turn.example.org"


def test_discovery_from_nodes_pods_and_load_balancers() -> None:
    nodes = [
        {
            "metadata": {"name": "a"},
            "spec": {"podCIDRs": ["10.244.1.0/24"]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.1"},
                    {"type": "ExternalIP", "address": "198.51.100.1"},
                ]
            },
        },
        {
            "metadata": {"name": "b"},
            "spec": {"podCIDR": "10.244.2.0/24"},
            "status": {"addresses": [{"type": "ExternalIP", "address": "198.51.100.2"}]},
        },
    ]
    pods = [
        {"metadata": {}, "spec": {"nodeName": "a"}, "status": {"phase": "Running"}},
        {"metadata": {"deletionTimestamp": "x"}, "spec": {"nodeName": "b"}, "status": {}},
        {"metadata": {}, "spec": {}, "status": {"phase": "Pending"}},
    ]
    assert networks.nodes_running(pods) == {"a"}
    assert networks.external_ips(nodes, {"a", "b"}) == ["198.51.100.1/32", "198.51.100.2/32"]
    deny = networks.cluster_deny(nodes, ["10.96.0.0/12"], [])
    assert deny == ["10.0.0.1/32", "10.96.0.0/12", "10.244.1.0/24", "10.244.2.0/24"]
    service = {
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.5"}, {"hostname": "lb.example"}]}}
    }
    assert networks.load_balancer_ips(service) == ["192.0.2.5/32"]
    assert networks.load_balancer_ips(None) == []


def test_subset_tolerates_defaults_but_not_edits() -> None:
    desired = {"spec": {"replicas": 2, "template": {"containers": [{"name": "c", "args": ["a"]}]}}}
    defaulted = {
        "spec": {
            "replicas": 2,
            "paused": False,
            "template": {"containers": [{"name": "c", "args": ["a"], "tty": False}]},
        }
    }
    assert apply.is_subset(desired, defaulted)
    edited = {"spec": {"replicas": 7, "template": {"containers": [{"name": "c", "args": ["a"]}]}}}
    assert not apply.is_subset(desired, edited)
    extra = {
        "spec": {
            "replicas": 2,
            "template": {"containers": [{"name": "c", "args": ["a"]}, {"name": "x"}]},
        }
    }
    assert not apply.is_subset(desired, extra)


def _parse_as_container(container: dict[str, Any], env: dict[str, str], monkeypatch: Any) -> Any:
    """Parse a built container's args with the real `turnpike` command line, its ConfigMap
    and env as the environment: the contract between the operator and the components."""
    from turnpike.cli import build_parser

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return build_parser().parse_args(container["args"])


def test_relay_container_parses_with_the_relay_command(monkeypatch: pytest.MonkeyPatch) -> None:
    edge = _edge(tlsSecretName="cert", peers={"allow": ["10.1.0.0/16"]}, quotas={"total": 9})
    config, deployment, *_ = relay.children(edge, OWNER, ["10.96.0.0/12"], "192.0.2.1", "k")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = _parse_as_container(container, config["data"], monkeypatch)
    assert [str(a) for a in args.listen] == ["0.0.0.0:3478"]
    assert [str(a) for a in args.tls_listen] == ["0.0.0.0:443", "0.0.0.0:5349"]
    assert args.realm == "ashburn.turn.example.com"
    assert args.keyring == "/etc/turnpike/keyring/keyring.json"
    assert args.relay_ports == (49152, 65535)
    assert args.deny_peer == ["10.96.0.0/12"] and args.allow_peer == ["10.1.0.0/16"]
    assert args.total_quota == 9 and args.external_ip == ["192.0.2.1"]
    assert args.tls_cert == "/etc/turnpike/tls/tls.crt"
    assert args.drain_grace == 3570.0


def test_gateway_container_parses_with_the_streamgw_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = {
        "metadata": {"name": "media", "namespace": "ns"},
        "spec": {"edge": "ashburn", "allowedDestinations": ["10.0.0.0/8"]},
    }
    gw = StreamGateway.parse(body, "turnpike:test")
    config, deployment, _ = gateway.children(gw, {**OWNER, "kind": "StreamGateway"})
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {**config["data"], "TURNPIKE_RTP_IP": "10.244.0.5"}  # the downward API's pod IP
    args = _parse_as_container(container, env, monkeypatch)
    assert str(args.listen) == "0.0.0.0:8080"
    assert args.accounts == "/etc/turnpike/accounts/accounts.json"
    assert args.rtp_ports == (20000, 29999)
    assert args.allow_destination == ["10.0.0.0/8"]


def test_readiness_waits_for_the_rollout() -> None:
    from turnpike.operator.reconcile import readiness

    deployment = {
        "metadata": {"generation": 3},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 2},
    }
    assert readiness(deployment, False) == (2, 2, True)
    rolling = {**deployment, "status": {**deployment["status"], "updatedReplicas": 1}}
    assert readiness(rolling, False) == (2, 2, False)
    stale = {**deployment, "metadata": {"generation": 4}}
    assert readiness(stale, False)[2] is False
    daemonset = {
        "metadata": {"generation": 1},
        "spec": {},
        "status": {
            "observedGeneration": 1,
            "numberReady": 3,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3,
        },
    }
    assert readiness(daemonset, True) == (3, 3, True)


def test_directory_is_what_the_token_api_reads() -> None:
    from turnpike.core.edges import EdgeDirectory

    edges = [_edge(tlsSecretName="cert"), _edge(ports={"udp": 3479, "tcp": 3480})]
    parsed = EdgeDirectory.parse(directory.render(edges[:1], ""), "edges")
    assert parsed.global_edge.host == "global.turn.example.com"
    ashburn = parsed.get("ashburn")
    assert ashburn is not None and ashburn.ports.tls == 443
    assert ashburn.location == "US East" and ashburn.host == "ashburn.turn.example.com"
    plain = EdgeDirectory.parse(directory.render(edges[1:], ""), "edges")
    edge = plain.get("ashburn")
    assert edge is not None and (edge.ports.udp, edge.ports.tcp, edge.ports.tls) == (
        3479,
        3480,
        3480,
    )
    bare = RelayEdge.parse(
        {
            "metadata": {"name": "lab", "namespace": "ns"},
            "spec": {"location": "Lab", "publicHostname": "localhost"},
        },
        "x",
    )
    assert EdgeDirectory.parse(directory.render([bare], ""), "edges")


def test_subset_compares_quantities_by_value_and_empties_as_absent() -> None:
    desired = {
        "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"cpu": 2}},
        "nodeSelector": {},
        "tolerations": [],
    }
    stored = {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2"}}}
    assert apply.is_subset(desired, stored)
    more = {"resources": {"requests": {"cpu": "501m", "memory": "1Gi"}, "limits": {"cpu": "2"}}}
    assert not apply.is_subset(desired, more)
    # Only resource lists are quantities: elsewhere "1k" and "1000" are different strings.
    assert not apply.is_subset({"env": {"X": "1k"}}, {"env": {"X": "1000"}})
    assert not apply.is_subset({"nodeSelector": {"a": "b"}}, {})


def test_ownership_refuses_what_turnpike_did_not_create() -> None:
    owner = {"apiVersion": "turnpike.io/v1alpha1", "kind": "RelayEdge"}
    owner["metadata"] = {"name": "e", "uid": "u1"}
    desired = {
        "kind": "Service",
        "metadata": {"name": "s", "ownerReferences": [labels.owner_reference(owner)]},
    }
    ours = {"kind": "Service", "metadata": {"name": "s", "labels": dict(labels.MANAGED)}}
    apply.check_ownership(desired, ours)  # ours, orphaned: adopted
    owned = {"kind": "Service", "metadata": {"name": "s", "ownerReferences": [{"uid": "u1"}]}}
    apply.check_ownership(desired, owned)
    theirs = {"kind": "Service", "metadata": {"name": "s", "labels": {"app": "x"}}}
    with pytest.raises(apply.ForeignObject, match='Service "s" already exists and was not'):
        apply.check_ownership(desired, theirs)
    ref = {"kind": "Deployment", "name": "d", "uid": "u2", "controller": True}
    controlled = {"kind": "Service", "metadata": {"name": "s", "labels": dict(labels.MANAGED)}}
    controlled["metadata"]["ownerReferences"] = [ref]
    with pytest.raises(apply.ForeignObject, match='controlled by Deployment "d"'):
        apply.check_ownership(desired, controlled)


SIP_SPEC = {
    "edge": "ashburn",
    "sip": {
        "port": 5070,
        "trustedCidrs": ["203.0.113.0/24", "198.51.100.7"],
        "realm": "trunks",
        "numbers": {"configMapName": "numbers"},
    },
}


def test_gateway_sip_children_and_container(monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"metadata": {"name": "media", "namespace": "ns"}, "spec": SIP_SPEC}
    gw = StreamGateway.parse(body, "turnpike:test")
    assert gw.sip is not None and gw.sip.trusted == ("203.0.113.0/24", "198.51.100.7/32")
    config, deployment, service = gateway.children(gw, {**OWNER, "kind": "StreamGateway"})
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    sip_ports = [(p["containerPort"], p["protocol"]) for p in container["ports"][2:]]
    assert sip_ports == [(5070, "UDP"), (5070, "TCP")]
    assert [(p["port"], p["protocol"]) for p in service["spec"]["ports"][1:]] == sip_ports
    assert {"name": "numbers", "mountPath": "/etc/turnpike/numbers", "readOnly": True} in (
        container["volumeMounts"]
    )
    assert {"name": "numbers", "configMap": {"name": "numbers", "defaultMode": 0o440}} in pod[
        "volumes"
    ]
    env = {**config["data"], "TURNPIKE_RTP_IP": "10.244.0.5"}
    args = _parse_as_container(container, env, monkeypatch)
    assert str(args.sip) == "0.0.0.0:5070"
    assert args.numbers == "/etc/turnpike/numbers/numbers.json"
    assert args.sip_trust == ["203.0.113.0/24", "198.51.100.7/32"] and args.sip_realm == "trunks"
    # Without spec.sip nothing about SIP appears.
    plain = StreamGateway.parse({"metadata": body["metadata"], "spec": {"edge": "a"}}, "x")
    config, deployment, service = gateway.children(plain, {**OWNER, "kind": "StreamGateway"})
    assert not any(k.startswith("TURNPIKE_SIP") for k in config["data"])
    assert len(service["spec"]["ports"]) == 1
    secret = {**SIP_SPEC["sip"], "numbers": {"secretName": "n", "key": "routes.json"}}  # type: ignore[dict-item]
    from_secret = StreamGateway.parse({**body, "spec": {"edge": "a", "sip": secret}}, "x")
    config, deployment, _ = gateway.children(from_secret, {**OWNER, "kind": "StreamGateway"})
    assert config["data"]["TURNPIKE_NUMBERS"] == "/etc/turnpike/numbers/routes.json"
    assert deployment["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"] == "n"
    both = {**SIP_SPEC["sip"], "numbers": {"secretName": "n", "configMapName": "m"}}  # type: ignore[dict-item]
    with pytest.raises(SpecError, match="exactly one"):
        StreamGateway.parse({**body, "spec": {"edge": "a", "sip": both}}, "x")


def test_ranges_publish_sip_signalling_and_media() -> None:
    sip = ranges.SipEntry(("192.0.2.10/32", "192.0.2.11/32"), 5060, (20000, 29999))
    entry = ranges.EdgeRanges(
        "ashburn", "US East", ("192.0.2.1/32",), ((3478, "udp"),), (49152, 65535),
        ("192.0.2.10/32", "192.0.2.11/32"), (sip,),
    )  # fmt: skip
    doc = ranges.document([entry])
    assert doc["edges"][0]["sip"] == {
        "cidrs": ["192.0.2.10/31"],
        "ports": [{"port": 5060, "protocol": "udp"}, {"port": 5060, "protocol": "tcp"}],
        "rtpPorts": ["20000-29999"],
    }
    text = ranges.render_txt(doc, "now")
    (sip_line,) = [line for line in text.splitlines() if "sip (inbound)" in line]
    assert sip_line.split("  ")[-1] == "5060/udp, 5060/tcp" and " 192.0.2.10/31 " in sip_line
    assert "rtp (both ways)" in text and "20000-29999/udp" in text
    no_sip = ranges.EdgeRanges("a", "b", (), (), (1, 2), ())
    assert "sip" not in ranges.document([no_sip])["edges"][0]
