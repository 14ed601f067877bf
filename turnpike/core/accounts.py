"""The accounts file: who may call Turnpike's REST APIs (token API and stream gateway).

Format (in a cluster it comes from a Secret)::

    {"accounts": [{"sid": "AC…", "authToken": "…", "apiKeys": [{"sid": "SK…", "secret": "…"}],
                   "sipCredentials": [{"username": "pbx1", "password": "…"}]}]}

Clients authenticate with HTTP Basic ``AccountSid:AuthToken`` or ``ApiKeySid:secret``, as with the
hosted APIs. ``sipCredentials`` (optional) are the usernames and passwords a PBX or trunk uses for
SIP digest authentication at the stream gateway; a username belongs to one account only.
``apiKeys`` and ``sipCredentials`` are optional; any other field is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Container
from dataclasses import dataclass, field

from turnpike.core import sids, validate

_SIP_USERNAME = "a non-empty printable string without double quotes"


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
        """Validate and parse an accounts file; ``AccountsError`` names ``source``, the JSON path
        of the problem, what was expected and what was found (never a token or secret)."""
        root = validate.load(data, source, AccountsError).object("accounts")
        by_sid: dict[str, Account] = {}
        key_owner: dict[str, Account] = {}
        sip_owner: dict[str, Account] = {}
        for entry in root.field("accounts").items():
            entry.object("sid", "authToken", "apiKeys", "sipCredentials")
            sid = sids.from_field(entry.field("sid").once(by_sid), sids.ACCOUNT)
            token = entry.field("authToken", secret=True).text()
            keys = _api_keys(entry.field("apiKeys"), key_owner)
            sip = _sip_credentials(entry.field("sipCredentials"), sip_owner)
            account = Account(sid, token, keys, sip)
            by_sid[sid] = account
            key_owner.update(dict.fromkeys(keys, account))
            sip_owner.update(dict.fromkeys(sip, account))
        return cls(by_sid, key_owner, sip_owner)


def _api_keys(listed: validate.Node, taken: Container[str]) -> dict[str, str]:
    """API key SID -> secret; a SID belongs to one account only."""
    out: dict[str, str] = {}
    for entry in listed.items(optional=True):
        entry.object("sid", "secret")
        sid = sids.from_field(entry.field("sid").once(out, taken), sids.API_KEY)
        out[sid] = entry.field("secret", secret=True).text()
    return out


def _sip_credentials(listed: validate.Node, taken: Container[str]) -> dict[str, str]:
    """SIP digest username -> password; a username belongs to one account only."""
    out: dict[str, str] = {}
    for entry in listed.items(optional=True):
        entry.object("username", "password")
        user = entry.field("username").once(out, taken).text(_SIP_USERNAME, _sip_username)
        out[user] = entry.field("password", secret=True).text()
    return out


def _sip_username(text: str) -> bool:
    # It is sent as a quoted string in the digest Authorization header.
    return bool(text) and text.isprintable() and '"' not in text


def parse_accounts(data: bytes, source: str) -> Accounts:
    """`FileWatcher` parser for accounts files."""
    return Accounts.parse(data, source)
