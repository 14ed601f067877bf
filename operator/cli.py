"""`turnpike operator`: run the Kubernetes operator"""

from __future__ import annotations

import argparse
import sys

NAME = "operator"
HELP = "run the Kubernetes operator"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    print("turnpike operator: not implemented yet", file=sys.stderr)
    return 2
