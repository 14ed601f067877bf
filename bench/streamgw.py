"""Stream gateway benchmark: how many real-time streams one gateway process carries cleanly.

A real ``turnpike streamgw`` process gets calls through ``POST /v1/Calls``; an RTP sender process
plays the callers (one 20 ms PCMU frame per call every 20 ms, spread over the frame); a TLS
WebSocket server process plays the customer. Two kinds of stream, ramped up in steps:

- **fork** (``<Start><Stream>``, inbound track): every RTP frame must arrive at the WebSocket
  server exactly once (no drop), and the 99th percentile of RTP-in → WebSocket-out time must stay
  under 20 ms;
- **echo** (``<Connect><Stream>``): the WebSocket server sends every frame straight back; the
  gateway plays it to the caller in real time; we report the caller's inter-arrival jitter (how
  far each gap is from 20 ms) and how many frames came back.

CPU per stream is the gateway's utime+stime (from /proc) over the step divided by its length and
the number of streams.

**hostile TwiML**: the p99 of a few healthy forks, once quiet and once while other calls keep
arriving with entity-bomb documents (billion laughs, inline UTF-8 and fetched UTF-16) and
``<Say>`` with words never spoken before (a fresh espeak-ng synthesis each): neither parsing nor
speech synthesis may stall the event loop that carries the healthy streams.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import servers
from bench.common import (
    RESULTS_DIR,
    cpu_seconds,
    load_average,
    log,
    machine,
    machine_line,
    percentile,
    utc_now,
    write_result,
)
from bench.rtpgen import Callers
from bench.sipcalls import SipGateway
from bench.wsconsumer import Consumers


@dataclass
class StreamgwParams:
    fork_streams: list[int] = field(default_factory=lambda: [10, 25, 50, 100, 150, 200, 300])
    echo_streams: list[int] = field(default_factory=lambda: [10, 25, 50, 100, 150])
    duration: float = 4.0
    p99_limit_ms: float = 20.0
    hostile_streams: int = 20
    sip: bool = False  # calls placed over SIP (INVITE/ACK/BYE) instead of POST /v1/Calls
    smoke: bool = False

    @classmethod
    def smoke_preset(cls) -> StreamgwParams:
        return cls(fork_streams=[2], echo_streams=[2], duration=0.6, hostile_streams=2, smoke=True)


class Gateway:
    """The REST side: create and hang up calls."""

    def __init__(self, base: str, account: str, token: str) -> None:
        self.base = base
        self.account = account
        auth = base64.b64encode(f"{account}:{token}".encode()).decode()
        self.headers = {"Authorization": f"Basic {auth}"}

    async def _create(self, twiml: str, remotes: list[tuple[str, int]]) -> list[dict[str, Any]]:
        import aiohttp

        sem = asyncio.Semaphore(16)
        async with aiohttp.ClientSession(headers=self.headers) as http:

            async def one(remote: tuple[str, int]) -> dict[str, Any]:
                body = {
                    "accountSid": self.account,
                    "from": "+15550001111",
                    "to": "+15550002222",
                    "twiml": twiml,
                    "rtp": {"remote": f"{remote[0]}:{remote[1]}"},
                }
                async with sem, http.post(f"{self.base}/v1/Calls", json=body) as resp:
                    text = await resp.text()
                    if resp.status != 201:
                        raise RuntimeError(f"POST /v1/Calls answered {resp.status}: {text[:300]}")
                    doc: dict[str, Any] = json.loads(text)
                    return doc

            return list(await asyncio.gather(*(one(r) for r in remotes)))

    async def _hangup(self, sids: list[str]) -> None:
        import aiohttp

        sem = asyncio.Semaphore(16)
        async with aiohttp.ClientSession(headers=self.headers) as http:

            async def one(sid: str) -> None:
                async with sem, http.delete(f"{self.base}/v1/Calls/{sid}") as resp:
                    await resp.read()

            await asyncio.gather(*(one(s) for s in sids))

    def create(self, twiml: str, remotes: list[tuple[str, int]]) -> list[dict[str, Any]]:
        return asyncio.run(self._create(twiml, remotes))

    def hangup(self, sids: list[str]) -> None:
        asyncio.run(self._hangup(sids))


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def step_twiml(kind: str, ws_port: int) -> str:
    url = f"wss://127.0.0.1:{ws_port}/{kind}"
    if kind == "fork":
        return (
            f'<Response><Start><Stream url="{url}" track="inbound_track"/></Start>'
            '<Pause length="600"/></Response>'
        )
    return f'<Response><Connect><Stream url="{url}"/></Connect></Response>'


def _step(
    kind: str,
    n: int,
    params: StreamgwParams,
    gw: Gateway | SipGateway,
    service: servers.Service,
    callers: Callers,
    consumers: Consumers,
    ws_port: int,
) -> dict[str, Any]:
    twiml = step_twiml(kind, ws_port)
    (opened,) = callers.broadcast({"op": "open", "calls": n}, timeout=30)
    remotes = [(str(h), int(p)) for h, p in opened["addresses"]]
    consumers.broadcast({"op": "echo", "echo": kind == "echo"}, timeout=10)
    consumers.broadcast({"op": "stats", "reset": True}, timeout=10)
    t0 = time.monotonic()
    calls = gw.create(twiml, remotes)
    setup_s = time.monotonic() - t0
    sids = [c["sid"] for c in calls]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (st,) = consumers.broadcast({"op": "stats"}, timeout=10)
            if st["starts"] >= n:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"only {st['starts']} of {n} streams started")
        consumers.broadcast({"op": "stats", "reset": True}, timeout=10)
        frames = max(1, int(params.duration / 0.020))
        targets = [list(_host_port(c["rtp"]["local"])) for c in calls]
        start = time.monotonic() + 0.2
        cpu0 = service.cpu_seconds()
        helpers0 = cpu_seconds(consumers.pids), cpu_seconds(callers.pids)
        (sent,) = callers.broadcast(
            {"op": "run", "targets": targets, "frames": frames, "start": start, "drain": 0.5},
            timeout=params.duration + 60,
        )
        cpu = service.cpu_seconds() - cpu0
        consumer_cpu = cpu_seconds(consumers.pids) - helpers0[0]
        caller_cpu = cpu_seconds(callers.pids) - helpers0[1]
        span = time.monotonic() - start
        (st,) = consumers.broadcast({"op": "stats", "reset": True}, timeout=10)
    finally:
        gw.hangup(sids)
    got = {int(k): v for k, v in st["frames"].items()}
    delivered = sum(min(frames, got.get(i, 0)) for i in range(n))
    dropped = n * frames - delivered
    lat = st["latency_ms"]
    p99 = percentile(lat, 99)
    step: dict[str, Any] = {
        "kind": kind,
        "streams": n,
        "frames_per_stream": frames,
        "call_setup_s": round(setup_s, 3),
        "calls_per_s": round(n / setup_s, 1) if setup_s > 0 else None,
        "rtp_sent": sent["sent"],
        "sender_late_max_ms": round(sent["late_max_s"] * 1000, 2),
        "ws_frames": delivered,
        "dropped_frames": dropped,
        "duplicates": st["duplicates"],
        "unstamped_frames_incl_idle": st["unstamped"],
        "latency_p50_ms": percentile(lat, 50),
        "latency_p99_ms": p99,
        "latency_max_ms": max(lat) if lat else None,
        "server_cpu_s": round(cpu, 3),
        "cpu_per_stream_pct": round(cpu / span / n * 100, 3) if n else None,
        # the harness shares the cores: the WebSocket server's and the RTP sender's CPU
        "consumer_cpu_utilisation": round(consumer_cpu / span, 3),
        "caller_cpu_utilisation": round(caller_cpu / span, 3),
        "server_cpu_utilisation": round(cpu / span, 3),
        "load_average": load_average(),
    }
    if kind == "echo":
        intervals = [x for per in sent["intervals_ms"] for x in per]
        deviation = [abs(x - 20.0) for x in intervals]
        step["echo_sent_by_consumer"] = st["echo_sent"]
        step["rtp_back_received"] = sum(sent["received"])
        step["echoed_frames_back"] = sum(sent["echoed"])
        step["playout_interval_p50_ms"] = percentile(intervals, 50)
        step["playout_jitter_p99_ms"] = percentile(deviation, 99)
        step["playout_jitter_max_ms"] = max(deviation) if deviation else None
    step["pass"] = bool(dropped == 0 and p99 is not None and p99 < params.p99_limit_ms)
    return step


def billion_laughs() -> str:
    entities = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10)
    )
    return f"<!DOCTYPE Response [{entities}]><Response><Say>&l9;</Say></Response>"


class Disturber:
    """Keeps sending the gateway entity bombs (``bombs``) or fresh ``<Say>`` calls (``say``)."""

    def __init__(self, gw: Gateway, kind: str) -> None:
        self.gw = gw
        self.kind = kind
        self.stop = threading.Event()
        self.counts = {"bombs_refused": 0, "bombs_fetched": 0, "say_calls": 0}
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Disturber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=60)

    async def _run(self) -> None:
        import aiohttp
        from aiohttp import web

        bomb = billion_laughs()

        async def serve_bomb(_: web.Request) -> web.Response:
            return web.Response(body=bomb.encode("utf-16"), content_type="application/xml")

        app = web.Application()
        app.router.add_post("/bomb", serve_bomb)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = servers.free_dual_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        said: list[str] = []
        async with aiohttp.ClientSession(headers=self.gw.headers) as http:

            async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                async with http.post(f"{self.gw.base}/v1/Calls", json=body) as resp:
                    return resp.status, await resp.json()

            n = 0
            while not self.stop.is_set():
                n += 1
                if self.kind == "bombs":
                    status, _ = await post({"twiml": bomb})
                    self.counts["bombs_refused"] += status == 400
                    status, out = await post({"url": f"http://127.0.0.1:{port}/bomb"})
                    self.counts["bombs_fetched"] += status == 201
                    await asyncio.sleep(0.02)
                    continue
                text = f"Disturbance number {n} says {secrets.token_hex(4)}"
                status, out = await post({"twiml": f"<Response><Say>{text}</Say></Response>"})
                if status == 201:
                    self.counts["say_calls"] += 1
                    said.append(out["sid"])
                await asyncio.sleep(0.2)
            for sid in said:
                async with http.delete(f"{self.gw.base}/v1/Calls/{sid}") as resp:
                    await resp.read()
        await runner.cleanup()


def _hostile(
    params: StreamgwParams,
    gw: Gateway,
    service: servers.Service,
    callers: Callers,
    consumers: Consumers,
    ws_port: int,
) -> dict[str, Any]:
    n = params.hostile_streams
    args = (params, gw, service, callers, consumers, ws_port)
    quiet = _step("fork", n, *args)
    with Disturber(gw, "bombs") as bombs:
        bombed = _step("fork", n, *args)
    with Disturber(gw, "say") as says:
        speaking = _step("fork", n, *args)
    return {
        "streams": n,
        "quiet_p99_ms": quiet["latency_p99_ms"],
        "bombs_p99_ms": bombed["latency_p99_ms"],
        "say_p99_ms": speaking["latency_p99_ms"],
        "dropped_frames": [s["dropped_frames"] for s in (quiet, bombed, speaking)],
        "bombs_refused": bombs.counts["bombs_refused"],
        "bombs_fetched": bombs.counts["bombs_fetched"],
        "say_calls": says.counts["say_calls"],
    }


def run(params: StreamgwParams, out_dir: Path, plots: bool = True) -> dict[str, Any]:
    from turnpike.core.sids import new_sid
    from turnpike.dev.tlsgen import make_dev_tls

    info = machine()
    log(machine_line(info))
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="turnpike-bench-streamgw-"))
    account, token = new_sid("AC"), secrets.token_hex(16)
    steps: list[dict[str, Any]] = []
    hostile: dict[str, Any] = {}
    command: list[str] = []
    try:
        tls = make_dev_tls(tmp, "127.0.0.1", days=1)
        (tmp / "accounts.json").write_text(
            json.dumps({"accounts": [{"sid": account, "authToken": token}]})
        )
        api, metrics, sip = (servers.free_dual_port() for _ in range(3))
        args = [
            "streamgw",
            "--listen", f"127.0.0.1:{api}",
            "--accounts", str(tmp / "accounts.json"),
            "--rtp-ip", "127.0.0.1",
            "--rtp-ports", "30000-39999",
            "--allow-destination", "127.0.0.0/8",
            "--ca-file", str(tls.ca_cert),
            "--metrics", f"127.0.0.1:{metrics}",
        ]  # fmt: skip
        with Consumers() as consumers, Callers(1) as callers:
            (ws,) = consumers.broadcast(
                {"op": "start", "cert": str(tls.cert), "key": str(tls.key)}, timeout=30
            )
            sip_gw: SipGateway | None = None
            if params.sip:
                documents = [step_twiml(kind, ws["port"]) for kind in ("fork", "echo")]
                numbers = SipGateway.numbers_file(tmp / "numbers.json", account, documents)
                args += ["--sip", f"127.0.0.1:{sip}", "--numbers", str(tmp / "numbers.json")]
                # Every call comes from one address here: the per-source INVITE limit is off.
                args += ["--sip-trust", "127.0.0.1/32", "--sip-invite-rate", "0"]
                sip_gw = SipGateway(sip, numbers)
            command = ["turnpike", *[Path(a).name if a.startswith("/") else a for a in args]]
            service = servers.start_turnpike(
                "streamgw", args, tmp, f"http://127.0.0.1:{metrics}/ready"
            )
            try:
                rest = Gateway(f"http://127.0.0.1:{api}", account, token)
                gw: Gateway | SipGateway = sip_gw or rest
                for kind, levels in (("fork", params.fork_streams), ("echo", params.echo_streams)):
                    for n in levels:
                        log(f" {kind} x{n}")
                        try:
                            step = _step(
                                kind, n, params, gw, service, callers, consumers, ws["port"]
                            )
                        except (RuntimeError, TimeoutError) as exc:
                            step = {"kind": kind, "streams": n, "pass": False, "error": str(exc)}
                            log(f"  error: {exc}")
                            steps.append(step)
                            break
                        steps.append(step)
                        log(
                            f"  {step['calls_per_s']} calls/s set up, "
                            f"dropped {step['dropped_frames']}, p50 "
                            f"{step['latency_p50_ms'] or 0:.1f} ms, p99 "
                            f"{step['latency_p99_ms'] or 0:.1f} ms, "
                            f"{step['cpu_per_stream_pct']:.2f} % CPU/stream"
                            + (
                                f", jitter p99 {step['playout_jitter_p99_ms'] or 0:.1f} ms"
                                if kind == "echo"
                                else ""
                            )
                        )
                        if not step["pass"]:
                            break
                if sip_gw is None:  # the hostile-TwiML check is about documents, not ingress
                    log(f" hostile TwiML, {params.hostile_streams} healthy forks")
                    hostile = _hostile(params, rest, service, callers, consumers, ws["port"])
                    log(
                        f"  p99 {hostile['quiet_p99_ms'] or 0:.1f} ms quiet, "
                        f"{hostile['bombs_p99_ms'] or 0:.1f} ms while "
                        f"{hostile['bombs_refused'] + hostile['bombs_fetched']} entity bombs "
                        f"arrived, {hostile['say_p99_ms'] or 0:.1f} ms while "
                        f"{hostile['say_calls']} new <Say> calls arrived"
                    )
            finally:
                if sip_gw is not None:
                    sip_gw.close()
                service.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["load_average_at_end"] = load_average()
    summary: dict[str, Any] = {}
    headline: list[str] = []
    for kind in ("fork", "echo"):
        mine = [s for s in steps if s["kind"] == kind]
        ok = [s for s in mine if s.get("pass")]
        best = max(ok, key=lambda s: s["streams"]) if ok else None
        summary[kind] = {
            "max_clean_streams": best["streams"] if best else 0,
            "tested_up_to": max((s["streams"] for s in mine), default=0),
            "at_max": best,
        }
        if best:
            line = (
                f"{kind}: {best['streams']} concurrent streams with no dropped frame and p99 "
                f"{best['latency_p99_ms']:.1f} ms (< {params.p99_limit_ms:.0f} ms); "
                f"{best['cpu_per_stream_pct']:.2f} % of a core per stream"
            )
            if kind == "echo":
                line += f"; playout jitter p99 {best['playout_jitter_p99_ms'] or 0:.1f} ms"
            if best["streams"] == summary[kind]["tested_up_to"]:
                line += " (highest level tried)"
            headline.append(line)
        else:
            headline.append(f"{kind}: no level passed")
    name = "streamgw-sip" if params.sip else "streamgw"
    result: dict[str, Any] = {
        "benchmark": name,
        "date": utc_now(),
        "smoke": params.smoke,
        "machine": info,
        "machine_line": machine_line(info),
        "wall_time_s": round(time.monotonic() - started, 1),
        "params": asdict(params),
        "command": command,
        "steps": steps,
        "hostile_twiml": hostile,
        "summary": {**summary, "headline": headline},
    }
    path = write_result(out_dir, name, result)
    log(f"wrote {path}")
    if plots:
        from bench.plots import plot_streamgw

        log(f"wrote {plot_streamgw(result, out_dir)}")
    for line in headline:
        print(line)
    return result


def main(params: StreamgwParams, out_dir: Path | None, plots: bool) -> int:
    run(params, out_dir or RESULTS_DIR, plots)
    return 0
