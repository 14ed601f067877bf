"""`turnpike tokens`: serve the ICE-server token API and check page"""

from __future__ import annotations

import argparse
import sys

NAME = "tokens"
HELP = "serve the ICE-server token API and check page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    print("turnpike tokens: not implemented yet", file=sys.stderr)
    return 2
