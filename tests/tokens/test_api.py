"""The Tokens.json contract, over real HTTP on loopback."""

from __future__ import annotations

import logging
import re
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
from tokens.helpers import (
    ACCOUNT,
    KEY_SECRET,
    KEY_SID,
    OTHER,
    OTHER_TOKEN,
    SECRET_K1,
    SECRET_K2,
    TOKEN,
    Api,
    ApiFactory,
    accounts_doc,
    basic,
    keyring_doc,
    write_json,
)

from turnpike.core.credentials import parse_username, turn_password

ERROR_KEYS = ["code", "message", "more_info", "status"]
AUTH = basic(ACCOUNT, TOKEN)
RFC2822 = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000")


async def post(
    api: Api,
    data: dict[str, str] | None = None,
    auth: str | None = AUTH,
    sid: str = ACCOUNT,
) -> tuple[int, Any, Any]:
    headers = {"Authorization": auth} if auth else {}
    async with api.session.post(api.tokens_url(sid), data=data or {}, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


def assert_error(body: Any, status: int, code: int) -> None:
    assert sorted(body) == ERROR_KEYS
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"


async def test_201_has_exactly_the_hosted_shape(make_api: ApiFactory) -> None:
    api = await make_api()
    status, body, headers = await post(api, {"Ttl": "3600"})
    assert status == 201
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert sorted(body) == [
        "account_sid",
        "date_created",
        "date_updated",
        "ice_servers",
        "password",
        "ttl",
        "username",
    ]
    assert body["account_sid"] == ACCOUNT
    assert body["ttl"] == "3600"
    assert RFC2822.fullmatch(body["date_created"])
    assert body["date_updated"] == body["date_created"]
    assert parsedate_to_datetime(body["date_created"]).timestamp() == 1_700_000_000

    username, password = body["username"], body["password"]
    parsed = parse_username(username)
    assert parsed.expiry == 1_700_000_000 + 3600
    account, token_id = parsed.user.split(":")
    assert account == ACCOUNT
    assert re.fullmatch(r"[0-9a-f]{16}", token_id)
    assert password == turn_password(SECRET_K1, username)

    host = "global.turn.example.org"
    assert body["ice_servers"] == [
        {"url": f"stun:{host}:3478", "urls": f"stun:{host}:3478"},
        *(
            {"url": u, "urls": u, "username": username, "credential": password}
            for u in (
                f"turn:{host}:3478?transport=udp",
                f"turn:{host}:3478?transport=tcp",
                f"turn:{host}:443?transport=tcp",
            )
        ),
    ]
    for entry in body["ice_servers"]:
        assert all(isinstance(v, str) for v in entry.values())


async def test_every_token_is_distinct(make_api: ApiFactory) -> None:
    api = await make_api()
    names = set()
    for _ in range(5):
        status, body, _ = await post(api)
        assert status == 201
        names.add(body["username"])
    assert len(names) == 5


@pytest.mark.parametrize(("sent", "expected"), [(None, 86400), ("1", 1), ("86400", 86400)])
async def test_ttl_default_and_bounds(
    make_api: ApiFactory, sent: str | None, expected: int
) -> None:
    api = await make_api()
    status, body, _ = await post(api, {} if sent is None else {"Ttl": sent})
    assert status == 201
    assert body["ttl"] == str(expected)
    assert parse_username(body["username"]).expiry == 1_700_000_000 + expected


@pytest.mark.parametrize("bad", ["0", "86401", "-5", "abc", "1.5", "1e3", "99999999999"])
async def test_bad_ttl_is_400(make_api: ApiFactory, bad: str) -> None:
    api = await make_api()
    status, body, _ = await post(api, {"Ttl": bad})
    assert status == 400
    assert_error(body, 400, 20001)
    assert "Ttl" in body["message"]
    assert api.metric("turnpike_tokens_failures_total", reason="bad_request") == 1


async def test_api_key_authenticates_for_its_account(make_api: ApiFactory) -> None:
    api = await make_api()
    status, body, _ = await post(api, auth=basic(KEY_SID, KEY_SECRET))
    assert status == 201
    assert body["account_sid"] == ACCOUNT
    assert parse_username(body["username"]).user.startswith(ACCOUNT + ":")


@pytest.mark.parametrize(
    "auth",
    [
        None,
        basic(ACCOUNT, "wrong-token"),
        basic(ACCOUNT, ""),
        basic(KEY_SID, TOKEN),
        basic("AC" + "9" * 32, TOKEN),
    ],
    ids=["missing", "wrong", "empty", "key-with-account-token", "unknown-user"],
)
async def test_bad_credentials_are_401_with_challenge(
    make_api: ApiFactory, auth: str | None
) -> None:
    api = await make_api()
    status, body, headers = await post(api, auth=auth)
    assert status == 401
    assert_error(body, 401, 20003)
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    assert api.metric("turnpike_tokens_failures_total", reason="unauthenticated") == 1


@pytest.mark.parametrize(
    "header", ["Bearer abc", "Basic !!!notbase64", "Basic " + "bm9jb2xvbg=="], ids=str
)
async def test_malformed_authorization_is_401(make_api: ApiFactory, header: str) -> None:
    api = await make_api()
    async with api.session.post(api.tokens_url(), headers={"Authorization": header}) as resp:
        assert resp.status == 401
        assert_error(await resp.json(), 401, 20003)
        assert "WWW-Authenticate" in resp.headers


async def test_another_accounts_url_is_403(make_api: ApiFactory) -> None:
    api = await make_api()
    status, body, _ = await post(api, sid=OTHER)
    assert status == 403
    assert_error(body, 403, 20403)
    status, body, _ = await post(api, sid=ACCOUNT, auth=basic(OTHER, OTHER_TOKEN))
    assert status == 403


@pytest.mark.parametrize("sid", ["AC" + "a" * 32, "ACnot-a-sid", "SK" + "f" * 32])
async def test_unknown_account_in_url_is_404(make_api: ApiFactory, sid: str) -> None:
    api = await make_api()
    status, body, _ = await post(api, sid=sid)
    assert status == 404
    assert_error(body, 404, 20404)
    assert f"/2010-04-01/Accounts/{sid}/Tokens.json" in body["message"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(make_api: ApiFactory, method: str) -> None:
    api = await make_api()
    async with api.session.request(
        method, api.tokens_url(), headers={"Authorization": AUTH}
    ) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert_error(await resp.json(), 405, 20004)


@pytest.mark.parametrize("resource", ["Calls.json", "Tokens", "Tokens.xml"])
async def test_unknown_path_is_404_in_hosted_shape(make_api: ApiFactory, resource: str) -> None:
    """Only the JSON form of the token resource exists; the legacy XML forms are 404."""
    api = await make_api()
    url = f"{api.base}/2010-04-01/Accounts/{ACCOUNT}/{resource}"
    async with api.session.post(url, headers={"Authorization": AUTH}) as resp:
        assert resp.status == 404
        assert_error(await resp.json(), 404, 20404)


async def test_edge_parameter_pins_an_edge(make_api: ApiFactory) -> None:
    api = await make_api()
    status, body, _ = await post(api, {"Edge": "lab"})
    assert status == 201
    assert [s["urls"] for s in body["ice_servers"]] == [
        "stun:192.0.2.10:13478",
        "turn:192.0.2.10:13478?transport=udp",
        "turn:192.0.2.10:13479?transport=tcp",
        "turn:192.0.2.10:10443?transport=tcp",
    ]
    status, body, _ = await post(api, {"Edge": "ashburn"})
    assert body["ice_servers"][1]["urls"] == "turn:ashburn.turn.example.org:3478?transport=udp"
    status, body, _ = await post(api, {"Edge": "atlantis"})
    assert status == 400
    assert_error(body, 400, 20001)


async def test_rate_limit_per_account_is_429(make_api: ApiFactory) -> None:
    now = [0.0]
    api = await make_api(per_minute=60, burst=3, limiter_clock=lambda: now[0])
    for _ in range(3):
        assert (await post(api))[0] == 201
    status, body, headers = await post(api)
    assert status == 429
    assert_error(body, 429, 20429)
    assert headers["Retry-After"] == "1"
    # another account has its own budget
    assert (await post(api, sid=OTHER, auth=basic(OTHER, OTHER_TOKEN)))[0] == 201
    now[0] += 1.0  # one request a second comes back
    assert (await post(api))[0] == 201
    assert (await post(api))[0] == 429
    assert api.metric("turnpike_tokens_failures_total", reason="rate_limited") == 2
    assert api.metric("turnpike_tokens_issued_total", endpoint="api") == 5


async def test_accounts_reload(make_api: ApiFactory) -> None:
    api = await make_api()
    new_sid = "AC" + "2" * 32
    assert (await post(api, sid=new_sid, auth=basic(new_sid, "fresh")))[0] == 401
    write_json(api.accounts_file, accounts_doc({"sid": new_sid, "authToken": "fresh"}))
    assert api.accounts.check()
    status, body, _ = await post(api, sid=new_sid, auth=basic(new_sid, "fresh"))
    assert status == 201
    assert body["account_sid"] == new_sid
    # a broken file is ignored and the last good version stays in force
    api.accounts_file.write_text("{not json")
    assert not api.accounts.check()
    assert (await post(api, sid=new_sid, auth=basic(new_sid, "fresh")))[0] == 201
    # removing the account revokes its access to new tokens
    write_json(api.accounts_file, accounts_doc())
    assert api.accounts.check()
    assert (await post(api, sid=new_sid, auth=basic(new_sid, "fresh")))[0] == 401


async def test_keyring_reload_switches_the_signing_key(make_api: ApiFactory) -> None:
    api = await make_api()
    async with api.session.get(f"{api.base}/ready") as resp:
        assert await resp.json() == {
            "ready": True,
            "keys": ["k1"],
            "signing": "k1",
            "edges": ["global", "ashburn", "lab"],
        }
    write_json(api.keyring_file, keyring_doc(("k1", SECRET_K1, False), ("k2", SECRET_K2, True)))
    assert api.keyring.check()
    status, body, _ = await post(api)
    assert status == 201
    assert body["password"] == turn_password(SECRET_K2, body["username"])
    async with api.session.get(f"{api.base}/ready") as resp:
        ready = await resp.json()
        assert ready["keys"] == ["k1", "k2"]
        assert ready["signing"] == "k2"
    # a keyring with two signing keys is refused; k2 keeps signing
    write_json(api.keyring_file, keyring_doc(("k1", SECRET_K1, True), ("k3", "x", True)))
    assert not api.keyring.check()
    status, body, _ = await post(api)
    assert body["password"] == turn_password(SECRET_K2, body["username"])


async def test_edges_reload(make_api: ApiFactory) -> None:
    api = await make_api()
    assert (await post(api, {"Edge": "dublin"}))[0] == 400
    write_json(
        api.edges_file,
        {"global": {"host": "turn.example.net"}, "edges": [{"name": "dublin", "host": "d.ex"}]},
    )
    assert api.edges.check()
    status, body, _ = await post(api, {"Edge": "dublin"})
    assert status == 201
    assert body["ice_servers"][3]["urls"] == "turn:d.ex:443?transport=tcp"
    status, body, _ = await post(api)
    assert body["ice_servers"][0]["urls"] == "stun:turn.example.net:3478"


async def test_metrics_and_health(make_api: ApiFactory) -> None:
    api = await make_api()
    await post(api)
    await post(api, auth=None)
    async with api.session.get(f"{api.base}/metrics") as resp:
        text = await resp.text()
    assert 'turnpike_tokens_issued_total{endpoint="api"} 1.0' in text
    assert 'turnpike_tokens_failures_total{reason="unauthenticated"} 1.0' in text
    assert 'turnpike_tokens_request_duration_seconds_count{endpoint="api"} 2.0' in text
    async with api.session.get(f"{api.base}/live") as resp:
        assert resp.status == 200


async def test_not_ready_while_draining(make_api: ApiFactory) -> None:
    draining = [False]
    api = await make_api(ready=lambda: not draining[0])
    async with api.session.get(f"{api.base}/ready") as resp:
        assert resp.status == 200
    draining[0] = True
    async with api.session.get(f"{api.base}/ready") as resp:
        assert resp.status == 503
        assert (await resp.json())["signing"] == "k1"


async def test_no_secret_reaches_logs_or_errors(
    make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api()
    caplog.set_level(logging.DEBUG)
    status, body, _ = await post(api)
    assert status == 201
    password = body["password"]
    bodies = []
    for data, auth in [
        ({"Ttl": TOKEN}, AUTH),
        ({}, basic(ACCOUNT, TOKEN + "x")),
        ({"Edge": KEY_SECRET}, AUTH),
    ]:
        bodies.append(str((await post(api, data, auth))[1]))
    logged = caplog.text
    assert "issued token" in logged
    for secret in (TOKEN, KEY_SECRET, SECRET_K1, password):
        assert secret not in logged
        assert all(secret not in b for b in bodies)


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/x-www-form-urlencoded; charset=bogus", b"Ttl=60"),
        ("application/x-www-form-urlencoded", b"Ttl=\xff"),
        ("application/x-www-form-urlencoded; charset=utf-16", b"Ttl=600"),
        ("multipart/form-data", b"Ttl=60"),
        ("multipart/form-data; boundary=zz", b"--zz\r\ngarbage\r\n\r\n60\r\n--zz--\r\n"),
        (
            "multipart/form-data; boundary=zz",
            b"--zz\r\nContent-Transfer-Encoding: bogus\r\n"
            b"Content-Disposition: form-data; name=Ttl\r\n\r\n60\r\n--zz--\r\n",
        ),
    ],
    ids=[
        "unknown-charset",
        "not-utf8",
        "odd-utf16",
        "no-boundary",
        "broken-part",
        "unknown-transfer-encoding",
    ],
)
async def test_unreadable_body_is_400_not_500(
    make_api: ApiFactory, caplog: pytest.LogCaptureFixture, content_type: str, data: bytes
) -> None:
    api = await make_api()
    headers = {"Authorization": AUTH, "Content-Type": content_type}
    async with api.session.post(api.tokens_url(), data=data, headers=headers) as resp:
        assert resp.status == 400
        assert_error(await resp.json(), 400, 20001)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert api.metric("turnpike_tokens_failures_total", reason="bad_request") == 1
    assert api.metric("turnpike_tokens_failures_total", reason="error") == 0


async def test_body_over_the_size_limit_is_413_not_400(make_api: ApiFactory) -> None:
    # aiohttp's own answer to an oversized body passes through the body reader untouched.
    api = await make_api()
    headers = {"Authorization": AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    data = b"Ttl=60&Pad=" + b"x" * (2 * 1024 * 1024)
    async with api.session.post(api.tokens_url(), data=data, headers=headers) as resp:
        assert resp.status == 413
        assert_error(await resp.json(), 413, 20413)  # in the hosted shape, like every error
    assert api.metric("turnpike_tokens_failures_total", reason="bad_request") == 0
    assert api.metric("turnpike_tokens_failures_total", reason="too_large") == 1


async def test_edge_sent_as_a_file_is_400(make_api: ApiFactory) -> None:
    api = await make_api()
    form = aiohttp.FormData()
    form.add_field("Edge", b"ashburn", filename="edge.txt")
    async with api.session.post(
        api.tokens_url(), data=form, headers={"Authorization": AUTH}
    ) as resp:
        assert resp.status == 400
        assert_error(await resp.json(), 400, 20001)
    # a plain multipart field is an ordinary parameter
    form = aiohttp.FormData()
    form.add_field("Edge", "ashburn")
    form.add_field("Ttl", "60")
    async with api.session.post(
        api.tokens_url(), data=form, headers={"Authorization": AUTH}
    ) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert body["ttl"] == "60"
    assert body["ice_servers"][1]["urls"] == "turn:ashburn.turn.example.org:3478?transport=udp"
