"""Audio conversion off the event loop's interpreter: WAV → 8 kHz µ-law in worker processes.

Resampling and encoding a prompt is pure Python (about 0.2 s of CPU for two seconds of espeak-ng
speech). In a thread it would still hold the GIL against the event loop that paces every call's
20 ms frames, so `<Play>` and `<Say>` audio is converted in a small process pool instead, at a
lower CPU priority than the gateway (live media first). `turnpike streamgw` starts the pool at
startup; otherwise it starts on first use.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor

from turnpike.streamgw.wav import wav_to_ulaw

NICE = 10  # how much lower than the gateway workers and speech engines run


class AudioConverter:
    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        # spawn: a fresh interpreter, never a fork of this process's threads and sockets
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_lower)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, _ready)  # the workers exist before any call

    async def to_ulaw(self, wav: bytes) -> bytes:
        """``wav_to_ulaw`` in a worker process; its `WavError` comes back as raised."""
        if self._pool is None:
            await self.start()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, wav_to_ulaw, wav)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _lower() -> None:
    os.nice(NICE)
    # Ctrl-C reaches the whole process group; the gateway shuts the pool down as it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ready() -> bool:
    return True
