"""The commands the chart's containers run are accepted by the real `turnpike` command: every
argument parses, and every TURNPIKE_* variable names a flag of that subcommand or, for the
operator, of its keyring rotation settings (a variable for a flag that does not exist would be
silently ignored)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from charts.chartkit import CHART, Obj, Render, load_yaml, scenario_files

SCENARIOS = [pytest.param({}, id="defaults")] + [
    pytest.param(load_yaml(path), id=path.stem) for path in scenario_files()
]


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _subcommand_flags(command: str) -> set[str]:
    from turnpike.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = _flags(subparsers.choices[command])
    if command == "operator":
        # The keyring rotation settings (flags of `turnpike operator`, each also TURNPIKE_<FLAG>;
        # read with settings_from_env while the rotation is not yet behind the command's parser).
        from turnpike.operator import rotation_settings

        rotation_parser = argparse.ArgumentParser(add_help=False)
        rotation_settings.add_arguments(rotation_parser)
        flags |= _flags(rotation_parser)
    return flags


def _env_name(option: str) -> str:
    from turnpike.core.config import env_name

    return env_name(option)


def _containers(objects: list[Obj]) -> list[dict[str, Any]]:
    return [
        container
        for obj in objects
        if obj["kind"] == "Deployment"
        for container in obj["spec"]["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize("values", SCENARIOS)
def test_containers_run_commands_turnpike_accepts(
    render: Render, values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from turnpike.cli import build_parser

    containers = _containers(render(values))
    assert containers
    for container in containers:
        command = container["args"][0]
        flags = _subcommand_flags(command)
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        settings = {name: value for name, value in env.items() if name.startswith("TURNPIKE_")}
        known = {_env_name(flag) for flag in flags if flag.startswith("--")}
        assert set(settings) - known == set(), f"{command}: variables for flags it does not have"
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        args = build_parser().parse_args(container["args"])  # SystemExit on a bad argument
        assert args.command == command
        for name in settings:
            monkeypatch.delenv(name)


def test_operator_settings_reach_the_operator(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values → Deployment → parsed operator flags, end to end."""
    from turnpike.cli import build_parser

    values = load_yaml(CHART / "ci" / "namespaced-values.yaml")
    values["operator"]["serviceCIDRs"] = ["10.100.0.0/16"]
    values["operator"]["globalHost"] = "turn.example.com"
    (container,) = [c for c in _containers(render(values)) if c["args"][0] == "operator"]
    for env in container["env"]:
        if env["name"].startswith("TURNPIKE_"):
            monkeypatch.setenv(env["name"], env["value"])
    args = build_parser().parse_args(container["args"])
    assert args.namespace == ["edges-east", "edges-west"]
    assert not args.all_namespaces
    assert (args.metrics.host, args.metrics.port) == ("0.0.0.0", 9090)
    assert args.peering_name == "turnpike-operator"
    assert args.keyring_secret == "turnpike-keyring"
    assert args.service_cidr == ["10.100.0.0/16"]
    assert args.global_host == "turn.example.com"
    assert args.image.startswith("ghcr.io/turnpike/turnpike:")
    from turnpike.operator import rotation_settings

    settings = rotation_settings.settings_from_env()
    assert (settings.interval, settings.max_token_lifetime, settings.wait_timeout) == (
        43200,
        3600,
        300,
    )
    assert settings.secret_name == "turnpike-keyring"


def test_a_flag_the_command_lacks_is_caught() -> None:
    flags = _subcommand_flags("tokens")
    assert "--keyring" in flags
    assert _env_name("--no-such-flag") not in {_env_name(f) for f in flags}
