"""What a RelayEdge becomes: relay config, Deployment or DaemonSet, Service, PodDisruptionBudget.

Pure builders: a parsed edge (plus the cluster facts the operator looked up) in, plain API objects
out. The relay reads every setting from TURNPIKE_* variables in its ConfigMap; the pod template
carries a hash of that config so a config change rolls the relays.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from turnpike.operator import labels, placement
from turnpike.operator.model import RelayEdge

Obj = dict[str, Any]

METRICS_PORT = 9641
KEYRING_DIR = "/etc/turnpike/keyring"
TLS_DIR = "/etc/turnpike/tls"
DRAIN_MARGIN = 30


def config_hash(data: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def relay_config(
    edge: RelayEdge, cluster_deny: list[str], external_ip: str | None
) -> dict[str, str]:
    """The relay's settings as the environment variables `turnpike relay` reads."""
    deny = list(edge.deny_peers)
    if edge.deny_cluster_networks:
        deny += [c for c in cluster_deny if c not in deny]
    data = {
        "TURNPIKE_REALM": edge.realm,
        "TURNPIKE_KEYRING": f"{KEYRING_DIR}/{labels.KEYRING_KEY}",
        "TURNPIKE_RELAY_PORTS": f"{edge.relay_ports[0]}-{edge.relay_ports[1]}",
        "TURNPIKE_METRICS": f"0.0.0.0:{METRICS_PORT}",
        # Drain a little shorter than the pod's grace period so the relay exits on its own
        # terms (final metrics, closed allocations) before the kubelet kills it.
        "TURNPIKE_DRAIN_GRACE": str(max(edge.grace_seconds - DRAIN_MARGIN, 0)),
        "TURNPIKE_OFFLOAD": edge.offload,
    }
    if deny:
        data["TURNPIKE_DENY_PEER"] = ",".join(deny)
    if edge.allow_peers:
        data["TURNPIKE_ALLOW_PEER"] = ",".join(edge.allow_peers)
    data.update(quota_config(edge))
    if external_ip:
        data["TURNPIKE_EXTERNAL_IP"] = external_ip
    if edge.tls:
        data["TURNPIKE_TLS_CERT"] = f"{TLS_DIR}/tls.crt"
        data["TURNPIKE_TLS_KEY"] = f"{TLS_DIR}/tls.key"
    return data


def quota_config(edge: RelayEdge) -> dict[str, str]:
    """``spec.quotas`` as the relay's fair-share variables; an absent field sets nothing, so the
    relay's own default (sized from its port range and open-file limit) applies."""
    quotas = edge.quotas
    values = {
        "TURNPIKE_USER_QUOTA": quotas.per_user,
        "TURNPIKE_ACCOUNT_QUOTA": quotas.per_account,
        "TURNPIKE_IP_QUOTA": quotas.per_ip,
        "TURNPIKE_TOTAL_QUOTA": quotas.total,
        "TURNPIKE_CONNECTIONS_PER_IP": quotas.connections_per_ip,
        "TURNPIKE_RESERVE_PERCENT": quotas.reserve_percent,
    }
    return {name: str(value) for name, value in values.items() if value is not None}


def _metadata(edge: RelayEdge, owner: Obj, name: str | None = None) -> Obj:
    return {
        "name": name or labels.relay_name(edge.name),
        "namespace": edge.namespace,
        "labels": labels.relay_labels(edge.name),
        "ownerReferences": [labels.owner_reference(owner)],
    }


def config_map(edge: RelayEdge, owner: Obj, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(edge, owner),
        "data": data,
    }


def _args(edge: RelayEdge) -> list[str]:
    args = ["relay", "--listen", f"0.0.0.0:{edge.udp_port}"]
    if edge.tcp_port != edge.udp_port:
        args += ["--listen", f"0.0.0.0:{edge.tcp_port}"]
    if edge.tls:
        for port in edge.tls_ports:
            args += ["--tls-listen", f"0.0.0.0:{port}"]
    return args


def _container_ports(edge: RelayEdge) -> list[Obj]:
    ports = [
        {"name": "turn-udp", "containerPort": edge.udp_port, "protocol": "UDP"},
        {"name": "turn-tcp", "containerPort": edge.tcp_port, "protocol": "TCP"},
    ]
    if edge.tls:
        ports += [
            {"name": f"turn-tls-{n}", "containerPort": port, "protocol": "TCP"}
            for n, port in enumerate(edge.tls_ports)
        ]
    ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
    return ports


RUN_AS = 65532


def pod_security() -> Obj:
    """Non-root with a fixed numeric user (the kubelet can only verify runAsNonRoot for numeric
    users); fsGroup makes the 0440 keyring and account Secrets readable to that user."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def binds_privileged_ports(edge: RelayEdge) -> bool:
    """Whether a relay of this edge binds a port below 1024 (a listener or a relay port)."""
    return min([p for p, _ in edge.client_ports()] + [edge.relay_ports[0]]) < 1024


def container_security(edge: RelayEdge) -> Obj:
    """Read-only root, no privilege escalation, every capability dropped, with two exceptions.

    A host-network relay binding a port below 1024 needs NET_BIND_SERVICE. A relay with the
    kernel fast path (``offload`` auto or tc) must load an eBPF program and attach it to the
    pod's (with hostNetwork, the node's) interfaces: exactly CAP_BPF and CAP_NET_ADMIN, nothing
    privileged. A non-root process cannot use an added capability: Kubernetes grants no ambient
    capabilities, so for any uid but 0 an added one stays in the bounding set only, and
    no-new-privileges rules out file capabilities. Such a container alone runs as uid 0 holding
    just those capabilities (no DAC override: it reads only the root-owned Secret files). The
    baseline and restricted Pod Security levels refuse it: ``edge.offload`` arrives here already
    decided by `pod_security`, which withholds the fast path where the namespace enforces one.
    Off the host network the pod's own net.ipv4.ip_unprivileged_port_start sysctl opens a low
    port to the non-root user instead.
    """
    fast = edge.offload != "off"
    low = edge.host_network and binds_privileged_ports(edge)
    add = [cap for cap, wanted in (("BPF", fast), ("NET_ADMIN", fast),
                                   ("NET_BIND_SERVICE", low)) if wanted]  # fmt: skip
    security: Obj = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    if add:
        security["runAsNonRoot"] = False
        security["runAsUser"] = 0
        security["capabilities"]["add"] = add
    return security


def pod_template(edge: RelayEdge, config: dict[str, str], keyring_secret: str) -> Obj:
    name = labels.relay_name(edge.name)
    mounts = [{"name": "keyring", "mountPath": KEYRING_DIR, "readOnly": True}]
    volumes: list[Obj] = [
        {"name": "keyring", "secret": {"secretName": keyring_secret, "defaultMode": 0o440}}
    ]
    if edge.tls:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": edge.tls_secret}})
    container: Obj = {
        "name": "relay",
        "image": edge.workload.image,
        "imagePullPolicy": edge.workload.image_pull_policy,
        "args": _args(edge),
        "envFrom": [{"configMapRef": {"name": name}}],
        "ports": _container_ports(edge),
        "volumeMounts": mounts,
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": METRICS_PORT},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/live", "port": METRICS_PORT},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": container_security(edge),
    }
    if edge.workload.resources:
        container["resources"] = edge.workload.resources
    spec: Obj = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": edge.grace_seconds,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
    }
    if edge.host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    elif binds_privileged_ports(edge):
        # A namespaced, "safe" sysctl: it applies to the pod's own network namespace only.
        spec["securityContext"]["sysctls"] = [
            {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}
        ]
    spec.update(
        placement.scheduling(edge.workload, labels.relay_selector(edge.name), not edge.daemonset)
    )
    return {
        "metadata": {
            "labels": labels.relay_labels(edge.name),
            "annotations": {labels.CONFIG_HASH: config_hash(config)},
        },
        "spec": spec,
    }


def workload(edge: RelayEdge, owner: Obj, config: dict[str, str], keyring_secret: str) -> Obj:
    template = pod_template(edge, config, keyring_secret)
    selector = {"matchLabels": labels.relay_selector(edge.name)}
    if edge.daemonset:
        return {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _metadata(edge, owner),
            "spec": {
                "selector": selector,
                "template": template,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            },
        }
    # Host-network relays hold fixed host ports: a surge pod could not be scheduled next to the
    # old one, so replace one at a time instead.
    rolling = (
        {"maxSurge": 0, "maxUnavailable": 1}
        if edge.host_network
        else {"maxSurge": 1, "maxUnavailable": 0}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(edge, owner),
        "spec": {
            "replicas": edge.replicas,
            "selector": selector,
            "template": template,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
        },
    }


def service_names(edge: RelayEdge) -> list[str]:
    """The relays' Services: none on the host network, one per protocol when split."""
    name = labels.relay_name(edge.name)
    if edge.host_network:
        return []
    return [f"{name}-udp", f"{name}-tcp"] if edge.exposure.split_protocols else [name]


def stale_service_names(edge: RelayEdge) -> list[str]:
    """Services an earlier spec of the edge had and this one does not."""
    name = labels.relay_name(edge.name)
    wanted = service_names(edge)
    return [n for n in (name, f"{name}-udp", f"{name}-tcp") if n not in wanted]


def services(edge: RelayEdge, owner: Obj) -> list[Obj]:
    """LoadBalancers keeping client source addresses (Local policy), with the cloud settings of
    ``spec.service``; one with both protocols, or one per protocol when split."""
    udp = [
        {"name": "turn-udp", "port": edge.udp_port, "targetPort": edge.udp_port, "protocol": "UDP"}
    ]
    tcp = [
        {"name": "turn-tcp", "port": edge.tcp_port, "targetPort": edge.tcp_port, "protocol": "TCP"}
    ]
    if edge.tls:
        tcp += [
            {"name": f"turn-tls-{n}", "port": p, "targetPort": p, "protocol": "TCP"}
            for n, p in enumerate(edge.tls_ports)
        ]
    names = service_names(edge)
    if not names:
        return []
    port_sets = [udp, tcp] if len(names) == 2 else [udp + tcp]
    out = []
    for name, ports in zip(names, port_sets, strict=True):
        meta = _metadata(edge, owner, name)
        if edge.exposure.annotations:
            meta["annotations"] = placement.service_annotations(edge.exposure)
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {
                    "type": "LoadBalancer",
                    "externalTrafficPolicy": "Local",
                    "selector": labels.relay_selector(edge.name),
                    "ports": ports,
                    **placement.load_balancer_fields(edge.exposure),
                },
            }
        )
    return out


def disruption_budget(edge: RelayEdge, owner: Obj) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(edge, owner),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": labels.relay_selector(edge.name)},
        },
    }


def children(
    edge: RelayEdge,
    owner: Obj,
    cluster_deny: list[str],
    external_ip: str | None,
    keyring_secret: str,
) -> list[Obj]:
    """Every object the edge should have, in the order they are applied (config first)."""
    config = relay_config(edge, cluster_deny, external_ip)
    out = [
        config_map(edge, owner, config),
        workload(edge, owner, config, keyring_secret),
        disruption_budget(edge, owner),
    ]
    return out + services(edge, owner)
