"""`turnpike bench <target> …`: the benchmarks in the source tree's ``bench/`` package.

The benchmarks drive coturn, the test suite's Kubernetes API emulator and matplotlib, so they
live beside the tests rather than in the installed package; this command runs them from the
checkout the (editable) install points at, exactly as ``python -m bench`` there would.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

NAME = "bench"
HELP = "run a benchmark (relay, tokens, streamgw, operator, all, report) from the source tree"


def source_root() -> Path | None:
    """The checkout this installation runs from, if it has the benchmarks."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "bench" / "__main__.py").is_file() else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "arguments",
        nargs=argparse.REMAINDER,
        metavar="TARGET …",
        help="what `python -m bench` takes, e.g. `relay --rounds 3` or `tokens --smoke`",
    )


def run(args: argparse.Namespace) -> int:
    root = source_root()
    if root is None:
        print(
            "turnpike bench needs a source checkout (the bench/ folder beside turnpike/); "
            "install with ./scripts/test or `pip install -e '.[test]'` from a clone",
            file=sys.stderr,
        )
        return 2
    return subprocess.call([sys.executable, "-m", "bench", *args.arguments], cwd=root)
