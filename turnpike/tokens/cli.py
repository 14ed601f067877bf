"""`turnpike tokens`: serve the ICE-server token API and check page"""

from __future__ import annotations

import argparse

from turnpike.core.config import host_port

NAME = "tokens"
HELP = "serve the ICE-server token API and check page"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def _ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole seconds, got {text!r}") from None
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError("must be from 1 to 86400 seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=host_port,
        default=host_port("0.0.0.0:8080"),
        metavar="HOST:PORT",
        help="where to serve Tokens.json and the check page (default 0.0.0.0:8080)",
    )
    parser.add_argument(
        "--keyring", required=True, metavar="FILE", help="keyring JSON (reloaded on change)"
    )
    parser.add_argument(
        "--accounts", required=True, metavar="FILE", help="accounts JSON (reloaded on change)"
    )
    parser.add_argument(
        "--edges", required=True, metavar="FILE", help="edge directory JSON (reloaded on change)"
    )
    parser.add_argument(
        "--metrics",
        type=host_port,
        metavar="HOST:PORT",
        help="serve /metrics, /live and /ready here instead of on --listen",
    )
    parser.add_argument(
        "--rate-limit",
        type=_positive_float,
        default=600.0,
        metavar="PER_MINUTE",
        help="token requests a minute per account, on average (0: no limit; default 600)",
    )
    parser.add_argument(
        "--rate-burst",
        type=int,
        default=60,
        metavar="N",
        help="requests an account may make at once before the limit applies (default 60)",
    )
    parser.add_argument(
        "--auth-failures-per-source",
        type=_positive_float,
        default=20.0,
        metavar="PER_MINUTE",
        help="failed logins a minute per source IP before 429 (0: no limit; default 20)",
    )
    parser.add_argument(
        "--auth-failures-per-account",
        type=_positive_float,
        default=60.0,
        metavar="PER_MINUTE",
        help="failed logins a minute per claimed account before 429 (0: no limit; default 60)",
    )
    parser.add_argument(
        "--check-ttl",
        type=_ttl,
        default=600,
        metavar="SECONDS",
        help="lifetime of the credentials the check page uses (default 600)",
    )
    parser.add_argument(
        "--dev-account",
        metavar="ACCOUNT_SID",
        help="for local development only: the check page may use this account without its token",
    )
    parser.add_argument(
        "--reload-interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="how often to look for changed keyring, accounts and edges files (default 1)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=_positive_float,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM, answer /ready with 503 this long before closing (default 0)",
    )


def run(args: argparse.Namespace) -> int:
    from turnpike.core.service import run as run_service
    from turnpike.tokens.server import serve

    return run_service(lambda stop: serve(args, stop))
