"""`turnpike relay`: run a STUN/TURN relay"""

from __future__ import annotations

import argparse
import sys

NAME = "relay"
HELP = "run a STUN/TURN relay"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    print("turnpike relay: not implemented yet", file=sys.stderr)
    return 2
