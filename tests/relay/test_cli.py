"""The real ``turnpike relay`` process: flags, health and metrics, hot reload, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest
from aioice import turn
from prometheus_client.parser import text_string_to_metric_families
from support import free_dual_port, free_port, turnpike
from support.relay import (
    REALM,
    SECRET,
    credentials,
    echo_peer,
    raw_client,
    write_keyring,
    write_self_signed,
)

from turnpike.relay import stun
from turnpike.relay.stun import Attr, Class, Method

pytestmark = pytest.mark.e2e

FIRST = "first-secret-7f3a"
SECOND = "second-secret-9b2c"


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


def relay_args(keyring: Path, port: int, metrics: int, *extra: str) -> list[str]:
    return [
        "relay",
        "--listen",
        f"127.0.0.1:{port}",
        "--realm",
        REALM,
        "--keyring",
        str(keyring),
        "--allow-peer",
        "127.0.0.0/8",
        "--relay-ports",
        "40000-44999",
        "--metrics",
        f"127.0.0.1:{metrics}",
        *extra,
    ]


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def test_relay_process_metrics_reload_and_drain(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "keyring.json", [("k1", FIRST, True)])
    port, metrics = free_dual_port(), free_port()
    base = f"http://127.0.0.1:{metrics}"
    args = relay_args(keyring, port, metrics, "--drain-grace", "30", "--log-json")
    async with turnpike(args, ready_url=base + "/ready") as proc, echo_peer() as peer:
        _, body = await get(base + "/ready")
        assert json.loads(body)["keys"] == ["k1"]

        username, password = credentials(FIRST)
        transport, protocol = await turn.create_turn_endpoint(
            Collector, server_addr=("127.0.0.1", port), username=username, password=password
        )
        for i in range(10):
            transport.sendto(b"x%d" % i, peer.address)
            assert await asyncio.wait_for(protocol.received.get(), 2) == b"x%d" % i

        _, text = await get(base + "/metrics")
        assert "turnpike_relay_allocations 1.0" in text
        assert 'turnpike_relay_packets_total{direction="to_peer"} 10.0' in text
        assert 'turnpike_relay_requests_total{code="200",method="allocate"} 1.0' in text
        assert username not in text and "127.0.0.1" not in text  # no unbounded labels

        # Hot reload: a new signing key shows up in /ready and its credentials work.
        write_keyring(keyring, [("k2", SECOND, True), ("k1", FIRST, False)])
        for _ in range(100):
            if json.loads((await get(base + "/ready"))[1])["keys"] == ["k2", "k1"]:
                break
            await asyncio.sleep(0.1)
        assert json.loads((await get(base + "/ready"))[1])["signing"] == "k2"
        text = (await get(base + "/metrics"))[1]
        assert "turnpike_relay_keyring_keys 2.0" in text
        assert "turnpike_relay_keyring_reloads_total 1.0" in text
        async with raw_client(("127.0.0.1", port), credentials=credentials(SECOND)) as client:
            await client.allocate()
            await client.request(Method.REFRESH, {Attr.LIFETIME: 0})

        # SIGTERM: not ready, new Allocates refused with 403, the live allocation still relays.
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        for _ in range(50):
            if (await get(base + "/ready"))[0] == 503:
                break
            await asyncio.sleep(0.1)
        assert (await get(base + "/ready"))[0] == 503
        async with raw_client(("127.0.0.1", port), credentials=credentials(SECOND)) as client:
            reply = await client.request(Method.ALLOCATE, {Attr.REQUESTED_TRANSPORT: 17})
            assert reply.error_code == 403
        transport.sendto(b"during drain", peer.address)
        assert await asyncio.wait_for(protocol.received.get(), 2) == b"during drain"
        assert proc.proc.returncode is None

        # The last allocation ends: the process exits 0 on its own.
        transport.close()
        code = await asyncio.wait_for(proc.proc.wait(), 10)
        assert code == 0
    # One JSON object per line, with event fields; never secrets or passwords.
    events = [json.loads(line) for line in proc.text.splitlines() if line.startswith("{")]
    created = [e for e in events if e.get("event") == "allocation_created"]
    assert created and created[0]["transport"] == "udp" and created[0]["user"] == "alice"
    for secret in (FIRST, SECOND, password):
        assert secret not in proc.text


async def test_every_listen_address_serves_udp_and_tcp(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "keyring.json")
    port, second, metrics = free_dual_port(), free_dual_port(), free_port()
    args = relay_args(keyring, port, metrics, "--listen", f"127.0.0.1:{second}")
    args += ["--drain-grace", "1"]
    async with turnpike(args, ready_url=f"http://127.0.0.1:{metrics}/ready") as proc:
        for listen in (port, second):
            for tcp in (False, True):
                async with raw_client(("127.0.0.1", listen), tcp, credentials()) as client:
                    reply = await client.transact(stun.Message(Method.BINDING, Class.REQUEST))
                    assert reply.get(Attr.XOR_MAPPED_ADDRESS) == client.local_address
                    relayed = await client.allocate()
                    assert relayed[0] == "127.0.0.1"
                    await client.request(Method.REFRESH, {Attr.LIFETIME: 0})
        assert await proc.stop(signal.SIGTERM, timeout=10) == 0


async def test_drain_grace_ends_with_allocations_left(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "keyring.json")
    port, metrics = free_dual_port(), free_port()
    args = relay_args(keyring, port, metrics, "--drain-grace", "1")
    async with turnpike(args, ready_url=f"http://127.0.0.1:{metrics}/ready") as proc:
        async with raw_client(("127.0.0.1", port), credentials=credentials()) as client:
            await client.allocate()
            code = await proc.stop(signal.SIGTERM, timeout=10)
            assert code == 0
    assert "drain grace ended with 1 allocations left" in proc.text


async def test_second_signal_during_drain_exits_at_once(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "keyring.json")
    port, metrics = free_dual_port(), free_port()
    base = f"http://127.0.0.1:{metrics}"
    args = relay_args(keyring, port, metrics, "--drain-grace", "600")
    async with turnpike(args, ready_url=base + "/ready") as proc:
        async with raw_client(("127.0.0.1", port), credentials=credentials()) as client:
            await client.allocate()
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
            for _ in range(50):
                if (await get(base + "/ready"))[0] == 503:
                    break
                await asyncio.sleep(0.1)
            assert (await get(base + "/ready"))[0] == 503  # draining, the allocation holds it
            assert proc.proc.returncode is None
            # The impatient second signal: out now (1), not after the 600 s grace (nor killed).
            assert await proc.stop(signal.SIGTERM, timeout=10) == 1


def test_refuses_bad_flags(tmp_path: Path) -> None:
    import subprocess

    keyring = write_keyring(tmp_path / "keyring.json")
    env = {**os.environ}
    broken = tmp_path / "broken.json"
    broken.write_text('{"keys": [{"id": "k1", "secret": "hush-hush", "signing": false}]}')
    missing = tmp_path / "missing.pem"
    listen = ["--listen", "127.0.0.1:0"]
    no_pem = ("--tls-cert", str(missing), "--tls-key", str(missing))
    cases = [
        (["--listen", "127.0.0.1:3478", "--tls-listen", "127.0.0.1:5349"], "--tls-cert"),
        (["--listen", "127.0.0.1:0", "--workers", "2"], "fixed ports"),
        ([*listen, "--account-quota", "-1"], "--account-quota must not be negative"),
        ([*listen, "--reserve-percent", "100"], "--reserve-percent must be below 100"),
        # Files that are missing or broken: one line, no traceback, the secret never quoted.
        ([*listen, "--keyring", str(tmp_path / "nope.json")], "cannot start"),
        ([*listen, "--keyring", str(broken)], "no signing key"),
        (
            [*listen, "--tls-listen", "127.0.0.1:0", *no_pem],
            "cannot start",
        ),
    ]
    for extra, message in cases:
        out = subprocess.run(
            [sys.executable, "-m", "turnpike", "relay", "--keyring", str(keyring), *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert out.returncode == 2, out
        assert message in out.stderr
        assert "Traceback" not in out.stderr and "hush-hush" not in out.stderr


async def _server_cert(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return bytes(der)


async def test_tls_listener_and_certificate_reload(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "keyring.json")
    cert, key = write_self_signed(tmp_path, "first.relay.test")
    port, tls_port, metrics = free_dual_port(), free_port(), free_port()
    args = relay_args(
        keyring,
        port,
        metrics,
        "--tls-listen",
        f"127.0.0.1:{tls_port}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--drain-grace",
        "1",
    )
    async with turnpike(args, ready_url=f"http://127.0.0.1:{metrics}/ready"), echo_peer() as peer:
        first = await _server_cert(tls_port)
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        username, password = credentials()
        transport, protocol = await turn.create_turn_endpoint(
            Collector,
            server_addr=("127.0.0.1", tls_port),
            username=username,
            password=password,
            ssl=ctx,
            transport="tcp",
        )
        try:
            for i in range(10):
                transport.sendto(b"tls %d" % i, peer.address)
                assert await asyncio.wait_for(protocol.received.get(), 2) == b"tls %d" % i
        finally:
            transport.close()
        # The same port also speaks plain TURN over TCP: the hosted token format lists
        # turn:host:443?transport=tcp for the port turns: clients reach with TLS.
        transport, protocol = await turn.create_turn_endpoint(
            Collector,
            server_addr=("127.0.0.1", tls_port),
            username=username,
            password=password,
            transport="tcp",
        )
        try:
            transport.sendto(b"plain", peer.address)
            assert await asyncio.wait_for(protocol.received.get(), 2) == b"plain"
        finally:
            transport.close()
        # A client that connects and says nothing is dropped, not kept forever (checked by
        # opening one and seeing the relay still serve others meanwhile).
        _, silent = await asyncio.open_connection("127.0.0.1", tls_port)
        assert await _server_cert(tls_port) == first
        silent.close()
        # Replace the pair on disk; new handshakes get the new certificate, no restart.
        (tmp_path / "new").mkdir()
        new_cert, new_key = write_self_signed(tmp_path / "new", "second.relay.test")
        os.replace(new_key, key)
        os.replace(new_cert, cert)
        for _ in range(60):
            if await _server_cert(tls_port) != first:
                break
            await asyncio.sleep(0.1)
        assert await _server_cert(tls_port) == ssl.PEM_cert_to_DER_cert(cert.read_text())


async def test_workers_share_the_ports(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "keyring.json")
    port, metrics = free_dual_port(), free_port()
    args = relay_args(keyring, port, metrics, "--workers", "2", "--drain-grace", "5")
    base = f"http://127.0.0.1:{metrics}"
    async with turnpike(args, ready_url=base + "/ready") as proc, echo_peer() as peer:
        body = json.loads((await get(base + "/ready"))[1])
        assert body["workers"] == 2
        assert body["keys"] == ["k1"]
        assert body["signing"] == "k1"
        clients = []
        for n in range(8):  # eight source ports: the kernel spreads them over the workers
            username, password = credentials(user=f"user{n}")
            transport, protocol = await turn.create_turn_endpoint(
                Collector, server_addr=("127.0.0.1", port), username=username, password=password
            )
            clients.append((transport, protocol))
        for i, (transport, protocol) in enumerate(clients):
            transport.sendto(b"worker test %d" % i, peer.address)
            assert await asyncio.wait_for(protocol.received.get(), 3) == b"worker test %d" % i
        text = (await get(base + "/metrics"))[1]
        assert "turnpike_relay_allocations 8.0" in text
        families = {f.name for f in text_string_to_metric_families(text)}  # well-formed
        assert {"turnpike_relay_allocations", "turnpike_relay_packets"} <= families
        assert 'turnpike_relay_packets_total{direction="to_peer"} 8.0' in text
        body = json.loads((await get(base + "/ready"))[1])
        assert body["allocations"] == 8
        assert len(body["worker_allocations"]) == 2
        for transport, _ in clients:
            transport.close()
        # A rotation step: every worker reloads the file on its own; the supervisor reports
        # the new key only once both have it.
        write_keyring(keyring, (("k2", "s2", True), ("k1", SECRET, False)))
        for _ in range(100):
            body = json.loads((await get(base + "/ready"))[1])
            if body.get("signing") == "k2":
                break
            await asyncio.sleep(0.1)
        assert body["keys"] == ["k2", "k1"]
        assert body["signing"] == "k2"
        await asyncio.sleep(0.3)
        assert proc.proc is not None
        code = await proc.stop(signal.SIGTERM, timeout=15)
        assert code == 0


KEYRING = b'{"keys": [{"id": "k", "secret": "s", "signing": true}]}'


def test_options_from_flags() -> None:
    from turnpike.cli import build_parser
    from turnpike.relay.app import Options

    def options(*argv: str) -> Options:
        return Options.from_args(build_parser().parse_args(["relay", "--keyring", "k", *argv]))

    from turnpike.core.config import HostPort

    # coturn's defaults: TURN on 3478, relay ports 49152-65535; 100 allocations per credential.
    defaults = options("--relay-ip", "10.1.2.3")
    assert defaults.listen == (HostPort("0.0.0.0", 3478),)
    assert defaults.config.max_lifetime == 3600
    assert defaults.config.total_quota == 0
    plain = options("--listen", "192.0.2.10:3478", "--listen", "[2001:db8::5]:3478")
    assert plain.config.relay_ips == ("192.0.2.10", "2001:db8::5")
    assert plain.config.relay_ports == (49152, 65535)
    assert plain.config.user_quota == 100
    # Each of N workers shares out 1/N of the ports (two relay addresses: twice the range).
    from turnpike.core.keyring import parse_keyring
    from turnpike.relay.server import RelayServer

    for workers, ports in ((1, 2 * 16384), (2, 16384)):
        worker = options("--listen", "192.0.2.10:3478", "--listen", "[2001:db8::5]:3478",
                         "--worker-of", str(workers))  # fmt: skip
        share = RelayServer(worker.config, lambda: parse_keyring(KEYRING, "k")).fair_share
        assert share.ports == ports and share.shares.account == ports // 2
    nat = options("--listen", "0.0.0.0:3478", "--external-ip", "203.0.113.9")
    assert nat.config.relay_ips == ("0.0.0.0",)
    assert nat.config.external_ips == ("203.0.113.9",)
    from turnpike.relay.app import primary_address

    if primary_address() is None:  # a host without a default route must be told
        with pytest.raises(ValueError, match="--relay-ip"):
            options("--listen", "0.0.0.0:3478")
    else:  # the default route's source address, like a pod IP
        detected = options("--listen", "0.0.0.0:3478")
        assert detected.config.relay_ips == (primary_address(),)
    explicit = options("--listen", "0.0.0.0:3478", "--relay-ip", "10.1.2.3")
    assert explicit.config.relay_ips == ("10.1.2.3",)
    with pytest.raises(ValueError, match="one --relay-ip per address family"):
        options("--relay-ip", "10.0.0.1", "--relay-ip", "10.0.0.2")


def test_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator configures the relay through TURNPIKE_<FLAG> variables (comma-separated for
    repeatable flags); a flag on the command line still wins."""
    from turnpike.cli import build_parser
    from turnpike.core.config import HostPort
    from turnpike.relay.app import Options

    env = {
        "TURNPIKE_LISTEN": "127.0.0.1:3478,127.0.0.1:3479",
        "TURNPIKE_DENY_PEER": "203.0.113.0/24,10.96.0.0/12",
        "TURNPIKE_ALLOW_PEER": "10.1.0.0/16",
        "TURNPIKE_USER_QUOTA": "5",
        "TURNPIKE_RELAY_PORTS": "40000-40999",
        "TURNPIKE_KEYRING": "/keys/keyring.json",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parsed = Options.from_args(build_parser().parse_args(["relay"]))
    assert parsed.listen == (HostPort("127.0.0.1", 3478), HostPort("127.0.0.1", 3479))
    assert parsed.keyring == "/keys/keyring.json"
    assert parsed.config.deny_peer == ("203.0.113.0/24", "10.96.0.0/12")
    assert parsed.config.allow_peer == ("10.1.0.0/16",)
    assert parsed.config.user_quota == 5
    assert parsed.config.relay_ports == (40000, 40999)
    flagged = build_parser().parse_args(["relay", "--user-quota", "7"])
    assert Options.from_args(flagged).config.user_quota == 7


def test_merge_metrics_sums_samples_across_workers() -> None:
    from turnpike.relay.workers import merge_metrics

    one = (
        "# HELP turnpike_relay_allocations Allocations currently active\n"
        "# TYPE turnpike_relay_allocations gauge\n"
        "turnpike_relay_allocations 2.0\n"
        "# HELP turnpike_relay_allocations_created_total Allocations created\n"
        "# TYPE turnpike_relay_allocations_created_total counter\n"
        "turnpike_relay_allocations_created_total 7.0\n"
        "# HELP turnpike_relay_packets_total Packets relayed\n"
        "# TYPE turnpike_relay_packets_total counter\n"
        'turnpike_relay_packets_total{direction="to_peer"} 10.0\n'
    )
    two = one.replace(" 2.0", " 3.0").replace(" 10.0", " 5.0")
    merged = merge_metrics([one, two])
    assert "turnpike_relay_allocations 5.0" in merged
    assert 'turnpike_relay_packets_total{direction="to_peer"} 15.0' in merged
    assert merged.count("# TYPE turnpike_relay_allocations gauge") == 1
    lines = merged.splitlines()
    assert lines.index("turnpike_relay_allocations 5.0") > lines.index(
        "# TYPE turnpike_relay_allocations gauge"
    )
    # Each sample stays under its own family, not under one whose name is a prefix of it.
    created = lines.index("turnpike_relay_allocations_created_total 14.0")
    assert created == lines.index("# TYPE turnpike_relay_allocations_created_total counter") + 1


def test_merge_metrics_follows_each_familys_declaration() -> None:
    from turnpike.relay.workers import merge_metrics

    def worker(keys: int, reloads: int, created: float, allocations: int) -> str:
        return (
            "# HELP turnpike_relay_keyring_keys Keys in the loaded keyring\n"
            "# TYPE turnpike_relay_keyring_keys gauge\n"
            f"turnpike_relay_keyring_keys {keys}.0\n"
            "# HELP turnpike_relay_keyring_reloads Times the keyring file was reloaded\n"
            "# TYPE turnpike_relay_keyring_reloads counter\n"
            f"turnpike_relay_keyring_reloads_total {reloads}.0\n"
            f"turnpike_relay_keyring_reloads_created {created}\n"
            "# HELP turnpike_relay_allocations Allocations currently active\n"
            "# TYPE turnpike_relay_allocations gauge\n"
            f"turnpike_relay_allocations {allocations}.0\n"
        )

    merged = merge_metrics([worker(1, 2, 1700000050.0, 4), worker(1, 3, 1700000000.0, 5)])
    assert "turnpike_relay_keyring_keys 1.0" in merged  # one key, not two (one worker's value)
    assert "turnpike_relay_keyring_reloads_total 3.0" in merged  # each reloads the same file
    assert "turnpike_relay_keyring_reloads_created 1700000000.0" in merged  # never summed
    assert "turnpike_relay_allocations 9.0" in merged  # each holds its own


def test_every_relay_metric_declares_how_workers_merge_it() -> None:
    from prometheus_client import generate_latest

    from turnpike.core.keyring import parse_keyring
    from turnpike.relay.allocation import AllocationTable, PortPool
    from turnpike.relay.metrics import MERGE, RelayStats, registry_for
    from turnpike.relay.offload import Offload

    class Ring:
        reloads = errors = 0
        current = parse_keyring(b'{"keys": [{"id": "k", "secret": "s", "signing": true}]}', "k")

    table = AllocationTable(PortPool(1, 2))
    text = generate_latest(registry_for(RelayStats(), table, Ring(), Offload()))
    families = {f.name for f in text_string_to_metric_families(text.decode())}
    assert families == set(MERGE)
    assert set(MERGE.values()) <= {"sum", "max", "min", "one"}


def test_combined_ready_reports_only_what_every_worker_has() -> None:
    from turnpike.relay.workers import combine_ready

    def report(keys: list[str], signing: str, allocations: int = 0) -> tuple[int, str]:
        body = {"ready": True, "realm": "r", "keys": keys, "signing": signing}
        return 200, json.dumps({**body, "allocations": allocations})

    body, ok = combine_ready([report(["k1"], "k1", 2), report(["k1"], "k1", 3)])
    assert ok and body["keys"] == ["k1"] and body["signing"] == "k1"
    assert body["realm"] == "r" and body["allocations"] == 5
    assert body["worker_allocations"] == [2, 3]
    # Mid-reload: one worker has k2, the other not yet; k2 must not look installed.
    body, ok = combine_ready([report(["k2", "k1"], "k2"), report(["k1"], "k1")])
    assert ok and body["keys"] == ["k1"] and "signing" not in body
    body, _ = combine_ready([report(["k2", "k1"], "k1"), report(["k1", "k2"], "k1")])
    assert body["keys"] == ["k2", "k1"] and body["signing"] == "k1"
    # A worker that does not answer (or answers nonsense): not ready, and no keys at all.
    for silent in [(599, ""), (200, "not json"), (200, "[]")]:
        body, ok = combine_ready([report(["k1"], "k1"), silent])
        assert not ok
        assert "keys" not in body and "signing" not in body
    body, ok = combine_ready([report(["k1"], "k1"), (503, json.dumps({"ready": False}))])
    assert not ok and "keys" not in body
