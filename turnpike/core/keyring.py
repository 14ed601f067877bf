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

from turnpike.core.credentials import Credential, issue_credential

_KEY_FIELDS = frozenset({"id", "secret", "signing"})


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
        """Validate and parse a keyring file; ``KeyringError`` names ``source`` and the problem."""

        def fail(problem: str) -> KeyringError:
            return KeyringError(f"{source}: {problem}")

        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise fail(f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise fail('expected an object with a "keys" list')
        raw_keys: list[Any] = doc["keys"]
        if not raw_keys:
            raise fail("no keys")
        keys: list[Key] = []
        seen: set[str] = set()
        for n, raw in enumerate(raw_keys):
            where = f"key #{n + 1}"
            if not isinstance(raw, dict):
                raise fail(f"{where} is not an object")
            unknown = set(raw) - _KEY_FIELDS
            if unknown:
                raise fail(f"{where} has unknown fields {sorted(unknown)}")
            kid, secret, signing = raw.get("id"), raw.get("secret"), raw.get("signing", False)
            if not isinstance(kid, str) or not kid:
                raise fail(f'{where} needs a non-empty string "id"')
            where = f"key {kid!r}"
            if kid in seen:
                raise fail(f"{where} is listed twice")
            if not isinstance(secret, str) or not secret:
                raise fail(f'{where} has an empty or missing "secret"')
            if not isinstance(signing, bool):
                raise fail(f'{where}: "signing" must be true or false')
            seen.add(kid)
            keys.append(Key(kid, secret, signing))
        signing_ids = [k.id for k in keys if k.signing]
        if len(signing_ids) > 1:
            listed = ", ".join(signing_ids)
            raise fail(f"two or more signing keys ({listed}); exactly one must sign")
        if not signing_ids:
            raise fail('no signing key; exactly one key must have "signing": true')
        return cls(tuple(keys))


def parse_keyring(data: bytes, source: str) -> Keyring:
    """`FileWatcher` parser for keyring files."""
    return Keyring.parse(data, source)
