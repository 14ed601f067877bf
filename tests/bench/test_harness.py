"""Fast checks of the benchmark harness's own pieces (no servers, no timing assertions)."""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from typing import Any

from bench import stun
from bench.common import cpu_seconds, machine, percentile, process_tree
from bench.relay import RelayParams, search_max_rate


def test_stun_request_integrity_and_parse() -> None:
    creds = stun.rest_credentials("s3cret", "alice", ttl=60)
    creds.realm, creds.nonce = "bench", b"n0nce"
    msg = stun.build(
        stun.ALLOCATE, stun.REQUEST, [(stun.REQUESTED_TRANSPORT, stun.UDP_TRANSPORT)], creds
    )
    parsed = stun.parse(msg)
    assert (parsed.method, parsed.klass) == (stun.ALLOCATE, stun.REQUEST)
    assert struct.unpack_from("!H", msg, 2)[0] == len(msg) - 20
    assert parsed.attrs[stun.USERNAME] == creds.username.encode()
    # MESSAGE-INTEGRITY covers everything before it, with the length field ending after it;
    # FINGERPRINT follows it and covers the whole message before it
    mi_at = len(msg) - 8 - 24
    head = msg[:2] + struct.pack("!H", mi_at + 24 - 20) + msg[4:mi_at]
    mac = hmac.new(creds.key, head, hashlib.sha1).digest()
    assert parsed.attrs[stun.MESSAGE_INTEGRITY] == mac
    crc = (zlib.crc32(msg[:-8]) ^ 0x5354554E) & 0xFFFFFFFF
    assert parsed.attrs[stun.FINGERPRINT] == crc.to_bytes(4, "big")


def test_rest_password_matches_the_core_contract() -> None:
    from turnpike.core.credentials import turn_password

    creds = stun.rest_credentials("s3cret", "bob")
    assert creds.password == turn_password("s3cret", creds.username)


def test_xor_address_round_trip_and_channel_data_padding() -> None:
    addr = ("127.0.0.1", 50000)
    assert stun.parse_xor_address(stun.xor_address(addr)) == addr
    assert len(stun.channel_data(0x4000, b"abc", stream=True)) == 8
    assert len(stun.channel_data(0x4000, b"abc")) == 7


def test_rate_search_brackets_and_bisects() -> None:
    limit = 37_000.0
    seen: list[float] = []

    def trial(rate: float) -> dict[str, Any]:
        seen.append(rate)
        return {"rate": rate, "pass": rate <= limit}

    params = RelayParams(start_rate=10_000, max_trials=12, resolution=1.05)
    best, trials = search_max_rate(trial, params, None)
    assert len(trials) == len(seen) <= 12
    assert best <= limit < best * 1.05
    best2, trials2 = search_max_rate(trial, params, hint=best)
    assert best2 <= limit and len(trials2) < len(trials)


def test_rate_search_never_passing_reports_zero() -> None:
    params = RelayParams(start_rate=1000, max_trials=4)
    best, trials = search_max_rate(lambda r: {"rate": r, "pass": False}, params, None)
    assert best == 0 and len(trials) <= 4


def test_percentile_and_machine_facts() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    m = machine()
    for key in ("date", "cores", "cpu_model", "kernel", "python", "uvloop"):
        assert key in m


def test_cpu_accounting_reads_this_process() -> None:
    import os

    me = os.getpid()
    assert me in process_tree(me)
    assert cpu_seconds([me]) > 0
