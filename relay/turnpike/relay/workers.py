"""``--workers N``: N relay processes sharing the listening ports with SO_REUSEPORT.

The kernel hashes each UDP 5-tuple and each TCP connection to one worker, so a client's allocation
lives in exactly one process and no state is shared. Quotas are therefore per worker. This
supervisor starts the workers, serves ``--metrics`` for all of them (it scrapes each worker's own
loopback metrics port and merges the samples as each family declares in ``metrics.MERGE``),
forwards SIGTERM so they drain, and restarts a worker that dies unexpectedly.
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
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from turnpike.core.config import HostPort
from turnpike.relay.app import Options
from turnpike.relay.metrics import MERGE, OffloadCollector
from turnpike.relay.offload import Offload, OffloadError

log = logging.getLogger("turnpike.relay")

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")
_MERGERS: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,
    "max": max,
    "min": min,
    "one": lambda values: values[0],  # the first worker that answered
}


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def merge_metrics(texts: list[str], merge: Mapping[str, str] = MERGE) -> str:
    """Merge the workers' Prometheus texts: each family as ``merge`` declares (sum, max or one
    worker's value; undeclared ones are summed), and ``_created`` series by their earliest value
    (a creation time summed over workers is meaningless)."""
    comments: OrderedDict[str, None] = OrderedDict()
    values: OrderedDict[str, list[float]] = OrderedDict()
    owner: dict[str, str] = {}  # sample key → its family
    for text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("#"):
                comments.setdefault(line, None)
                parts = line.split()
                if len(parts) > 2 and parts[1] == "TYPE":
                    family = parts[2]
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            try:
                value = float(match.group(3))
            except ValueError:
                continue
            key = match.group(1) + (match.group(2) or "")
            values.setdefault(key, []).append(value)
            owner.setdefault(key, family)
    merged: dict[str, float] = {}
    for key, samples in values.items():
        family = owner[key].removesuffix("_total")
        mode = "min" if key.split("{", 1)[0].endswith("_created") else merge.get(family, "sum")
        merged[key] = _MERGERS[mode](samples)
    out: list[str] = []
    emitted: set[str] = set()
    for comment in comments:
        out.append(comment)
        parts = comment.split()
        if len(parts) > 2 and parts[1] == "TYPE":
            for key in merged:
                if key not in emitted and owner[key] == parts[2]:
                    out.append(f"{key} {merged[key]!r}")
                    emitted.add(key)
    out.extend(f"{k} {v!r}" for k, v in merged.items() if k not in emitted)
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
    def __init__(
        self, index: int, count: int, argv: list[str], map_fds: tuple[int, ...] = ()
    ) -> None:
        self.index = index
        self.metrics_port = _free_loopback_port()
        self.argv = [*argv, "--workers", "1", "--reuse-port", "--worker-of", str(count)]
        self.argv += ["--metrics", f"127.0.0.1:{self.metrics_port}"]
        self.map_fds = map_fds  # the kernel fast path's maps, shared with this worker
        if map_fds:
            self.argv += ["--offload-maps", ",".join(map(str, map_fds))]
            self.argv += ["--offload-owner", str(self.owner)]
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def owner(self) -> int:
        """The number this worker tags its fast-path entries with."""
        return self.index + 1

    async def start(self) -> None:
        env = {**os.environ, "TURNPIKE_WORKERS": "1"}
        self.proc = await asyncio.create_subprocess_exec(*self.argv, env=env, pass_fds=self.map_fds)
        log.info("worker %d started (pid %d)", self.index, self.proc.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"


class Fleet:
    """The running workers, seen from the supervisor: health, metrics, restarts and the drain."""

    def __init__(
        self, workers: list[Worker], session: aiohttp.ClientSession, offload: Offload
    ) -> None:
        self.workers = workers
        self.session = session
        self.offload = offload  # the kernel fast path: loaded, attached and owned here
        self.offload_registry = CollectorRegistry()
        self.offload_registry.register(OffloadCollector(offload))
        self.draining = False

    async def fetch(self, worker: Worker, path: str) -> tuple[int, str]:
        try:
            async with self.session.get(worker.url + path) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return 599, ""

    async def metrics(self, _: web.Request) -> web.Response:
        results = await asyncio.gather(*(self.fetch(w, "/metrics") for w in self.workers))
        texts = [text for status, text in results if status == 200]
        if self.offload.active:
            texts.append(generate_latest(self.offload_registry).decode())
        body = merge_metrics(texts)
        return web.Response(text=body, content_type="text/plain", charset="utf-8")

    async def live(self, _: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, _: web.Request) -> web.Response:
        results = await asyncio.gather(*(self.fetch(w, "/ready") for w in self.workers))
        body, ok = combine_ready(results)
        body["ready"] = ok = ok and not self.draining
        return web.json_response(body, status=200 if ok else 503)

    async def serve_health(self, address: HostPort) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/live", self.live)
        app.router.add_get("/ready", self.ready)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, address.host, address.port).start()
        return runner

    async def watch(self, worker: Worker) -> None:
        """Restart ``worker`` whenever it exits, until the drain begins."""
        while True:
            assert worker.proc is not None
            code = await worker.proc.wait()
            if self.draining:
                return
            log.error("worker %d exited with %s, restarting", worker.index, code)
            # Its channels in the kernel die with it: nothing relays for a process that is gone.
            if (gone := self.offload.purge(worker.owner)) > 0:
                log.info("removed %d fast-path entries of worker %d", gone, worker.index)
            await asyncio.sleep(1)
            await worker.start()

    async def drain(self) -> int:
        """SIGTERM every worker and wait for each: 0 when all of them drained cleanly."""
        self.draining = True
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        codes = [await w.proc.wait() for w in self.workers if w.proc is not None]
        return 0 if all(code == 0 for code in codes) else 1

    async def kill_leftovers(self) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.kill()
                await worker.proc.wait()


async def supervise(options: Options, stop: asyncio.Event) -> int:
    """Start the workers, serve their merged health and metrics, restart any that dies, and on
    ``stop`` drain them all."""
    argv = [sys.executable, "-m", "turnpike", *options.argv]
    try:  # one owner of the program, its maps and its attachment: this process
        offload = Offload.start(options.offload, interfaces=options.offload_interfaces)
    except OffloadError as exc:
        log.error("%s", exc)
        return 2
    fds = offload.map_fds if offload.active else ()
    workers = [Worker(i, options.workers, argv, fds) for i in range(options.workers)]
    for worker in workers:
        await worker.start()
    offload.start_sweeping(1.0)  # follows interfaces as they come and go
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        fleet = Fleet(workers, session, offload)
        runner: web.AppRunner | None = None
        watchers = [asyncio.create_task(fleet.watch(w)) for w in workers]
        try:
            if options.metrics is not None:
                runner = await fleet.serve_health(options.metrics)
            await stop.wait()
            return await fleet.drain()
        finally:
            for task in watchers:
                task.cancel()
            await fleet.kill_leftovers()
            await offload.stop_sweeping()
            offload.close()
            if runner is not None:
                await runner.cleanup()
