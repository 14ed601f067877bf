"""`turnpike dev call --via-sip`: the same sample call, placed over SIP instead of the REST API.

A minimal user-agent client on UDP (RFC 3261 §17.1.1 retransmission of the INVITE until a
response, §13.2.2.4 ACK for the 200, BYE at the end) offering PCMU, built on the gateway's own
SIP codec. The gateway's SIPp and baresip tests are what prove interoperability; this is a
try-it tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from typing import Any

from turnpike.streamgw.sip import sdp
from turnpike.streamgw.sip.message import Message, SipError, parse, parse_name_addr

T1 = 0.5


class _Signalling(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue[Message] = asyncio.Queue()
        self.requests: asyncio.Queue[tuple[Message, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(SipError):
            message = parse(data)
            if message.is_request:
                self.requests.put_nowait((message, addr))
            else:
                self.responses.put_nowait(message)


class SipLeg:
    """One outgoing call over UDP: INVITE → 200 → ACK, then BYE."""

    def __init__(self, host: str, target: tuple[str, int], uri: str, caller: str) -> None:
        self.host = host
        self.target = target
        self.uri = uri
        self.caller = caller
        self.call_id = f"{secrets.token_hex(8)}@turnpike-dev"
        self.from_tag = secrets.token_hex(4)
        self.to_tag = ""
        self.remote_target = uri
        self.transport: asyncio.DatagramTransport | None = None
        self.protocol = _Signalling()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self.protocol, local_addr=(self.host, 0), family=family
        )

    @property
    def local(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _request(self, method: str, uri: str, cseq: int, body: bytes = b"") -> Message:
        message = Message(method=method, uri=uri)
        branch = "z9hG4bK" + secrets.token_hex(8)
        message.add("Via", f"SIP/2.0/UDP {self.local};branch={branch};rport")
        message.add("Max-Forwards", "70")
        message.add("From", f"<sip:{self.caller}@{self.local}>;tag={self.from_tag}")
        to = f"<{self.uri}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        message.add("To", to)
        message.add("Call-ID", self.call_id)
        message.add("CSeq", f"{cseq} {method}")
        message.add("Contact", f"<sip:dev@{self.local}>")
        if body:
            message.add("Content-Type", "application/sdp")
        message.body = body
        return message

    async def _transact(self, request: Message, timeout: float = 15.0) -> Message:
        """Send ``request`` until a final response (retransmitting every T1 until any answer)."""
        assert self.transport is not None
        data = bytes(request)
        answered = False
        async with asyncio.timeout(timeout):
            self.transport.sendto(data, self.target)
            while True:
                try:
                    response = await asyncio.wait_for(
                        self.protocol.responses.get(), None if answered else T1
                    )
                except TimeoutError:
                    self.transport.sendto(data, self.target)
                    continue
                if response.cseq != request.cseq:
                    continue
                answered = True
                if response.status >= 200:
                    return response

    async def invite(self, rtp_host: str, rtp_port: int) -> tuple[sdp.Negotiated, str | None]:
        """The media the gateway answered with, and the call's SID (``X-Twilio-CallSid``)."""
        offer = _offer(rtp_host, rtp_port)
        response = await self._transact(self._request("INVITE", self.uri, 1, offer))
        if response.status != 200:
            raise RuntimeError(f"the gateway answered {response.status} {response.reason}")
        self.to_tag = parse_name_addr(response.require("To")).param("tag") or ""
        contacts = response.get_all("Contact")
        if contacts:
            self.remote_target = parse_name_addr(contacts[0]).uri
        assert self.transport is not None
        self.transport.sendto(bytes(self._request("ACK", self.remote_target, 1)), self.target)
        return sdp.settle_answer(sdp.parse(response.body)), response.get("X-Twilio-CallSid")

    async def bye(self) -> int:
        response = await self._transact(self._request("BYE", self.remote_target, 2))
        return response.status

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _offer(host: str, port: int) -> bytes:
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=turnpike-dev 1 1 IN {family} {host}",
        "s=turnpike dev call",
        f"c=IN {family} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
