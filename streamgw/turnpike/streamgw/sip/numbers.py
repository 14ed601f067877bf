"""The numbers file: which account and which TwiML answer a called number.

``{"numbers": [{"number": "+15550002222", "accountSid": "AC…", "voiceUrl": "https://…",
"voiceMethod": "POST", "statusCallback": "https://…"}, {"number": "+15550003333",
"accountSid": "AC…", "twiml": "<Response>…</Response>"}]}``. Each entry has exactly one of
``voiceUrl`` (a voice webhook, fetched and signed like the hosted one) and ``twiml`` (an inline
document, like a TwiML Bin), checked when the file is read. Numbers are E.164; the called number
is the Request-URI's user part, normalised by `normalise`.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from turnpike.core import sids, validate
from turnpike.streamgw import twiml

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_VISUAL = re.compile(r"[\s().-]")
_NUMBER = 'an E.164 number such as "+15550002222"'
_FIELDS = ("number", "accountSid", "voiceUrl", "voiceMethod", "statusCallback", "twiml")


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
    """`FileWatcher` parser: every problem is a `NumbersError` naming the file, the JSON path of
    the problem, what was expected and what was found."""
    root = validate.load(data, source, NumbersError).object("numbers")
    routes: dict[str, Route] = {}
    for entry in root.field("numbers").items():
        entry.object(*_FIELDS)
        number = entry.field("number").once(routes).text(_NUMBER, _E164.match)
        account = sids.from_field(entry.field("accountSid"), sids.ACCOUNT)
        url, inline = entry.field("voiceUrl"), entry.field("twiml")
        if _given(url) == _given(inline):
            found = "both" if _given(url) else "neither"
            raise entry.fail('exactly one of "voiceUrl" and "twiml"', found)
        routes[number] = Route(
            number,
            account,
            voice_url=_web_url(url),
            voice_method=entry.field("voiceMethod").choice(("GET", "POST"), default="POST"),
            status_callback=_web_url(entry.field("statusCallback")),
            document=_document(inline),
        )
    return Numbers(routes)


def _given(field: validate.Node) -> bool:
    # null is as good as leaving an optional field out
    return field.present and field.value is not None


def _web_url(field: validate.Node) -> str | None:
    if not _given(field):
        return None
    return field.text("an http or https URL", _http_url)


def _http_url(text: str) -> bool:
    try:
        return urllib.parse.urlsplit(text).scheme in ("http", "https")
    except ValueError:  # such as an unclosed IPv6 bracket
        return False


def _document(field: validate.Node) -> twiml.Document | None:
    if not _given(field):
        return None
    try:
        return twiml.parse(field.text("a TwiML document", validate.anything))
    except twiml.TwimlError as exc:
        raise field.fail("TwiML the gateway can run", f"TwiML it cannot ({exc})") from None
