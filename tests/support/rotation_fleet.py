"""Real pieces for the rotation end-to-end tests: a kubelet stand-in, relays, a token API, pods.

`Kubelet` copies the keyring Secret from the API into one directory per pod, each after its own
delay, exactly the way kubelet updates a mounted Secret: a new timestamped directory, then the
``..data`` symlink swapped to it atomically, with ``keyring.json`` a symlink through ``..data``.
A volume can be "stuck" (its node never syncs), which is how a relay that never loads a new key is
made. The relays and the token API are real ``turnpike`` child processes reading those files, and
each gets a Pod object (podIP 127.0.0.1, its real health port declared) so the operator finds it
the way it would in a cluster.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aioice import stun
from aioice.turn import create_turn_endpoint

from support import TurnpikeProcess, free_dual_port, free_port, turnpike
from turnpike.operator.keyring_secret import CONSUMER_LABEL, DATA_KEY
from turnpike.operator.kube import PODS, SECRETS, Kube

ACCOUNT = "AC" + "5ec0" * 8
AUTH_TOKEN = "rotation-e2e-auth-token"
REALM = "rotation.test"


@dataclass
class Volume:
    """One pod's mounted copy of the keyring Secret."""

    path: Path
    delay: float
    stuck: bool = False
    pending: list[tuple[float, bytes]] = field(default_factory=list)
    generation: int = 0

    @property
    def file(self) -> Path:
        return self.path / DATA_KEY

    def write(self, data: bytes) -> None:
        """Kubelet's atomic update: new timestamped dir, swap ``..data``, drop the old dir."""
        self.generation += 1
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.") + f"{self.generation:09d}"
        new_dir = self.path / stamp
        new_dir.mkdir(parents=True)
        (new_dir / DATA_KEY).write_bytes(data)
        data_link = self.path / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        tmp = self.path / "..data_tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(stamp)
        os.replace(tmp, data_link)
        if not self.file.is_symlink():
            self.file.symlink_to(Path("..data") / DATA_KEY)
        if old is not None:
            shutil.rmtree(self.path / old, ignore_errors=True)


class Kubelet:
    """Polls the keyring Secret and syncs each volume after its delay (never, if stuck)."""

    def __init__(self, kube: Kube, namespace: str, secret: str) -> None:
        self.kube, self.namespace, self.secret = kube, namespace, secret
        self.volumes: list[Volume] = []
        self._last: bytes | None = None
        self._task: asyncio.Task[None] | None = None

    def volume(self, path: Path, delay: float) -> Volume:
        path.mkdir(parents=True, exist_ok=True)
        vol = Volume(path, delay)
        if self._last is not None:
            vol.write(self._last)  # a new pod starts with the Secret as it is now
        self.volumes.append(vol)
        return vol

    async def _poll(self) -> None:
        while True:
            obj = await self.kube.get(SECRETS, self.namespace, self.secret)
            raw = ((obj or {}).get("data") or {}).get(DATA_KEY)
            now = time.monotonic()
            if raw is not None:
                data = base64.b64decode(raw)
                if data != self._last:
                    self._last = data
                    for vol in self.volumes:
                        vol.pending.append((now + vol.delay, data))
            for vol in self.volumes:
                due = [d for t, d in vol.pending if t <= now]
                if due and not vol.stuck:
                    vol.pending = [(t, d) for t, d in vol.pending if t > now]
                    vol.write(due[-1])
            await asyncio.sleep(0.05)

    async def wait_synced(self, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while self._last is None:
            if time.monotonic() > deadline:
                raise AssertionError("the keyring Secret never appeared")
            await asyncio.sleep(0.05)
        return self._last

    async def __aenter__(self) -> Kubelet:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class Member:
    """A relay or token pod: its process, volume, health URL and Pod object name."""

    name: str
    process: TurnpikeProcess
    volume: Volume
    health: str
    turn: tuple[str, int] | None = None
    api: str | None = None

    @property
    def health_port(self) -> int:
        return int(self.health.rsplit(":", 1)[1])

    async def ready(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(self.health + "/ready") as r:
            body: dict[str, Any] = await r.json(content_type=None)
            return body


@contextlib.asynccontextmanager
async def relay(name: str, volume: Volume, metrics: int | None = None) -> AsyncIterator[Member]:
    """A relay reading ``volume``; ``metrics`` is its health port (chosen here when not given)."""
    port, metrics = free_dual_port(), metrics or free_port()
    args = [
        "relay",
        "--listen",
        f"127.0.0.1:{port}",
        "--realm",
        REALM,
        "--keyring",
        str(volume.file),
        "--allow-peer",
        "127.0.0.0/8",
        "--relay-ports",
        "40000-49999",
        "--metrics",
        f"127.0.0.1:{metrics}",
        "--drain-grace",
        "0",
    ]
    health = f"http://127.0.0.1:{metrics}"
    async with turnpike(args, ready_url=health + "/ready") as proc:
        yield Member(name, proc, volume, health, turn=("127.0.0.1", port))


@contextlib.asynccontextmanager
async def token_api(
    name: str, volume: Volume, workdir: Path, metrics: int | None = None
) -> AsyncIterator[Member]:
    accounts = workdir / "accounts.json"
    accounts.write_text(json.dumps({"accounts": [{"sid": ACCOUNT, "authToken": AUTH_TOKEN}]}))
    edges = workdir / "edges.json"
    edges.write_text(json.dumps({"global": {"host": "127.0.0.1"}, "edges": []}))
    port, metrics = free_port(), metrics or free_port()
    args = [
        "tokens",
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics",
        f"127.0.0.1:{metrics}",
        "--keyring",
        str(volume.file),
        "--accounts",
        str(accounts),
        "--edges",
        str(edges),
        "--reload-interval",
        "0.1",
        "--rate-limit",
        "0",
    ]
    health = f"http://127.0.0.1:{metrics}"
    async with turnpike(args, ready_url=health + "/ready") as proc:
        yield Member(name, proc, volume, health, api=f"http://127.0.0.1:{port}")


async def add_pod(
    kube: Kube, namespace: str, secret: str, member: Member, *, labelled: bool = False
) -> None:
    """The Pod object of a member already running, Ready at once (see `start_pod`)."""
    await start_pod(kube, namespace, secret, member.name, member.health_port, labelled=labelled)
    await mark_ready(kube, namespace, member.name)


async def start_pod(
    kube: Kube, namespace: str, secret: str, name: str, port: int, *, labelled: bool = False
) -> None:
    """The Pod object a Deployment would have made: started on 127.0.0.1 but not Ready yet (its
    process may not even answer), with its health ``port`` declared and the keyring Secret mounted
    as a volume (as the operator's relay pods do), or, with ``labelled``, marked by the holder
    label instead (as the chart's token API pods are)."""
    meta: dict[str, Any] = {"name": name}
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "turnpike",
                "ports": [{"name": "metrics", "containerPort": port}],
            }
        ]
    }
    if labelled:
        meta["labels"] = {CONSUMER_LABEL: secret}
    else:
        spec["volumes"] = [{"name": "keyring", "secret": {"secretName": secret}}]
    await kube.create(PODS, namespace, {"metadata": meta, "spec": spec})
    status = {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "False"}],
    }
    await kube.patch(PODS, namespace, name, {"status": status}, sub="status")


async def mark_ready(kube: Kube, namespace: str, name: str) -> None:
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    await kube.patch(PODS, namespace, name, {"status": ready}, sub="status")


@dataclass(frozen=True)
class Token:
    username: str
    password: str
    expiry: int
    issued: float


async def get_token(session: aiohttp.ClientSession, api: str, ttl: int) -> Token:
    url = f"{api}/2010-04-01/Accounts/{ACCOUNT}/Tokens.json"
    basic = base64.b64encode(f"{ACCOUNT}:{AUTH_TOKEN}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    async with session.post(url, data={"Ttl": str(ttl)}, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    username = str(body["username"])
    return Token(username, str(body["password"]), int(username.split(":")[0]), time.time())


async def allocate(server: tuple[str, int], token: Token) -> str | None:
    """Allocate on ``server`` with ``token`` (aioice over UDP) and release it; None on success,
    else what went wrong (the STUN error code when the relay refused)."""
    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(
                asyncio.DatagramProtocol, server, token.username, token.password, transport="udp"
            ),
            8,
        )
    except stun.TransactionFailed as exc:
        return f"refused {exc.response.attributes.get('ERROR-CODE')}"
    except (TimeoutError, stun.TransactionTimeout, OSError) as exc:
        return f"{type(exc).__name__}"
    transport.close()
    return None


async def wait_for(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``probe`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class Operator:
    """The rotation handlers under the real kopf runner, as a child process that can be killed."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        settings: dict[str, str],
        peering: tuple[str, ...] = ("--standalone",),
        command: list[str] | None = None,
    ) -> None:
        """``command`` replaces the plain kopf runner (e.g. ``turnpike operator …``)."""
        env = {"KUBECONFIG": str(kubeconfig), **settings}
        self.peering = peering
        self.command = command
        self.namespace = namespace
        self.env = env
        self.process: TurnpikeProcess | None = None
        self.starts = 0
        self.log = ""

    async def start(self) -> None:
        proc = TurnpikeProcess([], self.env)
        proc.args = self.command or [
            sys.executable,
            "-m",
            "kopf",
            "run",
            *self.peering,
            "--namespace",
            self.namespace,
            "-m",
            "turnpike.operator.rotation_standalone",
        ]
        await proc.start()
        self.process = proc
        self.starts += 1

    @property
    def output(self) -> str:
        return self.log + (self.process.text if self.process is not None else "")

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, like a node dying."""
        assert self.process is not None
        await self.process.stop(sig=9)
        self.log += self.process.text
        self.process = None

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
            self.log += self.process.text
            self.process = None
