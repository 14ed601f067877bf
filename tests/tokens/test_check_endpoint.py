"""The check page's same-origin endpoint and the static page itself, over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tokens.helpers import ACCOUNT, KEY_SECRET, KEY_SID, SECRET_K1, TOKEN, Api, ApiFactory

from turnpike.core.credentials import parse_username, turn_password


async def check(api: Api, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
    raw = isinstance(body, bytes) or content_type != "application/json"
    data = body if raw else json.dumps(body)
    async with api.session.post(
        f"{api.base}/check/ice-servers", data=data, headers={"Content-Type": content_type}
    ) as resp:
        assert "WWW-Authenticate" not in resp.headers  # no browser login dialog
        assert resp.headers["Cache-Control"] == "no-store"
        return resp.status, await resp.json()


async def test_gives_one_credential_for_every_edge(make_api: ApiFactory) -> None:
    api = await make_api()
    status, body = await check(api, {"accountSid": ACCOUNT, "authToken": TOKEN})
    assert status == 200
    assert body["account_sid"] == ACCOUNT
    assert body["ttl"] == "600"
    assert [(e["name"], e["location"]) for e in body["edges"]] == [
        ("global", ""),
        ("ashburn", "US East Coast (Virginia)"),
        ("lab", ""),
    ]
    first = body["edges"][0]["ice_servers"][1]
    assert parse_username(first["username"]).expiry == 1_700_000_000 + 600
    assert first["credential"] == turn_password(SECRET_K1, first["username"])
    assert body["edges"][2]["ice_servers"][2]["urls"] == "turn:192.0.2.10:13479?transport=tcp"
    assert api.metric("turnpike_tokens_issued_total", endpoint="check") == 1


async def test_api_key_works_and_secret_is_not_echoed(make_api: ApiFactory) -> None:
    api = await make_api()
    status, body = await check(api, {"accountSid": KEY_SID, "authToken": KEY_SECRET})
    assert status == 200
    assert body["account_sid"] == ACCOUNT
    assert KEY_SECRET not in str(body)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"accountSid": ACCOUNT, "authToken": "nope"}, 401),
        ({"accountSid": ACCOUNT}, 400),
        ({"dev": True}, 401),  # no dev account configured
        (["not", "an", "object"], 400),
    ],
)
async def test_refusals(make_api: ApiFactory, body: Any, status: int) -> None:
    api = await make_api()
    got, answer = await check(api, body)
    assert got == status
    assert sorted(answer) == ["code", "message", "more_info", "status"]
    assert answer["status"] == status


async def test_form_posts_are_refused(make_api: ApiFactory) -> None:
    """A cross-site HTML form can only send form or text bodies; those never get credentials."""
    api = await make_api()
    form = f"accountSid={ACCOUNT}&authToken={TOKEN}"
    status, body = await check(api, form, "application/x-www-form-urlencoded")
    assert status == 400
    assert body["code"] == 20001
    status, _ = await check(api, form, "text/plain")
    assert status == 400


async def test_get_is_405(make_api: ApiFactory) -> None:
    api = await make_api()
    async with api.session.get(f"{api.base}/check/ice-servers") as resp:
        assert resp.status == 405


async def test_dev_account_needs_no_token(make_api: ApiFactory) -> None:
    api = await make_api(dev_account=ACCOUNT)
    async with api.session.get(f"{api.base}/check/config") as resp:
        config = await resp.json()
    assert config["dev"] is True
    assert [e["name"] for e in config["edges"]] == ["global", "ashburn", "lab"]
    status, body = await check(api, {"dev": True})
    assert status == 200
    assert body["account_sid"] == ACCOUNT


async def test_rate_limit_applies(make_api: ApiFactory) -> None:
    api = await make_api(per_minute=1, burst=1)
    assert (await check(api, {"accountSid": ACCOUNT, "authToken": TOKEN}))[0] == 200
    status, body = await check(api, {"accountSid": ACCOUNT, "authToken": TOKEN})
    assert status == 429
    assert body["code"] == 20429


async def test_page_and_assets_are_self_contained(make_api: ApiFactory) -> None:
    api = await make_api()
    async with api.session.get(f"{api.base}/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        html = await resp.text()
    assert "ICE servers check" in html
    assert "http://" not in html
    assert "https://" not in html
    for asset, kind in (("check.js", "text/javascript"), ("check.css", "text/css")):
        async with api.session.get(f"{api.base}/{asset}") as resp:
            assert resp.status == 200
            assert resp.content_type == kind
            text = await resp.text()
            assert "http://" not in text and "https://" not in text
            assert "localStorage" not in text and "sessionStorage" not in text
    async with api.session.get(f"{api.base}/favicon.ico") as resp:
        assert resp.status == 204


async def test_unreadable_json_body_is_400(make_api: ApiFactory) -> None:
    api = await make_api()
    for content_type, data in (
        ("application/json; charset=bogus", b"{}"),
        ("application/json", b'{"accountSid": "\xff"}'),
        ("application/json", b"{not json"),
    ):
        status, body = await check(api, data, content_type)
        assert status == 400
        assert body["code"] == 20001
    assert api.metric("turnpike_tokens_failures_total", reason="error") == 0
