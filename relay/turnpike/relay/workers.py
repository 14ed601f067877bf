"""``--workers N``: N relay processes sharing the listening ports with SO_REUSEPORT.

The kernel hashes each UDP 5-tuple and each TCP connection to one worker, so a client's allocation
lives in exactly one process and no state is shared. Quotas are therefore per worker. This
supervisor starts the workers, serves ``--metrics`` for all of them (it scrapes each worker's own
loopback metrics port and sums the samples), forwards SIGTERM so they drain, and restarts a worker
that dies unexpectedly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
from collections import OrderedDict
from typing import Any

import aiohttp
from aiohttp import web

from turnpike.relay.app import Options

log = logging.getLogger("turnpike.relay")

# The sample names one family may expose (counters, histograms, summaries, info).
_SAMPLE_SUFFIXES = ("", "_total", "_created", "_bucket", "_sum", "_count", "_info")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)$")


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def merge_metrics(texts: list[str]) -> str:
    """Sum Prometheus text samples with the same name and labels across workers."""
    comments: OrderedDict[str, None] = OrderedDict()
    totals: OrderedDict[str, float] = OrderedDict()
    for text in texts:
        for line in text.splitlines():
            if line.startswith("#"):
                comments.setdefault(line, None)
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            try:
                value = float(match.group(2))
            except ValueError:
                continue
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + value
    out: list[str] = []
    emitted: set[str] = set()
    for comment in comments:
        parts = comment.split()
        name = parts[2] if len(parts) > 2 else ""
        out.append(comment)
        if comment.startswith("# TYPE"):
            for key, value in totals.items():
                base = key.split("{", 1)[0]
                if key not in emitted and any(base == name + sfx for sfx in _SAMPLE_SUFFIXES):
                    out.append(f"{key} {value!r}")
                    emitted.add(key)
    out.extend(f"{k} {v!r}" for k, v in totals.items() if k not in emitted)
    return "\n".join(out) + "\n"


def combine_ready(results: list[tuple[int, str]]) -> tuple[dict[str, Any], bool]:
    """Merge the workers' ``/ready`` answers into one: ready only if every worker is.

    The keyring rotation promotes a new signing key once every pod reports it, so the keys
    reported are those *every* worker has loaded (each reloads the file on its own), ``signing``
    only when all agree, and neither when any worker did not answer: a half-reloaded pod must
    never look fully rotated.
    """
    reports: list[dict[str, Any]] = []
    for _status, text in results:
        with contextlib.suppress(ValueError):
            report = json.loads(text)
            if isinstance(report, dict):
                reports.append(report)
    ok = len(reports) == len(results) and all(status == 200 for status, _ in results)
    merged = ("ready", "workers", "keys", "signing", "allocations", "worker_allocations")
    body: dict[str, Any] = {}
    for report in reports:  # realm, relay addresses...: the same in every worker
        for key, value in report.items():
            if key not in merged:
                body.setdefault(key, value)
    body.update(ready=ok, workers=len(results))
    key_lists: list[list[Any]] = [r["keys"] for r in reports if isinstance(r.get("keys"), list)]
    if key_lists and len(key_lists) == len(results):
        common = set.intersection(*(set(k) for k in key_lists))
        body["keys"] = [k for k in key_lists[0] if k in common]
        signing = {r.get("signing") for r in reports}
        if len(signing) == 1 and (agreed := signing.pop()) in common:
            body["signing"] = agreed
    body["allocations"] = sum(int(r.get("allocations", 0)) for r in reports)
    body["worker_allocations"] = [r.get("allocations") for r in reports]
    return body, ok


class Worker:
    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.metrics_port = _free_loopback_port()
        self.argv = [*argv, "--workers", "1", "--reuse-port"]
        self.argv += ["--metrics", f"127.0.0.1:{self.metrics_port}"]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "TURNPIKE_WORKERS": "1"}
        self.proc = await asyncio.create_subprocess_exec(*self.argv, env=env)
        log.info("worker %d started (pid %d)", self.index, self.proc.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"


async def supervise(options: Options, stop: asyncio.Event) -> int:
    argv = [sys.executable, "-m", "turnpike", *options.argv]
    workers = [Worker(i, argv) for i in range(options.workers)]
    for worker in workers:
        await worker.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
    draining = False

    async def fetch(worker: Worker, path: str) -> tuple[int, str]:
        try:
            async with session.get(worker.url + path) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return 599, ""

    async def metrics(_: web.Request) -> web.Response:
        results = await asyncio.gather(*(fetch(w, "/metrics") for w in workers))
        body = merge_metrics([text for status, text in results if status == 200])
        return web.Response(text=body, content_type="text/plain", charset="utf-8")

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(request: web.Request) -> web.Response:
        del request
        results = await asyncio.gather(*(fetch(w, "/ready") for w in workers))
        body, ok = combine_ready(results)
        ok = ok and not draining
        body["ready"] = ok
        return web.json_response(body, status=200 if ok else 503)

    runner: web.AppRunner | None = None
    if options.metrics is not None:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/live", live)
        app.router.add_get("/ready", ready)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, options.metrics.host, options.metrics.port).start()

    async def watch(worker: Worker) -> None:
        while True:
            assert worker.proc is not None
            code = await worker.proc.wait()
            if draining:
                return
            log.error("worker %d exited with %s, restarting", worker.index, code)
            await asyncio.sleep(1)
            await worker.start()

    watchers = [asyncio.create_task(watch(w)) for w in workers]
    try:
        await stop.wait()
        draining = True
        for worker in workers:
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        codes = [await w.proc.wait() for w in workers if w.proc is not None]
        return 0 if all(code == 0 for code in codes) else 1
    finally:
        for task in watchers:
            task.cancel()
        for worker in workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.kill()
                await worker.proc.wait()
        await session.close()
        if runner is not None:
            await runner.cleanup()
