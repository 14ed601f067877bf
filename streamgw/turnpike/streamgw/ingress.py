"""The ingress seam: how a call gets into the gateway and how its ingress learns that it ended.

Any ingress (the REST ``POST /v1/Calls`` + RTP side in ``api.py``; SIP next) builds a
`CallRequest` from what its wire negotiated and hands it to `Gateway.create_call` together with a
`CallListener`. The gateway opens the call's RTP endpoint (its address is ``call.media.local``),
runs the TwiML and, once, tells the listener that the call was answered and, once, that it ended
and why. What ending means on the wire is the ingress's business: REST reports a status and a
status callback; SIP sends BYE, or a final error response when the call ended unanswered (for
example by ``<Reject>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from turnpike.core.accounts import Account
from turnpike.streamgw import twiml

if TYPE_CHECKING:
    from turnpike.streamgw.call import Call

CODECS = ("PCMU", "PCMA")


@dataclass(frozen=True, slots=True)
class Source:
    """Where the next TwiML comes from: a document in hand, or a URL to fetch."""

    document: twiml.Document | None = None
    url: str | None = None
    method: str = "POST"
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CallRequest:
    """Everything a call needs from its ingress."""

    account: Account
    from_: str
    to: str
    source: Source
    remote: tuple[str, int] | None = None  # RTP goes here; None: answer where RTP comes from
    codec: str = "PCMU"  # negotiated audio codec: PCMU or PCMA
    dtmf_pt: int = 101  # negotiated RFC 4733 telephone-event payload type


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """Why a call ended.

    ``status`` is the hosted call status it ends with: ``completed`` for an answered call,
    ``busy`` or ``no-answer`` for one refused by ``<Reject>`` before it was answered.
    ``error`` is the last TwiML error (code, message) that ended it, if any.
    """

    status: str
    reason: str
    answered: bool
    rejected: str | None = None  # the <Reject> reason: "busy" or "rejected"
    error: tuple[int, str] | None = None


class CallListener(Protocol):
    """What an ingress is told about a call it created."""

    def answered(self, call: Call) -> None:
        """The TwiML reached its first verb that answers the call (anything but ``<Reject>``)."""

    def ended(self, call: Call, outcome: CallOutcome) -> None:
        """The call is over: every stream has stopped and its RTP endpoint is closed."""
