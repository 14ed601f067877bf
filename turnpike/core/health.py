"""One HTTP endpoint for every component: ``/metrics`` (Prometheus), ``/live`` and ``/ready``.

``/ready`` answers 503 while a component is starting or draining, and carries whatever the
component reports about itself (for example the ids of the keyring keys it has loaded, which the
operator reads before promoting a new signing key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadyCheck = Callable[[], bool]
StatusReport = Callable[[], Mapping[str, Any]]


def health_app(
    registry: CollectorRegistry,
    ready: ReadyCheck = lambda: True,
    status: StatusReport | None = None,
) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready_view(_: web.Request) -> web.Response:
        is_ready = ready()
        body: dict[str, Any] = {"ready": is_ready}
        if status is not None:
            body.update(status())
        return web.json_response(body, status=200 if is_ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/live", live)
    app.router.add_get("/ready", ready_view)
    return app


class HealthServer:
    """Serves `health_app` on its own address, started and stopped by the component."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: ReadyCheck = lambda: True,
        status: StatusReport | None = None,
    ) -> None:
        self._runner = web.AppRunner(health_app(registry, ready, status), access_log=None)
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        host, port = self._runner.addresses[0][:2]  # the bound port, when asked for port 0
        self.address = (str(host), int(port))
        return self.address

    async def stop(self) -> None:
        await self._runner.cleanup()
