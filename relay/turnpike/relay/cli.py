"""`turnpike relay`: run a STUN/TURN relay."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from turnpike.core.config import cidr, host_port, ip_address, port_range

NAME = "relay"
HELP = "run a STUN/TURN relay (RFC 8489/8656) with TURN REST credentials"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=host_port,
        action="append",
        metavar="HOST:PORT",
        help="serve STUN/TURN over UDP and TCP here (repeatable; default 0.0.0.0:3478)",
    )
    parser.add_argument("--realm", default="turnpike", help="the long-term credential realm")
    parser.add_argument(
        "--keyring", required=True, metavar="FILE", help="keyring JSON file (reloaded on change)"
    )
    parser.add_argument(
        "--tls-listen",
        type=host_port,
        action="append",
        metavar="HOST:PORT",
        help="serve TURN over TLS here (repeatable; usually port 5349 or 443)",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain (reloaded)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key (reloaded)")
    parser.add_argument(
        "--relay-ip",
        type=ip_address,
        action="append",
        metavar="IP",
        help="bind relay sockets here, one per address family (default: the --listen address)",
    )
    parser.add_argument(
        "--external-ip",
        type=ip_address,
        action="append",
        metavar="IP",
        help="advertise this address in XOR-RELAYED-ADDRESS (1:1 NAT, e.g. a cloud node IP)",
    )
    parser.add_argument(
        "--relay-ports",
        type=port_range,
        default=(49152, 65535),
        metavar="MIN-MAX",
        help="relay port range (default 49152-65535)",
    )
    parser.add_argument(
        "--allow-peer",
        type=cidr,
        action="append",
        default=[],
        metavar="CIDR",
        help="allow relaying to this range even if non-global (tests, media-plane setups)",
    )
    parser.add_argument(
        "--deny-peer",
        type=cidr,
        action="append",
        default=[],
        metavar="CIDR",
        help="also refuse this range (add cluster pod/service CIDRs)",
    )
    parser.add_argument(
        "--user-quota",
        type=int,
        default=100,
        metavar="N",
        help="allocations per credential (token), 0 = no limit (default 100)",
    )
    parser.add_argument(
        "--account-quota",
        type=int,
        default=None,
        metavar="N",
        help="allocations per account, 0 = no limit (default: half the relay ports)",
    )
    parser.add_argument(
        "--ip-quota",
        type=int,
        default=None,
        metavar="N",
        help="allocations per client IP (IPv6: per /64), 0 = no limit (default: a quarter of "
        "the relay ports)",
    )
    parser.add_argument(
        "--total-quota", type=int, default=0, metavar="N", help="allocations in total, 0 = no limit"
    )
    parser.add_argument(
        "--connections-per-ip",
        type=int,
        default=None,
        metavar="N",
        help="TCP/TLS connections per client IP, 0 = no limit (default: a tenth of the open-file "
        "limit, at least 100)",
    )
    parser.add_argument(
        "--reserve-percent",
        type=float,
        default=10.0,
        metavar="PERCENT",
        help="the last PERCENT of relay ports and file descriptors go only to clients holding "
        "few (default 10)",
    )
    parser.add_argument(
        "--max-bps",
        type=int,
        default=0,
        metavar="BITS",
        help="bandwidth per allocation in bits/s, both directions together; 0 = no limit",
    )
    parser.add_argument(
        "--max-lifetime",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="longest allocation lifetime granted (default 3600)",
    )
    parser.add_argument(
        "--nonce-lifetime",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long a nonce stays valid before 438 Stale Nonce (default 600)",
    )
    parser.add_argument(
        "--unauthorized-rate",
        type=float,
        default=10.0,
        metavar="PER_SECOND",
        help="UDP 401 replies per second per source IP, 0 = no limit (default 10)",
    )
    parser.add_argument(
        "--metrics", type=host_port, metavar="HOST:PORT", help="serve /metrics, /live and /ready"
    )
    parser.add_argument(
        "--drain-grace",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for allocations to end (default 3600)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the listening ports with SO_REUSEPORT (default 1)",
    )
    parser.add_argument(
        "--offload",
        choices=("auto", "tc", "off"),
        default="auto",
        help="kernel fast path for ChannelData over UDP (IPv4, IPv6): auto (when CAP_BPF and "
        "CAP_NET_ADMIN allow and the program loads), tc (required: fail otherwise) or off",
    )
    # Set by the --workers supervisor for its children.
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    # The worker count, so each worker's fair share is its part of the port range.
    parser.add_argument("--worker-of", type=int, default=1, help=argparse.SUPPRESS)
    # The fast path's maps (inherited descriptors) and this worker's number in its entries.
    parser.add_argument("--offload-maps", default="", help=argparse.SUPPRESS)
    parser.add_argument("--offload-owner", type=int, default=0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from turnpike.core.keyring import parse_keyring
    from turnpike.core.service import run as run_service
    from turnpike.core.tls import tls_context
    from turnpike.relay.app import Options, serve

    try:
        options = Options.from_args(args, argv=sys.argv[1:])
    except ValueError as exc:
        print(f"turnpike relay: {exc}", file=sys.stderr)
        return 2
    # Refuse to start on a missing or broken keyring or certificate with one clear line, before
    # any worker starts (a supervisor would otherwise restart failing workers forever).
    try:
        parse_keyring(Path(options.keyring).read_bytes(), options.keyring)
        if options.tls_cert is not None and options.tls_key is not None:
            tls_context(options.tls_cert, options.tls_key)
    except (OSError, ValueError) as exc:
        print(f"turnpike relay: cannot start: {exc}", file=sys.stderr)
        return 2
    if options.workers > 1:
        from turnpike.relay.workers import supervise

        return run_service(lambda stop: supervise(options, stop))
    return run_service(lambda stop: serve(options, stop))
