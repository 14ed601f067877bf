"""The customer side of the stream gateway benchmark: a TLS WebSocket server in its own process.

It counts, per stream, the inbound media frames carrying the RTP sender's stamp and times each
one (arrival minus the stamp's send time, CLOCK_MONOTONIC on both sides), counts frames without
a stamp (silence the gateway filled in), and in echo mode sends every received payload straight
back as outbound media, as a voice bot that repeats the caller would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
import threading
import time
from typing import Any

from bench.rtpgen import parse_stamp
from bench.workers import WorkerPool, serve_commands


class Consumer:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.runner: Any = None
        self.echo = False
        self.lock = threading.Lock()
        self.reset_stats()

    def reset_stats(self) -> None:
        self.latencies_ms: list[float] = []
        self.frames: dict[int, set[int]] = {}
        self.duplicates = 0
        self.unstamped = 0
        self.starts = 0
        self.stops = 0
        self.connections = 0
        self.echo_sent = 0

    async def _handle(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        self.connections += 1
        stream_sid = ""
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            now = time.monotonic_ns()
            doc = json.loads(msg.data)
            event = doc.get("event")
            if event == "media":
                media = doc["media"]
                if media.get("track", "inbound") != "inbound":
                    continue
                payload = base64.b64decode(media["payload"])
                st = parse_stamp(payload)
                with self.lock:
                    if st is None:
                        self.unstamped += 1
                    else:
                        call, seq, sent = st
                        seen = self.frames.setdefault(call, set())
                        if seq in seen:
                            self.duplicates += 1
                        seen.add(seq)
                        self.latencies_ms.append((now - sent) / 1e6)
                if self.echo and st is not None:
                    out = {"event": "media", "streamSid": stream_sid,
                           "media": {"payload": media["payload"]}}  # fmt: skip
                    await ws.send_str(json.dumps(out))
                    self.echo_sent += 1
            elif event == "start":
                stream_sid = str(doc.get("streamSid", ""))
                self.starts += 1
            elif event == "stop":
                self.stops += 1
        return ws

    def start(self, cmd: dict[str, Any]) -> dict[str, Any]:
        from aiohttp import web

        self.echo = bool(cmd.get("echo", False))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cmd["cert"]), str(cmd["key"]))
        ready: dict[str, Any] = {}
        started = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            app = web.Application()
            app.router.add_get("/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
            loop.run_until_complete(site.start())
            ready["port"] = int(runner.addresses[0][1])
            self.runner = runner
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        if not started.wait(20):
            raise RuntimeError("WebSocket server did not start")
        return {"port": ready["port"]}

    def set_echo(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.echo = bool(cmd["echo"])
        return {"ok": True}

    def stats(self, cmd: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            out = {
                "latency_ms": [round(x, 3) for x in self.latencies_ms],
                "frames": {str(k): len(v) for k, v in self.frames.items()},
                "duplicates": self.duplicates,
                "unstamped": self.unstamped,
                "starts": self.starts,
                "stops": self.stops,
                "connections": self.connections,
                "echo_sent": self.echo_sent,
            }
            if cmd.get("reset"):
                self.reset_stats()
        return out

    def stop(self) -> None:
        loop = self.loop
        if loop is not None and self.thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout=10)
        self.loop = None


class Consumers(WorkerPool):
    def __init__(self) -> None:
        super().__init__("bench.wsconsumer", 1)

    def __enter__(self) -> Consumers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    consumer = Consumer()
    serve_commands(
        {
            "start": consumer.start,
            "stats": consumer.stats,
            "echo": consumer.set_echo,
        },
        consumer.stop,
    )
    sys.exit(0)
