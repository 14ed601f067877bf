"""Fair share of the gateway: concurrent calls per account and in total, and the hosted errors.

The attack: one account opens calls as fast as it can (each holds an RTP port). The regression:
at its cap it gets 429/20429 while another account's call still starts; at the gateway's capacity
everyone gets 503/20503 with Retry-After; an ended call gives its slot back. Every error status the
gateway answers (404, 405, 413, 429, 503) has the hosted JSON body.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from support import free_port, free_udp_range, turnpike
from support.streamgw import (
    ACCOUNT,
    OTHER,
    OTHER_TOKEN,
    TOKEN,
    Harness,
    MakeGateway,
    basic,
    sample,
    write_accounts,
)

from turnpike.streamgw.admission import default_caps, rtp_capacity

PAUSE = '<Response><Pause length="60"/></Response>'


def call_body(account: str) -> dict[str, Any]:
    return {"accountSid": account, "from": "+15550001111", "to": "+15550002222", "twiml": PAUSE}


def assert_hosted(out: Any, status: int, code: int) -> None:
    assert isinstance(out, dict), out
    assert out["status"] == status and out["code"] == code, out
    assert out["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert isinstance(out["message"], str) and out["message"]


async def test_one_account_at_its_cap_never_blocks_another(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(max_account_calls=40, max_calls=45)
    other = basic(OTHER, OTHER_TOKEN)
    flood = await asyncio.gather(
        *(gw.request("POST", "/v1/Calls", json=call_body(ACCOUNT)) for _ in range(60))
    )
    statuses = sorted(status for status, _ in flood)
    assert statuses.count(201) == 40 and statuses.count(429) == 20  # never more than the cap
    refused = next(out for status, out in flood if status == 429)
    assert_hosted(refused, 429, 20429)

    # The normal client: another account's calls start while the first one sits at its cap.
    started = time.perf_counter()
    status, out = await gw.request("POST", "/v1/Calls", json=call_body(OTHER), auth=other)
    latency = time.perf_counter() - started
    print(f"other account's call admitted in {latency * 1000:.1f} ms with one account at its cap")
    assert status == 201, out
    for _ in range(4):
        status, out = await gw.request("POST", "/v1/Calls", json=call_body(OTHER), auth=other)
        assert status == 201, out

    # 45 calls in total: now everyone is refused with the capacity error, and told when to retry.
    async with gw.session.post(
        gw.base + "/v1/Calls", json=call_body(OTHER), headers={"Authorization": other}
    ) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert_hosted(await resp.json(), 503, 20503)
    metrics = gw.gateway.metrics.calls_refused
    assert sample(metrics, "account") == 20
    assert sample(metrics, "total") == 1

    # Hanging up one call gives its slot back to its account.
    first = next(out for status, out in flood if status == 201)
    await gw.hangup(first["sid"])
    status, out = await gw.request("POST", "/v1/Calls", json=call_body(ACCOUNT))
    assert status == 201, out


async def test_failed_starts_give_their_slot_back(make_gateway: MakeGateway) -> None:
    # A range with room for two calls' RTP ports, and caps above it: the third call finds no
    # port (503), and that failure must not leak a slot.
    low = free_udp_range(4)  # two even ports, each with its odd neighbour
    gw = await make_gateway(rtp_ports=(low, low + 3), max_calls=10, max_account_calls=10)
    for _ in range(2):
        await gw.create_call(twiml=PAUSE)
    for _ in range(3):
        _, out = await gw.request("POST", "/v1/Calls", json=call_body(ACCOUNT))
        assert_hosted(out, 503, 20503)
    assert gw.gateway.admission.total == 2


def test_default_caps_follow_the_port_range() -> None:
    assert rtp_capacity((10000, 20000)) == 5001
    assert default_caps((10000, 20000)) == (5001, 500)
    assert default_caps((31001, 31003)) == (1, 1)


async def test_every_error_status_has_the_hosted_shape(gw: Harness) -> None:
    _, out = await gw.request("GET", "/no/such/route")
    assert_hosted(out, 404, 20404)
    async with gw.session.put(gw.base + "/v1/Calls", headers={"Authorization": gw.auth}) as resp:
        assert resp.status == 405 and "POST" in resp.headers["Allow"]
        assert_hosted(await resp.json(), 405, 20004)
    big = b"{" + b" " * (3 * 1024 * 1024) + b"}"
    headers = {"Authorization": gw.auth, "Content-Type": "application/json"}
    async with gw.session.post(gw.base + "/v1/Calls", data=big, headers=headers) as resp:
        assert_hosted(await resp.json(), 413, 20413)


async def test_the_gateway_process_keeps_a_share_for_other_accounts(tmp_path: Path) -> None:
    """The review's attack on the real ``turnpike streamgw``: one account opens calls as fast as
    it can; at 40 it is refused, and another account's call still starts."""
    api, metrics = free_port(), free_port()
    low = 40000 + free_port() % 10000 // 2 * 2
    args = [
        "streamgw", "--listen", f"127.0.0.1:{api}", "--metrics", f"127.0.0.1:{metrics}",
        "--accounts", str(write_accounts(tmp_path / "accounts.json")),
        "--rtp-ip", "127.0.0.1", "--rtp-ports", f"{low}-{low + 198}",
        "--max-calls-per-account", "40", "--drain-grace", "0",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{api}/v1/Calls"
    async with (
        turnpike(args, ready_url=f"http://127.0.0.1:{metrics}/ready"),
        aiohttp.ClientSession() as http,
    ):

        async def place(account: str, token: str) -> tuple[int, Any]:
            headers = {"Authorization": basic(account, token)}
            async with http.post(base, json=call_body(account), headers=headers) as resp:
                return resp.status, await resp.json()

        flooding = asyncio.gather(*(place(ACCOUNT, TOKEN) for _ in range(50)))
        started = time.perf_counter()
        status, out = await place(OTHER, OTHER_TOKEN)  # while the flood is in flight
        latency = (time.perf_counter() - started) * 1000
        print(f"other account's call started in {latency:.1f} ms during a 50-call flood")
        assert status == 201, out
        flood = await flooding
        assert sorted(status for status, _ in flood) == [201] * 40 + [429] * 10
        assert_hosted(next(out for status, out in flood if status == 429), 429, 20429)
        status, out = await place(OTHER, OTHER_TOKEN)  # and next to 40 calls at the cap
        assert status == 201, out
        async with http.get(f"http://127.0.0.1:{metrics}/metrics") as resp:
            text = await resp.text()
        assert 'turnpike_streamgw_calls_refused_total{reason="account"} 10.0' in text
        assert "turnpike_streamgw_active_calls 42.0" in text
