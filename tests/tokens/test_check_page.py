"""The ICE servers check page in real headless Chromium.

One browser serves the whole module. Selenium blocks, so it runs in a thread while the event loop
serves the app under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import free_dual_port
from support.browser import chromium
from tokens.helpers import ACCOUNT, TOKEN, ApiFactory, write_json
from tokens.page import run_check
from tokens.relay import run_relay

pytestmark = [pytest.mark.interop]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


async def test_wrong_token_says_so_and_checks_nothing(make_api: ApiFactory, browser: Any) -> None:
    api = await make_api()
    outcome = await asyncio.to_thread(run_check, browser, api.base + "/", ACCOUNT, "not-it")
    assert outcome.summary == (
        "The account SID or token was not accepted, so no ICE servers were issued."
    )
    assert outcome.rows == []


async def test_nothing_works_is_said_plainly(make_api: ApiFactory, browser: Any) -> None:
    """No relay listens where the edges file points: every row fails and the page says so."""
    api = await make_api()
    dead = free_dual_port()  # nothing listens here, over UDP or TCP
    write_json(
        api.edges_file,
        {
            "global": {"host": "127.0.0.1", "ports": {"udp": dead, "tcp": dead, "tls": dead}},
            "edges": [
                {
                    "name": "lab",
                    "location": "Test bench",
                    "host": "127.0.0.1",
                    "ports": {"udp": dead, "tcp": dead, "tls": dead},
                }
            ],
        },
    )
    assert api.edges.check()
    outcome = await asyncio.to_thread(run_check, browser, api.base + "/?timeout=2", ACCOUNT, TOKEN)
    assert outcome.summary == (
        "Nothing works: this browser could not get a relay candidate from any edge on any "
        "transport. Calls that need a relay will fail from this network. Check that "
        f"UDP {dead} and TCP {dead} to the relay hosts are allowed from here and that the relays "
        "are running."
    )
    assert [row[:2] for row in outcome.rows] == [
        ["global", f"UDP {dead}"],
        ["global", f"TCP {dead}"],
        ["global", f"TCP {dead}"],
        ["lab (Test bench)", f"UDP {dead}"],
        ["lab (Test bench)", f"TCP {dead}"],
        ["lab (Test bench)", f"TCP {dead}"],
    ]
    for row in outcome.rows:
        assert row[2] == "Not gathered"
        assert row[3] == "—"
        assert row[4]  # a reason is always given
    tcp = outcome.row("lab", f"TCP {dead}")
    assert "No answer from the relay" in tcp[4]
    # the token went out in one POST body: not into the address bar, not into storage
    assert outcome.url == api.base + "/?timeout=2"
    assert outcome.stored == 0


@pytest.mark.e2e
async def test_gathers_relay_candidates_from_a_real_relay(
    make_api: ApiFactory, browser: Any
) -> None:
    """The development account button, a real relay, every path works."""
    api = await make_api(clock=time.time, dev_account=ACCOUNT)
    async with run_relay(api.keyring_file) as relay:
        write_json(api.edges_file, relay.edges_doc())
        assert api.edges.check()
        outcome = await asyncio.to_thread(run_check, browser, api.base + "/?timeout=5")
    assert outcome.summary == "All 6 relay paths work from this browser.", outcome.console
    assert [row[:3] for row in outcome.rows] == [
        [edge, transport, "Gathered"]
        for edge in ("global", "lab (Test bench)")
        for transport in (f"UDP {relay.port}", f"TCP {relay.port}", f"TCP {relay.second_port}")
    ]
    for row in outcome.rows:
        assert row[3].endswith(" ms") and row[3][:-3].isdigit()
        host, port = row[4].removeprefix("relay address ").rsplit(":", 1)
        assert host == "127.0.0.1"
        assert 20000 <= int(port) <= 39999


@pytest.mark.e2e
async def test_some_paths_work_and_the_page_says_which(make_api: ApiFactory, browser: Any) -> None:
    """A person types the SID and token; one edge's relay is down, the other is fine."""
    api = await make_api(clock=time.time)
    dead = free_dual_port()
    async with run_relay(api.keyring_file) as relay:
        doc = relay.edges_doc()
        doc["edges"].append(
            {"name": "down", "host": "127.0.0.1", "ports": {"udp": dead, "tcp": dead, "tls": dead}}
        )
        write_json(api.edges_file, doc)
        assert api.edges.check()
        outcome = await asyncio.to_thread(
            run_check, browser, api.base + "/?timeout=2", ACCOUNT, TOKEN
        )
    assert outcome.summary.startswith("6 of 9 relay paths work from this browser: "), outcome
    assert f"global UDP {relay.port}" in outcome.summary
    assert outcome.row("global", f"TCP {relay.second_port}")[2] == "Gathered"
    assert outcome.row("lab", f"UDP {relay.port}")[2] == "Gathered"
    for transport in (f"UDP {dead}", f"TCP {dead}"):
        row = outcome.row("down", transport)
        assert row[2:4] == ["Not gathered", "—"]
