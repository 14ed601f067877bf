"""HTTP load worker processes (aiohttp, closed loop): N concurrent clients over keep-alive.

Each request's latency is measured from just before sending to the full response body read.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench.workers import WorkerPool, serve_commands


async def _run(cmd: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    url = str(cmd["url"])
    method = str(cmd.get("method", "POST"))
    headers = {str(k): str(v) for k, v in dict(cmd.get("headers", {})).items()}
    data = cmd.get("data")
    concurrency = int(cmd["concurrency"])
    start = float(cmd["start"])
    end = start + float(cmd["duration"])
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    first_body: str | None = None
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal first_body
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                async with session.request(method, url, headers=headers, data=data) as resp:
                    body = await resp.text()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1
                await asyncio.sleep(0.01)
                continue
            latencies.append((time.perf_counter() - t0) * 1000.0)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if first_body is None:
                first_body = body

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        delay = start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    elapsed = max(1e-6, time.monotonic() - start)
    return {
        "requests": len(latencies),
        "elapsed_s": elapsed,
        "statuses": statuses,
        "errors": errors,
        "latency_ms": latencies,
        "first_body": first_body,
    }


def _handle(cmd: dict[str, Any]) -> dict[str, Any]:
    if int(cmd["concurrency"]) <= 0:
        return {"requests": 0, "elapsed_s": 0.0, "statuses": {}, "errors": {}, "latency_ms": []}
    return asyncio.run(_run(cmd))


class HttpLoad(WorkerPool):
    def __init__(self, workers: int) -> None:
        super().__init__("bench.httpload", workers)

    def run(
        self,
        url: str,
        headers: dict[str, str],
        data: str | None,
        concurrency: int,
        duration: float,
        method: str = "POST",
    ) -> dict[str, Any]:
        """Closed-loop load with ``concurrency`` clients spread over the workers."""
        n = len(self)
        start = time.monotonic() + 0.2
        cmds = [
            {
                "op": "run",
                "url": url,
                "method": method,
                "headers": headers,
                "data": data,
                "concurrency": concurrency // n + (1 if i < concurrency % n else 0),
                "start": start,
                "duration": duration,
            }
            for i in range(n)
        ]
        replies = self.call(cmds, timeout=duration + 30.0)
        statuses: dict[str, int] = {}
        errors: dict[str, int] = {}
        for r in replies:
            for k, v in r["statuses"].items():
                statuses[k] = statuses.get(k, 0) + int(v)
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + int(v)
        bodies = [r.get("first_body") for r in replies if r.get("first_body")]
        return {
            "concurrency": concurrency,
            "duration_s": duration,
            "requests": sum(int(r["requests"]) for r in replies),
            "statuses": statuses,
            "errors": errors,
            "latency_ms": [x for r in replies for x in r["latency_ms"]],
            "first_body": bodies[0] if bodies else None,
        }

    def __enter__(self) -> HttpLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    serve_commands({"run": _handle}, lambda: None)
    sys.exit(0)
