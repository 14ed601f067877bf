"""Long-term credential authentication with TURN REST usernames, and stateless nonces.

The password of a TURN REST username is derived from a keyring secret, and ANY key in the keyring is
accepted, so a rotation never breaks a credential in flight. Nonces carry their own timestamp and an
HMAC keyed from the keyring, so the relay keeps no per-client state before a client proves it can
receive our replies, and a client whose packets land on another relay pod of the same edge (same
keyring) costs at most one 438. Nothing in this module logs; callers log reasons, never secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from turnpike.core.credentials import parse_username, turn_password
from turnpike.core.keyring import Keyring
from turnpike.relay import stun
from turnpike.relay.stun import Attr

NONCE_LIFETIME = 600.0  # seconds, as coturn's --stale-nonce default
CLOCK_SKEW = 30.0  # seconds a nonce may come from the future (another pod's clock)
_NONCE_PREFIX = "tpn1"
_NONCE_KEY_LABEL = b"turnpike relay nonce v1\x00"


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 8489 §9.2.2: MD5(username ":" realm ":" password), the MESSAGE-INTEGRITY key."""
    text = f"{username}:{realm}:{password}".encode()
    return hashlib.md5(text, usedforsecurity=False).digest()


class Failure(Enum):
    """Why a request did not authenticate; the value is the metric label."""

    MISSING = "missing_integrity"  # → 401 challenge, the normal first round trip
    BAD_REQUEST = "bad_request"  # integrity without USERNAME/REALM/NONCE → 400
    STALE_NONCE = "stale_nonce"  # → 438 with a fresh nonce
    BAD_USERNAME = "bad_username"  # no timestamp in the username → 401
    EXPIRED = "expired"  # credential past its expiry, on Allocate → 401
    WRONG_REALM = "wrong_realm"  # → 401
    BAD_INTEGRITY = "bad_integrity"  # no keyring key verifies → 401


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent an authenticated request, and the key that verified it."""

    username: str
    user: str
    key: bytes  # long-term key: signs our responses and later requests on the allocation


class Authenticator:
    def __init__(
        self,
        keyring: Callable[[], Keyring],
        realm: str,
        *,
        nonce_lifetime: float = NONCE_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self._clock = clock
        self._cached_ring: Keyring | None = None
        self._nonce_keys: tuple[bytes, ...] = ()

    def _keys(self) -> tuple[bytes, ...]:
        ring = self._keyring()
        if ring is not self._cached_ring:  # re-derive only when the keyring was reloaded
            self._cached_ring = ring
            self._nonce_keys = tuple(
                hashlib.sha256(_NONCE_KEY_LABEL + secret).digest() for secret in ring.secrets
            )
        return self._nonce_keys

    @staticmethod
    def _sign(key: bytes, ip: str, stamp: str) -> str:
        return hmac.digest(key, f"{ip}|{stamp}".encode(), "sha256").hex()[:32]

    def nonce(self, client_ip: str) -> str:
        """A fresh nonce bound to the client's IP, signed with the signing key's nonce key."""
        stamp = f"{int(self._clock()):x}"
        return f"{_NONCE_PREFIX}{stamp}.{self._sign(self._keys()[0], client_ip, stamp)}"

    def nonce_valid(self, nonce: str, client_ip: str) -> bool:
        if not nonce.startswith(_NONCE_PREFIX):
            return False
        stamp, sep, mac = nonce[len(_NONCE_PREFIX) :].partition(".")
        if not sep or len(stamp) > 12:
            return False
        try:
            issued = int(stamp, 16)
        except ValueError:
            return False
        # Pods of one edge may disagree on the time by a little: tolerate nonces from the
        # near future instead of costing such a client a 438 on every hop.
        if not issued - CLOCK_SKEW <= self._clock() < issued + self.nonce_lifetime:
            return False
        # Any keyring key: during a rotation pods may briefly disagree on the signing key.
        return any(
            hmac.compare_digest(self._sign(key, client_ip, stamp), mac) for key in self._keys()
        )

    def check_envelope(self, msg: stun.Message, client_ip: str) -> Failure | None:
        """The checks that do not depend on which key verifies: presence and the nonce."""
        if msg.integrity_offset < 0:
            return Failure.MISSING
        username, realm, nonce = msg.get(Attr.USERNAME), msg.get(Attr.REALM), msg.get(Attr.NONCE)
        if username is None or realm is None or nonce is None:
            return Failure.BAD_REQUEST
        if not self.nonce_valid(nonce, client_ip):
            return Failure.STALE_NONCE
        if not hmac.compare_digest(realm.encode(), self.realm.encode()):
            return Failure.WRONG_REALM
        return None

    def authenticate(
        self, msg: stun.Message, client_ip: str, *, check_expiry: bool
    ) -> Identity | Failure:
        """Verify a request against every keyring key (the draft's §4.2 checks)."""
        failure = self.check_envelope(msg, client_ip)
        if failure is not None:
            return failure
        username: str = msg.attributes[Attr.USERNAME]
        try:
            parsed = parse_username(username)
        except ValueError:
            return Failure.BAD_USERNAME
        if check_expiry and parsed.expiry < self._clock():
            return Failure.EXPIRED
        for secret in self._keyring().secrets:
            key = long_term_key(username, self.realm, turn_password(secret, username))
            if msg.verify_integrity(key):
                return Identity(username, parsed.user, key)
        return Failure.BAD_INTEGRITY
