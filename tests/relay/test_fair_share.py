"""Fair share on the relay, against the real ``turnpike relay`` process.

Each test replays an attack from the outside review while a normal client runs at the same time,
and checks the normal client is still served (its latency is printed, never asserted):

- one address with many tokens filling the port range (quotas per token, address and account,
  and the reserve of ports for clients that hold little);
- one address holding idle TCP connections (a cap per address);
- connections exhausting the file descriptors (the reserve of descriptors keeps the last ones
  for others; without it, EMFILE is detected, answered, logged and counted as what it is).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import TurnpikeProcess, free_dual_port, free_port, free_udp_range, turnpike
from support.relay import RawClient, credentials, raw_client, write_keyring

from turnpike.relay import stun
from turnpike.relay.fairshare import Shares, source_key
from turnpike.relay.stun import Attr, Class, Method

pytestmark = [pytest.mark.e2e]

ATTACKER = "AC" + "a" * 32
NORMAL = "AC" + "b" * 32
THIRD = "AC" + "c" * 32
UDP = {Attr.REQUESTED_TRANSPORT: 17}


def token(account: str, n: int) -> tuple[str, str]:
    return credentials(user=f"{account}:tok{n}")


async def metric(url: str, name: str) -> dict[str, float]:
    """The samples of one counter by their single label value (no label: key "")."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = list(sample.labels.values())
                    assert len(labels) <= 1, sample  # never a user or address label
                    out[labels[0] if labels else ""] = sample.value
    return out


class Relay:
    def __init__(self, port: int, metrics: int, process: TurnpikeProcess) -> None:
        self.address = ("127.0.0.1", port)
        self.metrics = f"http://127.0.0.1:{metrics}/metrics"
        self.process = process


@contextlib.asynccontextmanager
async def relay(tmp_path: Path, *flags: str, fd_limit: int | None = None) -> AsyncIterator[Relay]:
    keyring = write_keyring(tmp_path / "keyring.json")
    port, metrics = free_dual_port(), free_port()
    args = [
        "relay", "--listen", f"127.0.0.1:{port}", "--relay-ip", "127.0.0.1",
        "--keyring", str(keyring), "--realm", "test.turnpike", "--allow-peer", "127.0.0.0/8",
        "--metrics", f"127.0.0.1:{metrics}", "--drain-grace", "0", *flags,
    ]  # fmt: skip
    ready = f"http://127.0.0.1:{metrics}/ready"
    async with turnpike(args, ready_url=ready, fd_limit=fd_limit) as process:
        yield Relay(port, metrics, process)


async def allocate(
    address: tuple[str, int], creds: tuple[str, str], source: str, clients: list[RawClient]
) -> tuple[int | None, str]:
    """One allocation on a new UDP 5-tuple from ``source``: (error code or None, reason)."""
    client = await RawClient.connect(address, local_host=source)
    clients.append(client)
    client.login(*creds)
    reply = await client.request(Method.ALLOCATE, UDP)
    if reply.cls == Class.SUCCESS:
        return None, ""
    code, phrase = reply.attributes[Attr.ERROR_CODE]
    return code, phrase


async def timed_allocation(address: tuple[str, int], source: str, what: str) -> None:
    """The normal client: one allocation that must succeed; its latency is reported."""
    started = time.perf_counter()
    async with raw_client(address, credentials=token(NORMAL, 1), local_host=source) as client:
        await client.allocate()
    print(f"normal client allocated in {(time.perf_counter() - started) * 1000:.1f} ms {what}")


async def test_one_address_with_many_tokens_cannot_take_the_ports(tmp_path: Path) -> None:
    low = free_udp_range(40)
    flags = (
        "--relay-ports", f"{low}-{low + 39}",
        "--user-quota", "3", "--ip-quota", "15", "--account-quota", "20",
    )  # fmt: skip
    clients: list[RawClient] = []
    async with relay(tmp_path, *flags) as r:
        try:
            # One token: 3 allocations, then the per-credential quota.
            results = [await allocate(r.address, token(ATTACKER, 0), "127.0.0.2", clients)]
            results += [await allocate(r.address, token(ATTACKER, 0), "127.0.0.2", clients)]
            results += [await allocate(r.address, token(ATTACKER, 0), "127.0.0.2", clients)]
            assert results == [(None, "")] * 3
            assert await allocate(r.address, token(ATTACKER, 0), "127.0.0.2", clients) == (
                486,
                "Allocation Quota Reached (credential)",
            )
            # Fresh tokens from the same address: stopped by the per-address quota at 15.
            flood = [await allocate(r.address, token(ATTACKER, n), "127.0.0.2", clients)
                     for n in range(1, 30)]  # fmt: skip
            assert flood.count((None, "")) == 12
            assert set(flood[12:]) == {(486, "Allocation Quota Reached (client address)")}
            # The same account from another address: stopped by the account quota at 20.
            more = [await allocate(r.address, token(ATTACKER, n), "127.0.0.3", clients)
                    for n in range(30, 40)]  # fmt: skip
            assert more.count((None, "")) == 5
            assert set(more[5:]) == {(486, "Allocation Quota Reached (account)")}
            # A third account takes ports until only the reserve (10 % of 40) is left...
            third = [await allocate(r.address, token(THIRD, n), f"127.0.1.{n}", clients)
                     for n in range(1, 20)]  # fmt: skip
            assert third.count((None, "")) == 16  # 20 + 16 = 36 = 40 - 4 reserved
            assert set(third[16:]) == {(508, "Insufficient Capacity (ports reserved)")}
            # ...and the normal client, holding nothing, is still served from the reserve.
            await timed_allocation(r.address, "127.0.0.9", "with 36 of 40 ports taken")
            refused = await metric(r.metrics, "turnpike_relay_allocations_refused")
            assert refused["token_quota"] == 1 and refused["ip_quota"] == 17
            assert refused["account_quota"] == 5 and refused["port_reserve"] == 3
        finally:
            for client in clients:
                client.close()


async def test_a_browser_page_with_default_quotas_never_meets_a_quota(tmp_path: Path) -> None:
    """The review's per-token defect: a page with 4 peer connections sharing one token gathers 12
    relay candidates each (3 TURN URLs x 2 interfaces x 2 families), and an ICE restart as many
    again while the old ones live: 96 allocations on one credential from one address, with the
    default quotas. Another user, from another address, is still served next to it."""
    low = free_udp_range(120)
    clients: list[RawClient] = []
    async with relay(tmp_path, "--relay-ports", f"{low}-{low + 119}") as r:
        try:
            page = [await allocate(r.address, token(ATTACKER, 0), "127.0.0.2", clients)
                    for _ in range(96)]  # fmt: skip
            assert page == [(None, "")] * 96
            await timed_allocation(r.address, "127.0.0.3", "next to a 96-allocation page")
            refused = await metric(r.metrics, "turnpike_relay_allocations_refused")
            assert refused and set(refused.values()) == {0}, refused
        finally:
            for client in clients:
                client.close()


async def idle_connections(
    source: str, port: int, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return [
        await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        for _ in range(count)
    ]


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def wait_for_metric(url: str, name: str, label: str, value: float) -> dict[str, float]:
    async with asyncio.timeout(20):
        while True:
            samples = await metric(url, name)
            if samples.get(label, 0) >= value:
                return samples
            await asyncio.sleep(0.05)


async def test_one_address_holding_connections_cannot_shut_others_out(tmp_path: Path) -> None:
    async with relay(tmp_path, "--connections-per-ip", "20") as r:
        conns = await idle_connections("127.0.0.2", r.address[1], 40)
        try:
            await wait_for_metric(
                r.metrics, "turnpike_relay_connections_refused", "ip_connections", 20
            )
            closed = await asyncio.gather(*(closed_by_server(reader) for reader, _ in conns[20:]))
            assert all(closed)
            # Another address is served over TCP while the first holds its 20.
            started = time.perf_counter()
            async with raw_client(
                r.address, tcp=True, credentials=token(NORMAL, 1), local_host="127.0.0.3"
            ) as client:
                await client.allocate()
            elapsed = (time.perf_counter() - started) * 1000
            print(f"normal TCP client allocated in {elapsed:.1f} ms next to 20 idle connections")
            assert await still_served(*conns[0])  # the first 20 were kept, and still work
        finally:
            for _, writer in conns:
                writer.close()


async def still_served(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """A STUN Binding over the connection is answered."""
    request = stun.Message(Method.BINDING, Class.REQUEST)
    writer.write(request.encode(None))
    header = await asyncio.wait_for(reader.readexactly(20), 5)
    body = await reader.readexactly(int.from_bytes(header[2:4], "big"))
    reply = stun.parse(header + body)
    return reply.cls == Class.SUCCESS and reply.transaction_id == request.transaction_id


async def test_descriptor_reserve_keeps_the_last_ones_for_others(tmp_path: Path) -> None:
    # 300 descriptors; four addresses open 90 connections each, more than the process can hold.
    async with relay(tmp_path, fd_limit=300) as r:
        conns = []
        try:
            for n in range(4):
                conns += await idle_connections(f"127.0.2.{n + 1}", r.address[1], 90)
            await wait_for_metric(r.metrics, "turnpike_relay_connections_refused", "fd_reserve", 1)
            await timed_allocation(r.address, "127.0.0.9", "with the descriptors nearly all held")
            async with raw_client(
                r.address, tcp=True, credentials=token(NORMAL, 2), local_host="127.0.0.10"
            ) as client:
                await client.allocate()
            exhausted = await metric(r.metrics, "turnpike_relay_fd_exhausted")
            assert exhausted == {"allocate": 0, "accept": 0}  # the reserve held
        finally:
            for _, writer in conns:
                writer.close()


async def test_out_of_descriptors_is_reported_as_such(tmp_path: Path) -> None:
    # No reserve and no per-address cap: the connections take every descriptor.
    flags = ("--reserve-percent", "0", "--connections-per-ip", "0")
    async with relay(tmp_path, *flags, fd_limit=200) as r:
        conns = await idle_connections("127.0.0.2", r.address[1], 220)
        try:
            clients: list[RawClient] = []
            async with asyncio.timeout(20):
                while True:  # until the accepted connections have used every descriptor
                    result = await allocate(r.address, token(NORMAL, 1), "127.0.0.3", clients)
                    if result[0] is not None:
                        break
                    await asyncio.sleep(0.05)
            assert result == (508, "Insufficient Capacity (out of file descriptors)")
            for client in clients:
                client.close()
        finally:
            for _, writer in conns:
                writer.close()
        exhausted = await wait_for_metric(r.metrics, "turnpike_relay_fd_exhausted", "allocate", 1)
        assert exhausted["accept"] >= 1  # the listener met EMFILE too, and said so
        refused = await metric(r.metrics, "turnpike_relay_allocations_refused")
        assert refused["out_of_fds"] >= 1 and refused["no_port"] == 0
        text = r.process.text
        assert "out of file descriptors on allocate: EMFILE" in text
        assert "no relay port free" not in text


def test_defaults_scale_with_the_ports_and_descriptors() -> None:
    shares = Shares.resolve(16384, 1048576)
    assert (shares.token, shares.account, shares.ip) == (100, 8192, 4096)
    assert shares.connections == 104857 and shares.total == 0
    small = Shares.resolve(40, 1024, token=0)
    assert (small.account, small.ip, small.connections) == (100, 100, 102)
    assert (
        source_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64" == source_key("2001:db8:1:2::9")
    )
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1" == source_key("192.0.2.1")
