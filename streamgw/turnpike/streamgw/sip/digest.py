"""SIP digest authentication (RFC 3261 §22.4 with RFC 2617's MD5 and ``qop=auth``) per account.

A PBX or trunk outside the trusted ranges proves an account with a username and password from the
accounts file (``sipCredentials``). Nonces are stateless, like the relay's: a timestamp and an
HMAC of it under a key made at start, so any request within ``NONCE_LIFETIME`` can be checked with
no per-caller state; an older one is answered with a fresh challenge and ``stale=true``.
Passwords and responses are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from turnpike.core.accounts import Account, Accounts
from turnpike.streamgw.sip.message import Message

NONCE_LIFETIME = 300.0
_PARAM = re.compile(r'([A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True, slots=True)
class Outcome:
    account: Account | None  # who authenticated; None: challenge (``stale``) or refuse
    stale: bool = False
    presented: bool = False  # the request carried credentials (wrong ones, if no account)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class Digest:
    def __init__(self, realm: str, accounts: Callable[[], Accounts]) -> None:
        self.realm = realm
        self.accounts = accounts
        self._key = secrets.token_bytes(32)

    def _nonce(self, now: float) -> str:
        stamp = struct.pack("!d", now)
        mac = hmac.new(self._key, stamp, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(stamp + mac).decode().rstrip("=")

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != 24:
            return None
        stamp, mac = raw[:8], raw[8:]
        if not hmac.compare_digest(mac, hmac.new(self._key, stamp, hashlib.sha256).digest()[:16]):
            return None
        (issued,) = struct.unpack("!d", stamp)
        return now - float(issued)

    def challenge(self, stale: bool = False) -> str:
        """The ``WWW-Authenticate`` value of a 401."""
        value = (
            f'Digest realm="{self.realm}", nonce="{self._nonce(time.time())}", '
            'algorithm=MD5, qop="auth"'
        )
        return value + (", stale=true" if stale else "")

    def check(self, request: Message) -> Outcome:
        header = request.get("Authorization")
        if header is None or not header.lower().startswith("digest "):
            return Outcome(None)
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _PARAM.finditer(header[7:])
        }
        username, nonce = params.get("username", ""), params.get("nonce", "")
        if params.get("realm") != self.realm or params.get("algorithm", "MD5").upper() != "MD5":
            return Outcome(None, presented=True)
        age = self._nonce_age(nonce, time.time())
        if age is None or age < -5:
            return Outcome(None, presented=True)
        found = self.accounts().sip_user(username)
        if found is None:
            return Outcome(None, presented=True)
        account, password = found
        ha1 = _md5(f"{username}:{self.realm}:{password}")
        ha2 = _md5(f"{request.method}:{params.get('uri', '')}")
        qop = params.get("qop")
        if qop == "auth":
            digest = f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}"
        elif qop is None:
            digest = f"{ha1}:{nonce}:{ha2}"
        else:
            return Outcome(None, presented=True)
        if not hmac.compare_digest(_md5(digest), params.get("response", "")):
            return Outcome(None, presented=True)
        if age > NONCE_LIFETIME:
            return Outcome(None, stale=True, presented=True)
        return Outcome(account, presented=True)
