"""Twilio-style resource identifiers: a two-letter prefix and 32 lowercase hex digits."""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from turnpike.core.validate import Node

ACCOUNT: Final = "AC"
API_KEY: Final = "SK"
CALL: Final = "CA"
STREAM: Final = "MZ"

_PREFIX = re.compile(r"[A-Z]{2}")
_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")


def new_sid(prefix: str) -> str:
    """A fresh random SID such as ``CA`` + 32 hex digits (128 bits of randomness)."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"SID prefix must be two capital letters, got {prefix!r}")
    return prefix + secrets.token_hex(16)


def is_sid(value: str, prefix: str | None = None) -> bool:
    """Whether ``value`` looks like a SID (with the given prefix, when one is given)."""
    if not _SID.fullmatch(value):
        return False
    return prefix is None or value.startswith(prefix)


def from_field(node: Node, prefix: str) -> str:
    """A configuration file's SID with ``prefix``; an error says what such a SID looks like."""
    return node.text(f"{prefix} followed by 32 hex digits", lambda value: is_sid(value, prefix))
