"""Command-line conventions shared by every subcommand.

Every long flag ``--some-flag`` can also be set with ``TURNPIKE_SOME_FLAG`` (the flag wins). A
repeatable flag takes a comma-separated list from its variable; given on the command line too, the
command line's list replaces the variable's (it does not add to it). The value types here are
the ones several commands use: ``HOST:PORT``, ``MIN-MAX`` port ranges and CIDRs.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "TURNPIKE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def host_port(text: str) -> HostPort:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    return HostPort(host or "0.0.0.0", number)


def port_range(text: str) -> tuple[int, int]:
    """``MIN-MAX`` with 1 <= MIN <= MAX <= 65535."""
    low, sep, high = text.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX, got {text!r}") from None
    if not sep or not 1 <= lo <= hi <= 65535:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX within 1-65535, got {text!r}")
    return lo, hi


def cidr(text: str) -> str:
    """A CIDR or a bare address, kept as text after validation."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP network: {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number of at least 1 (caps and counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def env_name(option: str) -> str:
    return ENV_PREFIX + option.lstrip("-").replace("-", "_").upper()


def apply_env_defaults(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Let ``TURNPIKE_<FLAG>`` set each long flag's default, and say so in ``--help``."""
    env = os.environ if environ is None else environ
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or longs[0] in ("--help", "--version"):
            continue
        name = env_name(longs[0])
        # Parent parsers share their action objects between subcommands: note the variable once.
        if action.help is not argparse.SUPPRESS and name not in (action.help or ""):
            action.help = f"{action.help or ''} [env {name}]".strip()
        if name not in env:
            continue
        raw = env[name]
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            word = raw.strip().lower()
            if word not in _TRUE | _FALSE:
                parser.error(f"{name}: expected true or false, got {raw!r}")
            value: object = (word in _TRUE) == isinstance(action, argparse._StoreTrueAction)
        elif isinstance(action, argparse._AppendAction):
            parts = [part.strip() for part in raw.split(",") if part.strip()]
            value = [_env_value(parser, action, name, part) for part in parts]
            action.__class__ = _AppendOverEnvironment
        else:
            value = _env_value(parser, action, name, raw)
        action.default = value
        action.required = False


class _AppendOverEnvironment(argparse._AppendAction):
    """A repeatable flag whose default came from the environment: its first use on the command
    line starts a fresh list, so the flag wins over the variable as every other flag does."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, [])
        super().__call__(parser, namespace, values, option_string)


def _env_value(
    parser: argparse.ArgumentParser, action: argparse.Action, name: str, raw: str
) -> object:
    """``raw`` converted as the flag would convert it; a usage error naming ``name`` if bad."""
    convert = action.type if callable(action.type) else str
    try:
        value = convert(raw)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        detail = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else f"bad value {raw!r}"
        parser.error(f"{name}: {detail}")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        parser.error(f"{name}: {raw!r} is not one of {choices}")
    return value
