"""SIP dialogs as the UAS sees them (RFC 3261 §12): identifiers, route set, sequence numbers.

A dialog is created by the 2xx the gateway sends to an INVITE. Its id is Call-ID + our tag (the
To tag we added) + the caller's tag (From). Requests the gateway sends in it (BYE) go to the
caller's Contact, through the Record-Route set in the order received (§12.1.1), with our CSeq
counting up from a random start; requests the caller sends must not go back in CSeq (§12.2.2).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from turnpike.streamgw.sip.message import (
    Message,
    SipError,
    parse_name_addr,
    uri_host_port,
)
from turnpike.streamgw.sip.transaction import new_branch


def _loose(route: str) -> bool:
    """A loose router's URI has the ``lr`` parameter (§19.1.1)."""
    params = parse_name_addr(route).uri.split(";")[1:]
    return any(p.split("=", 1)[0].strip().lower() == "lr" for p in params)


def new_tag() -> str:
    return secrets.token_hex(6)


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str  # the INVITE's To, our tag added: our From in requests we send
    remote_party: str  # the INVITE's From: our To
    remote_target: str  # the caller's Contact URI
    route_set: list[str] = field(default_factory=list)
    remote_seq: int = 0
    local_seq: int = field(default_factory=lambda: secrets.randbelow(2**16) + 1)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_invite(cls, invite: Message, local_tag: str) -> Dialog:
        contacts = invite.get_all("Contact")
        if not contacts:
            raise SipError("INVITE without Contact")
        remote_tag = parse_name_addr(invite.require("From")).param("tag")
        if not remote_tag:
            raise SipError("INVITE From has no tag")
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=f"{invite.require('To')};tag={local_tag}",
            remote_party=invite.require("From"),
            remote_target=parse_name_addr(contacts[0]).uri,
            route_set=invite.get_all("Record-Route"),
            remote_seq=invite.cseq[0],
        )

    def accepts_seq(self, request: Message) -> bool:
        """§12.2.2: a lower CSeq than the last one is out of order (500); equal is a retry."""
        number = request.cseq[0]
        if number < self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def refresh_target(self, request: Message) -> None:
        """A re-INVITE may carry a new Contact (§12.2.2 target refresh)."""
        contacts = request.get_all("Contact")
        if contacts:
            self.remote_target = parse_name_addr(contacts[0]).uri

    def next_hop(self) -> tuple[str, int]:
        """Where in-dialog requests go: a loose first route, else the remote target."""
        if self.route_set and _loose(self.route_set[0]):
            return uri_host_port(parse_name_addr(self.route_set[0]).uri)
        return uri_host_port(self.remote_target)

    def request(self, method: str, via: str, contact: str) -> Message:
        """A new request in this dialog; ``via`` is ``SIP/2.0/UDP host:port`` (branch added)."""
        self.local_seq += 1
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and not _loose(routes[0]):
            # Strict router (§12.2.1.1): it becomes the Request-URI, the target the last route.
            uri = parse_name_addr(routes[0]).uri
            routes = [*routes[1:], f"<{self.remote_target}>"]
        message = Message(method=method, uri=uri)
        message.add("Via", f"{via};branch={new_branch()};rport")
        message.add("Max-Forwards", "70")
        for route in routes:
            message.add("Route", route)
        message.add("From", self.local_party)
        message.add("To", self.remote_party)
        message.add("Call-ID", self.call_id)
        message.add("CSeq", f"{self.local_seq} {method}")
        message.add("Contact", contact)
        return message
