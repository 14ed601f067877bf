"""A stateful Kubernetes API emulator served over real HTTP, for operator tests.

It runs on its own thread and event loop so one instance can serve a whole test session (tests,
the operator under test and any child process all talk to it over 127.0.0.1)::

    with KubeAPI() as api:
        api.write_kubeconfig(path)      # for `turnpike operator` or kubectl
        api.url                         # http://127.0.0.1:PORT

See ``store.py`` for what it emulates faithfully and ``simulate.py`` for the kubelet stand-in.
``api.routes.requests`` logs every request; ``api.routes.observers`` are called with each request
once its answer is ready, before it is sent, so a test can change the store at an exact point of
a client's work (tests/operator/test_takeover.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from .server import Routes, make_app, new_store
from .simulate import Simulator
from .store import Store

__all__ = ["KubeAPI", "kubeconfig_text"]

T = TypeVar("T")


def kubeconfig_text(server: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulated", "cluster": {"server": server}}],
            "users": [{"name": "tester", "user": {"token": "emulated"}}],
            "contexts": [
                {"name": "emulated", "context": {"cluster": "emulated", "user": "tester"}}
            ],
            "current-context": "emulated",
        }
    )


class KubeAPI:
    def __init__(self, simulate: bool = True, history_size: int = 20000) -> None:
        self._simulate = simulate
        self._history_size = history_size
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kubeapi", daemon=True)
        self._runner: web.AppRunner | None = None
        self.store: Store | None = None
        self.routes: Routes | None = None
        self.url = ""

    def __enter__(self) -> KubeAPI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        self.call(self._start)

    async def _start(self) -> None:
        self.store = new_store(self._history_size)
        if self._simulate:
            Simulator(self.store)
        for name in ("default", "kube-system"):
            self.store.create(self.store.namespaces, None, {"metadata": {"name": name}})
        app, self.routes = make_app(self.store)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]  # the port the system picked (public API)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        # Open watches wait for changes; end them rather than leave them pending at exit.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (a coroutine function or a plain function) on the emulator's loop."""

        async def wrapper() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
            wrapper(), self._loop
        )
        return future.result(30)

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(kubeconfig_text(self.url))
        return path
