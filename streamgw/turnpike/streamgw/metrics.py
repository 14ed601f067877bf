"""Prometheus metrics of one gateway, in its own registry (no globals: tests build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("turnpike_streamgw_active_calls", "Calls in progress", registry=r)
        self.calls = Counter("turnpike_streamgw_calls", "Calls accepted", registry=r)
        self.calls_refused = Counter(
            "turnpike_streamgw_calls_refused",
            "Calls refused by admission: account (its concurrent-call cap) or total (capacity)",
            ["reason"],
            registry=r,
        )
        for reason in ("account", "total"):
            self.calls_refused.labels(reason)
        self.active_streams = Gauge(
            "turnpike_streamgw_active_streams", "Streams open, by kind", ["kind"], registry=r
        )
        self.frames_received = Counter(
            "turnpike_streamgw_frames_received",
            "20 ms audio frames received"
            " (rtp: from callers; websocket: from bidirectional servers)",
            ["source"],
            registry=r,
        )
        self.frames_sent = Counter(
            "turnpike_streamgw_frames_sent",
            "Audio frames sent (websocket: media messages; rtp: packets to callers)",
            ["destination"],
            registry=r,
        )
        self.frames_dropped = Counter(
            "turnpike_streamgw_frames_dropped",
            "Audio frames dropped, by reason",
            ["reason"],
            registry=r,
        )
        self.ws_errors = Counter(
            "turnpike_streamgw_websocket_errors",
            "Stream errors and warnings, by Twilio error code",
            ["code"],
            registry=r,
        )
        self.callbacks = Counter(
            "turnpike_streamgw_callbacks",
            "Status callback and webhook outcomes",
            ["outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "turnpike_streamgw_rtp_to_websocket_seconds",
            "From the RTP packet that completed a frame to its media message written to the socket",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.sip_requests = Counter(
            "turnpike_streamgw_sip_requests",
            "SIP requests received, by method",
            ["method"],
            registry=r,
        )
        self.sip_refusals = Counter(
            "turnpike_streamgw_sip_refused",
            "SIP messages refused or dropped, by reason",
            ["reason"],
            registry=r,
        )
        # Children looked up once: the per-frame paths must not pay for label resolution.
        self.rx_rtp = self.frames_received.labels("rtp")
        self.rx_ws = self.frames_received.labels("websocket")
        self.tx_ws = self.frames_sent.labels("websocket")
        self.tx_rtp = self.frames_sent.labels("rtp")
        self.unidirectional = self.active_streams.labels("unidirectional")
        self.bidirectional = self.active_streams.labels("bidirectional")

    def error(self, code: int) -> None:
        self.ws_errors.labels(str(code)).inc()

    def sip_request(self, method: str) -> None:
        known = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE")
        self.sip_requests.labels(method if method in known else "other").inc()

    def sip_refused(self, reason: str) -> None:
        self.sip_refusals.labels(reason).inc()

    def dropped(self, reason: str, count: int = 1) -> None:
        self.frames_dropped.labels(reason).inc(count)
