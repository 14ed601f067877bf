"""The accounts file: who may call Turnpike's REST APIs (token API and stream gateway).

Format (in a cluster it comes from a Secret)::

    {"accounts": [{"sid": "AC…", "authToken": "…", "apiKeys": [{"sid": "SK…", "secret": "…"}],
                   "sipCredentials": [{"username": "pbx1", "password": "…"}]}]}

Clients authenticate with HTTP Basic ``AccountSid:AuthToken`` or ``ApiKeySid:secret``, as with the
hosted APIs. ``sipCredentials`` (optional) are the usernames and passwords a PBX or trunk uses for
SIP digest authentication at the stream gateway; a username belongs to one account only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable
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
    sip_credentials: dict[str, str] = field(default_factory=dict, repr=False)  # user -> password


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
    _sip_owner: dict[str, Account] = field(default_factory=dict, repr=False)

    def get(self, sid: str) -> Account | None:
        return self.by_sid.get(sid)

    def sip_user(self, username: str) -> tuple[Account, str] | None:
        """The account a SIP digest username belongs to, and its password."""
        account = self._sip_owner.get(username)
        return None if account is None else (account, account.sip_credentials[username])

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
        sip_owner: dict[str, Account] = {}
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
            sip = _sip_credentials(raw.get("sipCredentials", []), sid, sip_owner, fail)
            account = Account(sid, token, keys, sip)
            by_sid[sid] = account
            key_owner.update(dict.fromkeys(keys, account))
            sip_owner.update(dict.fromkeys(sip, account))
        return cls(by_sid, key_owner, sip_owner)


def _sip_credentials(
    raw: Any, sid: str, taken: dict[str, Account], fail: Callable[[str], AccountsError]
) -> dict[str, str]:
    if not isinstance(raw, list):
        raise fail(f'account {sid}: "sipCredentials" must be a list')
    out: dict[str, str] = {}
    for entry in raw:
        user = entry.get("username") if isinstance(entry, dict) else None
        password = entry.get("password") if isinstance(entry, dict) else None
        if not isinstance(user, str) or not user or not user.isprintable() or '"' in user:
            raise fail(f"account {sid}: a SIP username must be a non-empty printable string")
        if not isinstance(password, str) or not password:
            raise fail(f"account {sid}: SIP username {user} needs a non-empty password")
        if user in out or user in taken:
            raise fail(f"SIP username {user} is listed twice")
        out[user] = password
    return out


def parse_accounts(data: bytes, source: str) -> Accounts:
    """`FileWatcher` parser for accounts files."""
    return Accounts.parse(data, source)
