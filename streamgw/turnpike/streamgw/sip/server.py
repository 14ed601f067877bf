"""The SIP user-agent server: UDP and TCP on one port, INVITE to BYE (RFC 3261, RFC 3264).

Per request: parse (malformed → 400 when a response can be addressed, else dropped; counted),
check the source is trusted (else 403, counted, no call), then dispatch. A new INVITE is answered
100 at once; the number decides the account and TwiML (404 if unknown), the SDP offer the media
(488 if no common codec); the call is created through `Calls`, and the 200 carries our SDP
answer, retransmitted until the ACK (§13.3.1.4). A call that ends on the gateway's side
(``<Hangup/>``, REST) sends BYE; a BYE or CANCEL from the caller ends the call. In-dialog INVITEs
(re-INVITE) move the media. OPTIONS answers 200 (trunk keepalives).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from turnpike.core.ratelimit import RateLimiter
from turnpike.streamgw.sip import sdp
from turnpike.streamgw.sip.dialog import Dialog, new_tag
from turnpike.streamgw.sip.digest import Digest
from turnpike.streamgw.sip.message import (
    MAX_MESSAGE,
    Message,
    SipError,
    parse,
    parse_name_addr,
    response_to,
    uri_user,
)
from turnpike.streamgw.sip.numbers import Numbers, Route, normalise
from turnpike.streamgw.sip.transaction import ServerTransaction, Timers, TransactionLayer
from turnpike.streamgw.sip.transport import Address, Listeners, Send

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"
RINGING_AFTER = 0.2  # seconds without an answer before 180 Ringing


@dataclass(frozen=True, slots=True)
class SipConfig:
    host: str
    port: int
    media_ip: str  # announced in SDP, and in Via/Contact when ``host`` is a wildcard
    trust: tuple[str, ...] = ()  # CIDRs whose INVITEs are taken; nothing else is
    timers: Timers = field(default_factory=Timers)
    retry_after: int = 5  # seconds, in 503 answers
    tls_listen: tuple[str, int] | None = None  # SIP over TLS here, with the ``tls`` context
    invite_rate: float = 10.0  # new INVITEs per second per source address (0: no limit)
    invite_burst: float = 50.0


class Refused(Exception):
    """The gateway will not take the call now: answered with ``status`` (and Retry-After)."""

    def __init__(
        self, status: int, reason: str, retry_after: int | None = None, scope: str = "total"
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.scope = scope  # for a 503: "account" (its share), "total" (the gateway), "draining"


class CallHandle(Protocol):
    """One call as the SIP side drives it."""

    @property
    def sid(self) -> str: ...

    @property
    def local_port(self) -> int: ...

    async def answered(self) -> bool:
        """True once the call's TwiML answers it; False if the call ended first."""

    def unanswered_status(self) -> int:
        """The SIP status for a call that ended before the TwiML answered it (480, 486, 603)."""

    async def ended(self) -> None: ...

    def hang_up(self, reason: str) -> None: ...

    def move_media(self, negotiated: sdp.Negotiated) -> None: ...


class Calls(Protocol):
    """The gateway, as the SIP side sees it."""

    @property
    def accepting(self) -> bool:
        """False while the gateway drains: OPTIONS pings get 503 so trunks route elsewhere."""

    async def start(
        self, route: Route, caller: str, called: str, media: sdp.Negotiated | None
    ) -> CallHandle:
        """Create the call (its RTP endpoint open) or raise `Refused`."""


class Counters(Protocol):
    def sip_request(self, method: str) -> None: ...

    def sip_refused(self, reason: str) -> None: ...


@dataclass(slots=True)
class Leg:
    """The SIP side of one call."""

    dialog: Dialog
    invite: ServerTransaction
    send: Send  # to the caller: the INVITE's transport
    transport: str  # "UDP", "TCP" or "TLS"
    origin: tuple[int, int]  # SDP o= session id and version
    call: CallHandle | None = None
    state: str = "early"  # early → answered (200 sent) → confirmed (ACK) → ended
    offer_in_200: bool = False
    acked: asyncio.Event | None = None
    bye_sent: bool = False

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"


class SipServer:
    def __init__(
        self,
        config: SipConfig,
        calls: Calls,
        numbers: Callable[[], Numbers],
        counters: Counters,
        digest: Digest | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.digest = digest
        self.tls = tls
        self.listeners = Listeners(self.received, self._broken_stream)
        self.calls = calls
        self.numbers = numbers
        self.counters = counters
        self.transactions = TransactionLayer(config.timers)
        self.legs: dict[str, Leg] = {}  # by Call-ID
        self._trust = [ipaddress.ip_network(c, strict=False) for c in config.trust]
        self._invites = RateLimiter(config.invite_rate, config.invite_burst)
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- listening ------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        await self.listeners.start(cfg.host, cfg.port, cfg.tls_listen, self.tls)

    @property
    def port(self) -> int:
        return self.listeners.port

    @property
    def tls_port(self) -> int:
        return self.listeners.tls_port

    async def close(self) -> None:
        for leg in list(self.legs.values()):
            if leg.call is not None:
                leg.call.hang_up("gateway shutting down")
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 2.0)
        for task in list(self._tasks):
            task.cancel()
        self.transactions.close()
        await self.listeners.close()

    def _broken_stream(self, data: bytes, source: Address, send: Send, exc: SipError) -> None:
        """A TCP/TLS stream that cannot be framed: answered if possible, then closed."""
        oversized = "larger" in str(exc)
        self.counters.sip_refused("oversized" if oversized else "malformed")
        self._answer_unparsable(data, send, 513 if oversized else 400, str(exc))
        log.info("SIP stream from %s: %s; closing", source[0], exc)

    # ---- dispatch ---------------------------------------------------------------------------

    def received(self, data: bytes, source: Address, send: Send, transport: str) -> None:
        """One message from ``source`` over ``transport`` ("UDP", "TCP", "TLS")."""
        if not data.strip():
            return  # CRLF keepalive
        try:
            message = parse(data)
        except SipError as exc:
            oversized = len(data) > MAX_MESSAGE
            self.counters.sip_refused("oversized" if oversized else "malformed")
            log.info("SIP from %s: %s", source[0], exc)
            self._answer_unparsable(data, send, 513 if oversized else 400, str(exc))
            return
        if not message.is_request:
            self.transactions.response(message)
            return
        method = message.method or ""
        self.counters.sip_request(method)
        if method == "ACK":
            self._ack(message)
            return
        existing = self.transactions.find(message)
        if existing is not None and method != "CANCEL":
            existing.retransmitted()
            return
        transaction = self.transactions.create(message, send, transport != "UDP")
        if (
            method == "INVITE"
            and not self._in_dialog(message)
            and self._too_many(message, transaction, source)
        ):
            return
        account: str | None = None  # an account proven by digest: it may call only its numbers
        if not self._trusted(source[0]) and not self._in_dialog(message):
            account = self._authenticate(message, transaction, source)
            if account is None:
                return
        if method == "INVITE":
            self._invite(message, transaction, send, transport, account)
            return
        handler = {
            "BYE": self._bye,
            "CANCEL": self._cancel,
            "OPTIONS": self._options,
            "UPDATE": self._update,
        }.get(method)
        if handler is None:
            answer = response_to(message, 405 if method in ("REGISTER", "SUBSCRIBE") else 501)
            answer.add("Allow", ALLOW)
            transaction.respond(answer)
            return
        handler(message, transaction, send, transport)

    def _too_many(self, message: Message, tx: ServerTransaction, source: Address) -> bool:
        """Per-source INVITE rate (trusted or not, so digest guessing is throttled too)."""
        wait = self._invites.take(source[0])
        if wait is None:
            return False
        self.counters.sip_refused("rate_limited")
        answer = response_to(message, 503, "Too Many Calls", to_tag=new_tag())
        answer.add("Retry-After", str(max(1, math.ceil(wait))))
        tx.respond(answer, retransmit=False)
        return True

    def _in_dialog(self, message: Message) -> bool:
        """A request inside a call the gateway already took (BYE, re-INVITE, CANCEL of it)."""
        leg = self.legs.get(message.call_id)
        if leg is None:
            return False
        if message.method == "CANCEL":
            return True
        tag = parse_name_addr(message.require("To")).param("tag")
        return tag == leg.dialog.local_tag

    def _authenticate(self, message: Message, tx: ServerTransaction, source: Address) -> str | None:
        """An untrusted source: the account its digest credentials prove, else answered here."""
        method = message.method
        if self.digest is None or method != "INVITE":
            self.counters.sip_refused("untrusted")
            log.warning("SIP %s from untrusted %s refused (403)", method, source[0])
            tx.respond(response_to(message, 403, to_tag=new_tag()), retransmit=False)
            return None
        outcome = self.digest.check(message)
        if outcome.account is not None:
            return outcome.account.sid
        if outcome.presented and not outcome.stale:
            self.counters.sip_refused("bad_credentials")
            log.warning("SIP INVITE from %s: wrong digest credentials (403)", source[0])
            tx.respond(response_to(message, 403, to_tag=new_tag()), retransmit=False)
            return None
        challenge = response_to(message, 401, to_tag=new_tag())
        challenge.add("WWW-Authenticate", self.digest.challenge(stale=outcome.stale))
        tx.respond(challenge, retransmit=False)
        return None

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._trust)

    def _answer_unparsable(self, data: bytes, send: Send, status: int, why: str = "") -> None:
        """A 400/513 when the request's Via, From, To, Call-ID and CSeq can still be read."""
        head = data.partition(b"\r\n\r\n")[0][:MAX_MESSAGE].decode("utf-8", "replace")
        lines = head.split("\r\n")
        if not lines or lines[0].startswith("SIP/2.0"):
            return
        wanted = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"}
        request = Message(method="X", uri="x")
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() in wanted:
                request.add(name.strip(), value.strip())
        if all(request.get(n) for n in ("Via", "From", "To", "Call-ID", "CSeq")):
            send(bytes(response_to(request, status, why[:100] if status == 400 else "")))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- INVITE -----------------------------------------------------------------------------

    def _invite(
        self,
        request: Message,
        tx: ServerTransaction,
        send: Send,
        transport: str,
        account: str | None = None,
    ) -> None:
        to_tag = parse_name_addr(request.require("To")).param("tag")
        if to_tag:
            self._reinvite(request, tx, to_tag)
            return
        if request.call_id in self.legs:
            tx.respond(response_to(request, 482, to_tag=new_tag()))  # a second INVITE, new branch
            return
        tx.respond(response_to(request, 100))
        self._spawn(self._new_call(request, tx, send, transport, account))

    async def _new_call(
        self,
        request: Message,
        tx: ServerTransaction,
        send: Send,
        transport: str,
        account: str | None,
    ) -> None:
        tag = new_tag()

        def refuse(status: int, reason: str, counted: str, retry: int | None = None) -> None:
            self.counters.sip_refused(counted)
            answer = response_to(request, status, to_tag=tag)
            if retry is not None:
                answer.add("Retry-After", str(retry))
            if status == 488:
                answer.add("Warning", f'304 turnpike "{reason}"')
            tx.respond(answer)
            log.info("INVITE %s refused %d: %s", request.call_id, status, reason)

        called = uri_user(request.uri or "")
        route = self.numbers().lookup(called)
        if route is None:
            refuse(404, f"no number {called!r}", "unknown_number")
            return
        if account is not None and route.account_sid != account:
            refuse(403, f"{route.number} belongs to another account", "other_account")
            return
        offer: sdp.Session | None = None
        negotiated: sdp.Negotiated | None = None
        if request.body:
            if (request.get("Content-Type") or "").split(";")[
                0
            ].strip().lower() != "application/sdp":
                refuse(415, "only application/sdp bodies", "bad_sdp")
                return
            try:
                offer = sdp.parse(request.body)
                _, negotiated = sdp.answer(offer, self.config.media_ip, 9)
            except sdp.NoCommonCodec as exc:
                refuse(488, str(exc), "no_common_codec")
                return
            except sdp.SdpError as exc:
                refuse(400, str(exc), "bad_sdp")
                return
        try:
            dialog = Dialog.from_invite(request, tag)
        except SipError as exc:
            refuse(400, str(exc), "malformed")
            return
        caller = uri_user(parse_name_addr(request.require("From")).uri) or "anonymous"
        caller = normalise(caller) or caller
        try:
            call = await self.calls.start(route, caller, route.number, negotiated)
        except Refused as exc:
            counted = {"account": "over_account_cap", "total": "over_capacity"}.get(
                exc.scope, exc.scope
            )
            refuse(
                exc.status, exc.reason, counted if exc.status == 503 else "refused", exc.retry_after
            )
            return
        except Exception:  # a fault must be an answer to the caller, never a hung INVITE
            log.exception("INVITE %s: creating the call failed", request.call_id)
            refuse(500, "the call could not be created", "internal_error")
            return
        origin = (int.from_bytes(tag.encode()[:4], "big"), 1)
        leg = Leg(dialog, tx, send, transport, origin, call=call, offer_in_200=offer is None)
        self.legs[dialog.call_id] = leg
        try:
            if tx.has_final():  # CANCELled while the call was being created
                call.hang_up("caller cancelled")
                return
            if not await self._ringing(call, tx, request, tag):
                if not tx.has_final():
                    tx.respond(response_to(request, call.unanswered_status(), to_tag=tag))
                return
            if tx.has_final():  # CANCELled meanwhile
                call.hang_up("caller cancelled")
                return
            if offer is not None:
                body, _ = sdp.answer(offer, self.config.media_ip, call.local_port, origin)
            else:
                body = sdp.offer(self.config.media_ip, call.local_port, origin)
            ok = response_to(request, 200, to_tag=tag)
            ok.add("Contact", self._contact(transport))
            ok.add("Allow", ALLOW)
            ok.add("X-Twilio-CallSid", call.sid)  # as the hosted service names the call in SIP
            ok.add("Content-Type", "application/sdp")
            ok.body = body
            leg.state = "answered"
            await self._send_2xx(leg, tx, ok)
            if leg.state == "answered":  # no ACK came: §13.3.1.4, end the call with BYE
                log.warning("call %s: no ACK for the 200, hanging up", call.sid)
                leg.state = "confirmed"
                call.hang_up("no ACK")
            await call.ended()
            if leg.state == "confirmed" and not leg.bye_sent:
                await self._send_bye(leg)
        finally:
            leg.state = "ended"
            self.legs.pop(dialog.call_id, None)

    async def _ringing(
        self, call: CallHandle, tx: ServerTransaction, request: Message, tag: str
    ) -> bool:
        """Wait for the TwiML to answer; if that takes a moment (a voice webhook is being
        fetched), tell the caller with 180 Ringing, as a phone would."""
        answered = asyncio.ensure_future(call.answered())
        done, _ = await asyncio.wait({answered}, timeout=RINGING_AFTER)
        if not done and not tx.has_final():
            tx.respond(response_to(request, 180, to_tag=tag))
        return await answered

    async def _send_2xx(self, leg: Leg, tx: ServerTransaction, ok: Message) -> None:
        """Send the 2xx and retransmit it until the ACK (T1 doubling to T2, at most 64·T1)."""
        leg.acked = asyncio.Event()
        tx.respond(ok)
        timers = self.config.timers
        interval = timers.t1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timers.timeout):
                while not leg.acked.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(leg.acked.wait(), None if leg.reliable else interval)
                    if not leg.acked.is_set():
                        leg.send(bytes(ok))
                        interval = min(2 * interval, timers.t2)

    def _ack(self, request: Message) -> None:
        transaction = self.transactions.find(request)
        if (
            transaction is not None
            and transaction.final
            and transaction.last
            and not transaction.last.startswith(b"SIP/2.0 2")
        ):
            transaction.ack()  # the ACK of a non-2xx final response (§17.2.1)
            return
        leg = self.legs.get(request.call_id)
        if leg is None or leg.acked is None or leg.acked.is_set():
            return
        if leg.offer_in_200 and leg.call is not None:
            try:
                leg.call.move_media(sdp.settle_answer(sdp.parse(request.body)))
            except sdp.SdpError as exc:
                log.warning("call %s: unusable answer in ACK (%s), hanging up", leg.call.sid, exc)
                leg.call.hang_up("unusable SDP answer")
            leg.offer_in_200 = False
        if leg.state == "answered":
            leg.state = "confirmed"
        leg.acked.set()

    def _reinvite(self, request: Message, tx: ServerTransaction, to_tag: str) -> None:
        leg = self.legs.get(request.call_id)
        if leg is None or leg.dialog.local_tag != to_tag or leg.call is None:
            tx.respond(response_to(request, 481))
            return
        if not leg.dialog.accepts_seq(request):
            tx.respond(response_to(request, 500))
            return
        if leg.acked is not None and not leg.acked.is_set():
            answer = response_to(request, 491 if leg.state == "answered" else 500)
            answer.add("Retry-After", "1")
            tx.respond(answer)
            return
        leg.dialog.refresh_target(request)
        if request.body:
            body = self._answer_offer(leg, request, tx)
            if body is None:
                return
            leg.offer_in_200 = False
        else:
            leg.origin = (leg.origin[0], leg.origin[1] + 1)
            body = sdp.offer(self.config.media_ip, leg.call.local_port, leg.origin)
            leg.offer_in_200 = True
        ok = response_to(request, 200)
        ok.add("Contact", self._contact(leg.transport))
        ok.add("Content-Type", "application/sdp")
        ok.body = body
        log.info("call %s: re-INVITE accepted", leg.call.sid)
        self._spawn(self._send_2xx(leg, tx, ok))

    def _update(self, request: Message, tx: ServerTransaction, send: Send, transport: str) -> None:
        """RFC 3311 UPDATE in a dialog: a new offer (hold, another address) answered in the 200,
        or none (a session refresh); no ACK follows."""
        leg = self.legs.get(request.call_id)
        to_tag = parse_name_addr(request.require("To")).param("tag")
        if leg is None or to_tag != leg.dialog.local_tag or leg.call is None:
            tx.respond(response_to(request, 481))
            return
        if not leg.dialog.accepts_seq(request):
            tx.respond(response_to(request, 500))
            return
        leg.dialog.refresh_target(request)
        ok = response_to(request, 200)
        ok.add("Contact", self._contact(leg.transport))
        if request.body:
            body = self._answer_offer(leg, request, tx)
            if body is None:
                return
            ok.add("Content-Type", "application/sdp")
            ok.body = body
            log.info("call %s: UPDATE moved the media", leg.call.sid)
        tx.respond(ok)

    def _answer_offer(self, leg: Leg, request: Message, tx: ServerTransaction) -> bytes | None:
        """Our answer to an offer inside the dialog, the media moved; None once refused."""
        assert leg.call is not None
        origin = (leg.origin[0], leg.origin[1] + 1)
        try:
            body, negotiated = sdp.answer(
                sdp.parse(request.body), self.config.media_ip, leg.call.local_port, origin
            )
        except sdp.NoCommonCodec as exc:
            answer = response_to(request, 488)
            answer.add("Warning", f'304 turnpike "{exc}"')
            tx.respond(answer)
            return None
        except sdp.SdpError:
            tx.respond(response_to(request, 400))
            return None
        leg.origin = origin
        leg.call.move_media(negotiated)
        return body

    # ---- BYE, CANCEL, OPTIONS ---------------------------------------------------------------

    def _bye(self, request: Message, tx: ServerTransaction, send: Send, transport: str) -> None:
        leg = self.legs.get(request.call_id)
        to_tag = parse_name_addr(request.require("To")).param("tag")
        if leg is None or to_tag != leg.dialog.local_tag or leg.call is None:
            tx.respond(response_to(request, 481))
            return
        tx.respond(response_to(request, 200))
        leg.bye_sent = True  # the caller hung up: no BYE from us
        if leg.acked is not None:
            leg.acked.set()
        leg.state = "ended"
        leg.call.hang_up("caller hung up (BYE)")

    def _cancel(self, request: Message, tx: ServerTransaction, send: Send, transport: str) -> None:
        invite = self.transactions.find(
            Message(method="INVITE", uri=request.uri, headers=request.headers)
        )
        leg = self.legs.get(request.call_id)
        if invite is None or invite.final:
            if invite is None and leg is None:
                tx.respond(response_to(request, 481))
            else:
                tx.respond(response_to(request, 200))  # too late: the call goes on (§9.2)
            return
        tx.respond(response_to(request, 200))
        tag = leg.dialog.local_tag if leg is not None else new_tag()
        original = Message(
            method="INVITE",
            uri=request.uri,
            headers=[
                (k, v if k != "CSeq" else v.replace("CANCEL", "INVITE")) for k, v in request.headers
            ],
        )
        invite.respond(response_to(original, 487, to_tag=tag))
        if leg is not None and leg.call is not None:
            leg.call.hang_up("caller cancelled")

    def _options(self, request: Message, tx: ServerTransaction, send: Send, transport: str) -> None:
        if not self.calls.accepting:
            busy = response_to(request, 503, to_tag=new_tag())
            busy.add("Retry-After", str(self.config.retry_after))
            tx.respond(busy)
            return
        answer = response_to(request, 200, to_tag=new_tag())
        answer.add("Allow", ALLOW)
        answer.add("Accept", "application/sdp")
        tx.respond(answer)

    async def _send_bye(self, leg: Leg) -> None:
        leg.bye_sent = True
        bye = leg.dialog.request("BYE", self._via(leg.transport), self._contact(leg.transport))
        branch = bye.get_all("Via")[0].split("branch=")[1].split(";")[0]
        transaction = self.transactions.client(branch)
        send = leg.send if leg.reliable else self.listeners.udp_send(leg.dialog.next_hop())
        response = await transaction.run(bytes(bye), send, leg.reliable)
        if response is None:
            log.warning("BYE for %s got no answer", leg.dialog.call_id)

    # ---- our addresses ----------------------------------------------------------------------

    def _hostport(self, transport: str) -> str:
        host, port = self.config.host, self.port
        if transport == "TLS" and self.config.tls_listen is not None:
            host, port = self.config.tls_listen[0], self.tls_port
        if ipaddress.ip_address(host).is_unspecified:
            host = self.config.media_ip
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _via(self, transport: str) -> str:
        return f"SIP/2.0/{transport} {self._hostport(transport)}"

    def _contact(self, transport: str) -> str:
        return f"<sip:{self._hostport(transport)};transport={transport.lower()}>"
