import argparse
import subprocess
import sys

import pytest

from turnpike.cli import build_parser
from turnpike.core.config import apply_env_defaults, host_port, port_range


def test_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "turnpike", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("relay", "tokens", "streamgw", "operator", "dev"):
        assert name in out


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "turnpike", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("turnpike ")


def test_env_defaults() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", action="append", type=host_port)
    parser.add_argument("--relay-ports", type=port_range, default=(49152, 65535))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--realm", required=True)
    apply_env_defaults(
        parser,
        {
            "TURNPIKE_LISTEN": "127.0.0.1:3478, [::1]:3479",
            "TURNPIKE_RELAY_PORTS": "1000-2000",
            "TURNPIKE_JSON": "yes",
            "TURNPIKE_REALM": "example.org",
        },
    )
    args = parser.parse_args([])
    assert [str(x) for x in args.listen] == ["127.0.0.1:3478", "[::1]:3479"]
    assert args.relay_ports == (1000, 2000) and args.json and args.realm == "example.org"
    assert parser.parse_args(["--realm", "x"]).realm == "x"  # the flag wins
    assert "TURNPIKE_REALM" in parser.format_help()


@pytest.mark.parametrize("bad", ["3478", "host:port", "h:70000"])
def test_host_port_rejects(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        host_port(bad)


@pytest.mark.parametrize("bad", ["10", "2-1", "0-5", "a-b", "1-70000"])
def test_port_range_rejects(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        port_range(bad)


def test_every_subcommand_builds() -> None:
    parser = build_parser()
    assert parser.prog == "turnpike"


def test_env_note_appears_once_per_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "turnpike", "relay", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.count("TURNPIKE_LOG_LEVEL") == 1


def test_bench_subcommand_runs_the_source_tree_benchmarks() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "turnpike", "bench", "report"],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert "relay" in result.stdout.lower()
