"""Status callbacks: signed HTTP requests, retried with backoff, never in the media path.

`Callbacks.send` only appends to a queue; one sender task per key (a stream, a call) delivers that
key's events in order, so ``stream-started`` always arrives before ``stream-stopped``. The total
backlog is bounded: a dead callback server costs memory up to a cap, then events are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

from turnpike.core.addresses import AddressPolicy
from turnpike.streamgw import signature
from turnpike.streamgw.egress import DestinationRefused, check_url, redact
from turnpike.streamgw.metrics import Metrics

log = logging.getLogger(__name__)


def iso_timestamp(now: float | None = None) -> str:
    """``YYYY-MM-DDTHH:MM:SS.sssZ`` (UTC, milliseconds)."""
    t = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Event:
    url: str
    method: str
    params: tuple[tuple[str, str], ...]
    auth_token: str


def signed_request(
    url: str, method: str, params: Mapping[str, str], auth_token: str
) -> tuple[URL, dict[str, str], dict[str, str] | None]:
    """(URL, headers, form body) for a webhook-style request, signed as the hosted service does.

    POST signs the URL plus the sorted form parameters; GET carries the parameters in the query
    string and signs the full URL alone.
    """
    target = URL(url)
    if method == "GET":
        target = target.update_query(dict(params))
        sig = signature.compute(auth_token, str(target))
        return target, {signature.HEADER: sig}, None
    sig = signature.compute(auth_token, url, params)
    return target, {signature.HEADER: sig}, dict(params)


class Callbacks:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: AddressPolicy,
        metrics: Metrics,
        *,
        attempts: int = 5,
        first_delay: float = 0.5,
        timeout: float = 10.0,
        max_backlog: int = 10000,
    ) -> None:
        self._session = session
        self._policy = policy
        self._metrics = metrics
        self._attempts = attempts
        self._first_delay = first_delay
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_backlog = max_backlog
        self._queues: dict[str, deque[Event]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._backlog = 0

    def send(
        self, key: str, url: str, method: str, params: Mapping[str, str], auth_token: str
    ) -> None:
        if self._backlog >= self._max_backlog:
            self._metrics.callbacks.labels("dropped").inc()
            log.warning("status callback backlog full; dropping %s event for %s", key, redact(url))
            return
        self._backlog += 1
        self._queues.setdefault(key, deque()).append(
            Event(url, method, tuple(params.items()), auth_token)
        )
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._run(key))

    async def _run(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue:
                event = queue[0]
                await self._deliver(event)
                queue.popleft()
                self._backlog -= 1
        finally:
            self._backlog -= len(queue)
            self._queues.pop(key, None)
            self._tasks.pop(key, None)

    async def _deliver(self, event: Event) -> None:
        delay = self._first_delay
        params = dict(event.params)
        for attempt in range(1, self._attempts + 1):
            try:
                target, headers, form = signed_request(
                    event.url, event.method, params, event.auth_token
                )
                check_url(self._policy, target)
                async with self._session.request(
                    event.method, target, headers=headers, data=form, timeout=self._timeout
                ) as resp:
                    await resp.read()
                    if resp.status < 500 and resp.status != 429:
                        outcome = "delivered" if resp.status < 400 else "rejected"
                        self._metrics.callbacks.labels(outcome).inc()
                        return
                    problem = f"HTTP {resp.status}"
            except DestinationRefused as exc:
                self._metrics.callbacks.labels("refused").inc()
                log.warning("status callback to %s refused: %s", redact(event.url), exc)
                return
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, DestinationRefused):
                    self._metrics.callbacks.labels("refused").inc()
                    log.warning(
                        "status callback to %s refused: %s", redact(event.url), exc.os_error
                    )
                    return
                problem = str(exc)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < self._attempts:
                self._metrics.callbacks.labels("retried").inc()
                await asyncio.sleep(delay)
                delay *= 2
        self._metrics.callbacks.labels("failed").inc()
        log.warning(
            "status callback to %s failed after %d attempts: %s",
            redact(event.url),
            self._attempts,
            problem,
        )

    async def close(self, grace: float = 5.0) -> None:
        """Give pending deliveries ``grace`` seconds, then cancel the rest."""
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
