"""SDP (RFC 4566) offer/answer for G.711 calls (RFC 3264).

The gateway speaks PCMU and PCMA at 8 kHz plus RFC 4733 ``telephone-event``. `answer` picks the
first offered codec the gateway supports, keeps the offered telephone-event payload type and
``ptime``, mirrors the direction (§6.1: sendonly ↔ recvonly, inactive stays inactive), rejects
other media lines with port 0, and announces the gateway's own RTP address. `offer` is what the
gateway sends in a 200 when the INVITE had no SDP (the answer then comes in the ACK).
"""

from __future__ import annotations

import ipaddress
import random
import time
from dataclasses import dataclass, field

STATIC = {0: "PCMU", 8: "PCMA"}
SUPPORTED = ("PCMU", "PCMA")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly"}
MIRROR["inactive"] = "inactive"


class SdpError(ValueError):
    """An SDP body that cannot be used."""


class NoCommonCodec(SdpError):
    """Nothing offered that the gateway can take (488)."""


@dataclass(slots=True)
class Media:
    kind: str
    port: int
    proto: str
    formats: list[str]
    address: str | None = None  # media-level c=, else the session's
    rtpmap: dict[int, str] = field(default_factory=dict)  # pt → "encoding/rate"
    direction: str = "sendrecv"
    ptime: int | None = None


@dataclass(slots=True)
class Session:
    origin: str
    address: str | None
    media: list[Media]
    direction: str = "sendrecv"


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What a call uses: codec, its payload type, DTMF payload type, where to send, direction."""

    codec: str
    payload_type: int
    dtmf_pt: int | None
    remote: tuple[str, int] | None  # None: held (c=0.0.0.0), inactive or port 0
    direction: str  # the caller's direction, as offered (or answered)
    ptime: int

    @property
    def gateway_sends(self) -> bool:
        """Whether the gateway sends RTP: the caller receives (sendrecv or recvonly)."""
        return self.direction in ("sendrecv", "recvonly") and self.remote is not None


def parse(body: bytes) -> Session:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    session = Session(origin="", address=None, media=[])
    current: Media | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1:
            raise SdpError(f"malformed SDP line {line[:40]!r}")
        if kind == "o":
            session.origin = value
        elif kind == "c":
            address = _connection(value)
            if current is None:
                session.address = address
            else:
                current.address = address
        elif kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError(f"malformed m= line {value[:60]!r}")
            port = int(parts[1].split("/")[0])
            if port > 65535:
                raise SdpError(f"bad media port {port}")
            current = Media(parts[0], port, parts[2], parts[3:])
            session.media.append(current)
        elif kind == "a":
            _attribute(value, session, current)
    if not session.media:
        raise SdpError("SDP has no m= line")
    return session


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"malformed c= line {value[:60]!r}")
    address = parts[2].split("/")[0]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise SdpError(f"c= address {address[:60]!r} is not an IP address") from None
    if (parsed.version == 4) != (parts[1] == "IP4"):
        raise SdpError(f"c= address {address} does not match {parts[1]}")
    return str(parsed)


def _attribute(value: str, session: Session, media: Media | None) -> None:
    name, _, rest = value.partition(":")
    if name in DIRECTIONS:
        if media is None:
            session.direction = name
        else:
            media.direction = name
    elif media is None:
        return
    elif name == "rtpmap":
        pt, _, encoding = rest.partition(" ")
        if pt.isdigit():
            media.rtpmap[int(pt)] = encoding.strip()
    elif name == "ptime" and rest.strip().isdigit():
        media.ptime = int(rest.strip())


def answer(
    offer: Session, local_ip: str, local_port: int, origin: tuple[int, int] | None = None
) -> tuple[bytes, Negotiated]:
    """Our answer to ``offer`` and what it settles; `NoCommonCodec` when nothing fits (488)."""
    chosen: tuple[int, Media, tuple[int, int | None]] | None = None
    lines: list[str] = []
    for index, media in enumerate(offer.media):
        if chosen is None and media.kind == "audio" and media.port and "RTP/AVP" in media.proto:
            picked = _pick(media)
            if picked is not None:
                chosen = (index, media, picked)
                continue
        lines.append(f"m={media.kind} 0 {media.proto} {' '.join(media.formats)}")
    if chosen is None:
        raise NoCommonCodec("no PCMU or PCMA audio stream offered")
    index, media, (codec_pt, dtmf_pt) = chosen
    codec = _encoding(media, codec_pt)
    direction = media.direction if media.direction != "sendrecv" else offer.direction
    ours = MIRROR[direction]
    address = media.address or offer.address
    remote: tuple[str, int] | None = None
    if address is not None and direction != "inactive" and not _unspecified(address):
        remote = (address, media.port)
    if remote is None and address is None:
        raise SdpError("no c= line for the audio stream")
    ptime = media.ptime or 20
    formats = [str(codec_pt)] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    audio = [
        f"m=audio {local_port} RTP/AVP {' '.join(formats)}",
        f"a=rtpmap:{codec_pt} {codec}/8000",
    ]
    if dtmf_pt is not None:
        audio += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-15"]
    audio += [f"a=ptime:{ptime}", f"a={ours}"]
    lines[index:index] = ["\n".join(audio)]
    body = _session_head(local_ip, origin) + "\n".join(lines) + "\n"
    negotiated = Negotiated(codec, codec_pt, dtmf_pt, remote, direction, ptime)
    return body.replace("\n", "\r\n").encode(), negotiated


def offer(local_ip: str, local_port: int, origin: tuple[int, int] | None = None) -> bytes:
    """The gateway's offer (INVITE without SDP → offer in the 200, answer in the ACK): PCMU and
    telephone-event only, since the call's codec is fixed before the answer comes."""
    body = _session_head(local_ip, origin) + "\n".join(
        [
            f"m=audio {local_port} RTP/AVP 0 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
        ]
    )
    return (body + "\n").replace("\n", "\r\n").encode()


def settle_answer(answer_sdp: Session) -> Negotiated:
    """What the caller's answer (in the ACK) to our `offer` settles."""
    media = next((m for m in answer_sdp.media if m.kind == "audio" and m.port), None)
    if media is None:
        raise NoCommonCodec("the answer accepts no audio stream")
    picked = _pick(media)
    if picked is None:
        raise NoCommonCodec("the answer has neither PCMU nor PCMA")
    address = media.address or answer_sdp.address
    if address is None:
        raise SdpError("no c= line for the audio stream")
    direction = media.direction if media.direction != "sendrecv" else answer_sdp.direction
    remote = None if _unspecified(address) or direction == "inactive" else (address, media.port)
    codec = _encoding(media, picked[0])
    return Negotiated(codec, picked[0], picked[1], remote, direction, media.ptime or 20)


def _pick(media: Media) -> tuple[int, int | None] | None:
    """The first offered supported codec, and the offered telephone-event/8000 payload type."""
    codec: int | None = None
    dtmf: int | None = None
    for fmt in media.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        encoding = _encoding(media, pt)
        if codec is None and encoding in SUPPORTED:
            codec = pt
        elif dtmf is None and encoding == "telephone-event" and _rate(media, pt) == 8000:
            dtmf = pt
    return None if codec is None else (codec, dtmf)


def _encoding(media: Media, pt: int) -> str:
    if pt in media.rtpmap:
        encoding, _, rate = media.rtpmap[pt].partition("/")
        name = encoding.strip()
        upper = name.upper()
        if upper in SUPPORTED:
            return upper if rate.split("/")[0] in ("", "8000") else name
        return name.lower() if name.lower() == "telephone-event" else name
    return STATIC.get(pt, "")


def _rate(media: Media, pt: int) -> int:
    rate = media.rtpmap.get(pt, "").partition("/")[2].split("/")[0]
    return int(rate) if rate.isdigit() else 0


def _unspecified(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified


def _session_head(local_ip: str, origin: tuple[int, int] | None) -> str:
    """``origin``: (session id, version); a re-INVITE answer keeps the id, bumps the version."""
    family = "IP6" if ":" in local_ip else "IP4"
    sid, version = origin or (random.randrange(1, 2**31), int(time.time()))  # noqa: S311
    return (
        f"v=0\no=turnpike {sid} {version} IN {family} {local_ip}\ns=turnpike\n"
        f"c=IN {family} {local_ip}\nt=0 0\n"
    )
