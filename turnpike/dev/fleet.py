"""`turnpike dev`: a relay, the token API, the stream gateway and a sample consumer on one machine.

The three components run as real child processes with exactly the flags a pod would give them, so
what works here works in a cluster. The supervisor is deliberately strict: if any child dies, the
whole fleet stops with a clear message instead of limping on half-started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import logging
import os
import secrets
import shlex
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import ifaddr
from aiohttp import web

from turnpike.core import edges as directory
from turnpike.core import sids
from turnpike.core.keyring import Keyring
from turnpike.dev.consumer import consumer_app
from turnpike.dev.tlsgen import make_dev_tls

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_PR_SET_PDEATHSIG = 1


DEV_NUMBER = "+15550002222"  # the dev number: routed to the sample consumer


def default_state_file() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "turnpike" / "dev.json"


def local_network(host: str) -> str:
    """The network ``host`` sits on (from the machine's interfaces); loopback is 127.0.0.0/8."""
    ip = ipaddress.ip_address(host)
    if ip.is_loopback:
        return "127.0.0.0/8" if ip.version == 4 else "::1/128"
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            address = entry.ip if isinstance(entry.ip, str) else entry.ip[0]
            if ipaddress.ip_address(address) == ip:
                return str(ipaddress.ip_network(f"{address}/{entry.network_prefix}", strict=False))
    raise ValueError(f"{host} is not an address of this machine")


def _free_port(host: str, kinds: Sequence[int]) -> int:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, kinds[0]) as first:
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            ok = True
            for kind in kinds[1:]:
                with socket.socket(family, kind) as other:
                    try:
                        other.bind((host, port))
                    except OSError:
                        ok = False
            if ok:
                return port
    raise RuntimeError("no free port")


@dataclass(frozen=True, slots=True)
class Ports:
    relay: int = 3478
    tokens: int = 8080
    streamgw: int = 8081
    consumer: int = 8443
    relay_metrics: int = 9641
    tokens_metrics: int = 9642
    streamgw_metrics: int = 9643
    sip: int = 5060

    @classmethod
    def free(cls, host: str) -> Ports:
        import socket

        tcp, udp = socket.SOCK_STREAM, socket.SOCK_DGRAM
        return cls(
            relay=_free_port(host, [udp, tcp]),
            tokens=_free_port(host, [tcp]),
            streamgw=_free_port(host, [tcp]),
            consumer=_free_port(host, [tcp]),
            relay_metrics=_free_port(host, [tcp]),
            tokens_metrics=_free_port(host, [tcp]),
            streamgw_metrics=_free_port(host, [tcp]),
            sip=_free_port(host, [udp, tcp]),
        )


@dataclass
class Child:
    name: str
    args: list[str]
    ready_url: str
    proc: asyncio.subprocess.Process | None = None
    tail: list[str] = field(default_factory=list)
    pump: asyncio.Task[None] | None = None


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM the child when `turnpike dev` itself dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Fleet:
    def __init__(self, host: str, state_file: Path, ports: Ports) -> None:
        self.host = host
        self.state_file = state_file
        self.ports = ports
        self.work = state_file.parent / "turnpike-dev"
        self.network = local_network(host)
        self.children: list[Child] = []
        self._consumer: web.AppRunner | None = None
        self.state: dict[str, Any] = {}

    # -- files -------------------------------------------------------------------------------

    def _account(self) -> dict[str, Any]:
        """The development account; kept across runs so apps configured with it keep working."""
        path = self.work / "accounts.json"
        if path.exists():
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                account: dict[str, Any] = json.loads(path.read_text())["accounts"][0]
                if sids.is_sid(account["sid"], sids.ACCOUNT) and account["authToken"]:
                    return account
        account = {"sid": sids.new_sid(sids.ACCOUNT), "authToken": secrets.token_hex(16)}
        path.touch(mode=0o600)
        path.write_text(json.dumps({"accounts": [account]}, indent=2) + "\n")
        return account

    def prepare(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o700)
        self.account = self._account()
        keyring = self.work / "keyring.json"
        keyring.touch(mode=0o600)
        keyring.write_text(Keyring.generate("dev1").to_json())
        # One relay serves every entry; its plain TCP listener also answers the "443" entry,
        # which the hosted format writes as turn:…?transport=tcp.
        relay = self.ports.relay
        ports = directory.Ports(relay, relay, relay)
        edges = directory.EdgeDirectory(
            directory.Edge(directory.GLOBAL, self.host, ports=ports),
            (directory.Edge("local", self.host, "This machine", ports),),
        )
        (self.work / "edges.json").write_text(edges.render())
        self.tls = make_dev_tls(self.work / "tls", self.host)
        self.recordings = self.work / "recordings"
        self.recordings.mkdir(exist_ok=True)
        numbers = self.work / "numbers.json"
        numbers.write_text(json.dumps(self._numbers(), indent=2) + "\n")

        h, p = self.host, self.ports
        hp = _url_host(h)
        self.children = [
            Child(
                "relay",
                [
                    "relay",
                    "--listen", f"{hp}:{p.relay}",
                    "--realm", "turnpike.dev",
                    "--keyring", str(keyring),
                    "--allow-peer", self.network,
                    "--metrics", f"{hp}:{p.relay_metrics}",
                ],
                f"http://{hp}:{p.relay_metrics}/ready",
            ),
            Child(
                "tokens",
                [
                    "tokens",
                    "--listen", f"{hp}:{p.tokens}",
                    "--keyring", str(keyring),
                    "--accounts", str(self.work / "accounts.json"),
                    "--edges", str(self.work / "edges.json"),
                    "--dev-account", self.account["sid"],
                    "--metrics", f"{hp}:{p.tokens_metrics}",
                ],
                f"http://{hp}:{p.tokens_metrics}/ready",
            ),
            Child(
                "streamgw",
                [
                    "streamgw",
                    "--listen", f"{hp}:{p.streamgw}",
                    "--accounts", str(self.work / "accounts.json"),
                    "--rtp-ip", h,
                    "--allow-destination", self.network,
                    "--ca-file", str(self.tls.ca_cert),
                    "--metrics", f"{hp}:{p.streamgw_metrics}",
                    "--sip", f"{hp}:{p.sip}",
                    "--numbers", str(numbers),
                    "--sip-trust", self.network,
                ],
                f"http://{hp}:{p.streamgw_metrics}/ready",
            ),
        ]  # fmt: skip
        sid, token = self.account["sid"], self.account["authToken"]
        tokens_url = f"http://{hp}:{p.tokens}/2010-04-01/Accounts/{sid}/Tokens.json"
        self.state = {
            "pid": os.getpid(),
            "host": h,
            "network": self.network,
            "accountSid": sid,
            "authToken": token,
            "relay": {
                "stun": f"stun:{hp}:{p.relay}",
                "turnUdp": f"turn:{hp}:{p.relay}?transport=udp",
                "turnTcp": f"turn:{hp}:{p.relay}?transport=tcp",
                "host": h,
                "port": p.relay,
                "metrics": f"http://{hp}:{p.relay_metrics}/metrics",
            },
            "tokens": {
                "url": f"http://{hp}:{p.tokens}",
                "tokensUrl": tokens_url,
                "checkPage": f"http://{hp}:{p.tokens}/",
                "metrics": f"http://{hp}:{p.tokens_metrics}/metrics",
            },
            "streamgw": {
                "url": f"http://{hp}:{p.streamgw}",
                "callsUrl": f"http://{hp}:{p.streamgw}/v1/Calls",
                "rtpIp": h,
                "metrics": f"http://{hp}:{p.streamgw_metrics}/metrics",
                "sip": {
                    "uri": f"sip:{DEV_NUMBER}@{hp}:{p.sip}",
                    "host": h,
                    "port": p.sip,
                    "number": DEV_NUMBER,
                },
            },
            "consumer": {
                "record": f"wss://{hp}:{p.consumer}/record",
                "echo": f"wss://{hp}:{p.consumer}/echo",
                "recordings": f"https://{hp}:{p.consumer}/recordings",
                "caFile": str(self.tls.ca_cert),
                "folder": str(self.recordings),
            },
            "files": {
                "keyring": str(keyring),
                "accounts": str(self.work / "accounts.json"),
                "edges": str(self.work / "edges.json"),
                "numbers": str(numbers),
            },
            "curl": f"curl -s -X POST -u {sid}:{token} {tokens_url}",
            "callCommand": self._call_command(),
        }

    def _numbers(self) -> dict[str, Any]:
        """The dev number: a call to it streams the caller's audio to the sample consumer."""
        consumer = f"wss://{_url_host(self.host)}:{self.ports.consumer}/record"
        twiml = (
            f'<Response><Start><Stream url="{consumer}" name="dev-call"/></Start>'
            '<Pause length="600"/></Response>'
        )
        return {
            "numbers": [{"number": DEV_NUMBER, "accountSid": self.account["sid"], "twiml": twiml}]
        }

    def _call_command(self) -> str:
        """How to run `turnpike dev call` against this fleet, spelled the way we were started."""
        program = sys.argv[0]
        words = (
            [program] if Path(program).name == "turnpike" else [sys.executable, "-m", "turnpike"]
        )
        words += ["dev", "call"]
        if self.state_file != default_state_file():
            words += ["--state-file", str(self.state_file)]
        return shlex.join(words)

    # -- processes ---------------------------------------------------------------------------

    async def _pump(self, child: Child) -> None:
        assert child.proc is not None
        assert child.proc.stdout is not None
        async for raw in child.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            child.tail = [*child.tail[-19:], line]
            print(f"[{child.name}] {line}", file=sys.stderr, flush=True)

    async def _start_child(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "turnpike",
            *child.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # only calls prctl: safe before exec
        )
        child.pump = asyncio.create_task(self._pump(child))

    async def _wait_ready(self, child: Child, session: aiohttp.ClientSession) -> None:
        assert child.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if child.proc.returncode is not None:
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(child.ready_url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{child.name} was not ready within {READY_TIMEOUT:.0f}s")

    async def _start_consumer(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert, self.tls.key)
        self._consumer = web.AppRunner(consumer_app(self.recordings), access_log=None)
        await self._consumer.setup()
        site = web.TCPSite(self._consumer, self.host, self.ports.consumer, ssl_context=context)
        await site.start()

    async def start(self) -> None:
        self.prepare()
        await self._start_consumer()
        for child in self.children:
            await self._start_child(child)
        async with aiohttp.ClientSession() as session:
            for child in self.children:
                await self._wait_ready(child, session)
        write_private(self.state_file, json.dumps(self.state, indent=2) + "\n")

    async def wait(self, stop: asyncio.Event) -> Child | None:
        """Until ``stop`` is set (None) or a child exits on its own (that child)."""
        waits = {asyncio.create_task(c.proc.wait()): c for c in self.children if c.proc}
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (*waits, stopper):
            task.cancel()
        if stop.is_set():  # Ctrl-C reaches the children too: one may exit before we look
            return None
        for task in done:
            if task in waits:
                return waits[task]
        return None

    async def stop(self) -> None:
        running = [c for c in self.children if c.proc and c.proc.returncode is None]
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        for child in running:
            assert child.proc is not None
            try:
                await asyncio.wait_for(child.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("%s did not stop in %.0fs; killing it", child.name, STOP_TIMEOUT)
                child.proc.kill()
                await child.proc.wait()
        for child in self.children:
            if child.pump is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await child.pump
        if self._consumer is not None:
            await self._consumer.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, all at once: a reader that sees the file (the
    state file's existence means the fleet is up) always sees it whole, never empty or cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # left by a killed run that had this process id
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise


def banner(state: dict[str, Any]) -> str:
    relay, tokens, gw, consumer = (
        state["relay"],
        state["tokens"],
        state["streamgw"],
        state["consumer"],
    )
    return f"""
Turnpike dev fleet is running on {state["host"]}
(peers and destinations are allowed on {state["network"]} only)

  STUN/TURN relay     {relay["stun"]}  {relay["turnUdp"]}  {relay["turnTcp"]}
  Token API           {tokens["url"]}
  ICE servers check   {tokens["checkPage"]}
  Stream gateway      {gw["callsUrl"]}
  SIP (UDP and TCP)   {gw["sip"]["uri"]}
  Sample consumer     {consumer["record"]}  (echo: {consumer["echo"]})
  Recordings          {consumer["folder"]}

  Account SID         {state["accountSid"]}
  Auth token          {state["authToken"]}

Get ICE servers:
  {state["curl"]}
Place a test call through the gateway (in another terminal; add --via-sip to call over SIP):
  {state["callCommand"]}

Ctrl-C stops everything.
"""


async def run_fleet(host: str, state_file: Path, free_ports: bool, stop: asyncio.Event) -> int:
    try:
        local_network(host)
        fleet = Fleet(host, state_file, Ports.free(host) if free_ports else Ports())
    except (ValueError, OSError) as exc:
        print(f"turnpike dev: cannot serve on {host}: {exc}", file=sys.stderr)
        return 1
    try:
        await fleet.start()
    except (RuntimeError, OSError) as exc:
        print(f"turnpike dev: could not start the fleet: {exc}", file=sys.stderr)
        for child in fleet.children:
            if child.tail and child.proc and child.proc.returncode is not None:
                print(f"--- last output of {child.name}:", *child.tail, sep="\n", file=sys.stderr)
        await fleet.stop()
        return 1
    print(banner(fleet.state), flush=True)
    dead = await fleet.wait(stop)
    if dead is not None:
        assert dead.proc is not None
        print(
            f"turnpike dev: {dead.name} exited with code {dead.proc.returncode}; "
            "stopping the whole fleet",
            file=sys.stderr,
        )
    await fleet.stop()
    return 0 if dead is None else 1
