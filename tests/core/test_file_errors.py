"""Broken keyring, accounts, edges and numbers files, refused by the commands that load them.

Every message has one shape, ``<file>: <JSON path>: expected …, found …``, and none quotes a
secret: not a keyring secret, an auth token, an API key secret or a SIP password.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ACCOUNT = "AC" + "0123456789abcdef" * 2
GOOD: dict[str, Any] = {
    "keyring": {"keys": [{"id": "k1", "secret": "keyring-secret-1", "signing": True}]},
    "accounts": {"accounts": [{"sid": ACCOUNT, "authToken": "auth-token-1"}]},
    "edges": {"global": {"host": "turn.example.org"}},
    "numbers": {
        "numbers": [{"number": "+15550002222", "accountSid": ACCOUNT, "twiml": "<Response/>"}]
    },
}


def refused(tmp_path: Path, kind: str, doc: Any) -> tuple[Path, str]:
    """Start the command that loads a ``kind`` file holding ``doc`` (every other file good);
    it must refuse to start with one line and no traceback. The file and what it printed."""
    path = {name: tmp_path / f"{name}.json" for name in GOOD}
    for name, good in GOOD.items():
        path[name].write_text(json.dumps(doc if name == kind else good))
    listen = ("--listen", "127.0.0.1:0")
    tokens = ["tokens", *listen, "--keyring", path["keyring"], "--accounts", path["accounts"]]
    command = {
        "keyring": ["relay", *listen, "--keyring", path["keyring"]],
        "accounts": [*tokens, "--edges", path["edges"]],
        "edges": [*tokens, "--edges", path["edges"]],
        "numbers": [
            *("streamgw", *listen, "--rtp-ip", "127.0.0.1", "--accounts", path["accounts"]),
            *("--numbers", path["numbers"]),
        ],
    }[kind]
    out = subprocess.run(
        [sys.executable, "-m", "turnpike", *map(str, command)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr, out.stderr
    return path[kind], out.stderr


def with_key(**fields: Any) -> dict[str, Any]:
    return {"keys": [{"id": "k1", "secret": "keyring-secret-1", "signing": True, **fields}]}


def with_account(**fields: Any) -> dict[str, Any]:
    return {"accounts": [{"sid": ACCOUNT, "authToken": "auth-token-1", **fields}]}


def with_edge(**fields: Any) -> dict[str, Any]:
    return {"global": {"host": "turn.example.org"}, "edges": [{"name": "a", "host": "a", **fields}]}


def with_number(**fields: Any) -> dict[str, Any]:
    entry = {"number": "+15550002222", "accountSid": ACCOUNT, "twiml": "<Response/>", **fields}
    return {"numbers": [{k: v for k, v in entry.items() if v is not None}]}


@pytest.mark.parametrize(
    ("kind", "doc", "message"),
    [
        # a wrong type
        (
            "keyring",
            with_key(signing="yes"),
            '$.keys[0].signing: expected true or false, found "yes"',
        ),
        (
            "accounts",
            with_account(apiKeys={"sid": "SK1"}),
            "$.accounts[0].apiKeys: expected an array, found an object",
        ),
        (
            "edges",
            with_edge(ports={"tls": "443"}),
            '$.edges[0].ports.tls: expected an integer from 1 to 65535, found "443"',
        ),
        (
            "numbers",
            with_number(number=15550002222),
            '$.numbers[0].number: expected an E.164 number such as "+15550002222", '
            "found 15550002222",
        ),
        # a missing key
        (
            "keyring",
            {"keys": [{"id": "k1", "signing": True}]},
            "$.keys[0].secret: expected a non-empty string, found nothing",
        ),
        (
            "accounts",
            {"accounts": [{"sid": ACCOUNT}]},
            "$.accounts[0].authToken: expected a non-empty string, found nothing",
        ),
        (
            "edges",
            {"global": {"location": "Anywhere"}},
            "$.global.host: expected a DNS name or an IP address, found nothing",
        ),
        (
            "numbers",
            with_number(accountSid=None),
            "$.numbers[0].accountSid: expected AC followed by 32 hex digits, found nothing",
        ),
        # an unknown key
        (
            "keyring",
            with_key(sign=True),
            '$.keys[0]: expected only the fields "id", "secret", "signing", found "sign"',
        ),
        (
            "accounts",
            with_account(apikeys=[]),
            '$.accounts[0]: expected only the fields "sid", "authToken", "apiKeys", '
            '"sipCredentials", found "apikeys"',
        ),
        (
            "edges",
            with_edge(zone="b"),
            '$.edges[0]: expected only the fields "name", "location", "host", "ports", '
            'found "zone"',
        ),
        (
            "numbers",
            with_number(voiceURL="https://app.example/voice"),
            '$.numbers[0]: expected only the fields "number", "accountSid", "voiceUrl", '
            '"voiceMethod", "statusCallback", "twiml", found "voiceURL"',
        ),
        # a value out of range
        ("keyring", {"keys": []}, "$.keys: expected a non-empty array, found an empty array"),
        (
            "accounts",
            with_account(authToken=""),
            "$.accounts[0].authToken: expected a non-empty string, found an empty string",
        ),
        (
            "edges",
            with_edge(ports={"udp": 65536}),
            "$.edges[0].ports.udp: expected an integer from 1 to 65535, found 65536",
        ),
        (
            "numbers",
            with_number(voiceMethod="PUT"),
            '$.numbers[0].voiceMethod: expected "GET" or "POST", found "PUT"',
        ),
    ],
)
def test_the_message_names_file_path_expected_and_found(
    tmp_path: Path, kind: str, doc: Any, message: str
) -> None:
    path, stderr = refused(tmp_path, kind, doc)
    assert stderr.endswith(f"{path}: {message}\n"), stderr


SECRET = 4815162342  # a secret of the wrong type: it would be quoted if it were any other value


@pytest.mark.parametrize(
    ("kind", "doc"),
    [
        ("keyring", with_key(secret=SECRET)),
        ("keyring", {"keys": [{"id": "k1", "secret": str(SECRET), "signing": "yes"}]}),
        ("keyring", {"keys": [{"id": "k1", "secrets": str(SECRET), "signing": True}]}),
        ("accounts", with_account(authToken=SECRET)),
        ("accounts", {"accounts": [{"sid": ACCOUNT, "authtoken": str(SECRET)}]}),
        ("accounts", with_account(authToken=str(SECRET), apiKeys=[{"sid": "SK1", "secret": "x"}])),
        ("accounts", with_account(apiKeys=[{"sid": "SK" + "1" * 32, "secret": SECRET}])),
        ("accounts", with_account(sipCredentials=[{"username": "pbx", "password": SECRET}])),
        ("accounts", with_account(sipCredentials=[{"username": "", "password": str(SECRET)}])),
    ],
)
def test_no_message_quotes_a_secret(tmp_path: Path, kind: str, doc: Any) -> None:
    path, stderr = refused(tmp_path, kind, doc)
    assert f"{path}: $" in stderr and ": expected " in stderr, stderr
    assert str(SECRET) not in stderr
