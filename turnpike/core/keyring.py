"""The shared TURN keyring: the secrets every relay accepts and the one the token API signs with.

File format (written by the operator into a Secret, mounted into relay and token pods)::

    {"keys": [{"id": "k2", "secret": "...", "signing": true},
              {"id": "k1", "secret": "...", "signing": false}]}

Exactly one key signs new credentials; every listed key is accepted, so a rotation never
invalidates a credential still in flight. A secret is used as an HMAC key as its UTF-8 bytes, as
coturn's ``static-auth-secret`` and ``turnutils_uclient -W`` do.
"""

from __future__ import annotations

import datetime
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from turnpike.core import validate
from turnpike.core.credentials import Credential, issue_credential


class KeyringError(ValueError):
    """A keyring file that cannot be used; the message names the file and the problem."""


def new_key_id(now: float, taken: Iterable[str] = ()) -> str:
    """A readable id unique in ``taken``: when the key was made (UTC, to the second) plus four
    random hex digits, e.g. ``k20261207134502-9f3a``."""
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("k%Y%m%d%H%M%S")
    taken = set(taken)
    while True:
        kid = f"{stamp}-{secrets.token_hex(2)}"
        if kid not in taken:
            return kid


def new_secret() -> str:
    """A fresh key secret: 256 random bits as URL-safe text (the HMAC key is its UTF-8 bytes)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    secret: str
    signing: bool

    def __repr__(self) -> str:  # never let a secret reach a log line through repr()
        return f"Key(id={self.id!r}, signing={self.signing})"


@dataclass(frozen=True, slots=True)
class Keyring:
    keys: tuple[Key, ...]

    def __post_init__(self) -> None:
        signing = [k for k in self.keys if k.signing]
        if len(signing) != 1:
            raise KeyringError(f"exactly one key must be signing, found {len(signing)}")

    @property
    def signing_key(self) -> Key:
        return next(k for k in self.keys if k.signing)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self.keys)

    @property
    def secrets(self) -> tuple[bytes, ...]:
        """Every accepted secret as HMAC key bytes, the signing key first."""
        ordered = sorted(self.keys, key=lambda k: not k.signing)
        return tuple(k.secret.encode() for k in ordered)

    def status(self) -> dict[str, Any]:
        """What a component reports about its loaded keyring (ids only, never secrets)."""
        return {"keys": list(self.ids), "signing": self.signing_key.id}

    def issue(self, user: str, ttl: int, now: float | None = None) -> Credential:
        key = self.signing_key
        return issue_credential(key.secret, key.id, user, ttl, time.time() if now is None else now)

    def to_json(self) -> str:
        body = {"keys": [{"id": k.id, "secret": k.secret, "signing": k.signing} for k in self.keys]}
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def generate(cls, key_id: str | None = None, now: float | None = None) -> Keyring:
        """A keyring with one fresh signing key (`new_secret`), named ``key_id`` or by
        `new_key_id` at ``now``."""
        kid = key_id or new_key_id(time.time() if now is None else now)
        return cls((Key(kid, new_secret(), True),))

    @classmethod
    def parse(cls, data: bytes | str, source: str = "keyring") -> Keyring:
        """Validate and parse a keyring file; ``KeyringError`` names ``source``, the JSON path of
        the problem, what was expected and what was found (never a secret)."""
        root = validate.load(data, source, KeyringError).object("keys")
        listed = root.field("keys")
        keys: list[Key] = []
        for entry in listed.items(nonempty=True):
            entry.object("id", "secret", "signing")
            key = Key(
                id=entry.field("id").once([k.id for k in keys]).text(),
                secret=entry.field("secret", secret=True).text(),
                signing=entry.field("signing").flag(default=False),
            )
            keys.append(key)
        signing = [k.id for k in keys if k.signing]
        if len(signing) != 1:
            found = (
                f"two or more signing keys ({', '.join(signing)})" if signing else "no signing key"
            )
            raise listed.fail('exactly one key with "signing": true', found)
        return cls(tuple(keys))


def parse_keyring(data: bytes, source: str) -> Keyring:
    """`FileWatcher` parser for keyring files."""
    return Keyring.parse(data, source)
