"""Credentials customers put in URLs (query strings, user-info) never reach a log line."""

from __future__ import annotations

import asyncio
import logging

import pytest
from support import free_port
from support.media import HttpServer, RtpPeer, WsServer
from support.streamgw import Harness

from turnpike.streamgw.egress import redact

SECRET = "s3cr3t-value"


def test_redact_keeps_the_destination_and_drops_credentials() -> None:
    assert redact("wss://h:8443/ws?token=abc#f") == "wss://h:8443/ws?[redacted]"
    assert redact("https://user:pw@h/cb") == "https://h/cb"
    assert redact("https://user:pw@h") == "https://h"
    assert redact("https://h/a.wav") == "https://h/a.wav"
    assert redact("relative/path?x=1") == "relative/path?[redacted]"
    assert redact("") == ""


async def test_urls_with_credentials_are_redacted_in_logs_and_errors(
    gw: Harness, ws: WsServer, http: HttpServer, peer: RtpPeer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="turnpike")
    closed = free_port()
    doc = (
        "<Response>"
        f'<Start><Stream url="{ws.url("/q")}?token={SECRET}"/></Start>'
        f'<Start><Stream url="ws://user:{SECRET}@127.0.0.1/x?token={SECRET}"/></Start>'
        f"<Play>https://user:{SECRET}@127.0.0.1:{closed}/a.wav?sig={SECRET}</Play>"
        f"<Play>{http.url('/missing.wav')}?sig={SECRET}</Play>"
        '<Pause length="60"/></Response>'
    )
    created = await gw.create_call(peer, twiml=doc)
    conn = await ws.accept()
    await conn.next("start")
    async with asyncio.timeout(15):
        while True:
            call = await gw.call(created["sid"])
            codes = [e["code"] for e in call["errors"]]
            if {31922, 11200, 12300} <= set(codes):
                break
            await asyncio.sleep(0.05)
    messages = " | ".join(e["message"] for e in call["errors"])
    assert "127.0.0.1/x?[redacted]" in messages and "/a.wav?[redacted]" in messages
    assert SECRET not in messages
    hook = await gw.create_call(peer, url=f"https://user:{SECRET}@127.0.0.1:{closed}/v?k={SECRET}")
    failed = await gw.wait_status(hook["sid"])
    assert failed["errors"][0]["code"] == 11200 and SECRET not in failed["errors"][0]["message"]
    await gw.hangup(created["sid"])
    await conn.wait_closed()
    assert "dropping query string" in caplog.text and "<Play>" in caplog.text
    assert SECRET not in caplog.text
