"""`turnpike dev`: run the whole fleet on this machine"""

from __future__ import annotations

import argparse
import sys

NAME = "dev"
HELP = "run the whole fleet on this machine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    print("turnpike dev: not implemented yet", file=sys.stderr)
    return 2
