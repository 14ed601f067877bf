"""The keyring rotation state machine: pure decisions, no I/O, time passed in.

A rotation moves one key through three phases, and every phase change is one write of the keyring
Secret (its data and its annotations together), so an operator killed anywhere resumes from the
Secret alone:

``stable``      one signing key (plus retired keys still honoured).
``adding``      a new key is in the keyring, accepted but not signing; wait until every started
                relay and token pod (Ready or not) reports it loaded, because a relay that has not
                loaded it would refuse the first credentials signed with it.
``switching``   the new key signs; wait until every started pod reports it as the signing key,
                because a token pod that has not reloaded still signs with the old key. Only then
                does the old key's retirement clock start.

A retired key leaves the keyring once the longest token lifetime plus the longest allocation
lifetime has passed since the fleet stopped signing with it: no credential it signed can still be
presented on an Allocate, and no allocation made with one can still be refreshed.

If the pods do not confirm within the wait timeout the machine stays where it is (promoting or
retiring early would break live tokens) and reports the rotation as blocked.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from turnpike.core.keyring import Key, Keyring, KeyringError, new_key_id, new_secret
from turnpike.operator.rotation_settings import RotationSettings

PREFIX = "rotation.turnpike.io/"
A_VERSION = PREFIX + "version"
A_PHASE = PREFIX + "phase"
A_CANDIDATE = PREFIX + "candidate"
A_PHASE_SINCE = PREFIX + "phase-since"
A_SIGNING_SINCE = PREFIX + "signing-since"
A_LAST_ROTATION = PREFIX + "last-rotation"
A_RETIRED = PREFIX + "retired"
A_BLOCKED = PREFIX + "blocked"
# Written by people (kubectl annotate), cleared by the operator once acted upon.
A_ROTATE_NOW = PREFIX + "rotate-now"
A_REVOKE = PREFIX + "revoke"

STATE_ANNOTATIONS = (
    A_VERSION,
    A_PHASE,
    A_CANDIDATE,
    A_PHASE_SINCE,
    A_SIGNING_SINCE,
    A_LAST_ROTATION,
    A_RETIRED,
    A_BLOCKED,
)


class Phase(StrEnum):
    STABLE = "stable"
    ADDING = "adding"
    SWITCHING = "switching"


def format_time(t: float) -> str:
    """RFC 3339 UTC with milliseconds (tests run rotations in fractions of a second)."""
    moment = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class RotationState:
    """What the Secret's annotations say about the rotation in progress."""

    version: int = 1
    phase: Phase = Phase.STABLE
    candidate: str | None = None
    """The key being added (``adding``) or just promoted (``switching``)."""
    phase_since: float = 0.0
    signing_since: float = 0.0
    last_rotation: float | None = None
    retired: Mapping[str, float] = field(default_factory=dict)
    """Key id → when the fleet stopped signing with it."""
    blocked: str | None = None
    """Why the rotation cannot go on (shown as the Degraded condition), or None."""

    def annotations(self) -> dict[str, str | None]:
        """The annotations to write; None deletes one (merge-patch semantics)."""
        return {
            A_VERSION: str(self.version),
            A_PHASE: self.phase.value,
            A_CANDIDATE: self.candidate,
            A_PHASE_SINCE: format_time(self.phase_since),
            A_SIGNING_SINCE: format_time(self.signing_since),
            A_LAST_ROTATION: (
                None if self.last_rotation is None else format_time(self.last_rotation)
            ),
            A_RETIRED: json.dumps(
                {kid: format_time(t) for kid, t in sorted(self.retired.items())}, sort_keys=True
            ),
            A_BLOCKED: self.blocked,
        }


def read_state(annotations: Mapping[str, str], keyring: Keyring, now: float) -> RotationState:
    """Parse the state, repairing it against the keyring so a hand edit cannot wedge rotation.

    Missing or unreadable fields fall back to the safe reading: a key nobody accounts for is treated
    as retired just now (kept for the full retirement period), never as removable.
    """

    def get_time(name: str) -> float | None:
        text = annotations.get(name)
        if not text:
            return None
        try:
            return parse_time(text)
        except ValueError:
            return None

    try:
        version = max(1, int(annotations.get(A_VERSION, "1")))
    except ValueError:
        version = 1
    try:
        phase = Phase(annotations.get(A_PHASE, Phase.STABLE.value))
    except ValueError:
        phase = Phase.STABLE
    candidate = annotations.get(A_CANDIDATE) or None
    signing = keyring.signing_key.id
    if phase is Phase.ADDING and (candidate not in keyring.ids or candidate == signing):
        phase, candidate = Phase.STABLE, None
    if phase is Phase.SWITCHING and candidate != signing:
        phase, candidate = Phase.STABLE, None
    if phase is Phase.STABLE:
        candidate = None
    try:
        raw_retired = json.loads(annotations.get(A_RETIRED) or "{}")
        if not isinstance(raw_retired, dict):
            raw_retired = {}
    except json.JSONDecodeError:
        raw_retired = {}
    retired: dict[str, float] = {}
    for kid in keyring.ids:
        if kid in (signing, candidate):
            continue
        try:
            retired[kid] = parse_time(str(raw_retired[kid]))
        except (KeyError, ValueError):
            retired[kid] = now
    phase_since = get_time(A_PHASE_SINCE)
    signing_since = get_time(A_SIGNING_SINCE)
    return RotationState(
        version=version,
        phase=phase,
        candidate=candidate,
        phase_since=now if phase_since is None else phase_since,
        signing_since=now if signing_since is None else signing_since,
        last_rotation=get_time(A_LAST_ROTATION),
        retired=retired,
        blocked=annotations.get(A_BLOCKED) or None,
    )


def parse_revoke(text: str | None) -> list[str]:
    """Key ids from the revoke annotation: comma or whitespace separated."""
    if not text:
        return []
    return [part for part in text.replace(",", " ").split() if part]


@dataclass(frozen=True, slots=True)
class PodReport:
    """What one ready relay or token pod says it has loaded (its /ready body), or why not; for a
    relay also which data path it runs (``offload``: "tc" or "off")."""

    pod: str
    keys: tuple[str, ...] = ()
    signing: str | None = None
    error: str | None = None
    offload: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One decided change: the new keyring (None: data unchanged) and state, and why."""

    keyring: Keyring | None
    state: RotationState
    reason: str
    message: str
    warning: bool = False
    outcome: str | None = None
    """For the rotations metric: started, promoted, completed, blocked, revoked."""
    clear_rotate_now: bool = False
    clear_revoke: bool = False


@dataclass(frozen=True, slots=True)
class Look:
    """What one look at the fleet saw, all a decision depends on besides the settings."""

    keyring: Keyring
    state: RotationState
    now: float
    reports: list[PodReport] | None = None
    """The started pods' reports; None: not asked (`needs_reports` says when they are needed, so a
    stable keyring costs no HTTP requests)."""
    rotate_now: bool = False
    """Someone asked to rotate now (the rotate-now annotation)."""
    revoke_ids: tuple[str, ...] = ()
    """Keys someone asked to revoke (the revoke annotation)."""


def _lagging(reports: Iterable[PodReport], ok: Any) -> list[str]:
    return sorted(r.pod + (f" ({r.error})" if r.error else "") for r in reports if not ok(r))


def revoke(keyring: Keyring, state: RotationState, ids: Iterable[str], now: float) -> Step:
    """Drop the named keys at once. Credentials they signed stop working as soon as pods reload.

    Revoking the signing key makes another key sign straight away: the candidate if one is being
    added (pods have had time to load it), else a fresh key, which the pods accept only once they
    reload, so for that short time new credentials may be refused too. That is the price of an
    emergency; the alternative is to keep signing with a compromised key.
    """
    ids = set(ids)
    unknown = sorted(ids - set(keyring.ids))
    gone = ids & set(keyring.ids)
    if not gone:
        return Step(
            None,
            state,
            "RevokeIgnored",
            f"nothing to revoke: no key {', '.join(unknown)} in the keyring",
            warning=True,
            clear_revoke=True,
        )
    keep = [k for k in keyring.keys if k.id not in gone]
    signing = keyring.signing_key.id
    phase, candidate, signing_since = state.phase, state.candidate, state.signing_since
    last_rotation = state.last_rotation
    if signing in gone:
        pick = next((k for k in keep if k.id == state.candidate), None)
        if pick is None:
            pick = Key(new_key_id(now, keyring.ids), new_secret(), True)
            keep.append(pick)
        keep = [Key(k.id, k.secret, k.id == pick.id) for k in keep]
        phase, candidate, signing_since, last_rotation = Phase.SWITCHING, pick.id, now, now
    elif state.candidate in gone:
        phase, candidate = Phase.STABLE, None
    new_state = replace(
        state,
        version=state.version + 1,
        phase=phase,
        candidate=candidate,
        phase_since=state.phase_since if candidate == state.candidate else now,
        signing_since=signing_since,
        last_rotation=last_rotation,
        retired={kid: t for kid, t in state.retired.items() if kid not in gone},
        blocked=None if signing in gone or state.candidate in gone else state.blocked,
    )
    message = f"revoked key {', '.join(sorted(gone))}: credentials signed with it stop working"
    if signing in gone:
        message += f"; key {candidate} signs now"
    if unknown:
        message += f" (no key {', '.join(unknown)})"
    return Step(
        Keyring(tuple(keep)),
        new_state,
        "KeyRevoked",
        message,
        warning=True,
        outcome="revoked",
        clear_revoke=True,
    )


def decide(look: Look, settings: RotationSettings) -> Step | None:
    """The next change to make, or None when nothing is due: a revoke first, then removing
    retired keys, then the rotation's next phase."""
    if look.revoke_ids:
        return revoke(look.keyring, look.state, look.revoke_ids, look.now)
    removed = _remove_retired(look, settings)
    if removed is not None:
        return removed
    if look.state.phase is Phase.ADDING:
        return _promote(look, settings)
    if look.state.phase is Phase.SWITCHING:
        return _complete(look, settings)
    return _start(look, settings)


def _remove_retired(look: Look, settings: RotationSettings) -> Step | None:
    state, now = look.state, look.now
    due = sorted(
        kid
        for kid, t in state.retired.items()
        if now - t >= settings.retire_after and not _still_signed(state, t)
    )
    if not due:
        return None
    keep = tuple(k for k in look.keyring.keys if k.id not in due)
    return Step(
        Keyring(keep),
        replace(
            state,
            version=state.version + 1,
            retired={k: t for k, t in state.retired.items() if k not in due},
        ),
        "KeyRemoved",
        f"removed retired key {', '.join(due)}: no credential it signed can still be used",
    )


def _promote(look: Look, settings: RotationSettings) -> Step | None:
    """Adding: once every started pod has loaded the candidate, it signs."""
    state, now, reports = look.state, look.now, look.reports
    assert reports is not None and state.candidate is not None
    candidate = state.candidate
    lagging = _lagging(reports, lambda r: r.error is None and candidate in r.keys)
    if lagging:
        return _maybe_block(state, now, settings, lagging, f"to load key {candidate}")
    old = look.keyring.signing_key.id
    keys = tuple(Key(k.id, k.secret, k.id == candidate) for k in look.keyring.keys)
    return Step(
        Keyring(keys),
        replace(
            state,
            version=state.version + 1,
            phase=Phase.SWITCHING,
            phase_since=now,
            signing_since=now,
            last_rotation=now,
            # Its clock starts only once every pod has stopped signing with it.
            retired={**state.retired, old: now},
            blocked=None,
        ),
        "KeyPromoted",
        f"key {candidate} signs new credentials; every started pod ({len(reports)}) has "
        f"loaded it; key {old} is accepted until retired",
        outcome="promoted",
        clear_rotate_now=look.rotate_now,
    )


def _complete(look: Look, settings: RotationSettings) -> Step | None:
    """Switching: once every started pod signs with the new key, the old keys' clocks start."""
    state, now, reports = look.state, look.now, look.reports
    assert reports is not None and state.candidate is not None
    signer = state.candidate
    lagging = _lagging(reports, lambda r: r.error is None and r.signing == signer)
    if lagging:
        return _maybe_block(state, now, settings, lagging, f"to sign with key {signer}")
    return Step(
        None,
        replace(
            state,
            phase=Phase.STABLE,
            candidate=None,
            phase_since=now,
            retired={
                kid: now if _still_signed(state, t) else t for kid, t in state.retired.items()
            },
            blocked=None,
        ),
        "KeyRotated",
        f"every started pod ({len(reports)}) signs with key {signer}",
        outcome="completed",
        clear_rotate_now=look.rotate_now,
    )


def _start(look: Look, settings: RotationSettings) -> Step | None:
    """Stable: when asked, or when the signing key is due, add a new key (not signing yet)."""
    state, now = look.state, look.now
    if not look.rotate_now and now - state.signing_since < settings.interval:
        return None
    kid = new_key_id(now, look.keyring.ids)
    keys = (*look.keyring.keys, Key(kid, new_secret(), False))
    why = "asked to rotate now" if look.rotate_now else "the signing key is due for rotation"
    return Step(
        Keyring(keys),
        replace(
            state,
            version=state.version + 1,
            phase=Phase.ADDING,
            candidate=kid,
            phase_since=now,
            blocked=None,
        ),
        "KeyAdded",
        f"added key {kid}, accepted but not signing yet ({why}); waiting for every pod to load it",
        outcome="started",
        clear_rotate_now=look.rotate_now,
    )


def _maybe_block(
    state: RotationState, now: float, settings: RotationSettings, lagging: list[str], what: str
) -> Step | None:
    if now - state.phase_since < settings.wait_timeout:
        return None
    message = (
        f"rotation blocked: waited {now - state.phase_since:.0f}s for {len(lagging)} pod(s) "
        f"{what}: {', '.join(lagging[:10])}{' …' if len(lagging) > 10 else ''}"
    )
    first = state.blocked is None
    if not first and _pods_of(state.blocked) == _pods_of(message):
        return None  # already reported; do not rewrite the Secret every tick
    return Step(
        None,
        replace(state, blocked=message),
        "KeyRotationBlocked",
        message,
        warning=True,
        outcome="blocked" if first else None,
    )


def _pods_of(message: str | None) -> str:
    return (message or "").partition(": ")[2].partition(": ")[2]


def _still_signed(state: RotationState, retired_at: float) -> bool:
    """While switching, the key retired by the promotion may still sign in lagging pods."""
    return state.phase is Phase.SWITCHING and retired_at >= state.phase_since


def needs_reports(state: RotationState) -> bool:
    return state.phase is not Phase.STABLE


def initial(now: float) -> tuple[Keyring, RotationState]:
    """A brand-new keyring: one strong random signing key."""
    keyring = Keyring.generate(now=now)
    return keyring, RotationState(phase_since=now, signing_since=now)


def parse_keyring_data(text: str | bytes, source: str) -> Keyring | None:
    try:
        return Keyring.parse(text, source)
    except KeyringError:
        return None


def report_from_ready(pod: str, body: Any) -> PodReport:
    """Read a /ready body: the keyring's ``keys`` and ``signing``, at the top level or under
    ``keyring`` (both shapes are accepted so components may nest their status)."""
    if not isinstance(body, dict):
        return PodReport(pod, error="/ready is not a JSON object")
    offload = body.get("offload") if isinstance(body.get("offload"), str) else None
    source: Any = body.get("keyring") if isinstance(body.get("keyring"), dict) else body
    keys, signing = source.get("keys"), source.get("signing")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return PodReport(pod, error="/ready does not list keyring keys", offload=offload)
    return PodReport(pod, tuple(keys), signing if isinstance(signing, str) else None, None, offload)
