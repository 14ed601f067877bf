"""TURN REST API credentials (draft-uberti-behave-turn-rest), the contract between the token API
and every relay.

The username carries its own expiry, the password is ``base64(HMAC-SHA1(secret, username))``, so any
relay holding the keyring can verify any credential without a shared database.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass

DEFAULT_SEPARATOR = ":"


@dataclass(frozen=True, slots=True)
class RestUsername:
    """A parsed TURN REST username: when it expires and who it is for."""

    expiry: int
    user: str


def turn_password(secret: str | bytes, username: str) -> str:
    """The password for ``username``: padded base64 of HMAC-SHA1 keyed with the secret's bytes."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.digest(key, username.encode(), "sha1")
    return base64.b64encode(digest).decode("ascii")


def make_username(expiry: int, user: str, separator: str = DEFAULT_SEPARATOR) -> str:
    """``<expiry><sep><user>``; a bare expiry when there is no user part."""
    return f"{expiry}{separator}{user}" if user else str(expiry)


def parse_username(username: str, separator: str = DEFAULT_SEPARATOR) -> RestUsername:
    """Parse ``<expiry><sep><user>``, ``<user><sep><expiry>`` or a bare ``<expiry>``.

    Like coturn, whichever end is all digits is the timestamp; the user part may itself contain the
    separator (the token API puts the account SID and a token id there). Raises ``ValueError``.
    """
    if not separator:
        raise ValueError("separator must not be empty")
    if username.isascii() and username.isdigit():
        return RestUsername(int(username), "")
    head, sep, rest = username.partition(separator)
    if sep and head.isascii() and head.isdigit():
        return RestUsername(int(head), rest)
    rest, sep, tail = username.rpartition(separator)
    if sep and tail.isascii() and tail.isdigit():
        return RestUsername(int(tail), rest)
    raise ValueError("username carries no expiry timestamp")


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential issued to a client, and the keyring key that signed it."""

    username: str
    password: str
    expiry: int
    key_id: str


def issue_credential(
    secret: str | bytes,
    key_id: str,
    user: str,
    ttl: int,
    now: float,
    separator: str = DEFAULT_SEPARATOR,
) -> Credential:
    """Mint a credential valid for ``ttl`` seconds from ``now``."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    expiry = int(now) + ttl
    username = make_username(expiry, user, separator)
    return Credential(username, turn_password(secret, username), expiry, key_id)


def token_user(account_sid: str, token_id: str) -> str:
    """The user part the token API puts in a username: ``<AccountSid>:<token id>``."""
    return f"{account_sid}:{token_id}"


def account_of(user: str) -> str:
    """The account a username's user part belongs to (the text before the first ``:``).

    Relays count usage per account with it; a user part without one (a hand-made credential such
    as ``alice``) is its own account.
    """
    return user.partition(":")[0]
