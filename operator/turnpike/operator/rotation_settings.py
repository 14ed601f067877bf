"""Rotation settings and their operator flags (no kopf import: ``turnpike --help`` stays fast)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# The longest TURN allocation lifetime a relay grants on one Refresh (RFC 8656 caps it at 3600 s).
MAX_ALLOCATION_LIFETIME = 3600.0


@dataclass(frozen=True, slots=True)
class RotationSettings:
    """Operator flags for rotation; seconds everywhere so tests can shrink a day to seconds."""

    interval: float = 86400.0
    """Start a rotation when the signing key has signed this long."""
    max_token_lifetime: float = 86400.0
    """The longest credential lifetime the token API hands out (its Ttl maximum)."""
    max_allocation_lifetime: float = MAX_ALLOCATION_LIFETIME
    """How long an allocation made with a credential may live on after it."""
    wait_timeout: float = 600.0
    """How long to wait for every pod to load a new key before reporting the rotation blocked."""
    check_interval: float = 10.0
    """How often the operator looks at each keyring Secret and its pods."""
    secret_name: str = "turnpike-keyring"  # noqa: S105 (a Secret's name, not a secret)

    @property
    def retire_after(self) -> float:
        return self.max_token_lifetime + self.max_allocation_lifetime

    def __post_init__(self) -> None:
        for name in ("interval", "max_token_lifetime", "wait_timeout", "check_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"rotation {name.replace('_', ' ')} must be positive")
        if self.max_allocation_lifetime < 0:
            raise ValueError("rotation max allocation lifetime must not be negative")


# -- settings as operator flags ----------------------------------------------------------------


def _seconds(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    if value < 0 or (value == 0 and not allow_zero):
        need = "zero or more" if allow_zero else "more than zero"
        raise argparse.ArgumentTypeError(f"expected {need} seconds, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """Flag type: a duration in seconds, more than zero (a clear usage error otherwise)."""
    return _seconds(text, allow_zero=False)


def nonnegative_seconds(text: str) -> float:
    """Flag type: a duration in seconds, zero or more."""
    return _seconds(text, allow_zero=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The rotation flags, for ``turnpike operator`` (each also settable as TURNPIKE_<FLAG>)."""
    d = RotationSettings()
    group = parser.add_argument_group("keyring rotation")
    group.add_argument(
        "--rotation-interval",
        type=positive_seconds,
        default=d.interval,
        metavar="SECONDS",
        help=f"rotate the TURN keyring this often (default {d.interval:.0f})",
    )
    group.add_argument(
        "--max-token-lifetime",
        type=positive_seconds,
        default=d.max_token_lifetime,
        metavar="SECONDS",
        help="the longest token lifetime to honour: a retired key stays this long plus the "
        f"allocation lifetime (default {d.max_token_lifetime:.0f}, the token API's maximum)",
    )
    group.add_argument(
        "--max-allocation-lifetime",
        type=nonnegative_seconds,
        default=d.max_allocation_lifetime,
        metavar="SECONDS",
        help=f"the longest TURN allocation lifetime (default {d.max_allocation_lifetime:.0f})",
    )
    group.add_argument(
        "--rotation-wait-timeout",
        type=positive_seconds,
        default=d.wait_timeout,
        metavar="SECONDS",
        help="wait this long for every relay and token pod to load a new key before reporting "
        f"the rotation blocked (Degraded) (default {d.wait_timeout:.0f})",
    )
    group.add_argument(
        "--rotation-check-interval",
        type=positive_seconds,
        default=d.check_interval,
        metavar="SECONDS",
        help=f"how often to look at keyring Secrets and pods (default {d.check_interval:.0f})",
    )
    if "--keyring-secret" not in parser._option_string_actions:  # the operator may declare it
        group.add_argument(
            "--keyring-secret",
            default=d.secret_name,
            metavar="NAME",
            help=f"name of the keyring Secret in each namespace (default {d.secret_name})",
        )


def settings_from_args(args: argparse.Namespace) -> RotationSettings:
    return RotationSettings(
        interval=args.rotation_interval,
        max_token_lifetime=args.max_token_lifetime,
        max_allocation_lifetime=args.max_allocation_lifetime,
        wait_timeout=args.rotation_wait_timeout,
        check_interval=args.rotation_check_interval,
        secret_name=args.keyring_secret,
    )


def settings_from_env() -> RotationSettings:
    """The flags' defaults with TURNPIKE_* overrides, for running these handlers under plain
    ``kopf run`` (the operator's own command passes parsed flags to `configure` instead)."""
    from turnpike.core.config import apply_env_defaults

    parser = argparse.ArgumentParser(prog="keyring rotation", add_help=False)
    add_arguments(parser)
    apply_env_defaults(parser)  # a bad value is a usage error naming its variable (exit 2)
    return settings_from_args(parser.parse_args([]))
