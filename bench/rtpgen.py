"""The caller side of the stream gateway benchmark: RTP senders (one socket per call).

Every call sends one 20 ms PCMU packet every 20 ms; the sends of all calls are spread evenly over
each 20 ms frame, as a media server with many calls does. Each payload starts with a marker, the
call index, the sequence number and the send time (CLOCK_MONOTONIC ns, shared by all processes on
the machine), so the WebSocket consumer can match frames and time them. RTP the gateway plays back
to the caller (bidirectional streams) is received on the same sockets and its arrival times kept.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import struct
import sys
import time
from typing import Any

from bench.workers import WorkerPool, serve_commands

MARKER = b"TPBN"
FRAME = 0.020
_HEAD = struct.Struct("!BBHII")
_STAMP = struct.Struct("!4sIIQ")  # marker, call, seq, monotonic ns


def stamp(call: int, seq: int) -> bytes:
    return _STAMP.pack(MARKER, call, seq, time.monotonic_ns())


def parse_stamp(payload: bytes) -> tuple[int, int, int] | None:
    if len(payload) < _STAMP.size or payload[:4] != MARKER:
        return None
    _m, call, seq, sent = _STAMP.unpack_from(payload)
    return call, seq, sent


class Caller:
    def __init__(self) -> None:
        self.socks: list[socket.socket] = []

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []

    def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.close()
        for _ in range(int(cmd["calls"])):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self.socks.append(s)
        return {"addresses": [list(s.getsockname()) for s in self.socks]}

    def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        targets = [(str(h), int(p)) for h, p in cmd["targets"]]
        base = int(cmd.get("call_base", 0))
        n = len(targets)
        start = float(cmd["start"])
        frames = int(cmd["frames"])
        drain = float(cmd.get("drain", 0.5))
        fill = b"\xff" * (160 - _STAMP.size)
        ssrcs = [0x5EED0000 + base + i for i in range(n)]
        total = frames * n
        step = FRAME / n if n else FRAME
        sent = 0
        late_max = 0.0
        arrivals: list[list[float]] = [[] for _ in range(n)]
        echoed: list[int] = [0] * n
        poller = select.epoll()
        by_fd = {s.fileno(): i for i, s in enumerate(self.socks[:n])}
        for fd in by_fd:
            poller.register(fd, select.EPOLLIN)
        buf = bytearray(2048)
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for sock in self.socks[:n]:  # what the gateway played before the run is not measured
            while True:
                try:
                    sock.recv_into(buf)
                except OSError:
                    break
        end = start + frames * FRAME + drain
        try:
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                due = min(total, int((now - start) / step) + 1) if now >= start else 0
                while sent < due:
                    i = sent % n
                    seq = sent // n
                    head = _HEAD.pack(0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrcs[i])
                    with contextlib.suppress(OSError):
                        self.socks[i].sendto(head + stamp(base + i, seq) + fill, targets[i])
                    late_max = max(late_max, now - (start + sent * step))
                    sent += 1
                timeout = 0.001 if sent < total else 0.01
                for fd, _ev in poller.poll(timeout):
                    i = by_fd[fd]
                    sock = self.socks[i]
                    while True:
                        try:
                            size = sock.recv_into(buf)
                        except OSError:
                            break
                        arrivals[i].append(time.monotonic())
                        if size >= 12 + _STAMP.size and buf[12:16] == MARKER:
                            echoed[i] += 1
        finally:
            poller.close()
        return {
            "sent": sent,
            "late_max_s": late_max,
            "received": [len(a) for a in arrivals],
            "echoed": echoed,
            "intervals_ms": [
                [round((b - a) * 1000.0, 3) for a, b in itertools.pairwise(arr)] for arr in arrivals
            ],
        }


class Callers(WorkerPool):
    def __init__(self, workers: int) -> None:
        super().__init__("bench.rtpgen", workers)

    def __enter__(self) -> Callers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    caller = Caller()
    serve_commands({"open": caller.open, "run": caller.run}, caller.close)
    sys.exit(0)
