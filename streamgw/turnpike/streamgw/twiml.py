"""TwiML documents: parsed and validated up front into typed verbs.

Only the verbs the gateway can run are accepted; anything else is a clear error before the call
does anything, never a silent hang. Attribute problems that belong to one stream (a bad ``track``,
a ``ws://`` URL) are kept on the stream and reported with the documented 319xx code when the
verb runs, so the rest of the call goes on, as with the hosted service.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

PARSE_ERROR = 12100  # "Document parse failure"
SCHEMA_ERROR = 12200  # "Schema validation warning": an element or attribute we cannot run

TRACKS = ("inbound_track", "outbound_track", "both_tracks")
METHODS = ("GET", "POST")
MAX_PARAMETER_CHARS = 500  # name + value, per parameter


class TwimlError(ValueError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Stream:
    url: str
    name: str | None = None
    track: str = "inbound_track"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Start:
    stream: Stream


@dataclass(frozen=True, slots=True)
class StopStream:
    name: str


@dataclass(frozen=True, slots=True)
class Connect:
    stream: Stream
    action: str | None = None
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Pause:
    length: float = 1.0


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Play:
    url: str
    loop: int = 1  # 0 means "until the call ends"


Verb = Start | StopStream | Connect | Pause | Hangup | Redirect | Play


@dataclass(frozen=True, slots=True)
class Document:
    verbs: tuple[Verb, ...] = field(default_factory=tuple)


def _attrs(el: ET.Element, allowed: set[str]) -> dict[str, str]:
    unknown = set(el.attrib) - allowed
    if unknown:
        raise TwimlError(
            SCHEMA_ERROR, f"<{el.tag}> does not support attribute(s) {', '.join(sorted(unknown))}"
        )
    return dict(el.attrib)


def _no_children(el: ET.Element) -> None:
    if len(el):
        raise TwimlError(SCHEMA_ERROR, f"<{el.tag}> cannot contain <{el[0].tag}>")


def _method(el: ET.Element, value: str | None) -> str:
    method = (value or "POST").upper()
    if method not in METHODS:
        raise TwimlError(SCHEMA_ERROR, f"<{el.tag}> method must be GET or POST, got {value!r}")
    return method


def _stream(el: ET.Element) -> Stream:
    a = _attrs(
        el, {"url", "name", "track", "statusCallback", "statusCallbackMethod", "connectorName"}
    )
    if "connectorName" in a:
        raise TwimlError(31940, "Stream connectors are not available on this gateway")
    url = (a.get("url") or "").strip()
    if not url:
        raise TwimlError(SCHEMA_ERROR, "<Stream> needs a url attribute")
    params: list[tuple[str, str]] = []
    for child in el:
        if child.tag != "Parameter":
            raise TwimlError(SCHEMA_ERROR, f"<Stream> cannot contain <{child.tag}>")
        pa = _attrs(child, {"name", "value"})
        _no_children(child)
        name, value = pa.get("name"), pa.get("value", "")
        if not name:
            raise TwimlError(SCHEMA_ERROR, "<Parameter> needs a name attribute")
        if len(name) + len(value) >= MAX_PARAMETER_CHARS:
            raise TwimlError(
                SCHEMA_ERROR,
                f"<Parameter name={name[:40]!r}>: name and value must be under "
                f"{MAX_PARAMETER_CHARS} characters together",
            )
        params.append((name, value))
    return Stream(
        url=url,
        name=a.get("name") or None,
        track=a.get("track", "inbound_track"),
        status_callback=a.get("statusCallback") or None,
        status_callback_method=_method(el, a.get("statusCallbackMethod")),
        parameters=tuple(params),
    )


def _only_stream(el: ET.Element) -> ET.Element:
    if len(el) != 1 or el[0].tag != "Stream":
        raise TwimlError(SCHEMA_ERROR, f"<{el.tag}> must contain exactly one <Stream>")
    return el[0]


def _verb(el: ET.Element) -> Verb:
    tag = el.tag
    if tag == "Start":
        _attrs(el, {"action", "method"})
        return Start(_stream(_only_stream(el)))
    if tag == "Stop":
        _attrs(el, set())
        child = _only_stream(el)
        sa = _attrs(child, {"name"})
        _no_children(child)
        if not sa.get("name"):
            raise TwimlError(SCHEMA_ERROR, "<Stop><Stream> needs the name of the stream to stop")
        return StopStream(sa["name"])
    if tag == "Connect":
        a = _attrs(el, {"action", "method"})
        return Connect(
            _stream(_only_stream(el)), a.get("action") or None, _method(el, a.get("method"))
        )
    if tag == "Pause":
        a = _attrs(el, {"length"})
        _no_children(el)
        try:
            length = float(a.get("length", "1"))
        except ValueError:
            raise TwimlError(
                SCHEMA_ERROR, f"<Pause length={a['length']!r}> is not a number"
            ) from None
        if not 0 <= length <= 3600:
            raise TwimlError(SCHEMA_ERROR, "<Pause> length must be between 0 and 3600 seconds")
        return Pause(length)
    if tag == "Hangup":
        _attrs(el, set())
        _no_children(el)
        return Hangup()
    if tag in ("Redirect", "Play"):
        a = _attrs(el, {"method"} if tag == "Redirect" else {"loop"})
        _no_children(el)
        url = (el.text or "").strip()
        if not url:
            raise TwimlError(SCHEMA_ERROR, f"<{tag}> needs a URL as its text")
        if tag == "Redirect":
            return Redirect(url, _method(el, a.get("method")))
        try:
            loop = int(a.get("loop", "1"))
        except ValueError:
            raise TwimlError(SCHEMA_ERROR, "<Play> loop must be a whole number") from None
        if not 0 <= loop <= 1000:
            raise TwimlError(SCHEMA_ERROR, "<Play> loop must be between 0 and 1000")
        return Play(url, loop)
    raise TwimlError(SCHEMA_ERROR, f"<{tag}> is not supported by this gateway")


def parse(text: str | bytes) -> Document:
    """Parse a TwiML document; ``TwimlError`` carries the Twilio error code and a clear message."""
    raw = text.encode() if isinstance(text, str) else text
    # No DTD means no entity expansion, so the standard parser is safe on hostile documents.
    if b"<!DOCTYPE" in raw.upper() or b"<!ENTITY" in raw.upper():
        raise TwimlError(PARSE_ERROR, "TwiML must not contain a DOCTYPE or entity declarations")
    try:
        root = ET.fromstring(raw)  # noqa: S314 - DTDs refused above
    except ET.ParseError as exc:
        raise TwimlError(PARSE_ERROR, f"TwiML is not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(PARSE_ERROR, f"TwiML root element must be <Response>, not <{root.tag}>")
    return Document(tuple(_verb(el) for el in root))
