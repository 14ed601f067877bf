"""Benchmark worker processes: ``python -m <module> <index>`` driven by JSON lines over pipes.

Separate interpreters (not ``multiprocessing``) so nothing depends on how the parent was started,
and each worker imports only what it needs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _where(exc: BaseException) -> str:
    """`` at file:line`` of the innermost frame, so a worker's failure can be found."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    return f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"


def serve_commands(handlers: dict[str, Handler], on_exit: Callable[[], None]) -> None:
    """Child side: one JSON command per stdin line, one JSON reply per stdout line."""
    out = sys.stdout
    try:
        for line in sys.stdin:
            cmd: dict[str, Any] = json.loads(line)
            op = str(cmd.get("op"))
            handler = handlers.get(op)
            try:
                if op == "close":
                    reply: dict[str, Any] = {"ok": True}
                elif handler is None:
                    reply = {"error": f"unknown op {op!r}"}
                else:
                    reply = handler(cmd)
            except OSError as exc:
                if exc.errno == errno.EMFILE:
                    reply = {"error": f"{op}: too many open files"}
                else:
                    reply = {"error": f"{op}: {type(exc).__name__}: {exc}{_where(exc)}"}
            except Exception as exc:  # reported to the parent, which fails the run
                reply = {"error": f"{op}: {type(exc).__name__}: {exc}{_where(exc)}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()
            if op == "close":
                break
    finally:
        on_exit()


class WorkerPool:
    """The parent's handle on N worker processes; every call waits with a deadline."""

    def __init__(self, module: str, workers: int) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        }
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for index in range(workers):
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", module, str(index)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        env=env,
                        cwd=root,
                    )
                )
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __len__(self) -> int:
        return len(self.procs)

    def call(self, cmds: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """Send one command to each worker and return their replies (raises on any error)."""
        for proc, cmd in zip(self.procs, cmds, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd) + "\n")
            proc.stdin.flush()
        deadline = time.monotonic() + timeout
        replies: list[dict[str, Any]] = []
        for proc in self.procs:  # read every reply first so the pipes stay in step
            assert proc.stdout is not None
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                self.close()  # out of step for good: stop the workers
                raise TimeoutError(f"benchmark worker did not answer {cmds[0].get('op')!r}")
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("benchmark worker exited")
            replies.append(json.loads(line))
        for reply in replies:
            if "error" in reply:
                raise RuntimeError(f"benchmark worker: {reply['error']}")
        return replies

    def broadcast(self, cmd: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return self.call([cmd] * len(self.procs), timeout)

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs = []
