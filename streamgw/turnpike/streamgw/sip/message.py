"""SIP message codec (RFC 3261 §7, §20): requests and responses, parsed and serialised.

Headers keep their order and repetitions; names are compared case-insensitively and compact forms
(``v``, ``f``, ``t``, ``i``, ``m``, ``l``, ``c``, ``k``, ``s``) are expanded. Anything malformed
raises `SipError` with a precise message; the server answers 400 when it can, or drops and
counts. ``split_stream`` frames messages on a TCP byte stream by ``Content-Length`` (§18.3).
No SIP library for Python is both maintained and typed; the grammar needed here is small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_MESSAGE = 16 * 1024  # larger messages are refused: 513 on TCP, dropped on UDP
MAX_HEADERS = 100

COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length", "Content-Type",
        "Max-Forwards", "Record-Route", "Route", "Allow", "Supported", "Retry-After",
        "WWW-Authenticate", "Authorization", "User-Agent", "Server", "Subject", "Accept",
    )
}  # fmt: skip
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_REASONS = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 513: "Message Too Large",
    603: "Decline",
}  # fmt: skip


class SipError(ValueError):
    """A message that is not valid SIP (or that this server cannot take)."""


def canonical(name: str) -> str:
    lower = name.lower()
    if lower in COMPACT:
        return COMPACT[lower]
    return _CANONICAL.get(lower, name)


@dataclass(slots=True)
class Message:
    """A request (``method`` and ``uri`` set) or a response (``status`` set)."""

    method: str | None = None
    uri: str | None = None
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        wanted = canonical(name).lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, split at top-level commas (§7.3.1) for list headers."""
        wanted = canonical(name).lower()
        out: list[str] = []
        for key, value in self.headers:
            if key.lower() == wanted:
                out += split_list(value) if wanted in _LIST_HEADERS else [value]
        return out

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipError(f"missing {canonical(name)} header")
        return value

    def set(self, name: str, value: str) -> None:
        name = canonical(name)
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        self.headers.append((name, value))

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical(name), value))

    @property
    def call_id(self) -> str:
        return self.require("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.require("CSeq"))

    def __bytes__(self) -> bytes:
        if self.method is not None:
            start = f"{self.method} {self.uri} SIP/2.0"
        else:
            start = f"SIP/2.0 {self.status} {self.reason or _REASONS.get(self.status, 'Unknown')}"
        lines = [start]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


_LIST_HEADERS = {"via", "contact", "route", "record-route", "allow", "supported"}


def split_list(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets."""
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(value):
        if ch == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        elif ch == "," and not quoted and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [v for v in out if v]


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
        raise SipError(f"malformed CSeq {value!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise SipError("CSeq number too large")
    return number, parts[1]


def parse(data: bytes) -> Message:
    """One complete message (a UDP datagram, or one framed by `split_stream`)."""
    if len(data) > MAX_MESSAGE:
        raise SipError(f"message larger than {MAX_MESSAGE} bytes")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipError("no blank line after the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError("headers are not UTF-8") from None
    lines = text.split("\r\n")
    message = _start_line(lines[0])
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # folded continuation (§7.3.1)
            if not message.headers:
                raise SipError("continuation line before any header")
            name, value = message.headers[-1]
            message.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            raise SipError(f"malformed header line {line[:40]!r}")
        message.headers.append((canonical(name), value.strip()))
        if len(message.headers) > MAX_HEADERS:
            raise SipError(f"more than {MAX_HEADERS} headers")
    length = message.get("Content-Length")
    if length is not None:
        if not length.isdigit():
            raise SipError(f"malformed Content-Length {length!r}")
        if int(length) > len(body):
            raise SipError("body shorter than Content-Length")
        body = body[: int(length)]
    message.body = body
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        message.require(name)
    _, method = message.cseq
    if message.method is not None and method != message.method:
        raise SipError(f"CSeq method {method} does not match {message.method}")
    return message


def _start_line(line: str) -> Message:
    parts = line.split(" ", 2)
    if len(parts) != 3:
        raise SipError(f"malformed start line {line[:60]!r}")
    if parts[0] == "SIP/2.0":
        if not (parts[1].isdigit() and len(parts[1]) == 3):
            raise SipError(f"malformed status code {parts[1][:10]!r}")
        return Message(status=int(parts[1]), reason=parts[2])
    method, uri, version = parts
    if version != "SIP/2.0":
        raise SipError(f"unsupported version {version[:20]!r}")
    if not _TOKEN.match(method) or not uri or " " in uri:
        raise SipError(f"malformed request line {line[:60]!r}")
    return Message(method=method, uri=uri)


def split_stream(buffer: bytearray) -> bytes | None:
    """Take one complete message off the front of a TCP stream buffer, or None if incomplete.

    Leading CRLFs (keepalives, §7.5 / RFC 5626) are skipped. ``SipError`` when the headers run
    past `MAX_MESSAGE` or the length is unreadable: the connection cannot be resynchronised.
    """
    while buffer[:2] == b"\r\n":
        del buffer[:2]
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_MESSAGE:
            raise SipError(f"message larger than {MAX_MESSAGE} bytes")
        return None
    match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", bytes(buffer[:end]))
    if match is None:
        raise SipError("a message on a stream transport needs Content-Length")
    total = end + 4 + int(match.group(1))
    if total > MAX_MESSAGE:
        raise SipError(f"message larger than {MAX_MESSAGE} bytes")
    if len(buffer) < total:
        return None
    data = bytes(buffer[:total])
    del buffer[:total]
    return data


# ---- header values ---------------------------------------------------------------------------

_PARAM = re.compile(r";\s*([^=;\s]+)(?:\s*=\s*(\"[^\"]*\"|[^;\s]*))?")


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``"Display" <sip:user@host>;tag=x`` or ``sip:user@host;tag=x`` (§20.10, §20.20, §20.39)."""

    uri: str
    params: tuple[tuple[str, str], ...] = ()
    display: str = ""

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key.lower() == name.lower():
                return value
        return None

    def __str__(self) -> str:
        params = "".join(f";{k}={v}" if v else f";{k}" for k, v in self.params)
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{params}"


def parse_name_addr(value: str) -> NameAddr:
    value = value.strip()
    if "<" in value:
        display, _, rest = value.partition("<")
        uri, close, params = rest.partition(">")
        if not close:
            raise SipError(f"unterminated <…> in {value[:60]!r}")
    else:
        display = ""
        uri, _, params = value.partition(";")
        params = ";" + params if params else ""
    uri = uri.strip()
    if not uri:
        raise SipError("empty URI")
    found = tuple((m.group(1), (m.group(2) or "")) for m in _PARAM.finditer(params))
    return NameAddr(uri, found, display.strip())


def uri_user(uri: str) -> str | None:
    """The user part of a sip:/sips:/tel: URI (``sip:+1555@host;user=phone`` → ``+1555``)."""
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips", "tel"):
        return None
    if scheme.lower() == "tel":
        return rest.split(";", 1)[0]
    user, at, _ = rest.partition("@")
    return user.split(";", 1)[0] if at else None


def uri_host_port(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """Where a sip: URI points (``sip:u@[::1]:5062;transport=udp`` → (``::1``, 5062))."""
    _, _, rest = uri.partition(":")
    hostport = rest.rpartition("@")[2].split(";", 1)[0].split("?", 1)[0]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    if not host or (port and not port.isdigit()):
        raise SipError(f"cannot route to {uri[:60]!r}")
    return host, int(port) if port else default_port


@dataclass(frozen=True, slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str], ...]

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key.lower() == name.lower():
                return value
        return None


def parse_via(value: str) -> Via:
    proto, _, rest = value.strip().partition(" ")
    pieces = proto.split("/")
    if len(pieces) != 3 or pieces[0].upper() != "SIP":
        raise SipError(f"malformed Via {value[:60]!r}")
    sent_by, _, params = rest.strip().partition(";")
    sent_by = sent_by.strip()
    if sent_by.startswith("["):
        host, _, tail = sent_by[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = sent_by.partition(":")
    if not host or (port and not port.isdigit()):
        raise SipError(f"malformed Via sent-by {sent_by[:60]!r}")
    found = tuple((m.group(1), (m.group(2) or "")) for m in _PARAM.finditer(";" + params))
    return Via(pieces[2].upper(), host, int(port) if port else None, found)


def response_to(
    request: Message, status: int, reason: str = "", to_tag: str | None = None
) -> Message:
    """A response carrying the request's Via, From, To (tag added), Call-ID and CSeq (§8.2.6)."""
    out = Message(status=status, reason=reason or _REASONS.get(status, "Unknown"))
    for name, value in request.headers:
        if name in ("Via", "From", "Call-ID", "CSeq", "Record-Route") and (
            name != "Record-Route" or 100 < status < 300
        ):
            out.headers.append((name, value))
        elif name == "To":
            if to_tag and status > 100 and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={to_tag}"
            out.headers.append((name, value))
    return out
