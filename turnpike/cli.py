"""The ``turnpike`` command: one subcommand per component.

Each component's ``cli`` module declares its flags and a ``run(args) -> int``; heavy imports
(kopf, aiortc, …) happen inside ``run`` so ``turnpike --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from turnpike.core.config import apply_env_defaults
from turnpike.core.logs import setup_logging
from turnpike.core.version import __version__


class Component(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _components() -> list[Component]:
    from turnpike import bench_cli as bench
    from turnpike.dev import cli as dev
    from turnpike.operator import cli as operator
    from turnpike.relay import cli as relay
    from turnpike.streamgw import cli as streamgw
    from turnpike.tokens import cli as tokens

    return [relay, tokens, streamgw, operator, dev, bench]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity",
    )
    common.add_argument("--log-json", action="store_true", help="log one JSON object per line")

    parser = argparse.ArgumentParser(
        prog="turnpike",
        description="Self-hosted STUN/TURN relays, ICE-server tokens and Media Streams gateway.",
    )
    parser.add_argument("--version", action="version", version=f"turnpike {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for component in _components():
        child = sub.add_parser(
            component.NAME, help=component.HELP, description=component.HELP, parents=[common]
        )
        component.add_arguments(child)
        apply_env_defaults(child)
        child.set_defaults(run=component.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_json)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
