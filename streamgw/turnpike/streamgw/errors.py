"""The hosted service's Media Streams error and warning codes (REST errors: core.errors)."""

from __future__ import annotations

TITLES = {
    31900: "Stream - Unknown Error",
    31901: "Stream - WebSocket - Connection Timeout",
    31902: "Stream - WebSocket - Connection Refused",
    31903: "Stream - WebSocket - Connection Broken Pipe",
    31904: "Stream - WebSocket - Host Unreachable",
    31910: "Stream - WebSocket - SSL Protocol Error",
    31920: "Stream - WebSocket - Handshake Error",
    31921: "Stream - WebSocket - Close Error",
    31922: "Stream - WebSocket - URL Schema Not Supported",
    31923: "Stream - WebSocket - Malformed URL",
    31924: "Stream - Websocket - Protocol Error",
    31930: "Stream - Media - Buffer Overflow",
    31931: "Stream - Media - Media Discarded",
    31940: "Stream - Invalid connectorName attribute in TwiML.",
    31941: "Stream - Invalid Track configuration",
    31950: "Stream - Protocol - Malformed Message",
    31951: "Stream - Protocol - Invalid Message",
    31953: "Stream - Media - RTP timeout",
    11200: "HTTP retrieval failure",
    11750: "TwiML response body too large",
    13500: "Say - speech synthesis failed",
    12100: "Document parse failure",
    12200: "Schema validation warning",
}

WARNINGS = frozenset({31930, 31931, 31950, 31951, 31953})


class StreamFailure(Exception):
    """A stream could not start or had to end, with the documented code."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code} {TITLES.get(code, 'Error')}: {detail}")
        self.code = code
        self.detail = detail
