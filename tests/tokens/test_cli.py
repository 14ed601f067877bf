"""`turnpike tokens` as a real child process: flags, files, reload, health, SIGTERM."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from support import TurnpikeProcess, free_port, turnpike
from tokens.helpers import (
    ACCOUNT,
    EDGES_DOC,
    SECRET_K1,
    SECRET_K2,
    TOKEN,
    accounts_doc,
    basic,
    keyring_doc,
    write_json,
)

from turnpike.core.credentials import turn_password


def files(tmp_path: Path) -> list[str]:
    return [
        "--keyring",
        str(write_json(tmp_path / "keyring.json", keyring_doc())),
        "--accounts",
        str(write_json(tmp_path / "accounts.json", accounts_doc())),
        "--edges",
        str(write_json(tmp_path / "edges.json", EDGES_DOC)),
    ]


async def wait_signing(session: aiohttp.ClientSession, url: str, key: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        async with session.get(url) as resp:
            if (await resp.json())["signing"] == key:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never reported signing key {key}")


async def test_serves_reloads_and_stops_cleanly(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    args = [
        "tokens",
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics",
        f"127.0.0.1:{metrics}",
        "--reload-interval",
        "0.1",
        *files(tmp_path),
    ]
    ready = f"http://127.0.0.1:{metrics}/ready"
    async with turnpike(args, ready_url=ready) as proc, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/2010-04-01/Accounts/{ACCOUNT}/Tokens.json"
        auth = {"Authorization": basic(ACCOUNT, TOKEN)}
        async with session.post(url, data={"Ttl": "60"}, headers=auth) as resp:
            assert resp.status == 201
            body = await resp.json()
        assert body["password"] == turn_password(SECRET_K1, body["username"])
        # health lives on the metrics address only
        async with session.get(f"http://127.0.0.1:{port}/ready") as resp:
            assert resp.status == 404
        async with session.get(f"http://127.0.0.1:{metrics}/metrics") as resp:
            assert 'turnpike_tokens_issued_total{endpoint="api"} 1.0' in await resp.text()

        write_json(
            tmp_path / "keyring.json",
            keyring_doc(("k1", SECRET_K1, False), ("k2", SECRET_K2, True)),
        )
        await wait_signing(session, ready, "k2")
        async with session.post(url, headers=auth) as resp:
            body = await resp.json()
        assert body["password"] == turn_password(SECRET_K2, body["username"])
        code = await proc.stop()
    assert code == 0
    for secret in (TOKEN, SECRET_K1, SECRET_K2, body["password"]):
        assert secret not in proc.text
    assert "reloaded" in proc.text


async def test_refuses_to_start_on_a_broken_file(tmp_path: Path) -> None:
    args = files(tmp_path)
    (tmp_path / "accounts.json").write_text('{"accounts": [{"sid": "nope"}]}')
    proc = TurnpikeProcess(["tokens", "--listen", f"127.0.0.1:{free_port()}", *args])
    await proc.start()
    assert proc.proc is not None
    code = await asyncio.wait_for(proc.proc.wait(), 20)
    await proc.stop()
    assert code == 2
    assert "accounts.json" in proc.text
    assert '$.accounts[0].sid: expected AC followed by 32 hex digits, found "nope"' in proc.text


async def test_flags_from_the_environment(tmp_path: Path) -> None:
    args = files(tmp_path)
    port = free_port()
    env = {"TURNPIKE_KEYRING": args[1], "TURNPIKE_LISTEN": f"127.0.0.1:{port}"}
    async with turnpike(["tokens", *args[2:]], ready_url=f"http://127.0.0.1:{port}/ready", env=env):
        pass
