"""What a StreamGateway becomes: gateway config, Deployment, Service (pure builders)."""

from __future__ import annotations

from typing import Any

from turnpike.operator import crds, labels, placement
from turnpike.operator.model import StreamGateway
from turnpike.operator.relay import config_hash, pod_security

Obj = dict[str, Any]

METRICS_PORT = crds.GATEWAY_METRICS_PORT
ACCOUNTS_DIR = "/etc/turnpike/accounts"
NUMBERS_DIR = "/etc/turnpike/numbers"
TLS_DIR = "/etc/turnpike/tls"


def gateway_config(gateway: StreamGateway, announce: str | None = None) -> dict[str, str]:
    """The gateway's settings; ``announce`` is the public address for SDP and Contact
    (``--sip-announce-ip``), None for the pod's own."""
    data = {
        "TURNPIKE_LISTEN": f"0.0.0.0:{gateway.port}",
        "TURNPIKE_ACCOUNTS": f"{ACCOUNTS_DIR}/accounts.json",
        "TURNPIKE_RTP_PORTS": f"{gateway.rtp_ports[0]}-{gateway.rtp_ports[1]}",
        "TURNPIKE_METRICS": f"0.0.0.0:{METRICS_PORT}",
    }
    if gateway.allowed_destinations:
        data["TURNPIKE_ALLOW_DESTINATION"] = ",".join(gateway.allowed_destinations)
    # Unset caps keep the gateway's own defaults (sized from its RTP port range).
    if gateway.max_calls is not None:
        data["TURNPIKE_MAX_CALLS"] = str(gateway.max_calls)
    if gateway.max_account_calls is not None:
        data["TURNPIKE_MAX_CALLS_PER_ACCOUNT"] = str(gateway.max_account_calls)
    sip = gateway.sip
    if sip is not None:
        data["TURNPIKE_SIP"] = f"0.0.0.0:{sip.port}"
        data["TURNPIKE_NUMBERS"] = f"{NUMBERS_DIR}/{sip.numbers_key}"
        if sip.trusted:
            data["TURNPIKE_SIP_TRUST"] = ",".join(sip.trusted)
        if sip.realm:
            data["TURNPIKE_SIP_REALM"] = sip.realm
        if sip.invite_rate is not None:
            data["TURNPIKE_SIP_INVITE_RATE"] = str(sip.invite_rate)
        if announce is not None:
            data["TURNPIKE_SIP_ANNOUNCE_IP"] = announce
        if sip.tls_port is not None:
            data["TURNPIKE_SIP_TLS"] = f"0.0.0.0:{sip.tls_port}"
            data["TURNPIKE_TLS_CERT"] = f"{TLS_DIR}/tls.crt"
            data["TURNPIKE_TLS_KEY"] = f"{TLS_DIR}/tls.key"
    return data


def _sip_ports(gateway: StreamGateway) -> list[Obj]:
    """The SIP port for UDP and TCP (the container's and the Service's)."""
    if gateway.sip is None:
        return []
    port = gateway.sip.port
    ports = [
        {"name": "sip-udp", "containerPort": port, "protocol": "UDP"},
        {"name": "sip-tcp", "containerPort": port, "protocol": "TCP"},
    ]
    if gateway.sip.tls_port is not None:
        ports.append({"name": "sip-tls", "containerPort": gateway.sip.tls_port, "protocol": "TCP"})
    return ports


def _sip_tls_volume(gateway: StreamGateway) -> tuple[list[Obj], list[Obj]]:
    """The SIP certificate's volume and mount (none without ``spec.sip.tls``)."""
    if gateway.sip is None or gateway.sip.tls_port is None:
        return [], []
    secret = {"secretName": gateway.sip.tls_secret, "defaultMode": 0o440}
    return (
        [{"name": "tls", "secret": secret}],
        [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}],
    )


def _numbers_volume(gateway: StreamGateway) -> list[Obj]:
    sip = gateway.sip
    if sip is None:
        return []
    if sip.numbers_kind == "secret":
        source: Obj = {"secret": {"secretName": sip.numbers_name, "defaultMode": 0o440}}
    else:
        source = {"configMap": {"name": sip.numbers_name, "defaultMode": 0o440}}
    return [{"name": "numbers", **source}]


def _metadata(gateway: StreamGateway, owner: Obj) -> Obj:
    return {
        "name": labels.gateway_name(gateway.name),
        "namespace": gateway.namespace,
        "labels": labels.gateway_labels(gateway.name, gateway.edge),
        "ownerReferences": [labels.owner_reference(owner)],
    }


def deployment(gateway: StreamGateway, owner: Obj, config: dict[str, str]) -> Obj:
    name = labels.gateway_name(gateway.name)
    tls_volumes, tls_mounts = _sip_tls_volume(gateway)
    container: Obj = {
        "name": "streamgw",
        "image": gateway.workload.image,
        "imagePullPolicy": gateway.workload.image_pull_policy,
        "args": ["streamgw"],
        "envFrom": [{"configMapRef": {"name": name}}],
        # RTP arrives at the pod's own address.
        "env": [
            {"name": "TURNPIKE_RTP_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        ],
        "ports": [
            {"name": "http", "containerPort": gateway.port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            *_sip_ports(gateway),
        ],
        "volumeMounts": [
            {"name": "accounts", "mountPath": ACCOUNTS_DIR, "readOnly": True},
            *(
                [{"name": "numbers", "mountPath": NUMBERS_DIR, "readOnly": True}]
                if gateway.sip
                else []
            ),
            *tls_mounts,
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": METRICS_PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/live", "port": METRICS_PORT}, "periodSeconds": 10},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if gateway.workload.resources:
        container["resources"] = gateway.workload.resources
    pod_spec: Obj = {
        "containers": [container],
        "volumes": [
            {
                "name": "accounts",
                "secret": {"secretName": gateway.accounts_secret, "defaultMode": 0o440},
            },
            *_numbers_volume(gateway),
            *tls_volumes,
        ],
        "terminationGracePeriodSeconds": 60,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
    }
    pod_spec.update(placement.scheduling(gateway.workload, labels.gateway_selector(gateway.name)))
    # Declared either way, so that switching back from the host network is written back too
    # (children are repaired with merge patches: null removes hostNetwork, and the others are
    # the API's own defaults for a pod-network Deployment).
    rolling: Obj = {"maxSurge": "25%", "maxUnavailable": "25%"}
    pod_spec["hostNetwork"] = None
    pod_spec["dnsPolicy"] = "ClusterFirst"
    if gateway.host_network:
        # The node's own addresses: what carriers send SIP and RTP to. The pod IP (the RTP
        # address) is then the node's. Fixed host ports: a surge pod could not be scheduled next
        # to the old one, so replace one at a time.
        pod_spec["hostNetwork"] = True
        pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
        rolling = {"maxSurge": 0, "maxUnavailable": 1}
    elif gateway.lowest_port() < 1024:
        # A namespaced, "safe" sysctl for the pod's own network namespace: the gateway stays
        # non-root with no capability (on the host network the CRD refuses such ports).
        pod_spec["securityContext"]["sysctls"] = [
            {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}
        ]
    spec: Obj = {"strategy": {"type": "RollingUpdate", "rollingUpdate": rolling}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(gateway, owner),
        "spec": {
            "replicas": gateway.replicas,
            "selector": {"matchLabels": labels.gateway_selector(gateway.name)},
            "template": {
                "metadata": {
                    "labels": labels.gateway_labels(gateway.name, gateway.edge),
                    "annotations": {labels.CONFIG_HASH: config_hash(config)},
                },
                "spec": pod_spec,
            },
            **spec,
        },
    }


def service(gateway: StreamGateway, owner: Obj) -> Obj:
    """ClusterIP for media servers in the cluster, or a LoadBalancer with the cloud settings of
    ``spec.service``."""
    meta = _metadata(gateway, owner)
    if gateway.exposure.annotations:
        meta["annotations"] = placement.service_annotations(gateway.exposure)
    spec: Obj = {
        "type": gateway.exposure.type,
        "selector": labels.gateway_selector(gateway.name),
        "ports": [
            {
                "name": "http",
                "port": gateway.port,
                "targetPort": gateway.port,
                "protocol": "TCP",
            },
            *(
                {
                    "name": p["name"],
                    "port": p["containerPort"],
                    "targetPort": p["containerPort"],
                    "protocol": p["protocol"],
                }
                for p in _sip_ports(gateway)
            ),
        ],
    }
    if gateway.exposure.type == "LoadBalancer":
        spec.update(placement.load_balancer_fields(gateway.exposure))
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def children(gateway: StreamGateway, owner: Obj, announce: str | None = None) -> list[Obj]:
    config = gateway_config(gateway, announce)
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(gateway, owner),
            "data": config,
        },
        deployment(gateway, owner, config),
        service(gateway, owner),
    ]
