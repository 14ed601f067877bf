"""Helpers shared by the test suites: interop tools, free ports, Turnpike child processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, install_hint: str = "") -> str:
    """Path of an interop tool; skips the test when missing, except under CI=true where it fails."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed" + (f" ({install_hint})" if install_hint else "")
    if IN_CI:
        pytest.fail(f"{message}; CI must have every interop tool")
    pytest.skip(message)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for ``kind`` right now (the usual race is acceptable on loopback tests)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_dual_port(host: str = "127.0.0.1") -> int:
    """A port that is free for both UDP and TCP."""
    for _ in range(100):
        port = free_port(socket.SOCK_DGRAM, host)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both UDP and TCP")


def free_udp_range(size: int, host: str = "127.0.0.1") -> int:
    """The first port (even) of ``size`` consecutive UDP ports free on ``host`` right now, below
    the ephemeral range, so no port the system hands out (a listener's, a client's) is in it."""
    rng = random.Random()
    for _ in range(200):
        low = rng.randrange(12000, 32000 - size) & ~1
        socks: list[socket.socket] = []
        try:
            for port in range(low, low + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return low
    raise RuntimeError(f"no {size} consecutive free UDP ports")


async def wait_http(url: str, timeout: float = 20.0, status: int = 200) -> None:
    """Poll ``url`` until it answers ``status``."""
    deadline = time.monotonic() + timeout
    last: object = None
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    if resp.status == status:
                        return
                    last = resp.status
            except aiohttp.ClientError as exc:
                last = exc
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s (last: {last})")


class TurnpikeProcess:
    """A ``turnpike <command> …`` child process with its output kept for assertions."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        fd_limit: int | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        # ``prefix`` runs it through another command (``ip netns exec NAME``, say).
        self.args = [*prefix, sys.executable, "-m", "turnpike", *args]
        self.env = {**os.environ, **(env or {})}
        self.fd_limit = fd_limit  # the child's open-file limit (RLIMIT_NOFILE), when given
        self.proc: asyncio.subprocess.Process | None = None
        self.output = bytearray()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            preexec_fn=self._limit_fds if self.fd_limit is not None else None,
        )
        self._reader = asyncio.create_task(self._read())

    def _limit_fds(self) -> None:
        import resource

        assert self.fd_limit is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, self.fd_limit))

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self.output += chunk

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return code


@contextlib.asynccontextmanager
async def turnpike(
    args: Sequence[str],
    ready_url: str | None = None,
    env: dict[str, str] | None = None,
    fd_limit: int | None = None,
    prefix: Sequence[str] = (),
) -> AsyncIterator[TurnpikeProcess]:
    """Run ``turnpike`` with ``args`` until the block ends; waits for ``ready_url`` if given."""
    process = TurnpikeProcess(args, env, fd_limit, prefix)
    await process.start()
    try:
        if ready_url is not None:
            try:
                await wait_http(ready_url)
            except TimeoutError:
                await process.stop()
                raise AssertionError(f"turnpike did not become ready:\n{process.text}") from None
        yield process
    finally:
        await process.stop()


def write_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
