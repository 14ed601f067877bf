"""The numbers file: which account and which TwiML answer a called number.

``{"numbers": [{"number": "+15550002222", "accountSid": "AC…", "voiceUrl": "https://…",
"voiceMethod": "POST", "statusCallback": "https://…"}, {"number": "+15550003333",
"accountSid": "AC…", "twiml": "<Response>…</Response>"}]}``. Each entry has exactly one of
``voiceUrl`` (a voice webhook, fetched and signed like the hosted one) and ``twiml`` (an inline
document, like a TwiML Bin), checked when the file is read. Numbers are E.164; the called number
is the Request-URI's user part, normalised by `normalise`.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from turnpike.core import sids
from turnpike.streamgw import twiml

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_VISUAL = re.compile(r"[\s().-]")
_FIELDS = {"number", "accountSid", "voiceUrl", "voiceMethod", "statusCallback", "twiml"}


class NumbersError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Route:
    number: str
    account_sid: str
    voice_url: str | None = None
    voice_method: str = "POST"
    status_callback: str | None = None
    document: twiml.Document | None = None


def normalise(user: str) -> str | None:
    """A Request-URI user part as E.164 (``%2B1 (555) 000-2222`` → ``+15550002222``), or None."""
    text = _VISUAL.sub("", urllib.parse.unquote(user))
    if not text.startswith("+"):
        text = "+" + text
    return text if _E164.match(text) else None


@dataclass(frozen=True, slots=True)
class Numbers:
    routes: dict[str, Route]

    def lookup(self, user: str | None) -> Route | None:
        number = normalise(user) if user else None
        return self.routes.get(number) if number else None


def parse_numbers(data: bytes, source: str) -> Numbers:
    """`FileWatcher` parser: every problem is a `NumbersError` naming the file and the entry."""

    def fail(problem: str) -> NumbersError:
        return NumbersError(f"{source}: {problem}")

    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("numbers"), list):
        raise fail('expected an object with a "numbers" list')
    routes: dict[str, Route] = {}
    entries: list[Any] = doc["numbers"]
    for n, raw in enumerate(entries, 1):
        if not isinstance(raw, dict):
            raise fail(f"entry #{n} is not an object")
        unknown = set(raw) - _FIELDS
        if unknown:
            raise fail(f"entry #{n}: unknown field(s) {', '.join(sorted(unknown))}")
        number = raw.get("number")
        if not isinstance(number, str) or not _E164.match(number):
            raise fail(f'entry #{n}: "number" must be E.164, like "+15550002222"')
        if number in routes:
            raise fail(f"{number} is listed twice")
        account = raw.get("accountSid")
        if not isinstance(account, str) or not sids.is_sid(account, sids.ACCOUNT):
            raise fail(f'{number}: "accountSid" must be AC followed by 32 hex digits')
        url, inline = raw.get("voiceUrl"), raw.get("twiml")
        if (url is None) == (inline is None):
            raise fail(f'{number}: give exactly one of "voiceUrl" and "twiml"')
        method = raw.get("voiceMethod", "POST")
        if method not in ("GET", "POST"):
            raise fail(f'{number}: "voiceMethod" must be GET or POST')
        callback = raw.get("statusCallback")
        for name, value in (("voiceUrl", url), ("statusCallback", callback)):
            if value is not None and not (
                isinstance(value, str) and urllib.parse.urlsplit(value).scheme in ("http", "https")
            ):
                raise fail(f'{number}: "{name}" must be an http or https URL')
        document = None
        if inline is not None:
            if not isinstance(inline, str):
                raise fail(f'{number}: "twiml" must be a string')
            try:
                document = twiml.parse(inline)
            except twiml.TwimlError as exc:
                raise fail(f"{number}: {exc}") from None
        routes[number] = Route(number, account, url, method, callback, document)
    return Numbers(routes)
