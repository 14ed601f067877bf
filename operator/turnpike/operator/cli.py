"""`turnpike operator`: run the Kubernetes operator"""

from __future__ import annotations

import argparse
import secrets

from turnpike.core.config import HostPort, cidr, host_port
from turnpike.operator import rotation_settings  # light: no kopf import

NAME = "operator"
HELP = "run the Kubernetes operator"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="serve this namespace (repeatable); all namespaces when none is given",
    )
    scope.add_argument(
        "--all-namespaces", action="store_true", help="serve every namespace (the default)"
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="do not peer with other operator replicas (act even if another one is running)",
    )
    parser.add_argument("--metrics", type=host_port, metavar="HOST:PORT", help="serve /metrics")
    parser.add_argument(
        "--liveness", type=host_port, metavar="HOST:PORT", help="serve kopf's /healthz probe"
    )
    parser.add_argument("--image", help="image for relay and gateway pods that name none")
    parser.add_argument(
        "--keyring-secret",
        default="turnpike-keyring",
        help="keyring Secret name",
    )
    parser.add_argument(
        "--service-cidr",
        type=cidr,
        action="append",
        default=[],
        metavar="CIDR",
        help="the cluster's Service CIDR, denied as relay peer (default 10.96.0.0/12)",
    )
    parser.add_argument(
        "--pod-cidr",
        type=cidr,
        action="append",
        default=[],
        metavar="CIDR",
        help="pod CIDR denied as relay peer, besides the nodes' spec.podCIDRs",
    )
    parser.add_argument("--global-host", default="", help="hostname of the global relay name")
    parser.add_argument(
        "--pod-security-default",
        choices=("privileged", "baseline", "restricted"),
        default="privileged",
        help="the Pod Security level the cluster enforces on namespaces without a "
        "pod-security.kubernetes.io/enforce label (default privileged, Kubernetes' own); "
        "offload: auto edges get the kernel fast path only where the level is privileged",
    )
    parser.add_argument(
        "--resync-interval", type=float, default=60.0, help="seconds between full reconciles"
    )
    parser.add_argument(
        "--retry-delay", type=float, default=10.0, help="seconds before retrying a failure"
    )
    parser.add_argument("--peering-name", default="turnpike-operator", help="kopf peering object")
    parser.add_argument("--priority", type=int, default=0, help="peering priority (random when 0)")
    parser.add_argument(
        "--peering-lifetime", type=int, default=60, help="seconds a silent peer counts as alive"
    )
    rotation_settings.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from turnpike.core import service
    from turnpike.operator.config import DEFAULT_IMAGE, OperatorConfig
    from turnpike.operator.main import run_operator

    config = OperatorConfig(
        namespaces=() if args.all_namespaces else tuple(args.namespace),
        standalone=args.standalone,
        peering_name=args.peering_name,
        priority=args.priority or 1 + secrets.randbelow(1_000_000),
        peering_lifetime=args.peering_lifetime,
        image=args.image or DEFAULT_IMAGE,
        keyring_secret=args.keyring_secret,
        service_cidrs=tuple(args.service_cidr) or ("10.96.0.0/12",),
        pod_cidrs=tuple(args.pod_cidr),
        global_host=args.global_host,
        pod_security_default=args.pod_security_default,
        resync_interval=args.resync_interval,
        retry_delay=args.retry_delay,
        rotation=rotation_settings.settings_from_args(args),
    )
    metrics: HostPort | None = args.metrics
    liveness: HostPort | None = args.liveness
    return service.run(lambda stop: run_operator(config, stop, metrics, liveness))
