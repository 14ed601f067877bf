"""Run a component's asyncio main until SIGTERM or SIGINT asks it to drain and stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

Main = Callable[[asyncio.Event], Awaitable[int]]


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # optional: the standard loop works, just slower per packet
        return None
    return uvloop.new_event_loop


def uvloop_enabled() -> bool:
    return _loop_factory() is not None


def run(main: Main, *, use_uvloop: bool = True) -> int:
    """Run ``main(stop)``; ``stop`` is set on the first SIGTERM/SIGINT, a second one exits."""

    async def wrapper() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():
                raise SystemExit(1)  # impatient second signal: leave now
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        return await main(stop)

    factory = _loop_factory() if use_uvloop else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(wrapper())
