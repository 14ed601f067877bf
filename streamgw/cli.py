"""`turnpike streamgw`: run the Media Streams gateway"""

from __future__ import annotations

import argparse
import sys

NAME = "streamgw"
HELP = "run the Media Streams gateway"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    print("turnpike streamgw: not implemented yet", file=sys.stderr)
    return 2
