"""SIP transactions (RFC 3261 §17): matching, response caching and retransmission timers.

Server transactions (§17.2) answer a retransmitted request with the last response sent; over UDP
an INVITE's non-2xx final response is retransmitted (Timer G: T1 doubling up to T2) until the ACK
comes or Timer H (64·T1) gives up. A transaction is forgotten 64·T1 after its final response
over UDP (Timers I/J; RFC 6026's "Accepted" wait for a 2xx), at once over TCP. The 2xx to an
INVITE is retransmitted by the dialog's owner, not here (§13.3.1.4).

Client transactions (§17.1.2, non-INVITE only: the gateway sends BYE) retransmit over UDP with
Timer E (T1 doubling up to T2) and fail after Timer F (64·T1).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from turnpike.streamgw.sip.message import Message, SipError, parse_via

COOKIE = "z9hG4bK"  # §8.1.1.7: branches starting with it are RFC 3261 transaction ids

Send = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class Timers:
    t1: float = 0.5
    t2: float = 4.0

    @property
    def timeout(self) -> float:
        return 64 * self.t1


def new_branch() -> str:
    return COOKIE + secrets.token_hex(8)


def server_key(request: Message) -> tuple[str, str, str]:
    """§17.2.3: top Via branch + sent-by + method (ACK matches its INVITE)."""
    via = parse_via(request.get_all("Via")[0])
    branch = via.param("branch") or ""
    if not branch.startswith(COOKIE):
        # RFC 2543 peers: fall back on the dialog identifiers (a loose §17.2.3 match).
        branch = f"{request.call_id}|{request.get('From')}|{request.cseq[0]}"
    method = request.method or ""
    method = "INVITE" if method == "ACK" else method
    return branch, f"{via.host}:{via.port}", method


class ServerTransaction:
    def __init__(
        self, layer: TransactionLayer, key: tuple[str, str, str], send: Send, reliable: bool
    ) -> None:
        self.layer = layer
        self.key = key
        self.method = key[2]
        self.send = send
        self.reliable = reliable
        self.last: bytes | None = None
        self.final = False
        self.acked = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None

    def has_final(self) -> bool:
        """A final (non-1xx) response was sent: the transaction's outcome is settled."""
        return self.final

    def respond(self, response: Message, *, retransmit: bool = True) -> None:
        """Send ``response``. ``retransmit=False`` sends a final answer once and does not repeat
        it until an ACK (for refusals of sources nobody vouched for: a spoofed source address
        must not turn the gateway into a traffic amplifier); a retransmitted request still gets
        it again."""
        if self.final:
            return  # one final response per transaction
        data = bytes(response)
        self.last = data
        self.send(data)
        if response.status < 200:
            return
        self.final = True
        loop = asyncio.get_running_loop()
        if self.method == "INVITE" and response.status >= 300 and not self.reliable and retransmit:
            self._timer = loop.create_task(self._retransmit_until_ack(data))
        else:
            linger = 0.0 if self.reliable else self.layer.timers.timeout
            self._timer = loop.create_task(self._forget_after(linger))

    def retransmitted(self) -> None:
        """The same request again: it lost our response, send it again (§17.2.1, §17.2.2)."""
        if self.last is not None:
            self.send(self.last)

    def ack(self) -> None:
        self.acked.set()

    async def _retransmit_until_ack(self, data: bytes) -> None:
        timers = self.layer.timers
        interval = timers.t1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timers.timeout):  # Timer H
                while not self.acked.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.acked.wait(), interval)  # Timer G
                    if not self.acked.is_set():
                        self.send(data)
                        interval = min(2 * interval, timers.t2)
        await asyncio.sleep(0 if self.reliable else timers.t1 * 8)  # Timer I (T4 is ~ 8·T1 here)
        self.layer.forget(self)

    async def _forget_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.layer.forget(self)

    def cancel(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()


class ClientTransaction:
    def __init__(self, layer: TransactionLayer, branch: str) -> None:
        self.layer = layer
        self.branch = branch
        self.response: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def run(self, data: bytes, send: Send, reliable: bool) -> Message | None:
        """Send until a final response (returned) or Timer F (None)."""
        timers = self.layer.timers
        interval = timers.t1
        send(data)
        try:
            async with asyncio.timeout(timers.timeout):  # Timer F
                while True:
                    wait = None if reliable else interval
                    with contextlib.suppress(TimeoutError):
                        return await asyncio.wait_for(asyncio.shield(self.response), wait)
                    send(data)  # Timer E
                    interval = min(2 * interval, timers.t2)
        except TimeoutError:
            return None
        finally:
            self.layer.clients.pop(self.branch, None)


class TransactionLayer:
    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        self.servers: dict[tuple[str, str, str], ServerTransaction] = {}
        self.clients: dict[str, ClientTransaction] = {}

    def find(self, request: Message) -> ServerTransaction | None:
        try:
            return self.servers.get(server_key(request))
        except SipError:
            return None

    def create(self, request: Message, send: Send, reliable: bool) -> ServerTransaction:
        key = server_key(request)
        transaction = ServerTransaction(self, key, send, reliable)
        self.servers[key] = transaction
        return transaction

    def forget(self, transaction: ServerTransaction) -> None:
        if self.servers.get(transaction.key) is transaction:
            del self.servers[transaction.key]

    def client(self, branch: str) -> ClientTransaction:
        transaction = ClientTransaction(self, branch)
        self.clients[branch] = transaction
        return transaction

    def response(self, response: Message) -> bool:
        """Hand a response to the client transaction it answers; False if none matches."""
        try:
            branch = parse_via(response.get_all("Via")[0]).param("branch") or ""
        except (SipError, IndexError):
            return False
        transaction = self.clients.get(branch)
        if transaction is None:
            return False
        if response.status >= 200 and not transaction.response.done():
            transaction.response.set_result(response)
        return True

    def close(self) -> None:
        for transaction in list(self.servers.values()):
            transaction.cancel()
        self.servers.clear()
        for client in self.clients.values():
            if not client.response.done():
                client.response.cancel()
