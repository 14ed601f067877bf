"""The relay load generator: worker processes with pre-established allocations.

Each worker owns its flows. A flow is one allocation on the server under test (client socket →
server, relayed to a peer socket the worker also owns). The control path (Allocate, ChannelBind,
CreatePermission) is done once with the blocking client in ``bench.stun``; the data path is a
tight loop of ``send()`` on connected, pre-encoded packets, paced against the monotonic clock,
and ``recv_into()`` on whichever peer sockets epoll reports readable.

Kinds of load:

- ``channel``: ChannelData over UDP;
- ``send``: Send indications over UDP (the server answers with plain UDP to the peer);
- ``tcp``: ChannelData over TCP connections to the server (stream framing with padding);
- ``direct``: the same client sockets send straight to the peer sockets, no server: this is the
  generator's own ceiling.

An echo flow per worker carries timestamped probes at a low rate; its peer sends each probe back
through the relay (or straight back in ``direct`` mode) and the client records the round trip.

Workers are driven over a ``multiprocessing`` pipe by ``Generator`` (see ``bench.relay``); every
loop is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench import stun
from bench.workers import WorkerPool, serve_commands

BUFFER_BYTES = 4 * 1024 * 1024
MAX_BURST = 64
# a packet arriving more than this long after the generator stopped sending counts as lost:
# a backlog the server works off later is not a rate it held
IN_TIME_S = 0.1
_TS = struct.Struct("!Q")


@dataclass
class Flow:
    client: socket.socket
    peer: socket.socket
    relayed: stun.Address
    channel: int
    tcp: bool = False
    creds: stun.Credentials | None = None
    pending: bytes = b""
    packets: dict[str, bytes] = field(default_factory=dict)


def _udp_socket(connect_to: stun.Address | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
    sock.bind(("127.0.0.1", 0))
    if connect_to is not None:
        sock.connect(connect_to)
    return sock


def _payload(size: int) -> bytes:
    # looks like an RTP packet header followed by PCMU silence
    return (b"\x80\x00" + b"\x00" * 10 + b"\xff" * max(0, size - 12))[:size]


class Worker:
    """One load-generator process's state (runs inside the child)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.flows: list[Flow] = []
        self.tcp_flows: list[Flow] = []
        self.echo: Flow | None = None
        self.direct_flows: list[Flow] = []
        self.direct_echo: Flow | None = None
        self.server: stun.Address | None = None
        self.payload = b""
        self.secret = ""

    # --- setup -------------------------------------------------------------------------------

    def close_flows(self) -> None:
        flows = [*self.flows, *self.tcp_flows, *([self.echo] if self.echo else [])]
        flows += [*self.direct_flows, *([self.direct_echo] if self.direct_echo else [])]
        for flow in flows:
            if self.server is not None and not flow.tcp and flow.creds is not None:
                # best effort: delete the allocation so the server's port range stays free
                # (closing a TCP connection ends its allocation)
                with contextlib.suppress(Exception):
                    flow.client.setblocking(True)
                    ctl = stun.ControlClient(flow.client, self.server, False)
                    ctl.transact(
                        stun.build(
                            stun.REFRESH, stun.REQUEST, [(stun.LIFETIME, bytes(4))], flow.creds
                        ),
                        timeout=0.3,
                    )
            flow.client.close()
            flow.peer.close()
        self.flows, self.tcp_flows, self.echo = [], [], None
        self.direct_flows, self.direct_echo = [], None

    def _make_flow(self, n: int, tcp: bool, direct: bool = False) -> Flow:
        peer = _udp_socket()
        channel = 0x4000 + n
        if direct or self.server is None:  # client → peer, no relay
            client = _udp_socket(peer.getsockname())
            flow = Flow(client, peer, client.getsockname(), channel)
            flow.packets["direct"] = self.payload
            peer.connect(client.getsockname())
            return flow
        creds = stun.rest_credentials(self.secret, f"bench-{self.index}-{n}")
        if tcp:
            client = socket.create_connection(self.server, timeout=5)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            client = _udp_socket(self.server)
        ctl = stun.ControlClient(client, self.server, tcp)
        relayed = ctl.allocate(creds)
        ctl.channel_bind(creds, channel, peer.getsockname())
        if not tcp:
            ctl.create_permission(creds, peer.getsockname())
        flow = Flow(client, peer, relayed, channel, tcp=tcp, creds=creds)
        flow.packets["channel"] = stun.channel_data(channel, self.payload, stream=tcp)
        if not tcp:
            flow.packets["send"] = stun.send_indication(peer.getsockname(), self.payload)
        peer.connect(relayed)  # only the relay may talk to this peer socket
        return flow

    def setup(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.close_flows()
        server = cmd.get("server")
        self.server = (str(server[0]), int(server[1])) if server else None
        self.secret = str(cmd.get("secret", ""))
        self.payload = _payload(int(cmd["payload"]))
        udp_flows = int(cmd["udp_flows"])
        for n in range(udp_flows):
            self.direct_flows.append(self._make_flow(n, False, direct=True))
        self.direct_echo = self._make_flow(udp_flows, False, direct=True)
        n = 0
        tcp_error: str | None = None
        if self.server is not None:
            for _ in range(udp_flows):
                self.flows.append(self._make_flow(n, False))
                n += 1
            try:
                for _ in range(int(cmd.get("tcp_flows", 0))):
                    self.tcp_flows.append(self._make_flow(n, True))
                    n += 1
            except (OSError, stun.TurnError) as exc:
                # reported, and the TCP mode is skipped for this server; UDP modes still run
                tcp_error = f"{type(exc).__name__}: {exc}"
                for flow in self.tcp_flows:
                    flow.client.close()
                    flow.peer.close()
                self.tcp_flows = []
            self.echo = self._make_flow(n, False)
            n += 1
        everything = [*self.flows, *self.tcp_flows, *([self.echo] if self.echo else [])]
        for flow in [*everything, *self.direct_flows, self.direct_echo]:
            assert flow is not None
            flow.client.setblocking(False)
            flow.peer.setblocking(False)
        return {
            "flows": n,
            "relayed": [list(f.relayed) for f in self.flows],
            "tcp_error": tcp_error,
        }

    def release(self, cmd: dict[str, Any]) -> dict[str, Any]:
        del cmd
        self.close_flows()
        return {"ok": True}

    # --- data path ---------------------------------------------------------------------------

    def load(self, cmd: dict[str, Any]) -> dict[str, Any]:
        kind = str(cmd["kind"])
        rate = float(cmd["rate"])
        probe_rate = float(cmd.get("probe_rate", 0.0))
        start = float(cmd["start"])
        end = start + float(cmd["duration"])
        drain = float(cmd.get("drain", 0.3))
        # the generator may finish late by at most a quarter of the duration, then it stops
        late_limit = end + 0.25 * float(cmd["duration"])
        drain_until = late_limit + drain
        sending = True
        finished_at = late_limit
        tcp = kind == "tcp"
        if kind == "direct":
            flows, echo = self.direct_flows, self.direct_echo
        else:
            flows, echo = (self.tcp_flows if tcp else self.flows), self.echo
        if not flows or echo is None:
            raise RuntimeError(f"no flows set up for {kind}")
        pkt_kind = "channel" if tcp else kind
        senders = [f.client.send for f in flows]
        packets = [f.packets[pkt_kind] for f in flows]
        nflows = len(flows)

        sinks: dict[int, Any] = {f.peer.fileno(): f.peer.recv_into for f in flows}
        poller = select.epoll()
        for fd in sinks:
            poller.register(fd, select.EPOLLIN)
        probing = probe_rate > 0 and kind in ("channel", "direct")
        echo_fd = echo.peer.fileno()
        probe_fd = echo.client.fileno()
        if probing:
            poller.register(echo_fd, select.EPOLLIN)
            poller.register(probe_fd, select.EPOLLIN)
        probe_offset = 0 if kind == "direct" else 4
        probe_pad = self.payload[8:]
        probe_head = stun.channel_data(echo.channel, self.payload)[:4]

        buf = bytearray(4096)
        view = memoryview(buf)
        received = 0
        in_time: int | None = None
        send_errors = 0
        sent = 0
        probes_sent = 0
        probes_received = 0
        rtts: list[int] = []
        forward: list[int] = []
        tcp_dropped = 0
        counts = [0] * nflows
        index = 0
        monotonic = time.monotonic
        perf_ns = time.perf_counter_ns

        delay = start - monotonic()
        if delay > 0:
            time.sleep(delay)
        total = int(rate * (end - start))
        try:
            while True:
                now = monotonic()
                if now >= drain_until:
                    break
                if in_time is None and not sending and now >= finished_at + IN_TIME_S:
                    in_time = received
                if sending and (sent >= total or now >= late_limit):
                    sending = False
                    finished_at = now
                    drain_until = now + drain
                timeout = 0.0
                if sending:
                    due = min(int((now - start) * rate), total) - sent
                    if due > MAX_BURST:
                        due = MAX_BURST
                    if due > 0:
                        if tcp:
                            for _ in range(due):
                                counts[index] += 1
                                index += 1
                                if index == nflows:
                                    index = 0
                            for k in range(nflows):
                                c = counts[k]
                                if c:
                                    counts[k] = 0
                                    flow = flows[k]
                                    if len(flow.pending) > BUFFER_BYTES:
                                        tcp_dropped += c
                                        continue
                                    data = flow.pending + packets[k] * c
                                    try:
                                        done = flow.client.send(data)
                                    except BlockingIOError:
                                        done = 0
                                    flow.pending = data[done:]
                        else:
                            for _ in range(due):
                                try:
                                    senders[index](packets[index])
                                except OSError:
                                    send_errors += 1
                                index += 1
                                if index == nflows:
                                    index = 0
                        sent += due
                    else:
                        timeout = max(0.0, (sent + 1) / rate - (now - start))
                    if probing and now < end and (now - start) * probe_rate >= probes_sent:
                        body = _TS.pack(perf_ns()) + probe_pad
                        msg = probe_head + body if probe_offset else body
                        with contextlib.suppress(OSError):
                            echo.client.send(msg)
                        probes_sent += 1
                        timeout = 0.0
                else:
                    timeout = min(0.01, drain_until - now)
                    if tcp:  # flush what the kernel did not take yet
                        for flow in flows:
                            if flow.pending:
                                try:
                                    done = flow.client.send(flow.pending)
                                except BlockingIOError:
                                    done = 0
                                flow.pending = flow.pending[done:]
                if timeout > 0.002:
                    timeout = 0.002
                for fd, _ev in poller.poll(timeout):
                    recv = sinks.get(fd)
                    if recv is not None:
                        while True:
                            try:
                                recv(buf)
                            except BlockingIOError:
                                break
                            except OSError:
                                break
                            received += 1
                    elif fd == echo_fd:
                        while True:
                            try:
                                n = echo.peer.recv_into(buf)
                            except OSError:
                                break
                            with contextlib.suppress(OSError):
                                echo.peer.send(view[:n])
                            if n >= 8:  # the forward half: client → (relay →) peer
                                (sent_ns,) = _TS.unpack_from(buf, 0)
                                forward.append(perf_ns() - sent_ns)
                    elif fd == probe_fd:
                        while True:
                            try:
                                n = echo.client.recv_into(buf)
                            except OSError:
                                break
                            if n >= probe_offset + 8:
                                (sent_ns,) = _TS.unpack_from(buf, probe_offset)
                                rtts.append(perf_ns() - sent_ns)
                                probes_received += 1
        finally:
            poller.close()
            for flow, packet in zip(flows, packets, strict=True):
                # Forget what was never sent, but only whole packets: the rest of one the kernel
                # took in part goes first next time, or the stream would lose its framing (and a
                # relay rightly closes a connection that sends garbage).
                flow.pending = flow.pending[: len(flow.pending) % len(packet)]
        return {
            "offered": total,
            "sent": sent - tcp_dropped,
            "late_s": max(0.0, finished_at - end),
            "received": received if in_time is None else in_time,
            "received_total": received,
            "send_errors": send_errors,
            "probes_sent": probes_sent,
            "probes_received": probes_received,
            "rtt_us": [r / 1000.0 for r in rtts],
            "forward_us": [r / 1000.0 for r in forward],
        }

    # --- allocation rate ---------------------------------------------------------------------

    def alloc_rate(self, cmd: dict[str, Any]) -> dict[str, Any]:
        server = (str(cmd["server"][0]), int(cmd["server"][1]))
        secret = str(cmd["secret"])
        lanes = int(cmd["lanes"])
        start = float(cmd["start"])
        end = start + float(cmd["duration"])
        hard_end = end + 2.0
        transport = stun.UDP_TRANSPORT
        lifetime = struct.pack("!I", 600)

        @dataclass
        class Lane:
            sock: socket.socket
            creds: stun.Credentials
            phase: int
            txid: bytes
            sent_at: float

        poller = select.epoll()
        by_fd: dict[int, Lane] = {}
        allocated = 0
        deleted = 0
        errors: dict[str, int] = {}
        timeouts = 0
        cycle_ms: list[float] = []
        cycles_started = 0
        source_seq = 0

        def begin(n: int) -> Lane:
            nonlocal cycles_started
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            # a fresh 5-tuple per cycle: servers may keep a deleted allocation's 5-tuple for a
            # moment (coturn answers 437 for about a second), so rotate the loopback source
            nonlocal source_seq
            source_seq += 1
            # 127.<100+worker>.x.y: 64516 client addresses per worker, so no source address is
            # reused often enough to meet a per-address limit (Turnpike rate-limits UDP 401s)
            third, fourth = divmod(source_seq % (254 * 254), 254)
            sock.bind((f"127.{100 + self.index % 100}.{third + 1}.{fourth + 1}", 0))
            sock.connect(server)
            sock.setblocking(False)
            creds = stun.rest_credentials(secret, f"alloc-{self.index}-{n}")
            req = stun.build(
                stun.ALLOCATE, stun.REQUEST, [(stun.REQUESTED_TRANSPORT, transport)], None
            )
            lane = Lane(sock, creds, 0, req[8:20], time.monotonic())
            with contextlib.suppress(OSError):
                sock.send(req)
            poller.register(sock.fileno(), select.EPOLLIN)
            by_fd[sock.fileno()] = lane
            cycles_started += 1
            return lane

        def finish(lane: Lane) -> None:
            poller.unregister(lane.sock.fileno())
            del by_fd[lane.sock.fileno()]
            lane.sock.close()

        def request(lane: Lane, method: int, attrs: list[tuple[int, bytes]]) -> None:
            msg = stun.build(method, stun.REQUEST, attrs, lane.creds)
            lane.txid = msg[8:20]
            lane.sent_at = time.monotonic()
            with contextlib.suppress(OSError):
                lane.sock.send(msg)

        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        cycle_start: dict[int, float] = {}
        for n in range(lanes):
            lane = begin(n)
            cycle_start[lane.sock.fileno()] = lane.sent_at
        lane_ids = {fd: n for n, fd in enumerate(list(by_fd))}
        last_sweep = time.monotonic()
        try:
            while by_fd:
                now = time.monotonic()
                if now >= hard_end:
                    break
                for fd, _ev in poller.poll(0.01):
                    lane_or_none = by_fd.get(fd)
                    if lane_or_none is None:
                        continue
                    lane = lane_or_none
                    try:
                        data = lane.sock.recv(2048)
                    except OSError:
                        continue
                    try:
                        msg = stun.parse(data)
                    except ValueError:
                        continue
                    if msg.txid != lane.txid:
                        continue
                    n = lane_ids.pop(fd)
                    restart = False
                    if lane.phase == 0:
                        if msg.error in (401, 438) and stun.NONCE in msg.attrs:
                            lane.creds.nonce = msg.attrs[stun.NONCE]
                            lane.creds.realm = msg.attrs.get(stun.REALM, b"").decode()
                            request(
                                lane,
                                stun.ALLOCATE,
                                [(stun.REQUESTED_TRANSPORT, transport), (stun.LIFETIME, lifetime)],
                            )
                            lane.phase = 1
                        else:
                            key = f"challenge-{msg.error or 'success'}"
                            errors[key] = errors.get(key, 0) + 1
                            restart = True
                    elif lane.phase == 1:
                        if msg.klass == stun.SUCCESS:
                            if lane.sent_at <= end:
                                allocated += 1
                            request(lane, stun.REFRESH, [(stun.LIFETIME, b"\0\0\0\0")])
                            lane.phase = 2
                        else:
                            key = f"allocate-{msg.error}"
                            errors[key] = errors.get(key, 0) + 1
                            restart = True
                    else:
                        if msg.klass == stun.SUCCESS:
                            deleted += 1
                            began = cycle_start.pop(fd, None)
                            if began is not None and now <= end:
                                cycle_ms.append((now - began) * 1000.0)
                        else:
                            key = f"refresh-{msg.error}"
                            errors[key] = errors.get(key, 0) + 1
                        restart = True
                    if restart:
                        cycle_start.pop(fd, None)
                        finish(lane)
                        if time.monotonic() < end:
                            new = begin(n)
                            lane_ids[new.sock.fileno()] = n
                            cycle_start[new.sock.fileno()] = new.sent_at
                    else:
                        lane_ids[fd] = n
                if now - last_sweep > 0.05:
                    last_sweep = now
                    for fd, lane in list(by_fd.items()):
                        if now - lane.sent_at > 1.0:
                            timeouts += 1
                            n = lane_ids.pop(fd)
                            cycle_start.pop(fd, None)
                            finish(lane)
                            if now < end:
                                new = begin(n)
                                lane_ids[new.sock.fileno()] = n
                                cycle_start[new.sock.fileno()] = new.sent_at
        finally:
            for lane in list(by_fd.values()):
                finish(lane)
            poller.close()
        return {
            "allocated": allocated,
            "deleted": deleted,
            "timeouts": timeouts,
            "errors": errors,
            "cycles_started": cycles_started,
            "cycle_ms": cycle_ms,
        }


def serve(index: int) -> None:
    """Child process entry point."""
    worker = Worker(index)
    serve_commands(
        {
            "setup": worker.setup,
            "load": worker.load,
            "alloc": worker.alloc_rate,
            "release": worker.release,
        },
        worker.close_flows,
    )


class Generator(WorkerPool):
    """The parent's handle on the load-generator processes."""

    def __init__(self, workers: int) -> None:
        super().__init__("bench.loadgen", workers)

    def _all(self, cmds: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        return self.call(cmds, timeout)

    def setup(
        self,
        server: stun.Address | None,
        secret: str,
        udp_flows: int,
        tcp_flows: int,
        payload: int,
    ) -> list[dict[str, Any]]:
        cmd = {
            "op": "setup",
            "server": server,
            "secret": secret,
            "udp_flows": udp_flows,
            "tcp_flows": tcp_flows,
            "payload": payload,
        }
        return self._all([cmd] * len(self.procs), timeout=60.0)

    def load(
        self, kind: str, rate: float, duration: float, probe_rate: float = 0.0, drain: float = 0.3
    ) -> dict[str, Any]:
        """Offer ``rate`` packets/s in total for ``duration`` s; sums the workers' counts."""
        n = len(self.procs)
        start = time.monotonic() + 0.05
        cmd = {
            "op": "load",
            "kind": kind,
            "rate": rate / n,
            "probe_rate": probe_rate / n,
            "start": start,
            "duration": duration,
            "drain": drain,
        }
        replies = self._all([cmd] * n, timeout=duration + drain + 30.0)
        total: dict[str, Any] = {"kind": kind, "rate": rate, "duration": duration}
        for key in ("offered", "sent", "received", "received_total", "send_errors", "probes_sent"):
            total[key] = sum(int(r[key]) for r in replies)
        total["probes_received"] = sum(int(r["probes_received"]) for r in replies)
        total["late_s"] = max(float(r["late_s"]) for r in replies)
        total["rtt_us"] = [x for r in replies for x in r["rtt_us"]]
        total["forward_us"] = [x for r in replies for x in r["forward_us"]]
        offered = max(1, total["offered"])
        total["loss"] = max(0.0, 1.0 - total["received"] / offered)
        return total

    def alloc_rate(
        self, server: stun.Address, secret: str, lanes: int, duration: float
    ) -> dict[str, Any]:
        start = time.monotonic() + 0.05
        cmd = {
            "op": "alloc",
            "server": server,
            "secret": secret,
            "lanes": lanes,
            "start": start,
            "duration": duration,
        }
        replies = self._all([cmd] * len(self.procs), timeout=duration + 30.0)
        errors: dict[str, int] = {}
        for r in replies:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + int(v)
        return {
            "duration": duration,
            "lanes": lanes * len(self.procs),
            "allocated": sum(int(r["allocated"]) for r in replies),
            "deleted": sum(int(r["deleted"]) for r in replies),
            "timeouts": sum(int(r["timeouts"]) for r in replies),
            "errors": errors,
            "cycle_ms": [x for r in replies for x in r["cycle_ms"]],
        }

    def release(self) -> None:
        """Delete the allocations (before the server under test stops)."""
        self._all([{"op": "release"}] * len(self.procs), timeout=30.0)

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
