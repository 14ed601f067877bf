"""Where a call's RTP comes from and goes to: the signalled address, and symmetric-RTP latching.

The remote media address is the one signalled (SDP ``c=``/``m=``, or ``rtp.remote`` in the REST
request). Callers behind NAT send from another address, so the call *latches* to the source of
the first packet that is a valid RTP packet with a negotiated payload type, but only as long as
nothing has come from the signalled address yet, and only once. A datagram that is not RTP, or
carries a payload type nobody agreed on, never moves the call's media: otherwise a stray packet
(a port scan, a misdirected SIP message) would take the call away from the real caller.
"""

from __future__ import annotations

from collections.abc import Iterable

from turnpike.streamgw.rtp import RtpPacket


class Latch:
    def __init__(self, remote: tuple[str, int] | None, payload_types: Iterable[int]) -> None:
        self.remote = remote
        self.payload_types = frozenset(payload_types)
        self._settled = False  # a packet came from ``remote``: it stays the media address

    def admit(self, packet: RtpPacket, source: tuple[str, int]) -> bool:
        """True if ``packet`` (already parsed as RTP) from ``source`` belongs to the call."""
        if source == self.remote:
            self._settled = True
            return True
        if self._settled or packet.payload_type not in self.payload_types:
            return False
        self.remote = source
        self._settled = True
        return True

    def resignal(self, remote: tuple[str, int] | None, payload_types: Iterable[int]) -> None:
        """A new offer or answer (re-INVITE) names a new address: latching may happen again."""
        self.payload_types = frozenset(payload_types)
        if remote != self.remote:
            self.remote = remote
            self._settled = False
