import base64
import json

import pytest

from turnpike.core.accounts import Accounts, AccountsError

AC = "AC" + "a" * 32
SK = "SK" + "b" * 32


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def accounts() -> Accounts:
    doc = {"accounts": [{"sid": AC, "authToken": "tok", "apiKeys": [{"sid": SK, "secret": "s"}]}]}
    return Accounts.parse(json.dumps(doc))


def test_authenticate_variants(accounts: Accounts) -> None:
    by_token = accounts.authenticate(basic(AC, "tok"))
    assert by_token is not None and by_token.account.sid == AC and by_token.sid == AC
    by_key = accounts.authenticate(basic(SK, "s"))
    assert by_key is not None and by_key.account.sid == AC and by_key.sid == SK
    for header in [None, "", basic(AC, "nope"), basic(SK, "tok"), "Bearer x", "Basic !!!"]:
        assert accounts.authenticate(header) is None


def test_tokens_not_in_repr(accounts: Accounts) -> None:
    assert "tok" not in repr(accounts.get(AC))


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ("{", "not valid JSON"),
        ({"accounts": [{"sid": "AC1", "authToken": "t"}]}, "32 hex"),
        ({"accounts": [{"sid": AC, "authToken": ""}]}, "authToken"),
        ({"accounts": [{"sid": AC, "authToken": "t"}, {"sid": AC, "authToken": "u"}]}, "twice"),
        ({"accounts": [{"sid": AC, "authToken": "t", "apiKeys": [{"sid": SK}]}]}, "secret"),
    ],
)
def test_errors(doc: object, problem: str) -> None:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(AccountsError, match=problem) as info:
        Accounts.parse(text, "accounts.json")
    assert str(info.value).startswith("accounts.json: ")


def test_sip_credentials_belong_to_one_account() -> None:
    other = "AC" + "2" * 32
    doc = {
        "accounts": [
            {"sid": AC, "authToken": "t", "sipCredentials": [{"username": "pbx", "password": "p"}]},
            {"sid": other, "authToken": "u"},
        ]
    }
    accounts = Accounts.parse(json.dumps(doc))
    found = accounts.sip_user("pbx")
    assert found is not None and found[0].sid == AC and found[1] == "p"
    assert accounts.sip_user("nobody") is None
    assert "p" not in repr(found[0])  # passwords never show up in logs
    doc["accounts"][1]["sipCredentials"] = [{"username": "pbx", "password": "q"}]
    with pytest.raises(AccountsError, match="listed twice"):
        Accounts.parse(json.dumps(doc))
    doc["accounts"][1]["sipCredentials"] = [{"username": "x"}]
    password = r"\$\.accounts\[1\]\.sipCredentials\[0\]\.password: expected a non-empty string"
    with pytest.raises(AccountsError, match=password):
        Accounts.parse(json.dumps(doc))
