import argparse
import os
import re
import subprocess
import sys

import pytest

from turnpike.cli import build_parser
from turnpike.core.config import (
    apply_env_defaults,
    env_name,
    host_port,
    port_range,
    positive_int,
)


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
    # ...also for a repeatable flag: the command line's list replaces the variable's.
    twice = parser.parse_args(["--listen", "127.0.0.2:1", "--listen", "127.0.0.3:2"])
    assert [str(x) for x in twice.listen] == ["127.0.0.2:1", "127.0.0.3:2"]
    assert [str(x) for x in parser.parse_args([]).listen] == ["127.0.0.1:3478", "[::1]:3479"]
    assert "TURNPIKE_REALM" in parser.format_help()


@pytest.mark.parametrize("bad", ["3478", "host:port", "h:70000"])
def test_host_port_rejects(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        host_port(bad)


@pytest.mark.parametrize("bad", ["10", "2-1", "0-5", "a-b", "1-70000"])
def test_port_range_rejects(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        port_range(bad)


@pytest.mark.parametrize("bad", ["0", "-3", "ten", "1.5"])
def test_positive_int_rejects(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int(bad)
    assert positive_int("40") == 40


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


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("TURNPIKE_RELAY_PORTS", "bogus", "TURNPIKE_RELAY_PORTS: expected MIN-MAX, got 'bogus'"),
        ("TURNPIKE_LOG_LEVEL", "loud", "TURNPIKE_LOG_LEVEL: 'loud' is not one of debug"),
        ("TURNPIKE_LISTEN", "127.0.0.1:1,nope", "TURNPIKE_LISTEN: expected HOST:PORT"),
        ("TURNPIKE_LOG_JSON", "maybe", "TURNPIKE_LOG_JSON: expected true or false"),
    ],
)
def test_bad_environment_value_is_a_usage_error(variable: str, value: str, problem: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "turnpike", "relay", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, variable: value},
    )
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr
    assert "Traceback" not in result.stderr


def test_env_value_of_a_plain_type_is_checked() -> None:
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--count", type=int, default=1)
    with pytest.raises(SystemExit):
        apply_env_defaults(parser, {"TURNPIKE_COUNT": "many"})
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--count", type=int, default=1)
    apply_env_defaults(parser, {"TURNPIKE_COUNT": "7"})
    assert parser.parse_args([]).count == 7


def _long_flags(name: str, parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                found += _long_flags(f"{name} {child_name}", child)
            continue
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and longs[0] not in ("--help", "--version"):
            found.append((f"{name} {longs[0]}", action))
    return found


def test_every_flag_of_every_subcommand_has_its_variable_and_style() -> None:
    flags = _long_flags("turnpike", build_parser())
    assert any(where.startswith("turnpike dev call ") for where, _ in flags)
    for where, action in flags:
        flag = where.rsplit(" ", 1)[1]
        assert re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*", flag), where
        if action.help is not argparse.SUPPRESS:
            assert env_name(flag) in (action.help or ""), f"{where} does not name its variable"
