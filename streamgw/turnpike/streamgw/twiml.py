"""TwiML documents: parsed and validated up front into typed verbs.

Only the verbs the gateway can run are accepted; anything else is a clear error before the call
does anything, never a silent hang. Attribute problems that belong to one stream (a bad ``track``,
a ``ws://`` URL) are kept on the stream and reported with the documented 319xx code when the
verb runs, so the rest of the call goes on, as with the hosted service.

Hostile documents: the bytes are decoded first (BOM, then the XML declaration; UTF-8 or UTF-16
only), size-capped, and parsed by defusedxml with DTDs forbidden, so no document can declare
entities, reach external resources or expand anything. A document is small and bounded, but
callers on the event loop should still run `parse` in a worker thread (see `parse_async`).
"""

from __future__ import annotations

import asyncio
import codecs
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

PARSE_ERROR = 12100  # "Document parse failure"
SCHEMA_ERROR = 12200  # "Schema validation warning": an element or attribute we cannot run

TRACKS = ("inbound_track", "outbound_track", "both_tracks")
METHODS = ("GET", "POST")
MAX_PARAMETER_CHARS = 500  # name + value, per parameter
MAX_DOCUMENT = 1024 * 1024  # bytes
MAX_ELEMENTS = 1000  # verbs and nouns in one document, nested ones included
MAX_SAY_CHARS = 4096  # the hosted limit for one <Say>
MAX_LOOP = 1000
REJECT_REASONS = ("rejected", "busy")
DTMF_KEYS = "0123456789*#"
# Verbs and nouns of the hosted TwiML that this gateway does not run, named in the 12200 message.
UNSUPPORTED = (
    "Dial", "Record", "Enqueue", "Leave", "Queue", "Pay", "Prompt", "Refer", "Sms", "Message",
    "Echo", "Transcription", "Siprec", "ConversationRelay", "Conference", "Room", "VirtualAgent",
    "AiSession", "Assistant", "Autopilot",
)  # fmt: skip


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
    action: str | None = None  # after starting the stream, run the TwiML this URL returns
    method: str = "POST"


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


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    voice: str | None = None
    language: str | None = None
    loop: int = 1  # 0 means "until the call ends"


Prompt = Say | Play | Pause


@dataclass(frozen=True, slots=True)
class Gather:
    prompts: tuple[Prompt, ...] = ()
    num_digits: int | None = None  # None: until finishOnKey or the timeout
    timeout: float = 5.0
    finish_on_key: str = "#"  # "" disables it
    action: str | None = None
    method: str = "POST"
    action_on_empty_result: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str = "rejected"


Verb = Start | StopStream | Connect | Pause | Hangup | Redirect | Play | Say | Gather | Reject


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


def _unsupported(where: str) -> TwimlError:
    return TwimlError(SCHEMA_ERROR, f"{where} is not supported by this gateway")


def _only_stream(el: ET.Element) -> ET.Element:
    for child in el:
        if child.tag != "Stream":
            raise _unsupported(f"<{el.tag}><{child.tag}>")
    if len(el) != 1:
        raise TwimlError(SCHEMA_ERROR, f"<{el.tag}> must contain exactly one <Stream>")
    return el[0]


def _number(el: ET.Element, name: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise TwimlError(SCHEMA_ERROR, f"<{el.tag} {name}={value!r}> is not a number") from None
    if not low <= number <= high:
        raise TwimlError(SCHEMA_ERROR, f"<{el.tag}> {name} must be between {low:g} and {high:g}")
    return number


def _loop(el: ET.Element, value: str) -> int:
    try:
        loop = int(value)
    except ValueError:
        raise TwimlError(SCHEMA_ERROR, f"<{el.tag}> loop must be a whole number") from None
    if not 0 <= loop <= MAX_LOOP:
        raise TwimlError(SCHEMA_ERROR, f"<{el.tag}> loop must be between 0 and {MAX_LOOP}")
    return loop


def _url_text(el: ET.Element) -> str:
    _no_children(el)
    url = (el.text or "").strip()
    if not url:
        raise TwimlError(SCHEMA_ERROR, f"<{el.tag}> needs a URL as its text")
    return url


# ---- one parser per verb --------------------------------------------------------------------


def _start(el: ET.Element) -> Start:
    a = _attrs(el, {"action", "method"})
    stream = _stream(_only_stream(el))
    return Start(stream, a.get("action") or None, _method(el, a.get("method")))


def _stop(el: ET.Element) -> StopStream:
    _attrs(el, set())
    child = _only_stream(el)
    sa = _attrs(child, {"name"})
    _no_children(child)
    if not sa.get("name"):
        raise TwimlError(SCHEMA_ERROR, "<Stop><Stream> needs the name of the stream to stop")
    return StopStream(sa["name"])


def _connect(el: ET.Element) -> Connect:
    a = _attrs(el, {"action", "method"})
    stream = _stream(_only_stream(el))
    return Connect(stream, a.get("action") or None, _method(el, a.get("method")))


def _pause(el: ET.Element) -> Pause:
    a = _attrs(el, {"length"})
    _no_children(el)
    return Pause(_number(el, "length", a.get("length", "1"), 0, 3600))


def _hangup(el: ET.Element) -> Hangup:
    _attrs(el, set())
    _no_children(el)
    return Hangup()


def _redirect(el: ET.Element) -> Redirect:
    a = _attrs(el, {"method"})
    return Redirect(_url_text(el), _method(el, a.get("method")))


def _play(el: ET.Element) -> Play:
    a = _attrs(el, {"loop", "digits"})
    if "digits" in a:
        raise _unsupported("<Play digits>")
    return Play(_url_text(el), _loop(el, a.get("loop", "1")))


def _spoken_text(el: ET.Element) -> str:
    """The words of a ``<Say>``: SSML-style children (``<break>``, ``<prosody>``…) keep only
    their text, each a word boundary."""
    parts = [el.text or ""]
    for child in el:
        parts += [" ", _spoken_text(child), " ", child.tail or ""]
    return " ".join("".join(parts).split())


def _say(el: ET.Element) -> Say:
    a = _attrs(el, {"voice", "language", "loop"})
    text = _spoken_text(el)
    if not text:
        raise TwimlError(SCHEMA_ERROR, "<Say> needs the text to speak")
    if len(text) > MAX_SAY_CHARS:
        raise TwimlError(
            SCHEMA_ERROR, f"<Say> text is {len(text)} characters; at most {MAX_SAY_CHARS}"
        )
    loop = _loop(el, a.get("loop", "1"))
    return Say(text, a.get("voice") or None, a.get("language") or None, loop)


GATHER_ATTRIBUTES = {
    "input", "numDigits", "timeout", "finishOnKey", "action", "method", "actionOnEmptyResult",
}  # fmt: skip
SPEECH_ATTRIBUTES = {
    "speechTimeout", "speechModel", "hints", "language", "profanityFilter", "enhanced",
    "partialResultCallback", "partialResultCallbackMethod", "bargeIn", "debug",
}  # fmt: skip


def _gather(el: ET.Element) -> Gather:
    inputs = set(el.get("input", "dtmf").split())
    if "speech" in inputs or SPEECH_ATTRIBUTES & set(el.attrib):
        raise _unsupported('<Gather> speech recognition (input="speech"; no recogniser here)')
    if inputs != {"dtmf"}:
        raise TwimlError(SCHEMA_ERROR, f"<Gather> input must be dtmf, got {el.get('input')!r}")
    a = _attrs(el, GATHER_ATTRIBUTES)
    prompts = tuple(_prompt(child) for child in el)
    num_digits = a.get("numDigits")
    finish = a.get("finishOnKey", "#")
    if finish and (len(finish) != 1 or finish not in DTMF_KEYS):
        raise TwimlError(SCHEMA_ERROR, "<Gather> finishOnKey must be one of 0-9, # or *")
    empty = a.get("actionOnEmptyResult", "false").lower()
    if empty not in ("true", "false"):
        raise TwimlError(SCHEMA_ERROR, "<Gather> actionOnEmptyResult must be true or false")
    return Gather(
        prompts=prompts,
        num_digits=int(_number(el, "numDigits", num_digits, 1, 100)) if num_digits else None,
        timeout=_number(el, "timeout", a.get("timeout", "5"), 1, 600),
        finish_on_key=finish,
        action=a.get("action") or None,
        method=_method(el, a.get("method")),
        action_on_empty_result=empty == "true",
    )


def _prompt(el: ET.Element) -> Prompt:
    parsers: dict[str, Callable[[ET.Element], Prompt]] = {
        "Say": _say,
        "Play": _play,
        "Pause": _pause,
    }
    parse = parsers.get(el.tag)
    if parse is None:
        raise TwimlError(SCHEMA_ERROR, f"<Gather> can only contain <Say>, <Play> and <Pause>, "
                         f"not <{el.tag}>")  # fmt: skip
    return parse(el)


def _reject(el: ET.Element) -> Reject:
    a = _attrs(el, {"reason"})
    _no_children(el)
    reason = a.get("reason", "rejected")
    if reason not in REJECT_REASONS:
        raise TwimlError(SCHEMA_ERROR, "<Reject> reason must be rejected or busy")
    return Reject(reason)


PARSERS: dict[str, Callable[[ET.Element], Verb]] = {
    "Start": _start,
    "Stop": _stop,
    "Connect": _connect,
    "Pause": _pause,
    "Hangup": _hangup,
    "Redirect": _redirect,
    "Play": _play,
    "Say": _say,
    "Gather": _gather,
    "Reject": _reject,
}


def _verb(el: ET.Element) -> Verb:
    parse = PARSERS.get(el.tag)
    if parse is None:
        raise _unsupported(f"<{el.tag}>")
    return parse(el)


# ---- the document ---------------------------------------------------------------------------

_DECLARED = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_DECLARATION = re.compile(r"^\ufeff?<\?xml[^>]*\?>")
_UTF8 = ("utf-8", "utf8")
_UTF16 = ("utf-16", "utf-16le", "utf-16be", "utf16")


def decode(raw: bytes) -> str:
    """The document's text: UTF-8 or UTF-16 by BOM, by its first character, or as declared."""
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise TwimlError(PARSE_ERROR, "TwiML must be UTF-8 or UTF-16, not UTF-32")
    if raw.startswith(codecs.BOM_UTF8):
        encoding, body = "utf-8", raw[3:]
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, body = "utf-16", raw  # the codec reads and drops the BOM
    elif raw[:2] in (b"<\x00", b"\x00<"):
        encoding, body = ("utf-16-le" if raw[0] else "utf-16-be"), raw
    else:
        encoding, body = "utf-8", raw
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise TwimlError(PARSE_ERROR, f"TwiML is not valid {encoding.upper()}: {exc}") from None
    declared = _DECLARED.match(text.lstrip("\ufeff").encode("utf-8", "replace"))
    if declared:
        name = declared.group(1).decode().lower()
        family = _UTF8 if encoding == "utf-8" else _UTF16
        if name not in _UTF8 + _UTF16:
            raise TwimlError(PARSE_ERROR, f"TwiML must be UTF-8 or UTF-16, not {name!r}")
        if name not in family:
            raise TwimlError(
                PARSE_ERROR, f"TwiML declares {name!r} but is encoded as {encoding.upper()}"
            )
    return text


def parse(text: str | bytes) -> Document:
    """Parse a TwiML document; ``TwimlError`` carries the Twilio error code and a clear message."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_DOCUMENT:
        raise TwimlError(PARSE_ERROR, f"TwiML is larger than {MAX_DOCUMENT} bytes")
    source = decode(raw)
    try:
        root = _tree(source)
    except DefusedXmlException:
        raise TwimlError(
            PARSE_ERROR, "TwiML must not contain a DOCTYPE or entity declarations"
        ) from None
    except ET.ParseError as exc:
        raise TwimlError(PARSE_ERROR, f"TwiML is not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(PARSE_ERROR, f"TwiML root element must be <Response>, not <{root.tag}>")
    return Document(tuple(_verb(el) for el in root))


def _tree(source: str) -> ET.Element:
    """The element tree, built incrementally so a document with too many elements stops early
    (the CPU one document can cost is bounded by its size cap and `MAX_ELEMENTS`)."""
    body = _DECLARATION.sub("", source, count=1).encode("utf-8")  # decode() checked it
    root: ET.Element | None = None
    events = SafeET.iterparse(io.BytesIO(body), ("start",), forbid_dtd=True, forbid_entities=True)
    for count, (_, element) in enumerate(events, 1):
        if count > MAX_ELEMENTS:
            raise TwimlError(PARSE_ERROR, f"TwiML has more than {MAX_ELEMENTS} elements")
        root = element if root is None else root
    assert root is not None  # an empty document is a ParseError
    return root


async def parse_async(text: str | bytes) -> Document:
    """`parse` in a worker thread, so a large document never holds up the event loop."""
    return await asyncio.to_thread(parse, text)
