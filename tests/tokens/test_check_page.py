"""The ICE servers check page in real headless Chromium.

One browser serves the whole module. Selenium blocks, so it runs in a thread while the event loop
serves the app under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from support import free_dual_port
from support.browser import chromium
from tokens.helpers import ACCOUNT, TOKEN, ApiFactory, write_json
from tokens.page import run_check

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
    assert outcome.summary.startswith(
        "Nothing works: this browser could not get a relay candidate from any edge"
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
