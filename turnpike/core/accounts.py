"""The accounts file: who may call Turnpike's REST APIs (token API and stream gateway).

Format (in a cluster it comes from a Secret)::

    {"accounts": [{"sid": "AC…", "authToken": "…", "apiKeys": [{"sid": "SK…", "secret": "…"}]}]}

Clients authenticate with HTTP Basic ``AccountSid:AuthToken`` or ``ApiKeySid:secret``, as with the
hosted APIs.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from turnpike.core import sids


class AccountsError(ValueError):
    """An accounts file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Account:
    sid: str
    auth_token: str = field(repr=False)
    api_keys: dict[str, str] = field(default_factory=dict, repr=False)  # SK sid -> secret


@dataclass(frozen=True, slots=True)
class Principal:
    """Who authenticated: the account, and the SID they used (the account's or an API key's)."""

    account: Account
    sid: str


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """Split an ``Authorization: Basic …`` header into (user, password); None if absent or bad."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


@dataclass(frozen=True, slots=True)
class Accounts:
    by_sid: dict[str, Account]
    _key_owner: dict[str, Account] = field(repr=False)

    def get(self, sid: str) -> Account | None:
        return self.by_sid.get(sid)

    def authenticate(self, header: str | None) -> Principal | None:
        """The principal a Basic ``Authorization`` header proves, or None."""
        creds = basic_credentials(header)
        if creds is None:
            return None
        user, password = creds
        account = self.by_sid.get(user)
        if account is not None:
            expected = account.auth_token
        else:
            account = self._key_owner.get(user)
            if account is None:
                return None
            expected = account.api_keys[user]
        if not hmac.compare_digest(password.encode(), expected.encode()):
            return None
        return Principal(account, user)

    @classmethod
    def parse(cls, data: bytes | str, source: str = "accounts") -> Accounts:
        def fail(problem: str) -> AccountsError:
            return AccountsError(f"{source}: {problem}")

        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise fail(f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("accounts"), list):
            raise fail('expected an object with an "accounts" list')
        by_sid: dict[str, Account] = {}
        key_owner: dict[str, Account] = {}
        raw_accounts: list[Any] = doc["accounts"]
        for n, raw in enumerate(raw_accounts):
            if not isinstance(raw, dict):
                raise fail(f"account #{n + 1} is not an object")
            sid, token = raw.get("sid"), raw.get("authToken")
            if not isinstance(sid, str) or not sids.is_sid(sid, sids.ACCOUNT):
                raise fail(f'account #{n + 1}: "sid" must be AC followed by 32 hex digits')
            if sid in by_sid:
                raise fail(f"account {sid} is listed twice")
            if not isinstance(token, str) or not token:
                raise fail(f'account {sid}: "authToken" must be a non-empty string')
            keys: dict[str, str] = {}
            raw_keys = raw.get("apiKeys", [])
            if not isinstance(raw_keys, list):
                raise fail(f'account {sid}: "apiKeys" must be a list')
            for k in raw_keys:
                ksid = k.get("sid") if isinstance(k, dict) else None
                secret = k.get("secret") if isinstance(k, dict) else None
                if not isinstance(ksid, str) or not sids.is_sid(ksid, sids.API_KEY):
                    raise fail(f"account {sid}: API key sid must be SK followed by 32 hex digits")
                if not isinstance(secret, str) or not secret:
                    raise fail(f"account {sid}: API key {ksid} needs a non-empty secret")
                if ksid in keys or ksid in key_owner:
                    raise fail(f"API key {ksid} is listed twice")
                keys[ksid] = secret
            account = Account(sid, token, keys)
            by_sid[sid] = account
            key_owner.update(dict.fromkeys(keys, account))
        return cls(by_sid, key_owner)


def parse_accounts(data: bytes, source: str) -> Accounts:
    """`FileWatcher` parser for accounts files."""
    return Accounts.parse(data, source)
