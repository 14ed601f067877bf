"""The TURN servers under test, started with equivalent flags: Turnpike's relay and coturn.

Both get: REST shared-secret auth with the same secret and realm, loopback peers allowed, the same
relay port range, one listening address for UDP and TCP, relay address 127.0.0.1, no TLS/DTLS.
Logs go to a file in the run's temporary directory (each server logs at its default level).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench import stun
from bench.common import REPO_ROOT, tree_cpu_seconds

REALM = "bench"


class ServerError(RuntimeError):
    pass


def free_dual_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise ServerError("no port free for both UDP and TCP")


@dataclass
class ServerSpec:
    """One server configuration in the comparison (``coturn``, ``turnpike-w1``, …)."""

    name: str
    kind: str  # "coturn" or "turnpike"
    workers: int = 1
    offload: str = "off"  # Turnpike's --offload: "off" (userspace) or "tc" (kernel fast path)

    @classmethod
    def parse(cls, text: str) -> ServerSpec:
        if text == "coturn":
            return cls("coturn", "coturn", 0)  # coturn default: one relay thread per CPU
        if text.startswith("coturn-m"):  # coturn with an explicit --relay-threads
            return cls(text, "coturn", int(text.removeprefix("coturn-m")))
        if text.startswith("turnpike-w"):
            return cls(text, "turnpike", int(text.removeprefix("turnpike-w")))
        if text == "turnpike-fast":  # one process with the kernel fast path
            return cls(text, "turnpike", 1, offload="tc")
        raise ValueError(f"unknown server {text!r} (coturn, coturn-mN, turnpike-wN, turnpike-fast)")

    def available(self) -> str | None:
        """None when it can run here, else why not."""
        if self.kind == "coturn" and shutil.which("turnserver") is None:
            return "turnserver (Debian package coturn) is not installed"
        if self.offload == "tc":
            from turnpike.relay.offload import object_path

            if os.geteuid() != 0:
                return "the kernel fast path needs root (CAP_BPF, CAP_NET_ADMIN)"
            if not object_path().is_file():
                return "the kernel fast path is not built (scripts/install builds it)"
        return None


@dataclass
class RunningServer:
    spec: ServerSpec
    address: stun.Address
    command: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                # Turnpike drains on SIGTERM; a benchmark does not wait for allocations to end
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def server_version(spec: ServerSpec) -> str | None:
    if spec.kind == "coturn":
        exe = shutil.which("turnserver")
        if exe is None:
            return None
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [exe, "--version"], capture_output=True, text=True, timeout=5, check=False
            )
            return (out.stdout or out.stderr).strip().splitlines()[0]
        return None
    from turnpike.core.version import __version__

    return __version__


def command(
    spec: ServerSpec, port: int, secret: str, keyring: Path, relay_ports: tuple[int, int], tmp: Path
) -> list[str]:
    lo, hi = relay_ports
    if spec.kind == "coturn":
        exe = shutil.which("turnserver") or "turnserver"
        cmd = [
            exe,
            "-n",  # no configuration file: never /etc/turnserver.conf of a system coturn
            "--no-rfc5780",  # no alternative port (listening port + 1) to collide with
            "--listening-ip", "127.0.0.1",
            "--listening-port", str(port),
            "--relay-ip", "127.0.0.1",
            "--use-auth-secret",
            "--static-auth-secret", secret,
            "--realm", REALM,
            "--allow-loopback-peers",
            "--min-port", str(lo),
            "--max-port", str(hi),
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file", "stdout",
            "--pidfile", str(tmp / f"{spec.name}.pid"),
            "--db", str(tmp / f"{spec.name}.sqlite"),
        ]  # fmt: skip
        if spec.workers:
            cmd += ["--relay-threads", str(spec.workers)]
        return cmd
    return [
        sys.executable, "-m", "turnpike", "relay",
        "--listen", f"127.0.0.1:{port}",
        "--relay-ip", "127.0.0.1",
        "--realm", REALM,
        "--keyring", str(keyring),
        "--allow-peer", "127.0.0.0/8",
        "--relay-ports", f"{lo}-{hi}",
        "--offload", spec.offload,
        "--workers", str(spec.workers),
    ]  # fmt: skip


def _wait_ready(server: RunningServer, workers: int, timeout: float = 20.0) -> None:
    """Until STUN Binding answers over UDP from several source ports and TCP accepts."""
    deadline = time.monotonic() + timeout
    probes = max(4, 4 * workers)
    answered = 0
    last: Exception | None = None
    while time.monotonic() < deadline and answered < probes:
        if server.proc.poll() is not None:
            raise ServerError(
                f"{server.spec.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            try:
                stun.ControlClient(s, server.address, False).transact(
                    stun.build(stun.BINDING, stun.REQUEST, []), timeout=0.5
                )
                answered += 1
            except (TimeoutError, OSError) as exc:
                last = exc
                time.sleep(0.1)
    if answered < probes:
        raise ServerError(f"{server.spec.name} did not answer STUN: {last}\n{server.log_tail()}")
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(server.address, timeout=1):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise ServerError(f"{server.spec.name} does not accept TCP: {last}")


def start(
    spec: ServerSpec, secret: str, keyring: Path, relay_ports: tuple[int, int], tmp: Path
) -> RunningServer:
    port = free_dual_port()
    cmd = command(spec, port, secret, keyring, relay_ports, tmp)
    log_path = tmp / f"{spec.name}.log"
    log_file = log_path.open("ab")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        cmd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=str(tmp),
        env=env,
        start_new_session=True,
    )
    server = RunningServer(spec, ("127.0.0.1", port), cmd, proc, log_path, log_file)
    try:
        _wait_ready(server, max(1, spec.workers))
        time.sleep(0.3)  # let every worker finish starting
    except BaseException:
        server.stop()
        raise
    return server


def redact(cmd: list[str], secret: str) -> list[str]:
    """The command line as reported: the secret replaced, paths reduced to file names."""
    out: list[str] = []
    for arg in cmd:
        if arg == secret:
            out.append("<secret>")
        elif arg.startswith("/"):
            out.append(Path(arg).name)
        else:
            out.append(arg)
    return out


@dataclass
class Service:
    """A ``turnpike <command>`` child process (token API, gateway, operator) under test."""

    name: str
    command: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback URL
                if resp.status == 200:
                    return
                last = resp.status
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise ServerError(f"{url} did not answer 200 within {timeout}s (last: {last})")


def start_turnpike(
    name: str, args: list[str], tmp: Path, ready_url: str | None, timeout: float = 30.0
) -> Service:
    cmd = [sys.executable, "-m", "turnpike", *args]
    log_path = tmp / f"{name}.log"
    log_file = log_path.open("ab")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        cmd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=str(tmp),
        env=env,
        start_new_session=True,
    )
    service = Service(name, cmd, proc, log_path, log_file)
    try:
        if ready_url is not None:
            try:
                wait_http(ready_url, timeout, proc)
            except ServerError as exc:
                raise ServerError(f"{name}: {exc}\n{service.log_tail()}") from None
    except BaseException:
        service.stop()
        raise
    return service
